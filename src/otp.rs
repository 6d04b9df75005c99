//! OTP policy: codes from the OS CSPRNG, HMAC at rest, constant-time verify, sealed texts,
//! templates with the WebOTP origin line or the Android SMS Retriever app hash.
//!
//! Everything here is pure except [`Keys::load_or_create`] (the key file) and the convenience
//! wrappers that draw from the OS RNG ([`generate_code_os`], [`Keys::seal`]); each of those has a
//! twin taking the RNG as an argument so tests are deterministic.
//!
//! Why two keys: the HMAC key makes stored codes useless to someone who copies the database (a
//! 6-digit code hashed without a secret is brute-forced in microseconds), and the sealing key lets
//! a queued OTP text survive a crash (at-least-once resend carries the same code) without ever
//! being written in clear. Neither key nor any code ever reaches a log: `Keys` has a redacting
//! `Debug`, and errors never carry a code.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::Rng;
use rand::rand_core::UnwrapErr;
use rand::rngs::SysRng;
use sha2::Sha256;
use subtle::{Choice, ConstantTimeEq};

/// Shortest code accepted: below 4 digits a guesser with 5 attempts wins too often (5 in 1,000).
pub const MIN_CODE_LENGTH: usize = 4;
/// Longest code accepted: longer codes are retyped wrongly more often than they add security.
pub const MAX_CODE_LENGTH: usize = 10;
/// Default code length of SPEC.md (`otp.length`).
pub const DEFAULT_CODE_LENGTH: usize = 6;
/// Default template of SPEC.md (`otp.template`).
pub const DEFAULT_TEMPLATE: &str = "Your code is {code}. It expires in {minutes} minutes.";
/// Longest template in characters. Three concatenated GSM 7-bit parts hold 459 characters
/// (TS 23.040 §9.2.3.24.1 costs 7 octets of UDH per part); a template beyond that would cost
/// a fourth SMS per OTP, which is never what an operator wants.
pub const MAX_TEMPLATE_CHARS: usize = 459;
/// Shortest TTL the HTTP layer and config accept by default: a code must survive SMS latency.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(30);
/// Longest TTL accepted by default: a day-old code is a password, not a one-time code.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Default of `otp.max_parts`: three concatenated parts hold a long template with a WebOTP
/// line even in UCS-2; beyond that a code arrives late or in pieces on many phones.
pub const DEFAULT_MAX_PARTS: usize = 3;
/// Default of `otp.max_resends`: with every code valid until expiry, 2 resends give a guesser
/// at most 3 live codes (3 × 5 attempts in 10^6 with the defaults).
pub const DEFAULT_MAX_RESENDS: u32 = 2;

/// What a new OTP for a number that has a pending one does (`otp.on_pending`, request field
/// `on_pending`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnPending {
    /// The pending OTP is reused: same id and expiry, one more text with a fresh code as a
    /// resend sends it; earlier codes stay valid, so a late first text still works.
    #[default]
    Reuse,
    /// The pending OTP is canceled with its queued texts and a new one starts.
    Supersede,
}

impl OnPending {
    /// `"reuse"` or `"supersede"`.
    pub fn parse(s: &str) -> Option<OnPending> {
        match s {
            "reuse" => Some(OnPending::Reuse),
            "supersede" => Some(OnPending::Supersede),
            _ => None,
        }
    }

    /// The config and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnPending::Reuse => "reuse",
            OnPending::Supersede => "supersede",
        }
    }
}

/// Name of the key file inside the data directory.
pub const KEY_FILE_NAME: &str = "otp-keys";

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// First byte of every sealed blob, so a future format change can be told apart.
const SEAL_VERSION: u8 = 1;
/// Key-file magic: a file of the right size but foreign origin is refused rather than used.
const KEY_FILE_MAGIC: &[u8; 8] = b"SGKEYS01";

/// Everything that can be wrong with an OTP request, a template or a sealed text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtpError {
    /// `code_length` outside `MIN_CODE_LENGTH..=MAX_CODE_LENGTH`.
    #[error("code length {0} is out of range ({MIN_CODE_LENGTH}..={MAX_CODE_LENGTH} digits)")]
    CodeLength(usize),
    /// TTL outside the configured bounds.
    #[error("ttl of {ttl} s is out of range ({min}..={max} s)")]
    Ttl {
        /// The requested TTL in seconds.
        ttl: u64,
        /// The lower bound in seconds.
        min: u64,
        /// The upper bound in seconds.
        max: u64,
    },
    /// A template without `{code}` would send an SMS with no code in it.
    #[error("template must contain {{code}}")]
    TemplateMissingCode,
    /// A template longer than [`MAX_TEMPLATE_CHARS`].
    #[error("template is {len} characters long, at most {max} are allowed")]
    TemplateTooLong {
        /// Length of the rejected template in characters.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A `{name}` other than `{code}`, `{minutes}` or `{lifetime}`: most likely a typo that
    /// would be sent verbatim to every user.
    #[error(
        "template has unknown placeholder {{{0}}} (known: {{code}}, {{minutes}}, {{lifetime}})"
    )]
    TemplateUnknownPlaceholder(String),
    /// `origin` is not a bare host name.
    #[error("origin {0:?} is not a host name (expected e.g. \"example.com\", no scheme, no path)")]
    Origin(String),
    /// `app_hash` is not 11 characters of `[A-Za-z0-9+/]`.
    #[error("app hash must be exactly 11 characters of [A-Za-z0-9+/]")]
    AppHash,
    /// WebOTP wants its `@origin #code` line last and the SMS Retriever wants its hash last:
    /// one text cannot satisfy both.
    #[error(
        "origin (WebOTP) and app_hash (SMS Retriever) cannot be combined: both must be the last line"
    )]
    OriginWithAppHash,
    /// A sealed text failed authentication: corrupt, truncated, or sealed under another key.
    #[error("sealed text cannot be opened (corrupt or sealed with another key)")]
    Sealed,
}

