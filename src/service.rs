//! Use cases the HTTP API calls: create, verify, resend and cancel OTPs; send, read and list
//! messages.
//!
//! The service validates requests (naming the field and how to fix it), applies the rate limits,
//! draws and renders codes, and hands the store one transaction per use case. It knows no HTTP
//! and no SQL: errors are a typed [`ServiceError`] that `http` maps to problem+json.
//!
//! Secrets: a code exists in clear only inside [`Service::create_otp`] / [`Service::resend`]
//! (rendered, sealed, HMACed, then dropped) and in the verify request; neither is ever logged.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use std::num::NonZeroU32;

use crate::limits::{LimitName, Limits, PrefixPolicy, Refusal};
use crate::otp::{self, AppHash, CodeLength, Keys, OnPending, Origin, OtpError};
use crate::pdu;
use crate::store::{
    self, AddTextOutcome, Body, CreateOtpOutcome, CreateOutcome, DAY_MS, Idempotency, Message,
    MessageFilter, MessageKind, MessageStatus, Millis, NewMessage, NewOtp, NewOtpText, Otp,
    OtpStatus, OtpWording, Store, StoreError,
};

/// Why a use case refused or failed. Every variant maps to one HTTP status in `http`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// A field of the request is invalid (422).
    #[error("{field}: {detail}")]
    Validation {
        /// The request field, as the client spelled it (`to`, `ttl_seconds`, …).
        field: &'static str,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// The number is valid but the operator's allow/deny prefix lists refuse it (403).
    #[error("{detail}")]
    NotAllowed {
        /// Which list refused it.
        detail: String,
    },
    /// No such OTP or message (404).
    #[error("{what} {id} does not exist")]
    NotFound {
        /// `OTP` or `message`.
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// No pending, unexpired OTP exists for the number a code was checked against (404).
    #[error("there is no pending, unexpired OTP for {to}")]
    NoPendingOtp {
        /// The number asked about.
        to: String,
    },
    /// The request conflicts with the resource's state (409), e.g. resending a finished OTP.
    #[error("{0}")]
    Conflict(String),
    /// A code was checked against an OTP that had already ended (409, or 410 once expired):
    /// nothing was counted, and `GET /v1/otp/{id}` still shows the final state.
    #[error("OTP {id} is already {}", status.as_str())]
    OtpEnded {
        /// The OTP.
        id: String,
        /// Its final status.
        status: OtpStatus,
        /// Wrong attempts it had left when it ended.
        attempts_remaining: u32,
    },
    /// An id in the path does not have the shape of an id (400), as opposed to an unknown one.
    #[error("{detail}")]
    MalformedId {
        /// What the id should look like.
        detail: String,
    },
    /// The same `Idempotency-Key` was used with a different request (422).
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    /// A rate limit refused the request (429).
    #[error("rate limit {limit} reached")]
    RateLimited {
        /// Which limit, for the metric label.
        name: LimitName,
        /// Which limit and for what, in words naming the config key.
        limit: String,
        /// Whole seconds until a retry can succeed.
        retry_after: u64,
    },
    /// The queue holds `limits.queue_max` messages (503).
    #[error("the send queue is full")]
    QueueFull {
        /// Whole seconds a client should wait.
        retry_after: u64,
    },
    /// A dependency (the store) cannot take requests now (503).
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure (500); the detail goes to the log, not to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

fn invalid(field: &'static str, detail: impl Into<String>) -> ServiceError {
    ServiceError::Validation {
        field,
        detail: detail.into(),
    }
}

/// A phone number in E.164 form: `+`, then 8 to 15 digits, the first not 0 (ITU-T E.164 §6).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Msisdn(String);

/// Fewest digits accepted. E.164 allows shorter numbers in a few small countries, but below 8
/// digits (country code included) a mobile number is almost surely missing its country code.
pub const MIN_E164_DIGITS: usize = 8;
/// Most digits E.164 allows (ITU-T E.164 §6.1).
pub const MAX_E164_DIGITS: usize = 15;

impl Msisdn {
    /// Parses strictly, and says how to fix what it refuses.
    pub fn parse(s: &str) -> Result<Msisdn, String> {
        const EXAMPLE: &str = "e.g. +15551234567";
        if s.is_empty() {
            return Err(format!(
                "is empty; give the number in E.164 form, {EXAMPLE}"
            ));
        }
        if s.trim() != s
            || s.chars()
                .any(|c| matches!(c, ' ' | '-' | '.' | '(' | ')' | '/'))
        {
            return Err(format!(
                "remove spaces, dashes, dots and brackets: E.164 is + followed by digits only, \
                 {EXAMPLE}"
            ));
        }
        let digits = match s.strip_prefix('+') {
            Some(d) => d,
            None if s.starts_with("00") && s.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(format!(
                    "replace the international prefix 00 with +, i.e. +{}",
                    &s[2..]
                ));
            }
            None if s.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(format!(
                    "add the country code with a leading +: E.164 numbers start with +, {EXAMPLE}"
                ));
            }
            None => {
                return Err(format!(
                    "is not a phone number: E.164 is + followed by digits only, {EXAMPLE}"
                ));
            }
        };
        if let Some(c) = digits.chars().find(|c| !c.is_ascii_digit()) {
            return Err(if c == '+' {
                "has more than one +".to_owned()
            } else {
                format!("contains {c:?}; only digits may follow the +, {EXAMPLE}")
            });
        }
        if digits.starts_with('0') {
            return Err(
                "no country code starts with 0: drop the trunk prefix 0 and put the country \
                 code after the +"
                    .to_owned(),
            );
        }
        if digits.len() < MIN_E164_DIGITS {
            return Err(format!(
                "too short: {} digits, but an E.164 mobile number has at least {MIN_E164_DIGITS} \
                 including the country code",
                digits.len()
            ));
        }
        if digits.len() > MAX_E164_DIGITS {
            return Err(format!(
                "too long: {} digits, but E.164 numbers have at most {MAX_E164_DIGITS}",
                digits.len()
            ));
        }
        Ok(Msisdn(s.to_owned()))
    }

    /// The number with its leading `+`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Msisdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Says why `limits::PrefixPolicy` refuses a number, naming the config key.
fn check_prefixes(policy: &PrefixPolicy, to: &Msisdn) -> Result<(), ServiceError> {
    if policy.permits(to.as_str()) {
        return Ok(());
    }
    let detail = match policy
        .deny
        .iter()
        .find(|p| to.as_str().starts_with(p.as_str()))
    {
        Some(p) => {
            format!("numbers starting with {p} are refused by this gateway (limits.deny_prefixes)")
        }
        None => format!(
            "this gateway only serves numbers starting with {} (limits.allow_prefixes)",
            policy.allow.join(", ")
        ),
    };
    Err(ServiceError::NotAllowed { detail })
}

/// The public id of an OTP: `otp_` and 32 lowercase hex digits (a random UUID).
pub const OTP_ID_PREFIX: &str = "otp_";
/// The public id of a message: `msg_` and 32 lowercase hex digits (a random UUID).
pub const MSG_ID_PREFIX: &str = "msg_";

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Checks the shape of an id before any lookup, so a typo gets "malformed" rather than "unknown".
pub fn check_id(prefix: &'static str, id: &str) -> Result<(), ServiceError> {
    let what = if prefix == OTP_ID_PREFIX {
        "an OTP"
    } else {
        "a message"
    };
    let ok = id.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(ServiceError::MalformedId {
            detail: format!(
                "{:?} is not {what} id: ids look like {prefix} followed by 32 lowercase hex digits",
                shorten(id)
            ),
        })
    }
}

/// Client text shortened for an error detail, so a detail never echoes a megabyte.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX).collect();
        out.push('…');
        out
    }
}

/// What the store keeps for an `Idempotency-Key`: the request's digest and the answer to
/// replay. The answer is rendered only when a key was given.
fn idempotency_record(
    key: Option<&IdempotencyKey>,
    digest: &[u8],
    render: impl FnOnce() -> String,
) -> Option<Idempotency> {
    key.map(|k| Idempotency {
        scope: k.scope.clone(),
        key: k.key.clone(),
        request_hash: digest.to_vec(),
        response: render(),
    })
}

/// Where the service gets the time: unix milliseconds. Injected so tests can move past expiry.
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

