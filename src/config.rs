//! Configuration: `RawConfig` (TOML, deny_unknown_fields) → validated `Config`.
//!
//! Two stages, as in ripgrep's flags: serde reads the file into [`RawConfig`], whose fields are
//! plain TOML values with the documented defaults, and [`RawConfig::validate`] turns it into a
//! typed [`Config`] (`SocketAddr`, `Duration`, `Rate`, `PathBuf`, ...) or a [`ConfigError`] that
//! names the file, the dotted key (`limits.otp_per_number`, `modem[1].baud`) and the reason,
//! with line and column where the TOML parser knows them. The defaults live in exactly one place,
//! `RawConfig::default()`, so the example file, `Config::default()` and an empty file agree;
//! `wiring` derives from a `Config` the settings each other part is handed (and their
//! defaults), so those parts never see the config.
//!
//! This is the only module that knows TOML. It reads two kinds of files: the config file and a
//! modem's `pin_file`; it never logs a token or a PIN, and `Debug` of the settings hides them.

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::limits::{PrefixPolicy, Rate, RateSettings};
use crate::modem::discovery::{self, DeviceIdentity};
use crate::otp::{self, AppHash, CodeLength};

pub mod hooks;
pub mod twilio;
mod wiring;
pub use hooks::{SupabaseSettings, ZitadelSettings};
pub use twilio::TwilioSettings;

/// Where `serve` looks for the config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/simgate/simgate.toml";
/// Environment variable holding the SIM PIN when a modem has no `pin_file`.
pub const PIN_ENV: &str = "SIMGATE_PIN";

/// A config file that cannot be used: which file, which key, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as given (or another origin such as `<defaults>`), so the operator knows
    /// which of several files to fix.
    pub origin: String,
    /// Dotted key path (`modem[1].baud`); `None` for errors about the whole file.
    pub key: Option<String>,
    /// 1-based line and column, when the TOML parser can point at the spot.
    pub position: Option<(usize, usize)>,
    /// What is wrong, in words; never contains a token or a PIN.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn at(origin: &str, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: origin.to_string(),
            key: Some(key.into()),
            position: None,
            reason: reason.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stage 1: the file as serde sees it.

/// The config file as written, with SPEC.md's defaults for every missing key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `[api]`.
    pub api: RawApi,
    /// `[store]`.
    pub store: RawStore,
    /// `[otp]`.
    pub otp: RawOtp,
    /// `[limits]`.
    pub limits: RawLimits,
    /// `[dispatch]`.
    pub dispatch: RawDispatch,
    /// `[log]`.
    pub log: RawLog,
    /// `[ui]`: the status page.
    pub ui: RawUi,
    /// `[inbound]`.
    pub inbound: RawInbound,
    /// `[[modem]]` tables; `None` when the file has none, which means one default modem.
    pub modem: Option<Vec<RawModem>>,
    /// `[twilio]`: the Twilio-compatible API, off by default.
    pub twilio: twilio::RawTwilio,
    /// `[[webhook]]` tables: endpoints the event outbox is delivered to (none by default).
    pub webhook: Vec<crate::webhook::config::RawWebhook>,
    /// `[supabase]`: the Supabase Auth Send SMS Hook, off by default.
    pub supabase: hooks::RawSupabase,
    /// `[zitadel]`: Zitadel's HTTP SMS provider, off by default.
    pub zitadel: hooks::RawZitadel,
}

/// `[api]` as written.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApi {
    /// `api.listen`: the HTTP listen address.
    pub listen: String,
    /// `api.tokens`: bearer tokens.
    pub tokens: Vec<String>,
    /// `api.max_body_bytes`: request body limit.
    pub max_body_bytes: u64,
    /// `api.idle_timeout_seconds`: how long a connection may wait for a request.
    pub idle_timeout_seconds: u64,
    /// `api.header_timeout_seconds`: how long a request head may take to arrive.
    pub header_timeout_seconds: u64,
    /// `api.body_timeout_seconds`: how long a request body may take to arrive.
    pub body_timeout_seconds: u64,
    /// `api.max_connections`: connections open at once.
    pub max_connections: u64,
}

impl fmt::Debug for RawApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawApi")
            .field("listen", &self.listen)
            .field("tokens", &format_args!("[{} hidden]", self.tokens.len()))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("idle_timeout_seconds", &self.idle_timeout_seconds)
            .field("header_timeout_seconds", &self.header_timeout_seconds)
            .field("body_timeout_seconds", &self.body_timeout_seconds)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl Default for RawApi {
    fn default() -> Self {
        RawApi {
            listen: "127.0.0.1:8787".into(),
            tokens: Vec::new(),
            max_body_bytes: 16_384,
            idle_timeout_seconds: 30,
            header_timeout_seconds: 10,
            body_timeout_seconds: 10,
            max_connections: 256,
        }
    }
}

/// `[store]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// `store.data_dir`.
    pub data_dir: PathBuf,
    /// `store.retention_days`.
    pub retention_days: u32,
    /// `store.mask_numbers_after_days`.
    pub mask_numbers_after_days: u32,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            data_dir: PathBuf::from("/var/lib/simgate"),
            retention_days: 30,
            mask_numbers_after_days: 7,
        }
    }
}

/// `[otp]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOtp {
    /// `otp.length`.
    pub length: u64,
    /// `otp.ttl_seconds`.
    pub ttl_seconds: u64,
    /// `otp.min_ttl_seconds`.
    pub min_ttl_seconds: u64,
    /// `otp.max_ttl_seconds`.
    pub max_ttl_seconds: u64,
    /// `otp.max_attempts`.
    pub max_attempts: u32,
    /// `otp.template`.
    pub template: String,
    /// `otp.app_hash`; empty means none.
    pub app_hash: String,
    /// `otp.max_parts`.
    pub max_parts: u32,
    /// `otp.max_resends`.
    pub max_resends: u32,
    /// `otp.on_pending`: `"reuse"` or `"supersede"`.
    pub on_pending: String,
}

impl Default for RawOtp {
    fn default() -> Self {
        RawOtp {
            length: otp::DEFAULT_CODE_LENGTH as u64,
            ttl_seconds: 300,
            min_ttl_seconds: otp::DEFAULT_MIN_TTL.as_secs(),
            max_ttl_seconds: otp::DEFAULT_MAX_TTL.as_secs(),
            max_attempts: 5,
            template: otp::DEFAULT_TEMPLATE.into(),
            app_hash: String::new(),
            max_parts: otp::DEFAULT_MAX_PARTS as u32,
            max_resends: otp::DEFAULT_MAX_RESENDS,
            on_pending: "reuse".into(),
        }
    }
}