/// A code length already checked to lie in `MIN_CODE_LENGTH..=MAX_CODE_LENGTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CodeLength(usize);

impl CodeLength {
    /// The number of digits.
    pub fn get(self) -> usize {
        self.0
    }
}

impl Default for CodeLength {
    fn default() -> Self {
        CodeLength(DEFAULT_CODE_LENGTH)
    }
}

/// Checks a requested code length (HTTP `code_length`, config `otp.length`).
pub fn validate_code_length(len: usize) -> Result<CodeLength, OtpError> {
    if (MIN_CODE_LENGTH..=MAX_CODE_LENGTH).contains(&len) {
        Ok(CodeLength(len))
    } else {
        Err(OtpError::CodeLength(len))
    }
}

/// Checks a requested TTL against inclusive bounds (`otp.min_ttl_seconds`/`max_ttl_seconds`).
pub fn validate_ttl(ttl: Duration, min: Duration, max: Duration) -> Result<(), OtpError> {
    if ttl < min || ttl > max {
        Err(OtpError::Ttl {
            ttl: ttl.as_secs(),
            min: min.as_secs(),
            max: max.as_secs(),
        })
    } else {
        Ok(())
    }
}

/// Draws a code of `len` decimal digits, each uniform over 0–9.
///
/// Uniform by rejection: a byte is used only if it is below 250 (the largest multiple of 10 that
/// fits), so `byte % 10` has no modulo bias.
pub fn generate_code<R: Rng + ?Sized>(len: CodeLength, rng: &mut R) -> String {
    let mut code = String::with_capacity(len.get());
    let mut buf = [0u8; 16];
    while code.len() < len.get() {
        rng.fill_bytes(&mut buf);
        for &b in &buf {
            if code.len() == len.get() {
                break;
            }
            if b < 250 {
                code.push(char::from(b'0' + b % 10));
            }
        }
    }
    code
}

/// [`generate_code`] from the operating system's CSPRNG: what production uses.
pub fn generate_code_os(len: CodeLength) -> String {
    generate_code(len, &mut os_rng())
}

/// The OS CSPRNG as an infallible RNG. If the kernel cannot supply entropy there is no safe way
/// to go on issuing codes or nonces, so a failure panics instead of degrading.
fn os_rng() -> UnwrapErr<SysRng> {
    UnwrapErr(SysRng)
}

/// The two secret keys: one for code HMACs, one for sealing queued texts.
#[derive(Clone)]
pub struct Keys {
    /// HMAC-SHA256 key for codes at rest; never used for anything else.
    hmac_key: [u8; KEY_LEN],
    /// XChaCha20-Poly1305 key for OTP texts waiting in the queue.
    seal_key: [u8; KEY_LEN],
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys { .. }")
    }
}

impl Keys {
    /// Builds keys from raw bytes (tests, or a caller with its own key management).
    pub fn from_bytes(hmac_key: [u8; 32], seal_key: [u8; 32]) -> Keys {
        Keys { hmac_key, seal_key }
    }

    /// Fresh random keys from `rng`.
    pub fn generate<R: Rng + ?Sized>(rng: &mut R) -> Keys {
        let mut hmac_key = [0u8; KEY_LEN];
        let mut seal_key = [0u8; KEY_LEN];
        rng.fill_bytes(&mut hmac_key);
        rng.fill_bytes(&mut seal_key);
        Keys { hmac_key, seal_key }
    }