/// Where codes come from. Production draws from the OS CSPRNG ([`os_codes`]); tests inject a
/// deterministic source so they know the code without any backdoor in the production path.
pub type CodeSource = Arc<dyn Fn(CodeLength) -> String + Send + Sync>;

/// The real clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    })
}

/// Codes from the OS CSPRNG.
pub fn os_codes() -> CodeSource {
    Arc::new(otp::generate_code_os)
}

/// Policy knobs of the use cases, taken from the validated config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `otp.length`: digits of a code when the request gives no `code_length`.
    pub code_length: CodeLength,
    /// `otp.ttl_seconds`: lifetime of a code when the request gives no `ttl_seconds`.
    pub ttl: Duration,
    /// Shortest `ttl_seconds` a request may ask for.
    pub min_ttl: Duration,
    /// Longest `ttl_seconds` a request may ask for.
    pub max_ttl: Duration,
    /// `otp.max_attempts`: wrong codes allowed before `max_attempts_reached`.
    pub max_attempts: u32,
    /// `otp.template`: the text when the request gives no `template`.
    pub template: String,
    /// `otp.app_hash`: the Android SMS Retriever line added when the request names no `origin`.
    pub app_hash: Option<AppHash>,
    /// `otp.max_parts`: most SMS parts one OTP text may take.
    pub max_otp_parts: usize,
    /// `otp.max_resends`: texts per OTP beyond the first (0 = none).
    pub max_resends: u32,
    /// `otp.on_pending`: what a new OTP for a number with a pending one does by default.
    pub on_pending: OnPending,
    /// `limits.otp_per_number_per_day`, counted in the store (0 = off).
    pub otp_per_number_per_day: u32,
    /// `limits.queue_max`: queued messages beyond this answer 503 (0 = off).
    pub queue_max: u64,
    /// `limits.allow_prefixes` / `limits.deny_prefixes`.
    pub prefixes: PrefixPolicy,
    /// Most SMS parts a plain text may take; longer texts are refused rather than sent as a
    /// costly string of parts that many phones reassemble badly.
    pub max_text_parts: usize,
    /// How long a plain text may wait in the queue before it is given up as `expired`.
    pub text_max_age: Duration,
    /// `Retry-After` for a full queue: roughly how long the modems need to drain some of it.
    pub queue_full_retry_after: Duration,
}

impl Settings {
    /// The settings a validated config asks for.
    pub fn from_config(c: &crate::config::Config) -> Settings {
        Settings {
            code_length: c.otp.length,
            ttl: c.otp.ttl,
            min_ttl: c.otp.min_ttl,
            max_ttl: c.otp.max_ttl,
            max_attempts: c.otp.max_attempts,
            template: c.otp.template.clone(),
            app_hash: c.otp.app_hash.clone(),
            max_otp_parts: c.otp.max_parts,
            max_resends: c.otp.max_resends,
            on_pending: c.otp.on_pending,
            otp_per_number_per_day: c.limits.otp_per_number_per_day,
            queue_max: c.limits.queue_max,
            prefixes: c.limits.prefixes.clone(),
            text_max_age: c.dispatch.text_max_age,
            ..Settings::default()
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            code_length: CodeLength::default(),
            ttl: Duration::from_secs(300),
            min_ttl: otp::DEFAULT_MIN_TTL,
            max_ttl: otp::DEFAULT_MAX_TTL,
            max_attempts: 5,
            template: otp::DEFAULT_TEMPLATE.to_owned(),
            app_hash: None,
            max_otp_parts: otp::DEFAULT_MAX_PARTS,
            max_resends: otp::DEFAULT_MAX_RESENDS,
            on_pending: OnPending::default(),
            otp_per_number_per_day: 10,
            queue_max: 100_000,
            prefixes: PrefixPolicy::default(),
            max_text_parts: 10,
            text_max_age: Duration::from_secs(24 * 60 * 60),
            queue_full_retry_after: Duration::from_secs(30),
        }
    }
}

/// Everything the service needs, built by `serve` (or a test).
pub struct Deps {
    /// The queue and delivery log.
    pub store: Store,
    /// HMAC and sealing keys.
    pub keys: Keys,
    /// In-memory rate limiters.
    pub limits: Arc<Limits>,
    /// Woken after every enqueue so the dispatcher never polls.
    pub wake: Arc<Notify>,
    /// Policy knobs.
    pub settings: Settings,
    /// The time.
    pub clock: Clock,
    /// The code generator.
    pub codes: CodeSource,
}

/// The use cases. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Service {
    /// The queue and delivery log.
    store: Store,
    /// HMAC and sealing keys.
    keys: Keys,
    /// In-memory rate limiters.
    limits: Arc<Limits>,
    /// Wakes the dispatcher.
    wake: Arc<Notify>,
    /// Policy knobs.
    settings: Settings,
    /// The time.
    clock: Clock,
    /// The code generator.
    codes: CodeSource,
    /// Answers given under an idempotency key, so a retry is answered before the rate limits.
    replays: std::sync::Mutex<ReplayCache>,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A request to send an OTP, as the client gave it (validated by [`Service::create_otp`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOtp {
    /// Recipient, expected in E.164.
    pub to: String,
    /// Lifetime in seconds; signed so a negative value gets a range message, not a type error.
    pub ttl_seconds: Option<i64>,
    /// Digits of the code; signed for the same reason.
    pub code_length: Option<i64>,
    /// Text template with `{code}` and optionally `{minutes}`.
    pub template: Option<String>,
    /// Host for the WebOTP line `@<origin> #<code>`.
    pub origin: Option<String>,
    /// Android SMS Retriever app hash, appended as the last line.
    pub app_hash: Option<String>,
    /// `reuse` or `supersede`: what to do when the number has a pending OTP (default
    /// `otp.on_pending`).
    pub on_pending: Option<String>,
}

/// A request to send a plain text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendText {
    /// Recipient, expected in E.164.
    pub to: String,
    /// The text; long texts go as concatenated parts.
    pub text: String,
}

/// An `Idempotency-Key` with the identity that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The authenticated token's id: keys of different clients never collide.
    pub scope: String,
    /// The header's value.
    pub key: String,
}

/// A fresh answer, or the stored answer of an earlier request with the same idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// Newly created.
    New(T),
    /// The exact answer given the first time, as the HTTP layer rendered it then.
    Replay(String),
}

/// The answer to a created (or resent) OTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpCreated {
    /// The OTP id.
    pub id: String,
    /// The recipient.
    pub to: String,
    /// Always `pending` for a fresh OTP.
    pub status: OtpStatus,
    /// The message carrying this code.
    pub message_id: String,
    /// When every code of this OTP stops verifying.
    pub expires_at: Millis,
    /// SMS parts of the text.
    pub parts: u32,
    /// Things the client should know but that did not stop the send (e.g. a multi-part text).
    pub warnings: Vec<String>,
}

/// The answer to a verify attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Status after the attempt.
    pub status: OtpStatus,
    /// True only for the attempt that approved the OTP.
    pub verified: bool,
    /// Wrong attempts still allowed.
    pub attempts_remaining: u32,
}

/// An OTP as `GET /v1/otp/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpView {
    /// The OTP id.
    pub id: String,
    /// The recipient.
    pub to: String,
    /// Status, with `expired` shown as soon as the time has run out.
    pub status: OtpStatus,
    /// Wrong attempts still allowed.
    pub attempts_remaining: u32,
    /// When every code stops verifying.
    pub expires_at: Millis,
    /// When the OTP was created.
    pub created_at: Millis,
    /// The newest text carrying one of its codes.
    pub message: Option<Message>,
    /// How many texts were sent for it (1 + resends).
    pub texts: usize,
}

/// The answer to a queued plain text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextQueued {
    /// The message id.
    pub id: String,
    /// Always `queued`.
    pub status: MessageStatus,
    /// SMS parts of the text.
    pub parts: u32,
    /// Things the client should know (e.g. UCS-2 encoding).
    pub warnings: Vec<String>,
}

/// Filter of the delivery log, as the client gave it (validated by [`Service::list_messages`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListMessages {
    /// Only this recipient.
    pub to: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// At most this many (default [`DEFAULT_LIST_LIMIT`], at most [`MAX_LIST_LIMIT`]).
    pub limit: Option<String>,
    /// Only messages older than this message id or RFC 3339 instant.
    pub before: Option<String>,
}