/// `[limits]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// `limits.otp_per_number`.
    pub otp_per_number: String,
    /// `limits.otp_per_number_per_day`.
    pub otp_per_number_per_day: u32,
    /// `limits.verify_per_number`.
    pub verify_per_number: String,
    /// `limits.otp_per_prefix`.
    pub otp_per_prefix: String,
    /// `limits.prefix_digits`.
    pub prefix_digits: u32,
    /// `limits.requests_per_token`.
    pub requests_per_token: String,
    /// `limits.sends_global`.
    pub sends_global: String,
    /// `limits.queue_max`.
    pub queue_max: u64,
    /// `limits.allow_prefixes`.
    pub allow_prefixes: Vec<String>,
    /// `limits.deny_prefixes`.
    pub deny_prefixes: Vec<String>,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            otp_per_number: "3/10m".into(),
            otp_per_number_per_day: 10,
            verify_per_number: "10/1m".into(),
            otp_per_prefix: "30/10m".into(),
            prefix_digits: 6,
            requests_per_token: "off".into(),
            sends_global: "off".into(),
            queue_max: 100_000,
            allow_prefixes: Vec::new(),
            deny_prefixes: Vec::new(),
        }
    }
}

/// `[dispatch]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDispatch {
    /// `dispatch.on_unknown_outcome`: `"resend"` or `"fail"`.
    pub on_unknown_outcome: String,
    /// `dispatch.text_max_age_seconds`.
    pub text_max_age_seconds: u64,
    /// `dispatch.max_attempts`: 0 = only the deadline bounds retries.
    pub max_attempts: u32,
    /// `dispatch.max_unknown_outcomes`.
    pub max_unknown_outcomes: u32,
    /// `dispatch.max_partial_resends`.
    pub max_partial_resends: u32,
}

impl Default for RawDispatch {
    fn default() -> Self {
        RawDispatch {
            on_unknown_outcome: "resend".into(),
            text_max_age_seconds: 86_400,
            max_attempts: 10,
            max_unknown_outcomes: 3,
            max_partial_resends: 1,
        }
    }
}

/// `[log]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `log.level`: a tracing filter such as `info` or `simgate=debug,info`.
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
        }
    }
}

/// `[ui]` as written (docs/ui.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUi {
    /// `ui.enabled`: serve the status page; absent means off, except under `serve --simulate`.
    pub enabled: Option<bool>,
    /// `ui.session_minutes`: how long a sign-in lasts.
    pub session_minutes: u64,
    /// `ui.secure_cookie`: mark the session cookie `Secure` (behind a TLS reverse proxy).
    pub secure_cookie: bool,
}

impl Default for RawUi {
    fn default() -> Self {
        RawUi {
            enabled: None,
            session_minutes: 480,
            secure_cookie: false,
        }
    }
}

/// `[inbound]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawInbound {
    /// `inbound.enabled`.
    pub enabled: bool,
    /// `inbound.reassembly_timeout_seconds`.
    pub reassembly_timeout_seconds: u64,
}

impl Default for RawInbound {
    fn default() -> Self {
        RawInbound {
            enabled: false,
            reassembly_timeout_seconds: 3600,
        }
    }
}

/// One `[[modem]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawModem {
    /// `modem[i].id`; empty means `modem<i>`.
    pub id: String,
    /// `modem[i].device`; absent means the default device, unless an identity is given.
    pub device: Option<PathBuf>,
    /// `modem[i].imei`; empty means none.
    pub imei: String,
    /// `modem[i].iccid`; empty means none.
    pub iccid: String,
    /// `modem[i].usb_serial`; empty means none.
    pub usb_serial: String,
    /// `modem[i].scan`: where to look for a modem named by identity.
    pub scan: Vec<String>,
    /// `modem[i].baud`.
    pub baud: u32,
    /// `modem[i].pin_file`; empty means none.
    pub pin_file: PathBuf,
    /// Present only to refuse it with a helpful message: a PIN must not sit in a config file
    /// that is often world-readable and checked into configuration management.
    pub pin: Option<IgnoredAny>,
    /// `modem[i].delivery_reports`.
    pub delivery_reports: bool,
    /// `modem[i].send_timeout_seconds`.
    pub send_timeout_seconds: u64,
    /// `modem[i].sends_per_minute`.
    pub sends_per_minute: u32,
    /// `modem[i].command_gap_ms`.
    pub command_gap_ms: u64,
}

impl Default for RawModem {
    fn default() -> Self {
        RawModem {
            id: String::new(),
            device: None,
            imei: String::new(),
            iccid: String::new(),
            usb_serial: String::new(),
            scan: discovery::DEFAULT_SCAN
                .iter()
                .map(|s| s.to_string())
                .collect(),
            baud: 115_200,
            pin_file: PathBuf::new(),
            pin: None,
            delivery_reports: true,
            send_timeout_seconds: 60,
            sends_per_minute: 20,
            command_gap_ms: 1,
        }
    }
}

/// The device of the default modem (the udev rule in `udev/` creates this symlink).
pub const DEFAULT_DEVICE: &str = "/dev/simgate-modem";

// ---------------------------------------------------------------------------------------------
// Stage 2: the validated, typed configuration.

/// A validated configuration: every value typed and in range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The HTTP API.
    pub api: ApiSettings,
    /// The SQLite store.
    pub store: StoreSettings,
    /// OTP policy.
    pub otp: OtpSettings,
    /// Rate limits, caps and destination prefixes.
    pub limits: LimitSettings,
    /// Dispatcher behaviour.
    pub dispatch: DispatchSettings,
    /// Logging.
    pub log: LogSettings,
    /// The status page.
    pub ui: UiSettings,
    /// Inbound texts.
    pub inbound: InboundSettings,
    /// The modems, in file order; never empty.
    pub modems: Vec<ModemSettings>,
    /// The Twilio-compatible API; `None` when off.
    pub twilio: Option<TwilioSettings>,
    /// Webhook endpoints, in file order; empty when none is configured.
    pub webhooks: Vec<crate::webhook::config::WebhookSettings>,
    /// The Supabase Auth Send SMS Hook; `None` when off.
    pub supabase: Option<SupabaseSettings>,
    /// Zitadel's HTTP SMS provider; `None` when off.
    pub zitadel: Option<ZitadelSettings>,
}

/// `[api]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiSettings {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Accepted bearer tokens; empty means `serve` creates and uses `<data_dir>/api-token`.
    pub tokens: Vec<String>,
    /// Largest request body accepted, so a client cannot make the daemon buffer megabytes.
    pub max_body_bytes: usize,
    /// Per-connection timeouts and the connection cap (`src/http/server.rs`).
    pub connections: crate::http::ConnLimits,
}

impl fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiSettings")
            .field("listen", &self.listen)
            .field("tokens", &format_args!("[{} hidden]", self.tokens.len()))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("connections", &self.connections)
            .finish()
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Directory for the database, the key file, the API token and the simulator log.
    pub data_dir: PathBuf,
    /// Days a final message stays in the log; `0` keeps messages forever.
    pub retention_days: u32,
    /// Days after which recipient numbers of final messages are masked in the log; `0` never
    /// masks. Numbers are personal data; the log needs them only while support may ask.
    pub mask_numbers_after_days: u32,
}