    /// Loads `<data_dir>/otp-keys`, creating it with random keys and mode 0600 at first start.
    ///
    /// Refuses a key file that group or others may read (the error says how to fix it), that is
    /// not a regular file, or that has the wrong size or magic. Creation writes a temporary file,
    /// syncs it and hard-links it into place, so a crash never leaves a half-written key file and
    /// two processes starting at once agree on one set of keys.
    pub fn load_or_create(data_dir: &Path) -> io::Result<Keys> {
        let path = data_dir.join(KEY_FILE_NAME);
        match Self::load(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let keys = Keys::generate(&mut os_rng());
        // A random suffix: two starts racing (even threads of one process) never share a
        // temporary file, so only the final hard link decides who wins.
        let tmp = data_dir.join(format!("{KEY_FILE_NAME}.tmp.{:016x}", os_rng().next_u64()));
        let result = (|| {
            let mut f = crate::datadir::create_new(&tmp)?;
            f.write_all(&keys.to_file_bytes())?;
            f.sync_all()?;
            fs::hard_link(&tmp, &path)
        })();
        let _ = fs::remove_file(&tmp);
        match result {
            Ok(()) => {
                // The directory entry must be durable too, or a crash could lose the keys that
                // already sealed queued texts.
                if let Ok(dir) = fs::File::open(data_dir) {
                    let _ = dir.sync_all();
                }
                Ok(keys)
            }
            // Another process won the race: use its keys.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::load(&path),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("cannot create key file {}: {e}", path.display()),
            )),
        }
    }

    fn load(path: &Path) -> io::Result<Keys> {
        // Refuses a symlink, a non-regular file and one open to group or others, naming the fix;
        // a missing file stays `NotFound`.
        let mut f = crate::datadir::open_private(path)?;
        let mut bytes = Vec::with_capacity(KEY_FILE_MAGIC.len() + 2 * KEY_LEN);
        f.read_to_end(&mut bytes)?;
        Self::from_file_bytes(&bytes).ok_or_else(|| {
            invalid(
                path,
                "is not a simgate key file (wrong size or header); move it away to create a new one",
            )
        })
    }

    fn to_file_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(KEY_FILE_MAGIC.len() + 2 * KEY_LEN);
        v.extend_from_slice(KEY_FILE_MAGIC);
        v.extend_from_slice(&self.hmac_key);
        v.extend_from_slice(&self.seal_key);
        v
    }

    fn from_file_bytes(bytes: &[u8]) -> Option<Keys> {
        let rest = bytes.strip_prefix(KEY_FILE_MAGIC.as_slice())?;
        if rest.len() != 2 * KEY_LEN {
            return None;
        }
        let (h, s) = rest.split_at(KEY_LEN);
        Some(Keys::from_bytes(h.try_into().ok()?, s.try_into().ok()?))
    }

    /// A public name of this pair of keys: nodes of a cluster must share them (one node
    /// verifies a code another node drew, and sends a text another sealed), and the shared
    /// database keeps this to tell a node started with different keys. HMACs of a fixed label
    /// under each key, so it reveals nothing of either.
    pub fn fingerprint(&self) -> String {
        let mut digest = <Sha256 as sha2::Digest>::new();
        for key in [&self.hmac_key, &self.seal_key] {
            let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key)
                .expect("HMAC accepts any key length");
            mac.update(b"simgate key fingerprint v1");
            sha2::Digest::update(&mut digest, mac.finalize().into_bytes());
        }
        hex::encode(&sha2::Digest::finalize(digest)[..8])
    }

    /// HMAC-SHA256 of `(otp_id, code)` under the HMAC key.
    ///
    /// The message is `u32_be(len(id)) ‖ id ‖ code`: the length prefix makes the split between id
    /// and code unambiguous, so ("ab", "1234") and ("a", "b1234") never collide.
    pub fn code_hmac(&self, otp_id: &str, code: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(&self.hmac_key)
            .expect("HMAC accepts any key length");
        let id_len = u32::try_from(otp_id.len()).unwrap_or(u32::MAX);
        mac.update(&id_len.to_be_bytes());
        mac.update(otp_id.as_bytes());
        mac.update(code.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `code` matches any of the `stored` HMACs (one per text sent for this OTP).
    ///
    /// Compares against every stored hash in constant time and combines the results without
    /// branching, so timing reveals neither whether nor which one matched. Input that is not
    /// 4–10 ASCII digits is simply non-matching; the caller still counts the attempt.
    pub fn verify(&self, otp_id: &str, code: &str, stored: &[[u8; 32]]) -> bool {
        if !(MIN_CODE_LENGTH..=MAX_CODE_LENGTH).contains(&code.len())
            || !code.bytes().all(|b| b.is_ascii_digit())
        {
            return false;
        }
        let candidate = self.code_hmac(otp_id, code);
        let mut matched = Choice::from(0);
        for h in stored {
            matched |= candidate.ct_eq(h);
        }
        matched.into()
    }

    /// Seals `plaintext` with a fresh random nonce from the OS CSPRNG.
    pub fn seal(&self, plaintext: &str) -> Vec<u8> {
        self.seal_with_rng(plaintext, &mut os_rng())
    }

    /// Seals `plaintext` with a nonce drawn from `rng`.
    ///
    /// Layout: `version (1) ‖ nonce (24) ‖ ciphertext ‖ tag (16)`. XChaCha20-Poly1305's 192-bit
    /// nonce makes random nonces safe for any number of messages under one key. The version byte
    /// is authenticated as associated data.
    pub fn seal_with_rng<R: Rng + ?Sized>(&self, plaintext: &str, rng: &mut R) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new(&self.seal_key.into());
        let ct = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &[SEAL_VERSION],
                },
            )
            .expect("XChaCha20-Poly1305 encryption of an in-memory text cannot fail");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens a blob made by [`Keys::seal`].
    pub fn open(&self, sealed: &[u8]) -> Result<String, OtpError> {
        let (&version, rest) = sealed.split_first().ok_or(OtpError::Sealed)?;
        if version != SEAL_VERSION || rest.len() < NONCE_LEN {
            return Err(OtpError::Sealed);
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OtpError::Sealed)?;
        let cipher = XChaCha20Poly1305::new(&self.seal_key.into());
        let pt = cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ct,
                    aad: &[SEAL_VERSION],
                },
            )
            .map_err(|_| OtpError::Sealed)?;
        String::from_utf8(pt).map_err(|_| OtpError::Sealed)
    }
}

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("key file {} {what}", path.display()),
    )
}