/// Default page size of the delivery log.
pub const DEFAULT_LIST_LIMIT: u32 = 50;
/// Largest page of the delivery log (the store's own cap).
pub const MAX_LIST_LIMIT: u32 = 1000;
/// Longest `Idempotency-Key` accepted (the IETF draft suggests UUIDs; 255 leaves room).
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

fn store_err(e: StoreError) -> ServiceError {
    match e {
        StoreError::Closed => ServiceError::Unavailable("the store is shut down".into()),
        other => ServiceError::Internal(other.to_string()),
    }
}

fn otp_error(field: &'static str, e: OtpError) -> ServiceError {
    invalid(field, e.to_string())
}

/// The i64 value of an optional numeric field within `lo..=hi`.
fn in_range(
    field: &'static str,
    v: i64,
    lo: u64,
    hi: u64,
    unit: &str,
) -> Result<u64, ServiceError> {
    match u64::try_from(v) {
        Ok(u) if (lo..=hi).contains(&u) => Ok(u),
        _ => Err(invalid(
            field,
            format!("must be between {lo} and {hi}{unit}, got {v}"),
        )),
    }
}

/// Digest of a request for idempotency: the same key with a different digest is a conflict.
/// Length-prefixed fields, so no two different requests encode alike.
fn request_digest(kind: &str, fields: &[Option<&str>]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    for f in fields {
        match f {
            None => h.update([0u8]),
            Some(s) => {
                h.update([1u8]);
                h.update((s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
        }
    }
    h.finalize().to_vec()
}

fn check_idempotency_key(k: &IdempotencyKey) -> Result<(), ServiceError> {
    if k.key.is_empty()
        || k.key.len() > MAX_IDEMPOTENCY_KEY
        || !k.key.bytes().all(|b| (0x21..=0x7e).contains(&b))
    {
        return Err(invalid(
            "Idempotency-Key",
            format!(
                "must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters without spaces, \
                 e.g. a UUID"
            ),
        ));
    }
    Ok(())
}

fn warnings_for(text: &str, parts: usize) -> Vec<String> {
    let mut w = Vec::new();
    let plan = pdu::plan(text);
    if parts > 1 {
        w.push(format!(
            "the text needs {parts} SMS parts{}",
            if plan.encoding == pdu::Encoding::Ucs2 {
                " (it has characters outside the GSM 7-bit alphabet, so it is sent as UCS-2 \
                 with 67 characters per part)"
            } else {
                ""
            }
        ));
    }
    w
}

fn parts_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn parts_nonzero(n: usize) -> NonZeroU32 {
    NonZeroU32::new(parts_u32(n)).unwrap_or(NonZeroU32::MIN)
}

/// What an OTP text is made of, and which parts of it the request chose, to say which field
/// makes a text too long.
struct TextInputs<'a> {
    template: &'a str,
    template_requested: bool,
    len: CodeLength,
    len_requested: bool,
    ttl: Duration,
    origin: Option<&'a Origin>,
    app_hash: Option<&'a AppHash>,
    app_hash_requested: bool,
}

/// The warning of a `POST /v1/otp` that reused the number's pending OTP.
fn reuse_note(otp_id: &str, req: &CreateOtp) -> String {
    let ignored: Vec<&str> = [
        ("ttl_seconds", req.ttl_seconds.is_some()),
        ("code_length", req.code_length.is_some()),
        ("template", req.template.is_some()),
        ("origin", req.origin.is_some()),
        ("app_hash", req.app_hash.is_some()),
    ]
    .into_iter()
    .filter_map(|(f, given)| given.then_some(f))
    .collect();
    let mut note = format!(
        "the number has a pending OTP, so {otp_id} was reused (on_pending = reuse): a new text \
         with a fresh code, the same expiry, and the codes sent before stay valid"
    );
    if !ignored.is_empty() {
        note.push_str(&format!(
            "; {} of this request did not apply (the first text's wording is kept); send \
             \"on_pending\": \"supersede\" to start a new OTP",
            ignored.join(", ")
        ));
    }
    note
}

fn ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn retry_secs(ms: Millis) -> u64 {
    u64::try_from(ms.max(0)).unwrap_or(0).div_ceil(1000).max(1)
}

/// The effective status: a pending OTP whose time ran out is expired even before the store
/// notices.
fn effective_status(otp: &Otp, now: Millis) -> OtpStatus {
    if otp.status == OtpStatus::Pending && now >= otp.expires_at {
        OtpStatus::Expired
    } else {
        otp.status
    }
}

fn hmacs(otp: &Otp) -> Vec<[u8; 32]> {
    otp.code_hmacs
        .iter()
        .filter_map(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
        .collect()
}

/// Recent answers given under an idempotency key, by `(scope, key)`.
///
/// The store is the authority on replays (it survives restarts), but it is asked only after the
/// rate limits, and a retry must not be refused by a limit its first attempt already passed: a
/// client retrying after a timeout would get 429 instead of its answer, and each retry would
/// spend another cell of the number's budget. The limiters live in memory and start empty after
/// a restart, so a cache that also lives in memory covers exactly the retries they could refuse.
#[derive(Debug, Default)]
struct ReplayCache {
    /// `(scope, key)` → (request digest, answer, when it was stored).
    entries: std::collections::HashMap<(String, String), (Vec<u8>, String, Millis)>,
    /// Insertion order, for evicting the oldest beyond [`REPLAY_CACHE_MAX`].
    order: std::collections::VecDeque<(String, String)>,
}

/// Most answers kept in memory; older retries still get their answer from the store.
const REPLAY_CACHE_MAX: usize = 10_000;

impl ReplayCache {
    /// The cached outcome for a key, if it is younger than the store keeps keys (one day).
    fn lookup(
        &self,
        k: &IdempotencyKey,
        digest: &[u8],
        now: Millis,
    ) -> Option<Result<String, ServiceError>> {
        let (d, answer, at) = self.entries.get(&(k.scope.clone(), k.key.clone()))?;
        if now - at >= DAY_MS {
            return None;
        }
        Some(if d == digest {
            Ok(answer.clone())
        } else {
            Err(ServiceError::IdempotencyMismatch)
        })
    }

    fn insert(&mut self, k: &IdempotencyKey, digest: Vec<u8>, answer: String, now: Millis) {
        let id = (k.scope.clone(), k.key.clone());
        if self
            .entries
            .insert(id.clone(), (digest, answer, now))
            .is_none()
        {
            self.order.push_back(id);
        }
        while self.order.len() > REPLAY_CACHE_MAX {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }
}

impl Service {
    fn cached_replay(
        &self,
        k: Option<&IdempotencyKey>,
        digest: &[u8],
    ) -> Option<Result<String, ServiceError>> {
        let k = k?;
        let now = (self.clock)();
        self.replays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lookup(k, digest, now)
    }

    fn remember(&self, k: Option<&IdempotencyKey>, digest: Vec<u8>, answer: &str) {
        if let Some(k) = k {
            let now = (self.clock)();
            self.replays
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(k, digest, answer.to_owned(), now);
        }
    }

    /// Builds the service.
    pub fn new(deps: Deps) -> Service {
        Service {
            store: deps.store,
            keys: deps.keys,
            limits: deps.limits,
            wake: deps.wake,
            settings: deps.settings,
            clock: deps.clock,
            codes: deps.codes,
            replays: std::sync::Mutex::new(ReplayCache::default()),
        }
    }

    /// The store, for readiness and metrics.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn rejected(&self, name: LimitName, limit: String, retry_after: u64) -> ServiceError {
        ServiceError::RateLimited {
            name,
            limit,
            retry_after,
        }
    }

    /// Applies `limits.requests_per_token` to one authenticated request.
    pub fn check_token_rate(&self, token: &str) -> Result<(), ServiceError> {
        self.limits.check_request(token).map_err(|ra| {
            self.rejected(
                LimitName::RequestsPerToken,
                "requests_per_token".into(),
                ra.seconds(),
            )
        })
    }

    /// Charges one OTP text of `parts` SMS parts to the per-number, per-range and global
    /// budgets: every part is one SMS the SIM pays for, so a 3-part text costs 3 cells.
    /// `blame` names the request field to point at when the text can never fit a budget.
    fn check_send_limits(
        &self,
        to: &Msisdn,
        parts: usize,
        blame: &'static str,
    ) -> Result<(), ServiceError> {
        let n = parts_nonzero(parts);
        self.limits
            .check_otp_send_parts(to.as_str(), n)
            .map_err(|r| {
                self.refused(
                    r,
                    LimitName::OtpPerNumber,
                    format!("otp_per_number: too many codes for {to}"),
                    parts,
                    blame,
                )
            })?;
        self.limits
            .check_otp_prefix_parts(to.as_str(), n)
            .map_err(|r| {
                self.refused(
                    r,
                    LimitName::OtpPerPrefix,
                    format!(
                        "otp_per_prefix: too many codes for numbers starting {} (a defence against SMS pumping)",
                        self.limits.number_range(to.as_str())
                    ),
                    parts,
                    blame,
                )
            })?;
        self.check_global(parts, blame)
    }

    fn check_global(&self, parts: usize, blame: &'static str) -> Result<(), ServiceError> {
        self.limits
            .check_global_send_parts(parts_nonzero(parts))
            .map_err(|r| {
                self.refused(
                    r,
                    LimitName::SendsGlobal,
                    "sends_global: the gateway's total send rate".into(),
                    parts,
                    blame,
                )
            })
    }

    /// A limiter's refusal of a text of `parts` parts: 429 when waiting helps, 422 naming the
    /// field when the text needs more parts than the limit allows in a whole period.
    fn refused(
        &self,
        r: Refusal,
        name: LimitName,
        limit: String,
        parts: usize,
        blame: &'static str,
    ) -> ServiceError {
        match r {
            Refusal::Wait(ra) => self.rejected(name, limit, ra.seconds()),
            Refusal::Never { capacity } => invalid(
                blame,
                format!(
                    "the text needs {} but limits.{} allows {} per period, so it could \
                     never be sent; shorten it or raise the limit",
                    otp::count_noun(parts as u64, "SMS part"),
                    name.as_str(),
                    otp::count_noun(u64::from(capacity), "part"),
                ),
            ),
        }
    }

    fn daily_limited(&self, to: &Msisdn, retry_after_ms: Millis) -> ServiceError {
        self.rejected(
            LimitName::OtpPerNumberPerDay,
            format!(
                "otp_per_number_per_day: {} codes a day for {to}",
                self.settings.otp_per_number_per_day
            ),
            retry_secs(retry_after_ms),
        )
    }

    /// Turns the store's answer to an idempotent enqueue into the service's: wakes the
    /// dispatcher for a new message, and remembers the answer for in-memory replays.
    fn settle<T>(
        &self,
        outcome: CreateOutcome,
        created: T,
        answer: Option<String>,
        idempotency: Option<&IdempotencyKey>,
        digest: Vec<u8>,
        to: &Msisdn,
    ) -> Result<Answer<T>, ServiceError> {
        match outcome {
            CreateOutcome::Created => {
                self.wake.notify_one();
                if let Some(a) = answer {
                    self.remember(idempotency, digest, &a);
                }
                Ok(Answer::New(created))
            }
            CreateOutcome::Replay(stored) => {
                self.remember(idempotency, digest, &stored);
                Ok(Answer::Replay(stored))
            }
            CreateOutcome::IdempotencyConflict => Err(ServiceError::IdempotencyMismatch),
            CreateOutcome::DailyLimit { retry_after_ms } => {
                Err(self.daily_limited(to, retry_after_ms))
            }
            CreateOutcome::QueueFull => Err(self.queue_full()),
        }
    }

    fn queue_full(&self) -> ServiceError {
        ServiceError::QueueFull {
            retry_after: self.settings.queue_full_retry_after.as_secs().max(1),
        }
    }

    /// Creates an OTP and queues its text. `render` turns the answer into the bytes an
    /// idempotent retry must get back verbatim; it is stored in the same transaction.
    ///
    /// With `on_pending = reuse` (the default) a number that has a pending OTP gets that OTP
    /// back with one more text, exactly as [`Service::resend`] sends it.
    pub async fn create_otp(
        &self,
        req: CreateOtp,
        idempotency: Option<IdempotencyKey>,
        render: impl Fn(&OtpCreated) -> String,
    ) -> Result<Answer<OtpCreated>, ServiceError> {
        let to = Msisdn::parse(&req.to).map_err(|d| invalid("to", d))?;
        check_prefixes(&self.settings.prefixes, &to)?;
        let len = match req.code_length {
            None => self.settings.code_length,
            Some(v) => {
                let v = in_range(
                    "code_length",
                    v,
                    otp::MIN_CODE_LENGTH as u64,
                    otp::MAX_CODE_LENGTH as u64,
                    " digits",
                )?;
                otp::validate_code_length(v as usize).map_err(|e| otp_error("code_length", e))?
            }
        };
        let ttl = match req.ttl_seconds {
            None => self.settings.ttl,
            Some(v) => Duration::from_secs(in_range(
                "ttl_seconds",
                v,
                self.settings.min_ttl.as_secs(),
                self.settings.max_ttl.as_secs(),
                " seconds",
            )?),
        };
        let template = match &req.template {
            None => self.settings.template.as_str(),
            Some(t) => {
                otp::validate_template(t).map_err(|e| otp_error("template", e))?;
                t.as_str()
            }
        };
        let origin = match &req.origin {
            None => None,
            Some(o) => Some(Origin::parse(o).map_err(|e| otp_error("origin", e))?),
        };
        let app_hash = match &req.app_hash {
            Some(h) => Some(AppHash::parse(h).map_err(|e| otp_error("app_hash", e))?),
            // The configured hash applies only where it can: WebOTP's origin line must be last.
            None if origin.is_none() => self.settings.app_hash.clone(),
            None => None,
        };
        let on_pending = match &req.on_pending {
            None => self.settings.on_pending,
            Some(p) => OnPending::parse(p).ok_or_else(|| {
                invalid(
                    "on_pending",
                    format!("{:?} is neither \"reuse\" nor \"supersede\"", shorten(p)),
                )
            })?,
        };
        if let Some(k) = &idempotency {
            check_idempotency_key(k)?;
        }
        let ttl_text = req.ttl_seconds.map(|v| v.to_string());
        let len_text = req.code_length.map(|v| v.to_string());
        let digest = request_digest(
            "otp",
            &[
                Some(to.as_str()),
                ttl_text.as_deref(),
                len_text.as_deref(),
                req.template.as_deref(),
                req.origin.as_deref(),
                req.app_hash.as_deref(),
                req.on_pending.as_deref(),
            ],
        );

        if let Some(seen) = self.cached_replay(idempotency.as_ref(), &digest) {
            return seen.map(Answer::Replay);
        }
        // Whether the number has a pending OTP to reuse is decided inside the store's
        // transaction, not read first: most numbers have none, and a read per request would
        // cost every one of them a round trip.
        let now = (self.clock)();
        let id = new_id(OTP_ID_PREFIX);
        let message_id = new_id(MSG_ID_PREFIX);
        let code = (self.codes)(len);
        let rendered = otp::render(template, &code, ttl, origin.as_ref(), app_hash.as_ref())
            .map_err(|e| otp_error("template", e))?;
        let code_hmac = self.keys.code_hmac(&id, &code).to_vec();
        drop(code);
        let parts = pdu::plan(&rendered.masked).parts;
        let inputs = TextInputs {
            template,
            template_requested: req.template.is_some(),
            len,
            len_requested: req.code_length.is_some(),
            ttl,
            origin: origin.as_ref(),
            app_hash: app_hash.as_ref(),
            app_hash_requested: req.app_hash.is_some(),
        };
        if parts > self.settings.max_otp_parts {
            return Err(self.too_many_parts(parts, &rendered.masked, &inputs));
        }
        if let Err(e) = self.check_send_limits(&to, parts, self.blame(&inputs)) {
            // A number whose pending OTP has all its texts is better told so than sent to a
            // per-number wait it would only meet again; the read is paid on refusals only.
            if on_pending == OnPending::Reuse
                && matches!(e, ServiceError::RateLimited { .. })
                && let Some(p) = self
                    .store
                    .newest_pending_otp(to.as_str(), now)
                    .await
                    .map_err(store_err)?
                && p.message_ids.len() as u64 > u64::from(self.settings.max_resends)
            {
                return Err(self.resend_cap(&p, now));
            }
            return Err(e);
        }

        let sealed = self.keys.seal(&rendered.text);
        drop(rendered.text);
        let expires_at = now.saturating_add(ms(ttl));
        let created = OtpCreated {
            id: id.clone(),
            to: to.as_str().to_owned(),
            status: OtpStatus::Pending,
            message_id: message_id.clone(),
            expires_at,
            parts: parts_u32(parts),
            warnings: warnings_for(&rendered.masked, parts),
        };
        let idem = idempotency_record(idempotency.as_ref(), &digest, || render(&created));
        let answer = idem.as_ref().map(|i| i.response.clone());
        let outcome = self
            .store
            .create_otp_worded(
                NewOtp {
                    id,
                    to: to.as_str().to_owned(),
                    code_hmac,
                    max_attempts: self.settings.max_attempts,
                    expires_at,
                    created_at: now,
                },
                NewMessage {
                    id: message_id,
                    to: to.as_str().to_owned(),
                    kind: MessageKind::Otp,
                    log_text: rendered.masked,
                    body: Body::Sealed(sealed),
                    parts: parts_u32(parts),
                    created_at: now,
                    deadline: expires_at,
                },
                OtpWording {
                    code_length: len.get() as u32,
                    code_offsets: rendered.code_offsets,
                },
                match on_pending {
                    OnPending::Reuse => store::OnPending::Keep,
                    OnPending::Supersede => store::OnPending::Supersede,
                },
                idem,
                self.settings.otp_per_number_per_day,
                self.settings.queue_max,
            )
            .await
            .map_err(store_err)?;
        let outcome = match outcome {
            CreateOtpOutcome::Done(o) => o,
            // The number has a pending OTP: add a text to it instead. This request's cells
            // are spent already, so the reused text is not charged again.
            CreateOtpOutcome::PendingExists { otp_id } => {
                let pending = self.load_otp(&otp_id).await?;
                let note = reuse_note(&otp_id, &req);
                return self
                    .add_text(pending, idempotency, digest, &render, Some(note), false)
                    .await;
            }
        };
        let (otp_id, msg_id) = (created.id.clone(), created.message_id.clone());
        let settled = self.settle(outcome, created, answer, idempotency.as_ref(), digest, &to)?;
        if matches!(settled, Answer::New(_)) {
            tracing::info!(otp = %otp_id, message = %msg_id, parts, "OTP queued");
        }
        Ok(settled)
    }

    /// Checks a code against one OTP. An OTP that has already ended answers
    /// [`ServiceError::OtpEnded`] without counting anything.
    pub async fn verify(&self, id: &str, code: &str) -> Result<Verified, ServiceError> {
        check_id(OTP_ID_PREFIX, id)?;
        check_code(code)?;
        let otp = self.load_otp(id).await?;
        self.verify_loaded(otp, code).await
    }

    /// Checks a code against the newest pending OTP of a number.
    pub async fn verify_by_number(
        &self,
        to: &str,
        code: &str,
    ) -> Result<(String, Verified), ServiceError> {
        let to = Msisdn::parse(to).map_err(|d| invalid("to", d))?;
        check_code(code)?;
        let now = (self.clock)();
        let otp = self
            .store
            .newest_pending_otp(to.as_str(), now)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ServiceError::NoPendingOtp {
                to: to.as_str().to_owned(),
            })?;
        let id = otp.id.clone();
        Ok((id, self.verify_loaded(otp, code).await?))
    }

    async fn verify_loaded(&self, otp: Otp, code: &str) -> Result<Verified, ServiceError> {
        let now = (self.clock)();
        let ended = |status: OtpStatus, attempts_remaining: u32| ServiceError::OtpEnded {
            id: otp.id.clone(),
            status,
            attempts_remaining,
        };
        let status = effective_status(&otp, now);
        if status != OtpStatus::Pending {
            return Err(ended(status, otp.max_attempts.saturating_sub(otp.attempts)));
        }
        // Only attempts that can still change the outcome spend the number's verify budget.
        self.limits.check_verify(&otp.to).map_err(|ra| {
            self.rejected(
                LimitName::VerifyPerNumber,
                format!("verify_per_number: too many attempts for {}", otp.to),
                ra.seconds(),
            )
        })?;
        let matched = self.keys.verify(&otp.id, code, &hmacs(&otp));
        let r = self
            .store
            .record_verify(&otp.id, matched, now)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ServiceError::NotFound {
                what: "OTP",
                id: otp.id.clone(),
            })?;
        // The OTP ended between the read above and this attempt (another request approved or
        // canceled it, or its time ran out): nothing was counted. An OTP that reached
        // max_attempts_reached may have been ended by this very attempt, so that one answers 200.
        if !r.verified
            && matches!(
                r.status,
                OtpStatus::Approved | OtpStatus::Canceled | OtpStatus::Expired
            )
        {
            return Err(ended(r.status, r.attempts_remaining));
        }
        Ok(Verified {
            status: r.status,
            verified: r.verified,
            attempts_remaining: r.attempts_remaining,
        })
    }

    async fn load_otp(&self, id: &str) -> Result<Otp, ServiceError> {
        self.store
            .get_otp(id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ServiceError::NotFound {
                what: "OTP",
                id: id.to_owned(),
            })
    }

    /// One OTP and its newest text.
    pub async fn get_otp(&self, id: &str) -> Result<OtpView, ServiceError> {
        check_id(OTP_ID_PREFIX, id)?;
        let otp = self.load_otp(id).await?;
        let message = match otp.message_ids.last() {
            Some(m) => self.store.get_message(m).await.map_err(store_err)?,
            None => None,
        };
        let now = (self.clock)();
        Ok(OtpView {
            status: effective_status(&otp, now),
            attempts_remaining: otp.max_attempts.saturating_sub(otp.attempts),
            id: otp.id,
            to: otp.to,
            expires_at: otp.expires_at,
            created_at: otp.created_at,
            message,
            texts: otp.message_ids.len(),
        })
    }

    /// Sends a fresh code for a pending OTP; earlier codes stay valid until it expires.
    ///
    /// The new text is the first text with only the code changed: same template, code length,
    /// origin line and stated lifetime (the expiry instant is unchanged). At most
    /// `otp.max_resends` resends per OTP.
    pub async fn resend(&self, id: &str) -> Result<OtpCreated, ServiceError> {
        check_id(OTP_ID_PREFIX, id)?;
        let otp = self.load_otp(id).await?;
        match self
            .add_text(otp, None, Vec::new(), |_| String::new(), None, true)
            .await?
        {
            Answer::New(c) => Ok(c),
            // Without an idempotency key nothing can be replayed.
            Answer::Replay(_) => Err(ServiceError::Internal(
                "a resend without a key was answered as a replay".into(),
            )),
        }
    }

    /// One more text with a fresh code for a pending OTP: the body of a resend, and of a
    /// `POST /v1/otp` that reuses a pending OTP (`note` then says so in the warnings).
    /// `charge` is false only when this request's cells were already spent on the same number.
    async fn add_text(
        &self,
        otp: Otp,
        idempotency: Option<IdempotencyKey>,
        digest: Vec<u8>,
        render: impl Fn(&OtpCreated) -> String,
        note: Option<String>,
        charge: bool,
    ) -> Result<Answer<OtpCreated>, ServiceError> {
        let id = otp.id.clone();
        let now = (self.clock)();
        let not_pending = |st: OtpStatus| {
            ServiceError::Conflict(format!(
                "OTP {id} is {}; only a pending OTP can be resent (create a new one instead)",
                st.as_str()
            ))
        };
        let status = effective_status(&otp, now);
        if status != OtpStatus::Pending {
            return Err(not_pending(status));
        }
        let max_texts = self.settings.max_resends.saturating_add(1);
        if otp.message_ids.len() as u64 >= u64::from(max_texts) {
            return Err(self.resend_cap(&otp, now));
        }
        let to = Msisdn::parse(&otp.to)
            .map_err(|_| ServiceError::Internal(format!("OTP {id} has a bad stored number")))?;
        let first = match otp.message_ids.first() {
            Some(m) => self.store.get_message(m).await.map_err(store_err)?,
            None => None,
        };
        let recorded = self.store.otp_wording(&otp.id).await.map_err(store_err)?;
        let (wording, masked, len) = self.reword(first.as_ref(), recorded, otp.expires_at - now);
        let parts = pdu::plan(&masked).parts;
        if charge {
            self.check_send_limits(&to, parts, "template")?;
        }
        let code = (self.codes)(len);
        let text = wording.replace_code(&code);
        let code_hmac = self.keys.code_hmac(&otp.id, &code).to_vec();
        drop(code);
        let sealed = self.keys.seal(&text);
        drop(text);
        let message_id = new_id(MSG_ID_PREFIX);
        let mut warnings = warnings_for(&masked, parts);
        warnings.extend(note);
        let created = OtpCreated {
            id: otp.id.clone(),
            to: to.as_str().to_owned(),
            status: OtpStatus::Pending,
            message_id: message_id.clone(),
            expires_at: otp.expires_at,
            parts: parts_u32(parts),
            warnings,
        };
        let idem = idempotency_record(idempotency.as_ref(), &digest, || render(&created));
        let answer = idem.as_ref().map(|i| i.response.clone());
        let outcome = self
            .store
            .add_otp_text(NewOtpText {
                otp_id: otp.id.clone(),
                code_hmac,
                msg: NewMessage {
                    id: message_id.clone(),
                    to: to.as_str().to_owned(),
                    kind: MessageKind::Otp,
                    log_text: masked,
                    body: Body::Sealed(sealed),
                    parts: parts_u32(parts),
                    created_at: now,
                    deadline: otp.expires_at,
                },
                idem,
                max_texts,
                daily_cap: self.settings.otp_per_number_per_day,
                queue_max: self.settings.queue_max,
            })
            .await
            .map_err(store_err)?;
        match outcome {
            AddTextOutcome::Added => {
                self.wake.notify_one();
                if let Some(a) = answer {
                    self.remember(idempotency.as_ref(), digest, &a);
                }
                tracing::info!(otp = %otp.id, message = %message_id, parts, "OTP text added");
                Ok(Answer::New(created))
            }
            AddTextOutcome::Replay(stored) => {
                self.remember(idempotency.as_ref(), digest, &stored);
                Ok(Answer::Replay(stored))
            }
            AddTextOutcome::IdempotencyConflict => Err(ServiceError::IdempotencyMismatch),
            AddTextOutcome::NotFound => Err(ServiceError::NotFound { what: "OTP", id }),
            AddTextOutcome::NotPending(st) => Err(not_pending(st)),
            AddTextOutcome::TextCap { .. } => Err(self.resend_cap(&otp, now)),
            AddTextOutcome::DailyLimit { retry_after_ms } => {
                Err(self.daily_limited(&to, retry_after_ms))
            }
            AddTextOutcome::QueueFull => Err(self.queue_full()),
        }
    }

    /// 429 for an OTP that has all the texts `otp.max_resends` allows; a new code can be asked
    /// for once it expires (or at once with `on_pending = "supersede"`).
    fn resend_cap(&self, otp: &Otp, now: Millis) -> ServiceError {
        let max = self.settings.max_resends;
        self.rejected(
            LimitName::MaxResends,
            format!(
                "max_resends: OTP {} has had {} (the first and otp.max_resends = {max}); every \
                 code sent stays valid until it expires, so each resend raises the odds of a \
                 guess; ask the user for a code already sent, or wait for the expiry (or create \
                 the OTP again with \"on_pending\": \"supersede\")",
                otp.id,
                otp::count_noun(u64::from(max) + 1, "text"),
            ),
            retry_secs(otp.expires_at - now),
        )
    }

    /// The wording of an added text: the first text with its codes where the store recorded
    /// them; for OTPs from before that record, the first text's masked form when it has exactly
    /// the mask of one code length; else the configured template for the remaining lifetime.
    fn reword(
        &self,
        first: Option<&Message>,
        recorded: Option<OtpWording>,
        remaining_ms: Millis,
    ) -> (Wording, String, CodeLength) {
        if let Some(m) = first {
            let exact = recorded.and_then(|r| Wording::from_offsets(&m.log_text, &r));
            if let Some(w) = exact.or_else(|| Wording::from_masked(&m.log_text)) {
                let masked = w.masked();
                let len = w.len;
                return (w, masked, len);
            }
        }
        let len = self.settings.code_length;
        let secs = u64::try_from(remaining_ms.max(1000) / 1000).unwrap_or(1);
        let placeholder = "\u{0}".repeat(len.get());
        let w = otp::render(
            &self.settings.template,
            &placeholder,
            Duration::from_secs(secs),
            None,
            None,
        )
        .ok()
        .and_then(|r| Wording::split(&r.text, &placeholder, len))
        .unwrap_or_else(|| Wording {
            pieces: vec![String::new(), String::new()],
            len,
        });
        let masked = w.masked();
        (w, masked, len)
    }

    /// The request field to blame when a text cannot fit a limit: the one whose default would
    /// shorten it most.
    fn blame(&self, t: &TextInputs<'_>) -> &'static str {
        self.shortest_without(t).map_or("template", |(f, _)| f)
    }

    /// Of the fields the request chose, the one whose removal (or default) gives the fewest
    /// parts, with that count.
    fn shortest_without(&self, t: &TextInputs<'_>) -> Option<(&'static str, usize)> {
        let parts = |template: &str,
                     len: CodeLength,
                     origin: Option<&Origin>,
                     app_hash: Option<&AppHash>| {
            let mask = "*".repeat(len.get());
            otp::render(template, &mask, t.ttl, origin, app_hash)
                .map(|r| pdu::plan(&r.masked).parts)
                .unwrap_or(usize::MAX)
        };
        let mut candidates = Vec::new();
        if t.template_requested {
            candidates.push((
                "template",
                parts(&self.settings.template, t.len, t.origin, t.app_hash),
            ));
        }
        if t.origin.is_some() {
            candidates.push(("origin", parts(t.template, t.len, None, t.app_hash)));
        }
        if t.app_hash_requested {
            candidates.push(("app_hash", parts(t.template, t.len, t.origin, None)));
        }
        if t.len_requested {
            candidates.push((
                "code_length",
                parts(t.template, self.settings.code_length, t.origin, t.app_hash),
            ));
        }
        // The first of equals wins: the template is what usually makes a text long.
        candidates
            .into_iter()
            .reduce(|best, c| if c.1 < best.1 { c } else { best })
    }

    /// 422 for an OTP text over `otp.max_parts`, naming the field that made it long and why.
    fn too_many_parts(&self, parts: usize, masked: &str, t: &TextInputs<'_>) -> ServiceError {
        let plan = pdu::plan(masked);
        let chars = masked.chars().count();
        let mut detail = format!(
            "the OTP text would need {parts} SMS parts ({chars} characters), more than \
             otp.max_parts = {}",
            self.settings.max_otp_parts
        );
        if plan.encoding == pdu::Encoding::Ucs2
            && let Some(c) = masked
                .chars()
                .find(|c| pdu::gsm7::char_septets(*c).is_none())
        {
            detail.push_str(&format!(
                "; {c:?} is outside the GSM 7-bit alphabet, so the whole text goes as UCS-2: 70 \
                 characters in one SMS, 67 per part when split, instead of 160 and 153"
            ));
        }
        let (field, hint) = match self.shortest_without(t) {
            Some((field, without)) => {
                let what = match field {
                    "template" => "the configured template instead of this one".to_owned(),
                    "origin" => format!(
                        "the origin line (\"@{} #<code>\", {} characters)",
                        t.origin.map_or("", |o| o.as_str()),
                        t.origin.map_or(0, |o| o.as_str().chars().count()) + t.len.get() + 4,
                    ),
                    "app_hash" => "the app hash line".to_owned(),
                    _ => format!(
                        "{} codes instead of {}",
                        otp::count_noun(self.settings.code_length.get() as u64, "digit"),
                        otp::count_noun(t.len.get() as u64, "digit"),
                    ),
                };
                (
                    field,
                    format!(
                        "; {field} makes it long: with {what} it needs {}",
                        otp::count_noun(without as u64, "part")
                    ),
                )
            }
            None => (
                "template",
                "; the configured template (otp.template) makes it long".to_owned(),
            ),
        };
        detail.push_str(&hint);
        invalid(field, detail)
    }

    /// Cancels a pending OTP (its queued texts are not sent).
    pub async fn cancel(&self, id: &str) -> Result<OtpStatus, ServiceError> {
        check_id(OTP_ID_PREFIX, id)?;
        let now = (self.clock)();
        match self.store.cancel_otp(id, now).await.map_err(store_err)? {
            None => Err(ServiceError::NotFound {
                what: "OTP",
                id: id.to_owned(),
            }),
            Some(OtpStatus::Canceled) => Ok(OtpStatus::Canceled),
            Some(other) => Err(ServiceError::Conflict(format!(
                "OTP {id} is already {}; it cannot be canceled",
                other.as_str()
            ))),
        }
    }

    /// Queues a plain text.
    pub async fn send_text(
        &self,
        req: SendText,
        idempotency: Option<IdempotencyKey>,
        render: impl FnOnce(&TextQueued) -> String,
    ) -> Result<Answer<TextQueued>, ServiceError> {
        let to = Msisdn::parse(&req.to).map_err(|d| invalid("to", d))?;
        check_prefixes(&self.settings.prefixes, &to)?;
        if req.text.trim().is_empty() {
            return Err(invalid("text", "is empty; give the text to send"));
        }
        if req.text.contains('\u{0}') {
            return Err(invalid("text", "contains a NUL character"));
        }
        let parts = pdu::plan(&req.text).parts;
        if parts > self.settings.max_text_parts {
            return Err(invalid(
                "text",
                format!(
                    "too long: it needs {parts} SMS parts, at most {} are allowed",
                    self.settings.max_text_parts
                ),
            ));
        }
        if let Some(k) = &idempotency {
            check_idempotency_key(k)?;
        }
        let digest = request_digest("text", &[Some(to.as_str()), Some(&req.text)]);
        if let Some(seen) = self.cached_replay(idempotency.as_ref(), &digest) {
            return seen.map(Answer::Replay);
        }
        self.check_global(parts, "text")?;
        let now = (self.clock)();
        let id = new_id(MSG_ID_PREFIX);
        let queued = TextQueued {
            id: id.clone(),
            status: MessageStatus::Queued,
            parts: parts_u32(parts),
            warnings: warnings_for(&req.text, parts),
        };
        let idem = idempotency_record(idempotency.as_ref(), &digest, || render(&queued));
        let answer = idem.as_ref().map(|i| i.response.clone());
        let outcome = self
            .store
            .enqueue_text(
                NewMessage {
                    id,
                    to: to.as_str().to_owned(),
                    kind: MessageKind::Text,
                    log_text: req.text.clone(),
                    body: Body::Clear(req.text),
                    parts: parts_u32(parts),
                    created_at: now,
                    deadline: now.saturating_add(ms(self.settings.text_max_age)),
                },
                idem,
                self.settings.queue_max,
            )
            .await
            .map_err(store_err)?;
        let msg_id = queued.id.clone();
        // Plain texts have no daily cap; the store reports one only for OTPs.
        let settled = self.settle(outcome, queued, answer, idempotency.as_ref(), digest, &to)?;
        if matches!(settled, Answer::New(_)) {
            tracing::info!(message = %msg_id, parts, "text queued");
        }
        Ok(settled)
    }

    /// One message of the delivery log.
    pub async fn get_message(&self, id: &str) -> Result<Message, ServiceError> {
        check_id(MSG_ID_PREFIX, id)?;
        self.store
            .get_message(id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ServiceError::NotFound {
                what: "message",
                id: id.to_owned(),
            })
    }

    /// The delivery log, newest first.
    pub async fn list_messages(&self, q: ListMessages) -> Result<Vec<Message>, ServiceError> {
        let to = match &q.to {
            None => None,
            Some(t) => Some(
                Msisdn::parse(t)
                    .map_err(|d| invalid("to", d))?
                    .as_str()
                    .to_owned(),
            ),
        };
        let status = match &q.status {
            None => None,
            Some(s) => Some(MessageStatus::parse(s).ok_or_else(|| {
                let all: Vec<&str> = MessageStatus::ALL.iter().map(|s| s.as_str()).collect();
                invalid(
                    "status",
                    format!(
                        "{:?} is not a message status; use one of {}",
                        shorten(s),
                        all.join(", ")
                    ),
                )
            })?),
        };
        let limit = match &q.limit {
            None => DEFAULT_LIST_LIMIT,
            Some(l) => match l.parse::<i64>() {
                Ok(n) => in_range("limit", n, 1, MAX_LIST_LIMIT as u64, "")? as u32,
                Err(_) => {
                    return Err(invalid(
                        "limit",
                        format!(
                            "{:?} is not a whole number (1 to {MAX_LIST_LIMIT})",
                            shorten(l)
                        ),
                    ));
                }
            },
        };
        // A message id as cursor: (its instant, its id), so paging is exact even when several
        // messages share a millisecond. A time as cursor: strictly older.
        let (before, cursor) = match &q.before {
            None => (None, None),
            Some(b) if b.starts_with(MSG_ID_PREFIX) => {
                check_id(MSG_ID_PREFIX, b).map_err(|_| {
                    invalid(
                        "before",
                        "is neither a message id (msg_…) nor an RFC 3339 time",
                    )
                })?;
                let m = self
                    .store
                    .get_message(b)
                    .await
                    .map_err(store_err)?
                    .ok_or_else(|| invalid("before", format!("message {b} does not exist")))?;
                (Some(m.created_at), Some(b.clone()))
            }
            Some(b) => {
                let t = time::OffsetDateTime::parse(
                    b,
                    &time::format_description::well_known::Rfc3339,
                )
                .map_err(|_| {
                    invalid(
                        "before",
                        format!(
                            "{:?} is neither a message id (msg_…) nor an RFC 3339 time such \
                                 as 2026-01-31T12:00:00Z",
                            shorten(b)
                        ),
                    )
                })?;
                let ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
                (Some(ms), None)
            }
        };
        let filter = |before: Option<Millis>, limit: u32| MessageFilter {
            to: to.clone(),
            status,
            before,
            limit,
        };
        let (Some(at), Some(cursor)) = (before, cursor) else {
            return self
                .store
                .list_messages(filter(before, limit))
                .await
                .map_err(store_err);
        };
        // The store orders by (created_at, insertion) descending and filters by instant only, so
        // ask for everything up to and including the cursor's instant and drop what precedes the
        // cursor in that order, widening the window until a full page follows the cursor.
        let mut fetch = limit.saturating_add(64).min(MAX_LIST_LIMIT);
        loop {
            let rows = self
                .store
                .list_messages(filter(Some(at.saturating_add(1)), fetch))
                .await
                .map_err(store_err)?;
            let exhausted = (rows.len() as u32) < fetch || fetch == MAX_LIST_LIMIT;
            match rows.iter().position(|m| m.id == cursor) {
                Some(i) if exhausted || rows.len() - i > limit as usize => {
                    return Ok(rows.into_iter().skip(i + 1).take(limit as usize).collect());
                }
                // The cursor left the filtered set (e.g. its status changed): everything of its
                // instant is treated as seen.
                None if exhausted => {
                    return Ok(rows
                        .into_iter()
                        .filter(|m| m.created_at < at)
                        .take(limit as usize)
                        .collect());
                }
                _ => fetch = fetch.saturating_mul(4).min(MAX_LIST_LIMIT),
            }
        }
    }
}

/// Checks the shape of a code typed by a user. Non-digits can never match, and refusing them
/// (422, not counted) tells a client about its bug instead of burning an attempt.
fn check_code(code: &str) -> Result<(), ServiceError> {
    if code.is_empty() {
        return Err(invalid("code", "is empty; give the code the user received"));
    }
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "code",
            "must be digits only (strip spaces and dashes the user may have typed)",
        ));
    }
    if !(otp::MIN_CODE_LENGTH..=otp::MAX_CODE_LENGTH).contains(&code.len()) {
        return Err(invalid(
            "code",
            format!(
                "must have {} to {} digits, got {}",
                otp::MIN_CODE_LENGTH,
                otp::MAX_CODE_LENGTH,
                code.len()
            ),
        ));
    }
    Ok(())
}