/// `[otp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpSettings {
    /// Default code length when a request gives none.
    pub length: CodeLength,
    /// Default lifetime when a request gives none.
    pub ttl: Duration,
    /// Smallest `ttl_seconds` a request may ask for.
    pub min_ttl: Duration,
    /// Largest `ttl_seconds` a request may ask for.
    pub max_ttl: Duration,
    /// Wrong attempts after which an OTP is `max_attempts_reached`.
    pub max_attempts: u32,
    /// Default text template; validated to contain `{code}`.
    pub template: String,
    /// Android SMS Retriever hash appended to every OTP text, if the operator's app needs it.
    pub app_hash: Option<AppHash>,
    /// Most SMS parts one OTP text may take; longer ones are refused with the field to blame.
    pub max_parts: usize,
    /// Resends allowed per OTP: every code sent stays valid, so each one adds to a guesser's odds.
    pub max_resends: u32,
    /// What `POST /v1/otp` does for a number with a pending OTP when the request does not say.
    pub on_pending: otp::OnPending,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSettings {
    /// The in-memory rates handed to `limits::Limits`.
    pub rates: RateSettings,
    /// OTPs per number per day, counted in the store so it survives restarts; `0` = off.
    pub otp_per_number_per_day: u32,
    /// Queued messages beyond which new requests get 503 with `Retry-After`.
    pub queue_max: u64,
    /// Which destination prefixes may receive texts.
    pub prefixes: PrefixPolicy,
}

/// What the dispatcher does when a send's outcome is unknown (PDU written, no `+CMGS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownOutcome {
    /// Send again: the user may get two texts, but an OTP that never arrives is worse.
    Resend,
    /// Mark the message failed: never risk a duplicate (e.g. for costly or non-idempotent texts).
    Fail,
}

/// `[dispatch]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchSettings {
    /// Policy for sends whose outcome cannot be known.
    pub on_unknown_outcome: UnknownOutcome,
    /// A plain text still queued after this long is `expired` instead of sent late.
    pub text_max_age: Duration,
    /// Times a message may be handed to a modem before a failure fails it for good; 0 = no cap
    /// (the deadline alone bounds retries).
    pub max_attempts: u32,
    /// Unknown outcomes (PDU written, no `+CMGS`) after which a message fails instead of being
    /// sent yet again: each one may have been a delivered duplicate.
    pub max_unknown_outcomes: u32,
    /// Whole-message resends of a multi-part text after some of its parts were accepted (the
    /// recipient already has those parts, so every resend duplicates them).
    pub max_partial_resends: u32,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// A `tracing_subscriber::EnvFilter` directive; `RUST_LOG` still overrides it.
    pub level: String,
}

/// `[ui]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiSettings {
    /// `Some(true|false)` when the file says; `None` means off, except under `serve --simulate`.
    pub enabled: Option<bool>,
    /// How long a sign-in lasts before the page asks for the token again.
    pub session: Duration,
    /// Always mark the session cookie `Secure` (it is also marked when a proxy says
    /// `X-Forwarded-Proto: https`).
    pub secure_cookie: bool,
}

/// `[inbound]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundSettings {
    /// Whether received texts are stored (and then deleted from the SIM). Off by default: a
    /// daemon that was never asked to keep texts leaves them on the SIM for their owner.
    pub enabled: bool,
    /// How long the parts of a concatenated text wait for the rest before they are kept as one
    /// message marked incomplete.
    pub reassembly_timeout: Duration,
}

/// One `[[modem]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModemSettings {
    /// Stable name used in logs, metrics and `GET /v1/modems` (`modem0`, `modem1`, ... by
    /// default), so a modem keeps its name when its device path changes.
    pub id: String,
    /// Serial device path (often a udev symlink). Empty when the modem is found by `identity`
    /// alone; with both, the identity is expected at this device.
    pub device: PathBuf,
    /// What the modem is (IMEI, ICCID or USB serial), so it is found wherever the kernel
    /// named its port this time.
    pub identity: Option<DeviceIdentity>,
    /// Glob patterns of candidate ports for `identity` (`*` in the last component only).
    pub scan: Vec<String>,
    /// Serial speed; USB modems ignore it, real UARTs do not.
    pub baud: u32,
    /// File holding the SIM PIN, if the SIM needs one and `SIMGATE_PIN` is not used.
    pub pin_file: Option<PathBuf>,
    /// Whether to request status reports (TP-SRR) so `delivered` can be known.
    pub delivery_reports: bool,
    /// How long to wait for `+CMGS` before the outcome is unknown.
    pub send_timeout: Duration,
    /// Sends per minute on this SIM (carrier anti-spam); `0` = no limit.
    pub sends_per_minute: u32,
    /// The pause between a modem's answer and the next command (see
    /// [`crate::modem::ModemConfig::command_gap`]).
    pub command_gap: Duration,
}

/// Why a PIN could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The pin file could not be read.
    #[error("cannot read pin_file {path}: {source}")]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The pin file may be read by group or others.
    #[error("pin_file {} is open to group or others; run: chmod 600 {}", .0.display(), .0.display())]
    Permissions(PathBuf),
    /// The PIN is not 4–8 digits (TS 27.007 §8.3 `+CPIN`; SIMs use 4–8 digit PINs). The value
    /// itself is never shown.
    #[error("the PIN from {0} is not 4 to 8 digits")]
    Format(String),
}

impl ModemSettings {
    /// A modem with default settings on `device`, as `--device` creates them.
    pub fn new(id: impl Into<String>, device: impl Into<PathBuf>) -> ModemSettings {
        let raw = RawModem::default();
        ModemSettings {
            id: id.into(),
            device: device.into(),
            identity: None,
            scan: raw.scan,
            baud: raw.baud,
            pin_file: None,
            delivery_reports: raw.delivery_reports,
            send_timeout: Duration::from_secs(raw.send_timeout_seconds),
            sends_per_minute: raw.sends_per_minute,
            command_gap: Duration::from_millis(raw.command_gap_ms),
        }
    }

    /// The SIM PIN: from `pin_file` (trimmed) if set, else from `SIMGATE_PIN`, else `None`.
    pub fn pin(&self) -> Result<Option<String>, PinError> {
        self.pin_with_env(std::env::var(PIN_ENV).ok())
    }

    /// [`ModemSettings::pin`] with the environment value passed in, so tests need not mutate
    /// the process environment.
    pub fn pin_with_env(&self, env: Option<String>) -> Result<Option<String>, PinError> {
        let (pin, source) = if let Some(path) = &self.pin_file {
            let read_err = |source| PinError::Read {
                path: path.clone(),
                source,
            };
            let mut file = std::fs::File::open(path).map_err(read_err)?;
            let mode = file.metadata().map_err(read_err)?.mode();
            // Same rule as the OTP key file: a secret others can read is refused, not used.
            if mode & 0o077 != 0 {
                return Err(PinError::Permissions(path.clone()));
            }
            let mut text = String::new();
            file.read_to_string(&mut text).map_err(read_err)?;
            (text.trim().to_string(), path.display().to_string())
        } else {
            match env {
                Some(v) if !v.trim().is_empty() => (v.trim().to_string(), PIN_ENV.to_string()),
                _ => return Ok(None),
            }
        };
        if (4..=8).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Some(pin))
        } else {
            Err(PinError::Format(source))
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        RawConfig::default()
            .validate("<defaults>")
            .expect("the built-in defaults are valid")
    }
}