/// Path of the key file for a data directory (for messages and docs).
pub fn key_file_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE_NAME)
}

/// A host name for the WebOTP origin-bound line (`@example.com #123456`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(String);

impl Origin {
    /// Accepts a bare host: labels of `[A-Za-z0-9-]` (no leading or trailing `-`) separated by
    /// dots, at most 253 characters. Anything with a scheme, port, path, user or whitespace is
    /// refused: the WebOTP line names the host of an https origin on its default port, and the
    /// browser compares it literally with the page's host.
    pub fn parse(s: &str) -> Result<Origin, OtpError> {
        let bad = || OtpError::Origin(s.to_string());
        if s.is_empty() || s.len() > 253 {
            return Err(bad());
        }
        for label in s.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok {
                return Err(bad());
            }
        }
        Ok(Origin(s.to_string()))
    }

    /// The host as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An Android SMS Retriever app hash: 11 characters of `[A-Za-z0-9+/]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppHash(String);

impl AppHash {
    /// Validates the hash (it is the first 11 base64 characters of a SHA-256, per Google's
    /// SMS Retriever documentation).
    pub fn parse(s: &str) -> Result<AppHash, OtpError> {
        if s.len() == 11
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        {
            Ok(AppHash(s.to_string()))
        } else {
            Err(OtpError::AppHash)
        }
    }

    /// The hash as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One piece of a parsed template.
enum Piece<'a> {
    Literal(&'a str),
    Code,
    Minutes,
    Lifetime,
}

/// What follows `{minutes}` in templates written for a number of minutes; together they are read
/// as `{lifetime}`, so "expires in {minutes} minutes" never says "1 minutes" or "1440 minutes".
const MINUTES_WORD: &str = " minutes";

/// The lifetime in the unit a person would use: "30 seconds", "1 minute", "5 minutes",
/// "90 minutes", "24 hours".
///
/// Whole hours are said in hours; other lifetimes from one minute up in whole
/// minutes rounded down (a code never outlives what the text promises by more than a minute,
/// and is never said to live longer than it does); below two minutes, a lifetime that is not
/// exactly one minute is said in seconds.
pub fn lifetime_words(ttl: Duration) -> String {
    let s = ttl.as_secs().max(1);
    let (n, unit) = if s == 60 {
        (1, "minute")
    } else if s < 120 {
        (s, "second")
    } else if s >= 3600 && s % 3600 == 0 {
        (s / 3600, "hour")
    } else {
        (s / 60, "minute")
    };
    count_noun(n, unit)
}

/// `1 minute`, `2 minutes`: English plural by appending `s`, which every unit here takes.
pub fn count_noun(n: u64, singular: &str) -> String {
    if n == 1 {
        format!("1 {singular}")
    } else {
        format!("{n} {singular}s")
    }
}

/// Splits a template into literals and placeholders. A `{` without a matching `}` on the same
/// template is literal text, so operators can still write braces; `{name}` must be a known name.
fn parse_template(template: &str) -> Result<Vec<Piece<'_>>, OtpError> {
    let chars = template.chars().count();
    if chars > MAX_TEMPLATE_CHARS {
        return Err(OtpError::TemplateTooLong {
            len: chars,
            max: MAX_TEMPLATE_CHARS,
        });
    }
    let mut pieces = Vec::new();
    let mut rest = template;
    let mut has_code = false;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        let name = &after[..close];
        // A brace pair around something that cannot be a name (e.g. "{ }" or JSON) is text.
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            pieces.push(Piece::Literal(&rest[..open + 1]));
            rest = after;
            continue;
        }
        pieces.push(Piece::Literal(&rest[..open]));
        match name {
            "code" => {
                has_code = true;
                pieces.push(Piece::Code);
            }
            "minutes" => {
                let tail = &after[close + 1..];
                let worded = tail.strip_prefix(MINUTES_WORD).filter(|t| {
                    !t.chars()
                        .next()
                        .is_some_and(|c| c.is_alphanumeric() || c == '_')
                });
                if let Some(t) = worded {
                    pieces.push(Piece::Lifetime);
                    rest = t;
                    continue;
                }
                pieces.push(Piece::Minutes);
            }
            "lifetime" => pieces.push(Piece::Lifetime),
            other => return Err(OtpError::TemplateUnknownPlaceholder(other.to_string())),
        }
        rest = &after[close + 1..];
    }
    pieces.push(Piece::Literal(rest));
    if !has_code {
        return Err(OtpError::TemplateMissingCode);
    }
    Ok(pieces)
}

