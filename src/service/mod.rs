//! Use cases the HTTP API calls: create, verify, resend and cancel OTPs; send, read and list
//! messages.
//!
//! The service validates requests (naming the field and how to fix it), applies the rate limits,
//! draws and renders codes, and hands the store one transaction per use case. It knows no HTTP
//! and no SQL: errors are a typed [`ServiceError`] that `http` maps to problem+json.
//!
//! One file per family of use cases: [`otp`] (create, verify, resend, cancel), [`texts`] (plain
//! texts), [`log`] (reading and paging the delivery log); and what they share: [`enqueue`] (the
//! one path every text takes into the queue), [`idempotency`] (keys, digests, the replay
//! cache), [`budgets`] (rate limits and prefix lists), [`wording`] (the masked text of an OTP
//! and which field makes it long), [`errors`].
//!
//! Secrets: a code exists in clear only inside [`Service::create_otp`] / [`Service::resend`]
//! (rendered, sealed, HMACed, then dropped) and in the verify request; neither is ever logged.

mod budgets;
mod enqueue;
mod errors;
mod events;
mod idempotency;
mod inbound;
mod log;
mod otp;
mod relay;
mod stats;
mod texts;
mod wording;

pub use errors::ServiceError;
pub use events::{
    DEFAULT_EVENT_LIMIT, EndpointHealth, EventPage, ListEvents, MAX_EVENT_LIMIT,
    MAX_EVENT_WAIT_SECONDS,
};
pub use idempotency::{Answer, IdempotencyKey, MAX_IDEMPOTENCY_KEY};
pub use inbound::ListInbound;
pub use log::{DEFAULT_LIST_LIMIT, ListMessages, MAX_LIST_LIMIT};
pub use otp::{CreateOtp, OtpCreated, OtpView, Verified};
pub use relay::{CodeRelayed, MAX_RELAYED_CODE, MIN_RELAYED_CODE, RelayCode};
pub use stats::{HourOutcomes, Percentiles, QueueSummary, TRAFFIC_HOURS, Traffic, summarize};
pub use texts::{SendText, TextQueued};

pub(crate) use errors::shorten;
use errors::{invalid, store_err};
use idempotency::ReplayCache;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::limits::{Limits, PrefixPolicy};
use crate::model::{Millis, PublicId};
use crate::otp::{AppHash, CodeLength, Keys, OnPending};
use crate::store::Store;

/// Where the service gets the time: the daemon's one injected clock, so tests can move past
/// expiry.
pub use crate::clock::Clock;

/// Where codes come from. Production draws from the OS CSPRNG ([`os_codes`]); tests inject a
/// deterministic source so they know the code without any backdoor in the production path.
pub type CodeSource = Arc<dyn Fn(CodeLength) -> String + Send + Sync>;

/// Codes from the OS CSPRNG.
pub fn os_codes() -> CodeSource {
    Arc::new(crate::otp::generate_code_os)
}

/// Policy knobs of the use cases, derived from the validated config by
/// `Config::service_settings` (the service does not know the config). `Settings::default()`,
/// implemented next to that derivation, is the settings of the default config.
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
    /// With a PostgreSQL store, the per-number and per-range rates are counted in the shared
    /// database, so they hold across nodes; the in-memory limiters then leave them out.
    pub shared_rates: Option<SharedRates>,
}

/// The rates of `[limits]` that protect a phone number or a number range, counted in the
/// cluster's database (`store::pg::Postgres::take_rate`) instead of in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedRates {
    /// `limits.otp_per_number`.
    pub otp_per_number: crate::limits::Rate,
    /// `limits.otp_per_prefix`.
    pub otp_per_prefix: crate::limits::Rate,
    /// `limits.verify_per_number`.
    pub verify_per_number: crate::limits::Rate,
    /// `limits.prefix_digits`.
    pub prefix_digits: usize,
}

/// Most SMS parts a plain text may take (not a config key): longer texts are refused rather
/// than sent as a costly string of parts that many phones reassemble badly.
pub const MAX_TEXT_PARTS: usize = 10;

/// `Retry-After` for a full queue (not a config key): roughly how long the modems need to drain
/// some of it.
pub const QUEUE_FULL_RETRY_AFTER: Duration = Duration::from_secs(30);

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

/// Checks the shape of an id before any lookup, so a typo gets "malformed" rather than "unknown".
fn parse_id<T: PublicId>(id: &str) -> Result<T, ServiceError> {
    T::parse(id).ok_or_else(|| ServiceError::MalformedId {
        detail: format!(
            "{:?} is not {} id: ids look like {} followed by 32 lowercase hex digits",
            shorten(id),
            T::NOUN,
            T::PREFIX
        ),
    })
}

fn ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn parts_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Service {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MessageId, OtpId};

    #[test]
    fn malformed_ids_say_what_an_id_looks_like() {
        let e = parse_id::<MessageId>("otp_123").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"otp_123\" is not a message id: ids look like msg_ followed by 32 lowercase hex digits"
        );
        assert!(parse_id::<OtpId>(OtpId::random().as_str()).is_ok());
    }
}