impl Config {
    /// What `serve` refuses at start beyond the file's own contents: a modem whose PIN cannot
    /// be read, is readable by group or others, or is not 4 to 8 digits; likewise the secret
    /// files of `[twilio]`, `[supabase]` and `[zitadel]`. `serve`, `config
    /// check` and `doctor` all call this one function, so a file the checkers pass is one
    /// `serve` starts with. `env` is `SIMGATE_PIN` for modems without a `pin_file`: `serve`
    /// passes its own environment; the checkers pass `None`, since the service's environment
    /// (`/etc/simgate/simgate.env`) is not the shell's.
    pub fn check_startup(&self, origin: &str, env: Option<&str>) -> Result<(), ConfigError> {
        for (i, modem) in self.modems.iter().enumerate() {
            let key = match modem.pin_file {
                Some(_) => format!("modem[{i}].pin_file"),
                None => PIN_ENV.to_string(),
            };
            let Err(e) = modem.pin_with_env(env.map(str::to_string)) else {
                continue;
            };
            let reason = match e {
                PinError::Read { path, source } => {
                    format!("cannot read {}: {source}", path.display())
                }
                PinError::Permissions(path) => format!(
                    "{} can be read by group or others, and serve refuses it: make it the \
                     service user's alone with sudo chown simgate:simgate {} && sudo chmod 600 \
                     {}",
                    path.display(),
                    path.display(),
                    path.display()
                ),
                PinError::Format(from) => format!("the PIN in {from} is not 4 to 8 digits"),
            };
            return Err(ConfigError::at(origin, &key, reason));
        }
        if let Some(t) = &self.twilio {
            let key = match t.token {
                twilio::TokenSource::File(_) => "twilio.auth_token_file",
                twilio::TokenSource::Inline(_) => "twilio.auth_token",
            };
            t.auth_token()
                .map_err(|reason| ConfigError::at(origin, key, reason))?;
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            let key = match w.secret {
                crate::webhook::config::SecretSource::File(_) => "secret_file",
                crate::webhook::config::SecretSource::Inline(_) => "secret",
            };
            w.secrets()
                .map_err(|reason| ConfigError::at(origin, format!("webhook[{i}].{key}"), reason))?;
        }
        if let Some(s) = &self.supabase {
            s.secrets()
                .map_err(|reason| ConfigError::at(origin, "supabase.secret_file", reason))?;
        }
        if let Some(z) = &self.zitadel {
            z.signing_key()
                .map_err(|reason| ConfigError::at(origin, "zitadel.signing_key_file", reason))?;
        }
        Ok(())
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            key: None,
            position: None,
            reason: format!("cannot read: {e}"),
        })?;
        Config::from_toml_str(&text, &origin)
    }

    /// Parses and validates TOML text; `origin` names it in errors (usually the file path).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        RawConfig::from_toml_str(text, origin)?
            .validate(origin)
            .map_err(|mut e| {
                // Validation works on values, not text; find the value again to point at it.
                if e.position.is_none()
                    && let Some(key) = &e.key
                {
                    e.position = locate(text, key);
                }
                e
            })
    }

    /// Things that are allowed but probably unintended, for `serve` to log at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if !self.api.listen.ip().is_loopback() {
            w.push(format!(
                "api.listen {} is not a loopback address: the API will be reachable from other \
                 hosts; put TLS and a firewall in front of it",
                self.api.listen
            ));
        }
        if self.otp.ttl > Duration::from_secs(15 * 60) {
            w.push(format!(
                "otp.ttl_seconds {} is long for a one-time code",
                self.otp.ttl.as_secs()
            ));
        }
        w
    }

    /// Replaces the modems by defaults on `devices` (`serve --device`), named `modem0`, ...
    /// Does nothing when `devices` is empty.
    pub fn set_devices(&mut self, devices: &[PathBuf]) {
        if devices.is_empty() {
            return;
        }
        self.modems = devices
            .iter()
            .enumerate()
            .map(|(i, d)| ModemSettings::new(format!("modem{i}"), d.clone()))
            .collect();
    }
}

/// `api.listen`: an IP address and a port. A host name is refused rather than resolved: the
/// config stage does no I/O, and `localhost` may resolve to 127.0.0.1, ::1 or both, so the
/// address the API binds would depend on the resolver of the day.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        let example = SocketAddr::new(ip, 8787);
        return Err(format!(
            "{text:?} has no port: write the address and a port, e.g. \"{example}\""
        ));
    }
    if let Some((host, port)) = text.rsplit_once(':')
        && !host.is_empty()
        && !host.contains(':')
        && port.parse::<u16>().is_ok()
    {
        let suggestion = if host.eq_ignore_ascii_case("localhost") {
            format!(" (for {host}: \"127.0.0.1:{port}\", or \"[::1]:{port}\" for IPv6)")
        } else {
            String::new()
        };
        return Err(format!(
            "{text:?} names the host {host:?}: api.listen takes an IP address and a port, not a \
             host name, since simgate does not resolve names{suggestion}"
        ));
    }
    Err(format!(
        "{text:?} is not an IP address with a port (e.g. \"127.0.0.1:8787\" or \"[::1]:8787\")"
    ))
}

/// The levels a `log.level` directive may name, quietest first.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks `log.level` beyond what the filter parser does. `tracing`'s filter reads a bare word
/// that is not a level as a *target* (`verbose` means "trace for the module `verbose`, nothing
/// else"), so a misspelt level silently turns every simgate line off, errors included. Here each
/// directive must be a level or `target=level`, and the whole must leave simgate's own lines
/// on unless it says `off` outright.
fn check_log_filter(filter: &str) -> Result<(), String> {
    let levels = LOG_LEVELS.join(", ");
    let is_level = |w: &str| LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(w.trim()));
    let mut default_level = None;
    let mut simgate_on = false;
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match directive.rsplit_once('=') {
            None if is_level(directive) => default_level = Some(directive.to_ascii_lowercase()),
            None => {
                return Err(format!(
                    "{directive:?} is not a log level: use one of {levels}, or target=level \
                     pairs such as \"simgate=debug,info\""
                ));
            }
            Some((target, level)) => {
                if !is_level(level) {
                    return Err(format!(
                        "{directive:?}: {level:?} is not a log level (one of {levels})"
                    ));
                }
                if target.trim().is_empty() {
                    return Err(format!("{directive:?} names no target before '='"));
                }
                if target.trim().starts_with("simgate") && !level.trim().eq_ignore_ascii_case("off")
                {
                    simgate_on = true;
                }
            }
        }
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(filter) {
        return Err(format!("{filter:?} is not a log filter ({e})"));
    }
    match default_level.as_deref() {
        Some(_) => Ok(()),
        None if simgate_on => Ok(()),
        None => Err(format!(
            "{filter:?} shows no simgate log line, not even errors: add a level ({levels}), e.g. \
             \"{}info\"",
            if filter.trim().is_empty() {
                String::new()
            } else {
                format!("{},", filter.trim())
            }
        )),
    }
}

