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
//! Files: `raw` (stage 1 and the defaults), `validate` (stage 2), `wiring` (the parts'
//! settings), [`twilio`] and [`hooks`] (their sections); this file holds the validated types.
//!
//! This is the only module that knows TOML. It reads two kinds of files: the config file and a
//! modem's `pin_file`; it never logs a token or a PIN, and `Debug` of the settings hides them.

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::limits::{PrefixPolicy, RateSettings};
use crate::modem::discovery::DeviceIdentity;
use crate::otp::{self, AppHash, CodeLength};

pub mod hooks;
mod raw;
#[cfg(test)]
mod tests;
pub mod twilio;
mod validate;
mod wiring;
pub use hooks::{SupabaseSettings, ZitadelSettings};
pub use raw::{
    DEFAULT_DEVICE, RawApi, RawConfig, RawDispatch, RawInbound, RawLimits, RawLog, RawModem,
    RawOtp, RawStore, RawUi,
};
pub use twilio::TwilioSettings;
use validate::*;

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
    /// Where the queue and the delivery log live.
    pub backend: StoreBackend,
}

/// `store.backend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreBackend {
    /// One SQLite file in the data directory: one node.
    Sqlite,
    /// A PostgreSQL database shared by several nodes.
    Postgres(PostgresSettings),
}

/// `[store]` with `backend = "postgres"`.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// The connection string, or the file holding it.
    pub url: UrlSource,
    /// This node's name, unique in the cluster.
    pub node_id: String,
    /// How long a claim outlives a node that stops renewing it.
    pub lease: Duration,
    /// Most connections this node opens.
    pub pool_size: usize,
    /// PEM certificates the server's must chain to (a private CA); `None`: the public roots.
    pub ca_file: Option<PathBuf>,
}

/// Where the PostgreSQL connection string comes from. It may carry a password, so it is
/// never printed.
#[derive(Clone, PartialEq, Eq)]
pub enum UrlSource {
    /// `store.url`.
    Inline(String),
    /// `store.url_file`, read when the daemon starts.
    File(PathBuf),
}

impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = match &self.url {
            UrlSource::Inline(_) => "[store.url hidden]".to_string(),
            UrlSource::File(p) => p.display().to_string(),
        };
        f.debug_struct("PostgresSettings")
            .field("url", &url)
            .field("node_id", &self.node_id)
            .field("lease", &self.lease)
            .field("pool_size", &self.pool_size)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl PostgresSettings {
    /// The connection string: inline, or read from `url_file`, which only its owner may read
    /// (it usually carries a password). The reason never contains the string itself.
    pub fn url(&self) -> Result<String, String> {
        match &self.url {
            UrlSource::Inline(u) => Ok(u.clone()),
            UrlSource::File(path) => {
                let url = hooks::read_secret(path)?;
                check_pg_url(&url).map_err(|r| format!("{}: {r}", path.display()))?;
                Ok(url)
            }
        }
    }
}

/// Whether `url` is a connection string PostgreSQL's client accepts; the reason never repeats
/// the string (it may hold a password).
pub(crate) fn check_pg_url(url: &str) -> Result<(), String> {
    if url.contains("sslmode=verify-") {
        return Err(
            "sslmode=verify-ca and verify-full are not taken: write sslmode=require, \
                    which with simgate's TLS (rustls) always verifies the certificate chain \
                    and the host name"
                .into(),
        );
    }
    let config = crate::store::pg::parse_url(url).map_err(|e| {
        let why = match e {
            crate::store::StoreError::Postgres(m) => m.replace("store url: ", ""),
            other => other.to_string(),
        };
        format!(
            "{why}: write a postgresql:// URL (postgresql://user@host:5432/database?sslmode=\
             require) or libpq key=value pairs (host=/run/postgresql dbname=simgate)"
        )
    })?;
    if config.get_hosts().is_empty() {
        return Err(
            "names no host: give host=… (a name, an address, or a socket directory)".into(),
        );
    }
    let socket = config
        .get_hosts()
        .iter()
        .any(|h| matches!(h, tokio_postgres::config::Host::Unix(_)));
    if socket && config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
        return Err(
            "sslmode=require with a socket directory: PostgreSQL offers no TLS on a \
                    local socket; drop sslmode for host=/… (the socket's permissions protect it)"
                .into(),
        );
    }
    if config.get_dbname().is_none() {
        return Err("names no database: add dbname=… or /<database> to the URL".into());
    }
    Ok(())
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
        if let StoreBackend::Postgres(pg) = &self.store.backend {
            if let UrlSource::File(_) = pg.url {
                pg.url()
                    .map_err(|reason| ConfigError::at(origin, "store.url_file", reason))?;
            }
            if let Some(ca) = &pg.ca_file {
                crate::store::pg::load_roots(ca)
                    .map_err(|reason| ConfigError::at(origin, "store.ca_file", reason))?;
            }
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