/// Checks a template (config `otp.template`, HTTP `template`) without rendering it.
pub fn validate_template(template: &str) -> Result<(), OtpError> {
    parse_template(template).map(|_| ())
}

/// A rendered OTP text and its masked twin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The text sent to the phone; contains the code, so it is sealed at rest and never logged.
    pub text: String,
    /// The same text with every occurrence of the code replaced by `*` of equal length: what the
    /// delivery log stores and shows, and what has the same SMS length and encoding as `text`.
    pub masked: String,
    /// Byte offset of each occurrence of the code in `text` (and of its mask in `masked`), so a
    /// resend can put a new code in exactly the same places even when the template has literal
    /// `*` next to `{code}`.
    pub code_offsets: Vec<usize>,
}

/// Renders an OTP text.
///
/// `{code}` becomes the code, `{lifetime}` the TTL in words ([`lifetime_words`]), and
/// `{minutes}` the TTL in whole minutes rounded up (a 30 s TTL says "1" rather than "0"), except
/// that `{minutes} minutes` reads as `{lifetime}`: templates written for the number keep
/// working, and the default one says "1 minute" and "24 hours" rather than "1 minutes" and
/// "1440 minutes". With `origin`, the WebOTP line `@<origin> #<code>` is appended
/// as the last line, after an empty line (WICG WebOTP "origin-bound one-time code" format). With
/// `app_hash`, the 11-character hash is appended as the last line (Android SMS Retriever). Both
/// together are refused ([`OtpError::OriginWithAppHash`]) because each must be last.
pub fn render(
    template: &str,
    code: &str,
    ttl: Duration,
    origin: Option<&Origin>,
    app_hash: Option<&AppHash>,
) -> Result<Rendered, OtpError> {
    if origin.is_some() && app_hash.is_some() {
        return Err(OtpError::OriginWithAppHash);
    }
    let pieces = parse_template(template)?;
    let minutes = ttl.as_secs().div_ceil(60).max(1);
    let lifetime = lifetime_words(ttl);
    let mask = "*".repeat(code.chars().count());
    let build = |c: &str| {
        let mut s = String::with_capacity(template.len() + 32);
        let mut offsets = Vec::new();
        for p in &pieces {
            match p {
                Piece::Literal(l) => s.push_str(l),
                Piece::Code => {
                    offsets.push(s.len());
                    s.push_str(c);
                }
                Piece::Minutes => s.push_str(&minutes.to_string()),
                Piece::Lifetime => s.push_str(&lifetime),
            }
        }
        if let Some(o) = origin {
            s.push_str("\n\n@");
            s.push_str(o.as_str());
            s.push_str(" #");
            offsets.push(s.len());
            s.push_str(c);
        }
        if let Some(h) = app_hash {
            s.push_str("\n\n");
            s.push_str(h.as_str());
        }
        (s, offsets)
    };
    let (text, code_offsets) = build(code);
    let (masked, _) = build(&mask);
    Ok(Rendered {
        text,
        masked,
        code_offsets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::os::unix::fs::MetadataExt;

    fn keys() -> Keys {
        Keys::from_bytes([7; 32], [9; 32])
    }

    #[test]
    fn code_lengths() {
        for (len, ok) in [(3, false), (4, true), (6, true), (10, true), (11, false)] {
            assert_eq!(validate_code_length(len).is_ok(), ok, "len {len}");
        }
        assert_eq!(validate_code_length(0), Err(OtpError::CodeLength(0)));
    }

    #[test]
    fn codes_have_the_length_and_only_digits() {
        let mut rng = StdRng::seed_from_u64(1);
        for len in MIN_CODE_LENGTH..=MAX_CODE_LENGTH {
            let l = validate_code_length(len).unwrap();
            for _ in 0..50 {
                let c = generate_code(l, &mut rng);
                assert_eq!(c.len(), len);
                assert!(c.bytes().all(|b| b.is_ascii_digit()), "{c}");
            }
        }
    }

    #[test]
    fn codes_are_deterministic_for_a_seed_and_differ_across_seeds() {
        let l = CodeLength::default();
        let a = generate_code(l, &mut StdRng::seed_from_u64(42));
        let b = generate_code(l, &mut StdRng::seed_from_u64(42));
        let c = generate_code(l, &mut StdRng::seed_from_u64(43));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    /// An RNG that replays fixed bytes: proves bytes >= 250 are skipped, not folded.
    struct Replay(Vec<u8>, usize);
    impl rand::TryRng for Replay {
        type Error = std::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            let mut b = [0; 4];
            self.try_fill_bytes(&mut b)?;
            Ok(u32::from_le_bytes(b))
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            let mut b = [0; 8];
            self.try_fill_bytes(&mut b)?;
            Ok(u64::from_le_bytes(b))
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
            for d in dst {
                *d = self.0[self.1 % self.0.len()];
                self.1 += 1;
            }
            Ok(())
        }
    }

    #[test]
    fn rejection_sampling_skips_biased_bytes() {
        // 250..=255 would map to 0..=5 with a plain modulo; they must be skipped.
        let bytes = vec![
            250, 255, 3, 251, 19, 252, 249, 253, 100, 254, 0, 7, 7, 7, 7, 7,
        ];
        let code = generate_code(validate_code_length(6).unwrap(), &mut Replay(bytes, 0));
        assert_eq!(code, "399007");
    }

    #[test]
    fn digits_are_roughly_uniform() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = [0u32; 10];
        let l = validate_code_length(10).unwrap();
        for _ in 0..10_000 {
            for b in generate_code(l, &mut rng).bytes() {
                counts[usize::from(b - b'0')] += 1;
            }
        }
        // 100,000 digits: each expected 10,000; 5 sigma is about 475.
        for (d, &n) in counts.iter().enumerate() {
            assert!((9_500..=10_500).contains(&n), "digit {d}: {n}");
        }
    }

    #[test]
    fn os_rng_codes_work() {
        let c = generate_code_os(CodeLength::default());
        assert_eq!(c.len(), 6);
    }

    #[test]
    fn ttl_bounds() {
        let v = |s| validate_ttl(Duration::from_secs(s), DEFAULT_MIN_TTL, DEFAULT_MAX_TTL);
        assert!(v(29).is_err());
        assert!(v(30).is_ok());
        assert!(v(86_400).is_ok());
        assert_eq!(
            v(86_401),
            Err(OtpError::Ttl {
                ttl: 86_401,
                min: 30,
                max: 86_400
            })
        );
    }

    #[test]
    fn hmac_is_keyed_and_unambiguous() {
        let k = keys();
        assert_eq!(k.code_hmac("ab", "1234"), k.code_hmac("ab", "1234"));
        assert_ne!(k.code_hmac("ab", "1234"), k.code_hmac("a", "b1234"));
        assert_ne!(k.code_hmac("ab", "1234"), k.code_hmac("ab", "1235"));
        let other = Keys::from_bytes([8; 32], [9; 32]);
        assert_ne!(k.code_hmac("ab", "1234"), other.code_hmac("ab", "1234"));
    }

    #[test]
    fn verify_matches_any_stored_hash() {
        let k = keys();
        let stored = [k.code_hmac("otp1", "123456"), k.code_hmac("otp1", "654321")];
        assert!(k.verify("otp1", "123456", &stored));
        assert!(k.verify("otp1", "654321", &stored));
        assert!(!k.verify("otp1", "111111", &stored));
        assert!(!k.verify("otp2", "123456", &stored));
        assert!(!k.verify("otp1", "123456", &[]));
    }

    #[test]
    fn verify_rejects_malformed_codes() {
        let k = keys();
        // Even if someone stored the HMAC of a malformed string, it never matches.
        for bad in [
            "12345a",
            " 123456",
            "123",
            "12345678901",
            "",
            "１２３４５６",
        ] {
            let stored = [k.code_hmac("otp", bad)];
            assert!(!k.verify("otp", bad, &stored), "{bad:?}");
        }
    }

    #[test]
    fn seal_round_trip_and_tamper_detection() {
        let k = keys();
        let mut rng = StdRng::seed_from_u64(3);
        let sealed = k.seal_with_rng("Your code is 123456.", &mut rng);
        assert_eq!(sealed[0], SEAL_VERSION);
        assert_eq!(sealed.len(), 1 + 24 + 20 + 16);
        assert!(!sealed.windows(6).any(|w| w == b"123456"));
        assert_eq!(k.open(&sealed).unwrap(), "Your code is 123456.");

        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert_eq!(k.open(&t), Err(OtpError::Sealed), "flip at {i}");
        }
        assert_eq!(k.open(&sealed[..sealed.len() - 1]), Err(OtpError::Sealed));
        assert_eq!(k.open(&[]), Err(OtpError::Sealed));
        assert_eq!(k.open(&sealed[..10]), Err(OtpError::Sealed));
        let other = Keys::from_bytes([7; 32], [10; 32]);
        assert_eq!(other.open(&sealed), Err(OtpError::Sealed));
    }

    #[test]
    fn seal_uses_fresh_nonces() {
        let k = keys();
        let a = k.seal("same");
        let b = k.seal("same");
        assert_ne!(a, b);
        assert_eq!(k.open(&a).unwrap(), k.open(&b).unwrap());
    }

    #[test]
    fn debug_does_not_show_keys() {
        let s = format!("{:?}", keys());
        assert_eq!(s, "Keys { .. }");
    }

    #[test]
    fn key_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Keys::load_or_create(dir.path()).unwrap();
        let path = key_file_path(dir.path());
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 8 + 64);
        let b = Keys::load_or_create(dir.path()).unwrap();
        assert_eq!(a.code_hmac("x", "1234"), b.code_hmac("x", "1234"));
        assert_eq!(b.open(&a.seal("t")).unwrap(), "t");
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn racing_starts_agree_on_one_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let hmacs: Vec<[u8; 32]> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| Keys::load_or_create(dir.path()).unwrap()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().code_hmac("x", "1234"))
                .collect()
        });
        assert!(hmacs.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn key_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        Keys::load_or_create(dir.path()).unwrap();
        let path = key_file_path(dir.path());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let e = Keys::load_or_create(dir.path()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(
            e.to_string()
                .contains(&format!("chmod 600 {}", path.display())),
            "{e}"
        );
    }

    #[test]
    fn foreign_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = key_file_path(dir.path());
        fs::write(&path, [0u8; 72]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let e = Keys::load_or_create(dir.path()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn missing_data_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Keys::load_or_create(&dir.path().join("nope")).is_err());
    }

    #[test]
    fn default_template_renders() {
        let r = render(
            DEFAULT_TEMPLATE,
            "123456",
            Duration::from_secs(300),
            None,
            None,
        )
        .unwrap();
        assert_eq!(r.text, "Your code is 123456. It expires in 5 minutes.");
        assert_eq!(r.masked, "Your code is ******. It expires in 5 minutes.");
    }

    #[test]
    fn minutes_round_up() {
        for (secs, want) in [
            (30, "1"),
            (60, "1"),
            (61, "2"),
            (299, "5"),
            (86_400, "1440"),
        ] {
            let r = render(
                "{code} {minutes}",
                "1234",
                Duration::from_secs(secs),
                None,
                None,
            )
            .unwrap();
            assert_eq!(r.text, format!("1234 {want}"), "{secs}");
        }
    }

    #[test]
    fn lifetimes_read_in_the_unit_a_person_would_use() {
        for (secs, want) in [
            (1, "1 second"),
            (30, "30 seconds"),
            (60, "1 minute"),
            (90, "90 seconds"),
            (119, "119 seconds"),
            (120, "2 minutes"),
            (300, "5 minutes"),
            (301, "5 minutes"),
            (3_600, "1 hour"),
            (5_400, "90 minutes"),
            (7_200, "2 hours"),
            (86_400, "24 hours"),
        ] {
            assert_eq!(lifetime_words(Duration::from_secs(secs)), want, "{secs} s");
        }
    }

    #[test]
    fn the_default_text_reads_right_for_every_ttl() {
        let say = |secs| {
            render(
                DEFAULT_TEMPLATE,
                "123456",
                Duration::from_secs(secs),
                None,
                None,
            )
            .unwrap()
            .text
        };
        assert_eq!(say(60), "Your code is 123456. It expires in 1 minute.");
        assert_eq!(say(30), "Your code is 123456. It expires in 30 seconds.");
        assert_eq!(say(86_400), "Your code is 123456. It expires in 24 hours.");
        assert_eq!(say(600), "Your code is 123456. It expires in 10 minutes.");
        for secs in (30..=86_400).step_by(37) {
            let t = say(secs);
            assert!(
                !t.contains(" 1 minutes") && !t.contains(" 1 seconds"),
                "{t}"
            );
            assert!(!t.contains("1440"), "{t}");
        }
        // {lifetime} says the same; {minutes} on its own stays the bare number (SPEC).
        let r = |t: &str, secs| {
            render(t, "1234", Duration::from_secs(secs), None, None)
                .unwrap()
                .text
        };
        assert_eq!(r("{code}, valid {lifetime}", 60), "1234, valid 1 minute");
        assert_eq!(r("{code} ({minutes} min)", 60), "1234 (1 min)");
        assert_eq!(r("{code} {minutes} Minuten", 86_400), "1234 1440 Minuten");
        assert_eq!(r("{code} {minutes} minutesx", 60), "1234 1 minutesx");
    }

    #[test]
    fn code_offsets_point_at_every_code() {
        let o = Origin::parse("example.com").unwrap();
        let r = render(
            "*{code}* and {code}",
            "4821",
            Duration::from_secs(60),
            Some(&o),
            None,
        )
        .unwrap();
        assert_eq!(r.code_offsets, vec![1, 11, 31]);
        for &at in &r.code_offsets {
            assert_eq!(&r.text[at..at + 4], "4821");
            assert_eq!(&r.masked[at..at + 4], "****");
        }
    }

    #[test]
    fn origin_line_is_last_and_masked() {
        let o = Origin::parse("example.com").unwrap();
        let r = render(
            "Code {code}",
            "4821",
            Duration::from_secs(60),
            Some(&o),
            None,
        )
        .unwrap();
        assert_eq!(r.text, "Code 4821\n\n@example.com #4821");
        assert_eq!(r.masked, "Code ****\n\n@example.com #****");
        assert_eq!(r.text.lines().last(), Some("@example.com #4821"));
    }

    #[test]
    fn app_hash_is_last() {
        let h = AppHash::parse("FA+9qCX9VSu").unwrap();
        let r = render(
            "Code {code}",
            "4821",
            Duration::from_secs(60),
            None,
            Some(&h),
        )
        .unwrap();
        assert_eq!(r.text, "Code 4821\n\nFA+9qCX9VSu");
        assert_eq!(r.masked, "Code ****\n\nFA+9qCX9VSu");
    }

    #[test]
    fn origin_and_app_hash_conflict() {
        let o = Origin::parse("example.com").unwrap();
        let h = AppHash::parse("FA+9qCX9VSu").unwrap();
        assert_eq!(
            render(
                "{code}",
                "1234",
                Duration::from_secs(60),
                Some(&o),
                Some(&h)
            ),
            Err(OtpError::OriginWithAppHash)
        );
    }

    #[test]
    fn template_validation() {
        let check = |t: &str, want: Result<(), OtpError>| assert_eq!(validate_template(t), want);
        check("{code}", Ok(()));
        check("code: {code} {minutes} {minutes}", Ok(()));
        check("{ not a placeholder } {code}", Ok(()));
        check("{\"json\": 1} {code}", Ok(()));
        check("unclosed { {code}", Ok(()));
        check("trailing {code} {", Ok(()));
        check("no code here", Err(OtpError::TemplateMissingCode));
        check("{minutes}", Err(OtpError::TemplateMissingCode));
        check(
            "{code} {minute}",
            Err(OtpError::TemplateUnknownPlaceholder("minute".into())),
        );
        let long = format!("{{code}}{}", "x".repeat(MAX_TEMPLATE_CHARS));
        assert!(matches!(
            validate_template(&long),
            Err(OtpError::TemplateTooLong { .. })
        ));
    }

    #[test]
    fn braces_around_non_names_stay_literal() {
        let r = render("{ {code} }", "1234", Duration::from_secs(60), None, None).unwrap();
        assert_eq!(r.text, "{ 1234 }");
    }

    #[test]
    fn origin_validation() {
        for ok in ["example.com", "a.b-c.example", "localhost", "x1"] {
            assert!(Origin::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "https://example.com",
            "example.com/path",
            "-a.com",
            "a-.com",
            "a..com",
            ".com",
            "exa mple.com",
            "user@example.com",
            "example.com:",
            "example.com:8443",
            "exämple.com",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn app_hash_validation() {
        assert!(AppHash::parse("FA+9qCX9VSu").is_ok());
        assert!(AppHash::parse("abc/DEF+123").is_ok());
        for bad in [
            "",
            "FA+9qCX9VS",
            "FA+9qCX9VSuu",
            "FA+9qCX9VS=",
            "FA 9qCX9VSu",
        ] {
            assert_eq!(AppHash::parse(bad), Err(OtpError::AppHash), "{bad}");
        }
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn masked_has_the_shape_of_text(
            pre in "[ -z]{0,40}",
            post in "[ -z]{0,40}",
            code in "[0-9]{4,10}",
            ttl in 1u64..100_000,
            with_origin in any::<bool>(),
        ) {
            // Braces in the generated literals could form placeholders; keep them out.
            let pre = pre.replace(['{', '}'], "");
            let post = post.replace(['{', '}'], "");
            let template = format!("{pre}{{code}}{post}");
            let origin = Origin::parse("example.com").unwrap();
            let r = render(
                &template,
                &code,
                Duration::from_secs(ttl),
                with_origin.then_some(&origin),
                None,
            )
            .unwrap();
            prop_assert_eq!(r.text.chars().count(), r.masked.chars().count());
            prop_assert!(r.text.contains(&code));
            let stars = "*".repeat(code.len());
            prop_assert!(r.masked.contains(&stars));
            // Outside the code positions the two texts are identical.
            for (a, b) in r.text.chars().zip(r.masked.chars()) {
                prop_assert!(a == b || (a.is_ascii_digit() && b == '*'));
            }
        }

        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let k = Keys::from_bytes([1; 32], [2; 32]);
            prop_assert_eq!(k.open(&bytes), Err(OtpError::Sealed));
        }

        #[test]
        fn seal_round_trips(text in "\\PC{0,200}") {
            let k = Keys::from_bytes([1; 32], [2; 32]);
            prop_assert_eq!(k.open(&k.seal(&text)).unwrap(), text);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = Origin::parse(&s);
            let _ = AppHash::parse(&s);
            let _ = validate_template(&s);
        }
    }
}