/// A configured identity, checked for the shape modems report it in: an IMEI is 14 to 16
/// digits (TS 23.003 §6.2: IMEI 15 with its check digit, IMEISV 16), an ICCID 18 to 22 digits
/// with an optional `F` filler (ITU-T E.118), a USB serial printable ASCII without spaces.
fn parse_identity(key: &str, value: &str) -> Result<DeviceIdentity, String> {
    match key {
        "imei" => {
            if (14..=16).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit()) {
                Ok(DeviceIdentity::Imei(value.to_string()))
            } else {
                Err(format!("{value:?} is not an IMEI (14 to 16 digits)"))
            }
        }
        "iccid" => {
            let digits = value.trim_end_matches(['F', 'f']);
            if (18..=22).contains(&value.len())
                && value.len() - digits.len() <= 1
                && digits.bytes().all(|b| b.is_ascii_digit())
            {
                Ok(DeviceIdentity::Iccid(value.to_ascii_uppercase()))
            } else {
                Err(format!("{value:?} is not an ICCID (18 to 22 digits)"))
            }
        }
        _ => {
            if value.len() <= 126 && value.bytes().all(|b| b.is_ascii_graphic()) {
                Ok(DeviceIdentity::UsbSerial(value.to_string()))
            } else {
                Err(format!(
                    "{value:?} is not a USB serial number (printable ASCII without spaces)"
                ))
            }
        }
    }
}