/// An OTP text with holes where the code goes: `pieces[0] code pieces[1] code … pieces[n]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wording {
    /// The literal text between the codes.
    pieces: Vec<String>,
    /// The code length the text was written for.
    len: CodeLength,
}

impl Wording {
    /// Splits a masked log text at its runs of exactly one code length of `*`.
    fn from_masked(masked: &str) -> Option<Wording> {
        // Find runs of '*' and take the code length from them; every run must have that length,
        // or the text has literal stars we cannot tell from the code.
        let mut runs = Vec::new();
        let mut start = None;
        for (i, c) in masked
            .char_indices()
            .chain(std::iter::once((masked.len(), '\n')))
        {
            match (c == '*', start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    runs.push((s, i));
                    start = None;
                }
                _ => {}
            }
        }
        let first = runs.first()?;
        let n = first.1 - first.0;
        if runs.iter().any(|(s, e)| e - s != n) {
            return None;
        }
        let len = otp::validate_code_length(n).ok()?;
        let mut pieces = Vec::new();
        let mut at = 0;
        for (s, e) in &runs {
            pieces.push(masked[at..*s].to_owned());
            at = *e;
        }
        pieces.push(masked[at..].to_owned());
        Some(Wording { pieces, len })
    }

    /// Splits a masked log text at the offsets the store recorded for its code; `None` when
    /// they do not point at masks of the recorded length (a text from elsewhere).
    fn from_offsets(masked: &str, w: &OtpWording) -> Option<Wording> {
        let len = otp::validate_code_length(w.code_length as usize).ok()?;
        let mut pieces = Vec::new();
        let mut at = 0;
        for &o in &w.code_offsets {
            let end = o.checked_add(len.get())?;
            let mask = masked.get(o..end)?;
            if o < at || !mask.bytes().all(|b| b == b'*') {
                return None;
            }
            pieces.push(masked[at..o].to_owned());
            at = end;
        }
        pieces.push(masked.get(at..)?.to_owned());
        (pieces.len() >= 2).then_some(Wording { pieces, len })
    }

    /// Splits a rendered text at a placeholder code.
    fn split(text: &str, placeholder: &str, len: CodeLength) -> Option<Wording> {
        let pieces: Vec<String> = text.split(placeholder).map(str::to_owned).collect();
        (pieces.len() >= 2).then_some(Wording { pieces, len })
    }

    fn replace_code(&self, code: &str) -> String {
        self.pieces.join(code)
    }

    fn masked(&self) -> String {
        self.replace_code(&"*".repeat(self.len.get()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(input: &str, detail_has: Option<&str>) {
        match (Msisdn::parse(input), detail_has) {
            (Ok(m), None) => assert_eq!(m.as_str(), input),
            (Err(d), Some(want)) => assert!(d.contains(want), "{input:?}: {d:?} lacks {want:?}"),
            (r, want) => panic!("{input:?}: got {r:?}, wanted error containing {want:?}"),
        }
    }

    #[test]
    fn e164_validation_explains_itself() {
        e164("+15551234567", None);
        e164("+4915112345678", None);
        e164("+12345678", None);
        e164("+123456789012345", None);
        e164("", Some("empty"));
        e164("+1 555 123 4567", Some("remove spaces"));
        e164("+1-555-123-4567", Some("remove spaces"));
        e164(" +15551234567", Some("remove spaces"));
        e164("5551234567", Some("add the country code"));
        e164("0015551234567", Some("replace the international prefix 00"));
        e164("+05551234567", Some("starts with 0"));
        e164("+1234567", Some("too short"));
        e164(
            "+1234567890123456",
            Some("too long: 16 digits, but E.164 numbers have at most 15"),
        );
        e164("+1555abc4567", Some("only digits"));
        e164("++15551234567", Some("more than one +"));
        e164("hello", Some("not a phone number"));
    }

    #[test]
    fn prefix_policy_names_the_list() {
        let n = Msisdn::parse("+15551234567").unwrap();
        let p = PrefixPolicy {
            allow: vec!["+44".into()],
            deny: vec![],
        };
        let e = check_prefixes(&p, &n).unwrap_err();
        assert!(e.to_string().contains("allow_prefixes"), "{e}");
        let p = PrefixPolicy {
            allow: vec![],
            deny: vec!["+1555".into()],
        };
        assert!(
            check_prefixes(&p, &n)
                .unwrap_err()
                .to_string()
                .contains("deny_prefixes")
        );
        assert!(check_prefixes(&PrefixPolicy::default(), &n).is_ok());
    }

    #[test]
    fn ids() {
        let id = new_id(OTP_ID_PREFIX);
        assert!(check_id(OTP_ID_PREFIX, &id).is_ok());
        assert!(check_id(MSG_ID_PREFIX, &id).is_err());
        assert!(check_id(OTP_ID_PREFIX, "otp_123").is_err());
        assert!(check_id(OTP_ID_PREFIX, &id.to_uppercase()).is_err());
    }

    #[test]
    fn codes_are_checked_for_shape() {
        assert!(check_code("123456").is_ok());
        for bad in ["", "12 34", "abcdef", "123", "12345678901"] {
            assert!(check_code(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn digests_separate_fields() {
        let a = request_digest("otp", &[Some("ab"), Some("c")]);
        let b = request_digest("otp", &[Some("a"), Some("bc")]);
        let c = request_digest("otp", &[Some("ab"), None]);
        let d = request_digest("text", &[Some("ab"), Some("c")]);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(a, request_digest("otp", &[Some("ab"), Some("c")]));
    }

    #[test]
    fn wording_from_masked_text() {
        let w = Wording::from_masked("Votre code : ******.\n\n@example.com #******").unwrap();
        assert_eq!(w.len.get(), 6);
        assert_eq!(
            w.replace_code("123456"),
            "Votre code : 123456.\n\n@example.com #123456"
        );
        assert_eq!(w.masked(), "Votre code : ******.\n\n@example.com #******");
        // Literal stars of another length make the mask ambiguous: fall back.
        assert!(Wording::from_masked("** code ******").is_none());
        assert!(Wording::from_masked("no code here").is_none());
    }

    #[test]
    fn wording_from_recorded_offsets_survives_literal_stars() {
        // "*{code}" masks to seven stars: the mask alone would make a 7-digit code of it.
        assert_eq!(Wording::from_masked("*******").unwrap().len.get(), 7);
        let w = Wording::from_offsets(
            "*******",
            &OtpWording {
                code_length: 6,
                code_offsets: vec![1],
            },
        )
        .unwrap();
        assert_eq!(w.len.get(), 6);
        assert_eq!(w.replace_code("123456"), "*123456");
        // Offsets that do not point at a mask of the recorded length are not trusted.
        let bad = |offsets: Vec<usize>, len| {
            Wording::from_offsets(
                "Code ****",
                &OtpWording {
                    code_length: len,
                    code_offsets: offsets,
                },
            )
        };
        assert!(bad(vec![0], 4).is_none());
        assert!(bad(vec![6], 4).is_none());
        assert!(bad(vec![5], 6).is_none());
        assert!(bad(vec![], 4).is_none());
        assert_eq!(bad(vec![5], 4).unwrap().replace_code("9876"), "Code 9876");
    }

    #[test]
    fn replay_cache_answers_mismatches_expires_and_evicts() {
        let mut c = ReplayCache::default();
        let k = |key: &str| IdempotencyKey {
            scope: "t".into(),
            key: key.into(),
        };
        c.insert(&k("a"), vec![1], "answer".into(), 1_000);
        assert_eq!(c.lookup(&k("a"), &[1], 2_000), Some(Ok("answer".into())));
        assert_eq!(
            c.lookup(&k("a"), &[2], 2_000),
            Some(Err(ServiceError::IdempotencyMismatch))
        );
        assert_eq!(c.lookup(&k("b"), &[1], 2_000), None);
        assert_eq!(c.lookup(&k("a"), &[1], 1_000 + DAY_MS), None);
        let other_scope = IdempotencyKey {
            scope: "u".into(),
            key: "a".into(),
        };
        assert_eq!(c.lookup(&other_scope, &[1], 2_000), None);
        for i in 0..REPLAY_CACHE_MAX {
            c.insert(&k(&format!("k{i}")), vec![0], String::new(), 3_000);
        }
        assert_eq!(c.entries.len(), REPLAY_CACHE_MAX);
        assert_eq!(c.lookup(&k("a"), &[1], 3_000), None, "oldest evicted");
    }

    #[test]
    fn warnings_for_long_texts() {
        assert!(warnings_for("short", 1).is_empty());
        let w = warnings_for(&"x".repeat(200), 2);
        assert_eq!(w, vec!["the text needs 2 SMS parts".to_owned()]);
    }
}
