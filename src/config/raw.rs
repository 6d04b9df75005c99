//! Stage 1: the config file as serde reads it, with the documented defaults.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::modem::discovery::{self};
use crate::otp::{self};

use super::*;

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
    /// `store.backend`: `sqlite` or `postgres`.
    pub backend: String,
    /// `store.url`: the PostgreSQL connection string.
    pub url: String,
    /// `store.url_file`: a file (mode 0600) holding the connection string.
    pub url_file: PathBuf,
    /// `store.node_id`: this node's name in a cluster; empty = the host name.
    pub node_id: String,
    /// `store.ca_file`: PEM certificates the PostgreSQL server's must chain to; empty = the
    /// public web roots.
    pub ca_file: PathBuf,
    /// `store.lease_seconds`: how long a claim outlives a node that stops renewing it.
    pub lease_seconds: u64,
    /// `store.pool_size`: most connections to PostgreSQL.
    pub pool_size: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            data_dir: PathBuf::from("/var/lib/simgate"),
            retention_days: 30,
            mask_numbers_after_days: 7,
            backend: "sqlite".into(),
            url: String::new(),
            url_file: PathBuf::new(),
            node_id: String::new(),
            ca_file: PathBuf::new(),
            lease_seconds: 30,
            pool_size: 16,
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