/// Line and column of the value at a dotted key path such as `modem[1].baud` or
/// `api.tokens[0]`, if the text has it (a missing key means its default was at fault).
fn locate(text: &str, key: &str) -> Option<(usize, usize)> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let root = toml::Spanned::new(root.span(), toml::de::DeValue::Table(root.into_inner()));
    let mut cur = &root;
    for part in key.split('.') {
        let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        cur = cur.get_ref().get(name)?;
        while !rest.is_empty() {
            let (idx, after) = rest.split_once(']')?;
            cur = cur.get_ref().get(idx.parse::<usize>().ok()?)?;
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    Some(line_col(text, cur.span().start))
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl RawConfig {
    /// Parses TOML into the raw form, naming the key and position of the first problem.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
        let syntax = |e: toml::de::Error| ConfigError {
            origin: origin.to_string(),
            key: None,
            position: e.span().map(|s| line_col(text, s.start)),
            reason: e.message().trim().to_string(),
        };
        let de = toml::de::Deserializer::parse(text).map_err(syntax)?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let mut reason = inner.message().trim().to_string();
            // serde_path_to_error already ends the path with the unknown key's name; say plainly
            // that the key itself is the problem rather than its value.
            if reason.starts_with("unknown field `") {
                // `pin` is a field only so that it can be refused; don't advertise it.
                reason = format!("unknown key ({})", reason.replace(", `pin`", ""));
            }
            ConfigError {
                origin: origin.to_string(),
                key: (key != "." && !key.is_empty()).then_some(key),
                position: inner.span().map(|s| line_col(text, s.start)),
                reason,
            }
        })
    }

    /// Checks every value and builds the typed [`Config`].
    pub fn validate(self, origin: &str) -> Result<Config, ConfigError> {
        let err = |key: &str, reason: String| ConfigError::at(origin, key, reason);

        // [ui]
        if !(5..=10_080).contains(&self.ui.session_minutes) {
            return Err(err(
                "ui.session_minutes",
                format!(
                    "{} is out of range (5..=10080, five minutes to a week)",
                    self.ui.session_minutes
                ),
            ));
        }

        // [api]
        let listen = parse_listen(&self.api.listen).map_err(|reason| err("api.listen", reason))?;
        for (i, t) in self.api.tokens.iter().enumerate() {
            // The token itself is never echoed back: the error may end up in a log.
            if !crate::http::auth::token_follows_rule(t) {
                return Err(err(
                    &format!("api.tokens[{i}]"),
                    crate::http::auth::TOKEN_RULE.into(),
                ));
            }
        }
        if !(256..=1_048_576).contains(&self.api.max_body_bytes) {
            return Err(err(
                "api.max_body_bytes",
                format!(
                    "{} is out of range (256..=1048576)",
                    self.api.max_body_bytes
                ),
            ));
        }
        for (key, value) in [
            ("api.idle_timeout_seconds", self.api.idle_timeout_seconds),
            (
                "api.header_timeout_seconds",
                self.api.header_timeout_seconds,
            ),
            ("api.body_timeout_seconds", self.api.body_timeout_seconds),
        ] {
            if !(1..=3600).contains(&value) {
                return Err(err(key, format!("{value} is out of range (1..=3600)")));
            }
        }
        if !(1..=65_536).contains(&self.api.max_connections) {
            return Err(err(
                "api.max_connections",
                format!("{} is out of range (1..=65536)", self.api.max_connections),
            ));
        }

        // [store]
        if self.store.data_dir.as_os_str().is_empty() {
            return Err(err("store.data_dir", "must not be empty".into()));
        }

        // [otp]
        let length = usize::try_from(self.otp.length)
            .ok()
            .and_then(|l| otp::validate_code_length(l).ok())
            .ok_or_else(|| {
                err(
                    "otp.length",
                    format!(
                        "{} is out of range ({}..={})",
                        self.otp.length,
                        otp::MIN_CODE_LENGTH,
                        otp::MAX_CODE_LENGTH
                    ),
                )
            })?;
        if self.otp.min_ttl_seconds == 0 {
            return Err(err("otp.min_ttl_seconds", "must be at least 1".into()));
        }
        if self.otp.max_ttl_seconds < self.otp.min_ttl_seconds {
            return Err(err(
                "otp.max_ttl_seconds",
                format!(
                    "{} is below otp.min_ttl_seconds ({})",
                    self.otp.max_ttl_seconds, self.otp.min_ttl_seconds
                ),
            ));
        }
        let min_ttl = Duration::from_secs(self.otp.min_ttl_seconds);
        let max_ttl = Duration::from_secs(self.otp.max_ttl_seconds);
        let ttl = Duration::from_secs(self.otp.ttl_seconds);
        otp::validate_ttl(ttl, min_ttl, max_ttl)
            .map_err(|e| err("otp.ttl_seconds", e.to_string()))?;
        if !(1..=100).contains(&self.otp.max_attempts) {
            return Err(err(
                "otp.max_attempts",
                format!("{} is out of range (1..=100)", self.otp.max_attempts),
            ));
        }
        otp::validate_template(&self.otp.template)
            .map_err(|e| err("otp.template", e.to_string()))?;
        let app_hash = if self.otp.app_hash.is_empty() {
            None
        } else {
            Some(
                AppHash::parse(&self.otp.app_hash)
                    .map_err(|e| err("otp.app_hash", e.to_string()))?,
            )
        };

        if !(1..=10).contains(&self.otp.max_parts) {
            return Err(err(
                "otp.max_parts",
                format!("{} is out of range (1..=10)", self.otp.max_parts),
            ));
        }
        let max_parts = self.otp.max_parts as usize;
        // The configured text itself must fit, with the longest code a request may ask for.
        let longest = "0".repeat(otp::MAX_CODE_LENGTH);
        let parts = otp::render(&self.otp.template, &longest, ttl, None, app_hash.as_ref())
            .map(|r| crate::pdu::plan(&r.masked).parts)
            .unwrap_or(1);
        if parts > max_parts {
            return Err(err(
                "otp.template",
                format!(
                    "the text needs {parts} SMS parts with a {}-digit code, more than \
                     otp.max_parts = {max_parts}; shorten it or raise otp.max_parts",
                    otp::MAX_CODE_LENGTH
                ),
            ));
        }
        if self.otp.max_resends > 100 {
            return Err(err(
                "otp.max_resends",
                format!("{} is out of range (0..=100)", self.otp.max_resends),
            ));
        }
        let on_pending = otp::OnPending::parse(&self.otp.on_pending).ok_or_else(|| {
            err(
                "otp.on_pending",
                format!(
                    "{:?} is neither \"reuse\" nor \"supersede\"",
                    self.otp.on_pending
                ),
            )
        })?;

        // [limits]
        let rate = |key: &str, v: &str| -> Result<Rate, ConfigError> {
            v.parse::<Rate>()
                .map_err(|e| err(&format!("limits.{key}"), e.to_string()))
        };
        let rates = RateSettings {
            otp_per_number: rate("otp_per_number", &self.limits.otp_per_number)?,
            verify_per_number: rate("verify_per_number", &self.limits.verify_per_number)?,
            otp_per_prefix: rate("otp_per_prefix", &self.limits.otp_per_prefix)?,
            prefix_digits: match self.limits.prefix_digits {
                n @ 1..=14 => n as usize,
                n => {
                    return Err(err(
                        "limits.prefix_digits",
                        format!("{n} is out of range (1..=14)"),
                    ));
                }
            },
            requests_per_token: rate("requests_per_token", &self.limits.requests_per_token)?,
            sends_global: rate("sends_global", &self.limits.sends_global)?,
        };
        if self.limits.queue_max == 0 {
            return Err(err("limits.queue_max", "must be at least 1".into()));
        }
        for (key, list) in [
            ("allow_prefixes", &self.limits.allow_prefixes),
            ("deny_prefixes", &self.limits.deny_prefixes),
        ] {
            for (i, p) in list.iter().enumerate() {
                if !PrefixPolicy::validate_prefix(p) {
                    return Err(err(
                        &format!("limits.{key}[{i}]"),
                        format!("{p:?} is not an E.164 prefix (\"+\" and 1 to 15 digits)"),
                    ));
                }
            }
        }

        // [dispatch]
        let on_unknown_outcome = match self.dispatch.on_unknown_outcome.as_str() {
            "resend" => UnknownOutcome::Resend,
            "fail" => UnknownOutcome::Fail,
            other => {
                return Err(err(
                    "dispatch.on_unknown_outcome",
                    format!("{other:?} is neither \"resend\" nor \"fail\""),
                ));
            }
        };
        // TS 23.040 sets no bound; a week covers a phone that was off while the SMSC held
        // some parts back, and the store keeps open parts at most that long.
        if !(1..=604_800).contains(&self.inbound.reassembly_timeout_seconds) {
            return Err(err(
                "inbound.reassembly_timeout_seconds",
                format!(
                    "{} is out of range (1..=604800, a week)",
                    self.inbound.reassembly_timeout_seconds
                ),
            ));
        }
        if self.dispatch.text_max_age_seconds == 0 {
            return Err(err(
                "dispatch.text_max_age_seconds",
                "must be at least 1".into(),
            ));
        }
        if self.dispatch.max_unknown_outcomes == 0 {
            return Err(err(
                "dispatch.max_unknown_outcomes",
                "must be at least 1 (use on_unknown_outcome = \"fail\" to never resend)".into(),
            ));
        }

        // [log]
        check_log_filter(&self.log.level).map_err(|reason| err("log.level", reason))?;

        // [[modem]]
        let raw_modems = match self.modem {
            None => vec![RawModem::default()],
            Some(m) if m.is_empty() => {
                return Err(err("modem", "at least one [[modem]] is needed".into()));
            }
            Some(m) => m,
        };
        let mut modems: Vec<ModemSettings> = Vec::with_capacity(raw_modems.len());
        for (i, m) in raw_modems.into_iter().enumerate() {
            let k = |field: &str| format!("modem[{i}].{field}");
            if m.pin.is_some() {
                return Err(err(
                    &k("pin"),
                    format!(
                        "a PIN may not be written in the config file; put it in a file named by \
                         pin_file (mode 0600) or in the {PIN_ENV} environment variable"
                    ),
                ));
            }
            let id = if m.id.is_empty() {
                format!("modem{i}")
            } else {
                m.id
            };
            if id.len() > 32
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(err(
                    &k("id"),
                    format!("{id:?} must be 1 to 32 characters of [A-Za-z0-9_-]"),
                ));
            }
            if modems.iter().any(|o| o.id == id) {
                return Err(err(&k("id"), format!("{id:?} is used by another modem")));
            }
            let mut identity = None;
            for (key, value) in [
                ("imei", &m.imei),
                ("iccid", &m.iccid),
                ("usb_serial", &m.usb_serial),
            ] {
                if value.is_empty() {
                    continue;
                }
                if let Some(first) = &identity {
                    return Err(err(
                        &k(key),
                        format!(
                            "a modem is named by one identity; {} is already given",
                            DeviceIdentity::key(first)
                        ),
                    ));
                }
                identity = Some(parse_identity(key, value).map_err(|reason| err(&k(key), reason))?);
            }
            if let Some(identity) = &identity
                && modems.iter().any(|o| o.identity.as_ref() == Some(identity))
            {
                return Err(err(
                    &k(identity.key()),
                    format!("{identity} is used by another modem"),
                ));
            }
            let device = match (m.device, &identity) {
                (Some(d), _) if d.as_os_str().is_empty() => {
                    return Err(err(&k("device"), "must not be empty".into()));
                }
                (Some(d), _) => d,
                // Found by identity wherever it is.
                (None, Some(_)) => PathBuf::new(),
                (None, None) => PathBuf::from(DEFAULT_DEVICE),
            };
            if !device.as_os_str().is_empty() && modems.iter().any(|o| o.device == device) {
                return Err(err(
                    &k("device"),
                    format!("{} is used by another modem", device.display()),
                ));
            }
            if m.scan.is_empty() {
                return Err(err(&k("scan"), "needs at least one pattern".into()));
            }
            for pattern in &m.scan {
                discovery::check_pattern(pattern).map_err(|reason| err(&k("scan"), reason))?;
            }
            if !(300..=4_000_000).contains(&m.baud) {
                return Err(err(
                    &k("baud"),
                    format!("{} is out of range (300..=4000000)", m.baud),
                ));
            }
            if !(1..=600).contains(&m.send_timeout_seconds) {
                return Err(err(
                    &k("send_timeout_seconds"),
                    format!("{} is out of range (1..=600)", m.send_timeout_seconds),
                ));
            }
            if m.command_gap_ms > 1000 {
                return Err(err(
                    &k("command_gap_ms"),
                    format!("{} is out of range (0..=1000)", m.command_gap_ms),
                ));
            }
            modems.push(ModemSettings {
                id,
                device,
                identity,
                scan: m.scan,
                baud: m.baud,
                pin_file: (!m.pin_file.as_os_str().is_empty()).then_some(m.pin_file),
                delivery_reports: m.delivery_reports,
                send_timeout: Duration::from_secs(m.send_timeout_seconds),
                sends_per_minute: m.sends_per_minute,
                command_gap: Duration::from_millis(m.command_gap_ms),
            });
        }

        // [twilio]
        let twilio = self
            .twilio
            .validate()
            .map_err(|(key, reason)| err(key, reason))?;
        // [[webhook]]
        let webhooks = crate::webhook::config::validate(self.webhook, origin)?;

        // [supabase], [zitadel]
        let supabase = self
            .supabase
            .validate()
            .map_err(|(key, reason)| err(key, reason))?;
        let zitadel = self
            .zitadel
            .validate()
            .map_err(|(key, reason)| err(key, reason))?;

        Ok(Config {
            api: ApiSettings {
                listen,
                tokens: self.api.tokens,
                max_body_bytes: self.api.max_body_bytes as usize,
                connections: crate::http::ConnLimits {
                    idle_timeout: Duration::from_secs(self.api.idle_timeout_seconds),
                    header_timeout: Duration::from_secs(self.api.header_timeout_seconds),
                    body_timeout: Duration::from_secs(self.api.body_timeout_seconds),
                    max_connections: self.api.max_connections as usize,
                },
            },
            store: StoreSettings {
                data_dir: self.store.data_dir,
                retention_days: self.store.retention_days,
                mask_numbers_after_days: self.store.mask_numbers_after_days,
            },
            otp: OtpSettings {
                length,
                ttl,
                min_ttl,
                max_ttl,
                max_attempts: self.otp.max_attempts,
                template: self.otp.template,
                app_hash,
                max_parts,
                max_resends: self.otp.max_resends,
                on_pending,
            },
            limits: LimitSettings {
                rates,
                otp_per_number_per_day: self.limits.otp_per_number_per_day,
                queue_max: self.limits.queue_max,
                prefixes: PrefixPolicy {
                    allow: self.limits.allow_prefixes,
                    deny: self.limits.deny_prefixes,
                },
            },
            dispatch: DispatchSettings {
                on_unknown_outcome,
                text_max_age: Duration::from_secs(self.dispatch.text_max_age_seconds),
                max_attempts: self.dispatch.max_attempts,
                max_unknown_outcomes: self.dispatch.max_unknown_outcomes,
                max_partial_resends: self.dispatch.max_partial_resends,
            },
            log: LogSettings {
                level: self.log.level,
            },
            ui: UiSettings {
                enabled: self.ui.enabled,
                session: Duration::from_secs(self.ui.session_minutes * 60),
                secure_cookie: self.ui.secure_cookie,
            },
            inbound: InboundSettings {
                enabled: self.inbound.enabled,
                reassembly_timeout: Duration::from_secs(self.inbound.reassembly_timeout_seconds),
            },
            modems,
            twilio,
            webhooks,
            supabase,
            zitadel,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_an_ip_and_a_port_and_says_so() {
        assert_eq!(
            parse_listen("[::1]:9000"),
            Ok("[::1]:9000".parse().unwrap())
        );
        for (bad, needle) in [
            (
                "localhost:8787",
                "names the host \"localhost\": api.listen takes an IP address and a port, not a \
                 host name",
            ),
            ("localhost:8787", "\"127.0.0.1:8787\""),
            ("gateway.lan:80", "not a host name"),
            ("127.0.0.1", "has no port"),
            ("::1", "\"[::1]:8787\""),
            ("localhost", "is not an IP address with a port"),
            ("127.0.0.1:99999", "is not an IP address with a port"),
        ] {
            let e = parse_listen(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn log_filters_must_name_levels_and_leave_simgate_on() {
        for good in [
            "info",
            "debug",
            "WARN",
            "off",
            "simgate=debug,info",
            "simgate=trace",
            "info,tower_http=off",
            "simgate::dispatch=debug,warn",
        ] {
            assert_eq!(check_log_filter(good), Ok(()), "{good}");
        }
        for (bad, needle) in [
            ("verbose", "not a log level"),
            ("", "shows no simgate log line"),
            ("simgate=loud", "\"loud\" is not a log level"),
            ("tower_http=debug", "shows no simgate log line"),
            ("simgate=off", "shows no simgate log line"),
            ("=debug", "names no target"),
            ("loud[", "not a log level"),
        ] {
            let e = check_log_filter(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "test.toml")
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.api.listen, "127.0.0.1:8787".parse().unwrap());
        assert_eq!(c.otp.length.get(), 6);
        assert_eq!(c.otp.ttl, Duration::from_secs(300));
        assert_eq!(c.modems.len(), 1);
        assert_eq!(c.modems[0].id, "modem0");
        assert_eq!(c.modems[0].device, PathBuf::from(DEFAULT_DEVICE));
        assert!(c.warnings().is_empty());
    }

    #[test]
    fn otp_part_cap_resends_and_pending_rule() {
        let c = parse("").unwrap();
        assert_eq!(c.otp.max_parts, 3);
        assert_eq!(c.otp.max_resends, 2);
        assert_eq!(c.otp.on_pending, otp::OnPending::Reuse);
        let c =
            parse("[otp]\nmax_parts = 1\nmax_resends = 0\non_pending = \"supersede\"\n").unwrap();
        assert_eq!(
            (c.otp.max_parts, c.otp.max_resends, c.otp.on_pending),
            (1, 0, otp::OnPending::Supersede)
        );
        for (text, key, says) in [
            ("[otp]\nmax_parts = 0\n", "otp.max_parts", "out of range"),
            ("[otp]\nmax_parts = 11\n", "otp.max_parts", "out of range"),
            (
                "[otp]\nmax_resends = 101\n",
                "otp.max_resends",
                "out of range",
            ),
            (
                "[otp]\non_pending = \"replace\"\n",
                "otp.on_pending",
                "\"supersede\"",
            ),
            (
                "[otp]\nmax_parts = 1\ntemplate = \"{code} 😀 and a long tail of words that \
                 needs more than seventy characters in UCS-2\"\n",
                "otp.template",
                "more than otp.max_parts = 1",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}");
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[test]
    fn modem_ids_default_by_position() {
        let c = parse(
            "[[modem]]\ndevice = \"/dev/a\"\n[[modem]]\nid = \"spare\"\ndevice = \"/dev/b\"\n\
             [[modem]]\ndevice = \"/dev/c\"\n",
        )
        .unwrap();
        let ids: Vec<_> = c.modems.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["modem0", "spare", "modem2"]);
    }

    #[test]
    fn errors_name_key_and_position() {
        let e = parse("[limits]\notp_per_number = \"3/10w\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("limits.otp_per_number"));
        assert_eq!(e.position, Some((2, 18)));
        assert!(
            e.to_string()
                .starts_with("test.toml:2:18: limits.otp_per_number: "),
            "{e}"
        );

        let e = parse("[[modem]]\n[[modem]]\ndevice = \"/dev/x\"\nbaud = \"fast\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("modem[1].baud"));
        assert_eq!(e.position, Some((4, 8)));

        let e = parse("[api]\nlisten = \n").unwrap_err();
        assert_eq!(e.key, None);
        assert_eq!(e.position.map(|p| p.0), Some(2));

        let e = parse("[api]\nlistn = \"x\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("api.listn"));
        let e = parse("[[modem]]\npn = 1\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("modem[0].pn"));
        assert!(
            e.reason.contains("`pin_file`") && !e.reason.contains("`pin`"),
            "{e}"
        );
        let e = parse("colour = 1\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("colour"));
    }

    #[test]
    fn token_is_not_echoed() {
        let e = parse("[api]\ntokens = [\"short secret\"]\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("api.tokens[0]"));
        assert!(!e.to_string().contains("short secret"));
        let c = parse("[api]\ntokens = [\"0123456789abcdefXYZ\"]\n").unwrap();
        assert!(!format!("{c:?}").contains("0123456789abcdefXYZ"));
    }

    #[test]
    fn non_loopback_listen_warns() {
        let c = parse("[api]\nlisten = \"0.0.0.0:8787\"\n").unwrap();
        assert_eq!(c.warnings().len(), 1);
        assert!(c.warnings()[0].contains("0.0.0.0:8787"));
        let c = parse("[api]\nlisten = \"[::1]:9000\"\n").unwrap();
        assert!(c.warnings().is_empty());
    }

    #[test]
    fn modems_may_be_named_by_identity() {
        let c = parse(
            "[[modem]]\nimei = \"356938035643809\"\n\
             [[modem]]\niccid = \"8944500102198304826f\"\nscan = [\"/dev/serial/by-id/*\"]\n\
             [[modem]]\ndevice = \"/dev/ttyUSB7\"\nusb_serial = \"0123456789ABCDEF\"\n\
             [[modem]]\n",
        )
        .unwrap();
        let m = &c.modems;
        assert_eq!(m[0].device, PathBuf::new(), "no device: found by identity");
        assert_eq!(
            m[0].identity,
            Some(DeviceIdentity::Imei("356938035643809".into()))
        );
        assert_eq!(m[0].scan, discovery::DEFAULT_SCAN);
        assert_eq!(
            m[1].identity,
            Some(DeviceIdentity::Iccid("8944500102198304826F".into()))
        );
        assert_eq!(m[1].scan, ["/dev/serial/by-id/*"]);
        assert_eq!(m[2].device, PathBuf::from("/dev/ttyUSB7"));
        assert_eq!(
            m[2].identity,
            Some(DeviceIdentity::UsbSerial("0123456789ABCDEF".into()))
        );
        assert_eq!(m[3].device, PathBuf::from(DEFAULT_DEVICE));
        assert_eq!(m[3].identity, None);
    }

    #[test]
    fn identity_errors_name_the_key() {
        let cases = [
            (
                "[[modem]]\nimei = \"356938035643809\"\niccid = \"8944500102198304826\"\n",
                "modem[0].iccid",
                "one identity",
            ),
            (
                "[[modem]]\nimei = \"35693803564380x\"\n",
                "modem[0].imei",
                "IMEI",
            ),
            ("[[modem]]\niccid = \"12345\"\n", "modem[0].iccid", "ICCID"),
            (
                "[[modem]]\nusb_serial = \"a b\"\n",
                "modem[0].usb_serial",
                "USB serial",
            ),
            (
                "[[modem]]\nimei = \"356938035643809\"\n[[modem]]\nimei = \"356938035643809\"\n",
                "modem[1].imei",
                "another modem",
            ),
            (
                "[[modem]]\nimei = \"356938035643809\"\nscan = []\n",
                "modem[0].scan",
                "at least one",
            ),
            (
                "[[modem]]\nimei = \"356938035643809\"\nscan = [\"/dev/*/ttyUSB0\"]\n",
                "modem[0].scan",
                "last path component",
            ),
            (
                "[[modem]]\nimei = \"356938035643809\"\nscan = [\"ttyUSB*\"]\n",
                "modem[0].scan",
                "absolute",
            ),
            ("[[modem]]\ndevice = \"\"\n", "modem[0].device", "empty"),
        ];
        for (text, key, reason) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.key.as_deref(), Some(key), "{text}");
            assert!(e.reason.contains(reason), "{text}: {}", e.reason);
        }
        // Two modems found by identity have no device; that is no clash.
        assert!(
            parse("[[modem]]\nimei = \"356938035643809\"\n[[modem]]\nimei = \"356938035643808\"\n")
                .is_ok()
        );
    }

    #[test]
    fn set_devices_replaces_modems() {
        let mut c = Config::default();
        c.set_devices(&[]);
        assert_eq!(c.modems.len(), 1);
        c.set_devices(&[PathBuf::from("/dev/ttyUSB2"), PathBuf::from("/dev/ttyUSB5")]);
        assert_eq!(c.modems[1], ModemSettings::new("modem1", "/dev/ttyUSB5"));
    }

    #[test]
    fn pin_sources() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut m = ModemSettings::new("modem0", "/dev/x");
        assert_eq!(m.pin_with_env(None).unwrap(), None);
        assert_eq!(m.pin_with_env(Some("".into())).unwrap(), None);
        assert_eq!(
            m.pin_with_env(Some("1234".into())).unwrap().as_deref(),
            Some("1234")
        );
        assert!(
            matches!(m.pin_with_env(Some("12a4".into())), Err(PinError::Format(s)) if s == PIN_ENV)
        );

        let f = dir.path().join("pin");
        std::fs::write(&f, "  5678\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        m.pin_file = Some(f.clone());
        let e = m.pin_with_env(None).unwrap_err();
        assert!(matches!(e, PinError::Permissions(_)), "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        m.pin_file = Some(f.clone());
        // The file wins over the environment.
        assert_eq!(
            m.pin_with_env(Some("1234".into())).unwrap().as_deref(),
            Some("5678")
        );
        std::fs::write(&f, "123").unwrap();
        let e = m.pin_with_env(None).unwrap_err();
        assert!(!e.to_string().contains("123\""), "{e}");
        m.pin_file = Some(dir.path().join("missing"));
        assert!(matches!(m.pin_with_env(None), Err(PinError::Read { .. })));
    }

    #[test]
    fn line_col_counts_chars() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é\nx", 3), (2, 1));
    }
}
