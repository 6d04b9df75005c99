//! Queue → modem pool → results: retries, deadlines, status-report correlation by TP-MR.
//!
//! One task (the loop in [`Dispatcher::run`]) owns the pool's bookkeeping and is the only claimer
//! of queued messages, so no two modems ever race for the same row and no wake-up is wasted on
//! a claim that finds nothing. It claims a message only when a modem is free: ready, not sending,
//! and allowed by its send rate. Each send then runs in its own task, so N modems give N sends in
//! flight and one slow modem never holds up the others. Within one modem sends are strictly one
//! at a time (the driver has a single command slot anyway).
//!
//! The loop never polls. It sleeps until one of: an enqueue (`wake`, a `Notify` the service pokes
//! after each commit), a send finishing, a modem's readiness changing, the earliest retry or
//! expiry deadline of the queue, or the earliest instant a rate-limited modem may send again.
//!
//! Outcomes, all recorded in the store's history:
//! - accepted by the network → `sent` with the TP-MR of each part;
//! - temporary error → back to `queued` with exponential backoff, as long as the retry would still
//!   come before the message's deadline (otherwise `expired` with the last error);
//! - permanent error → `failed` with the modem's reason;
//! - outcome unknown (PDU written, no `+CMGS`) → counted and noted, then resent after the same
//!   backoff as a temporary error (so other messages pass meanwhile) or failed per
//!   [`UnknownOutcomePolicy`]; the [`DispatchConfig::max_unknown_outcomes`]-th unknown outcome
//!   fails the message, since each may have reached the phone. The same holds for messages
//!   found `sending` at start-up;
//! - modem not ready → back to `queued` at once, for another modem to take (not counted as an
//!   attempt: no modem was handed the text).
//!
//! Every failure after [`DispatchConfig::max_attempts`] attempts fails the message with the last
//! error. A multi-part text whose later part failed after earlier parts were accepted is resent
//! whole (a fresh concatenation reference, every part again: TS 23.040 §9.2.3.24.1 lets a phone
//! reassemble only parts of one reference, and a resend of just the missing parts would need
//! the same reference, the same SIM and the same split, which a queue that may hand the retry
//! to another modem cannot promise). Each such resend duplicates the accepted parts, so at most
//! [`DispatchConfig::max_partial_resends`] of them happen; the accepted parts are recorded with
//! their TP-MRs, so their status reports still match. The counters live in the store and
//! survive restarts.
//!
//! **The next message is ready before the modem is.** While a modem's send is on the wire, the
//! loop claims the next message for it (durably: `sending`, as any claim) and its task opens and
//! encodes the text, then waits for the modem's current send to return, so the gap between one
//! `+CMGS` answer and the next `AT+CMGS` is a task wake-up, not a claim's group commit (which
//! waits for an fsync whenever an API client's write shares the batch). One send stays in
//! flight per modem; the waiting message is the modem's only claim in advance. It goes back to
//! the queue (not counted as an attempt) if the current send takes far longer than the modem's
//! last one (a hung modem must not hold it), and when the dispatcher stops. Claims stay in queue
//! order. A modem with a send rate limit is not claimed for in advance (its sends wait for the
//! limiter anyway), nor is any modem under `on_unknown_outcome = "fail"`: a message claimed in
//! advance and then interrupted by a crash is recovered as an unknown outcome, which that policy
//! would fail although it never left.
//!
//! "Least busy" means: idle (one send per modem), then least recently started. A modem whose
//! sends fail [`FAILURES_BEFORE_REST`] times in a row for modem-side reasons (temporary error,
//! unknown outcome, not ready) rests for a growing backoff, so the other modems take its work.
//!
//! Time: store timestamps are the injected wall clock ([`crate::clock::Clock`], the service's
//! too); sleeps and rate limits use tokio's monotonic clock.
//!
//! Files: `pool` (the loop and the pool's bookkeeping), `send` (one send task), `events`
//! (status reports, incoming texts, retention).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::pdu::EncodedPart;
use crate::store::{Millis, UnknownOutcomePolicy, UnknownOutcomeRule};

/// Why a modem did not send a message: the driver's own classification, kept typed (a `+CMS
/// ERROR` stays a code) until the one place that words it for the store.
pub use crate::modem::SendError;

/// A send that did not complete: why, and the TP-MRs of the parts the modem accepted before it
/// stopped (in part order; empty when nothing went out or the message has one part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The driver's classification of the failure.
    pub failure: SendError,
    /// TP-MRs of the leading parts that were accepted.
    pub accepted: Vec<u8>,
}

impl From<SendError> for Failed {
    fn from(failure: SendError) -> Self {
        Failed {
            failure,
            accepted: Vec::new(),
        }
    }
}

/// What the dispatcher needs from one modem. Implemented by the driver's handle; tests use
/// in-memory fakes.
pub trait ModemPort: Send + Sync + 'static {
    /// Stable name, recorded with each sent part: TP-MR is only unique per modem.
    fn id(&self) -> &str;
    /// Whether a send may be attempted now.
    fn is_ready(&self) -> bool;
    /// Resolves once [`ModemPort::is_ready`] differs from `was_ready`, at once if it already
    /// does (so no change slips through between two calls). Spurious wake-ups are harmless, but
    /// it must not keep resolving while readiness equals `was_ready`, or the watcher would spin.
    fn readiness_changed(&self, was_ready: bool) -> impl Future<Output = ()> + Send;
    /// Sends every part of one message, returning the TP-MR of each part in order.
    fn send(&self, parts: Vec<EncodedPart>)
    -> impl Future<Output = Result<Vec<u8>, Failed>> + Send;
}

/// Opens a sealed OTP body (otp.rs owns the key); the error text must not contain the body.
pub type Opener = Arc<dyn Fn(&[u8]) -> Result<String, String> + Send + Sync>;

/// One modem of the pool with its per-modem policy.
pub struct PoolModem<M> {
    /// The way to the modem.
    pub port: M,
    /// Sends per minute on this SIM (carrier anti-spam); 0 = no limit.
    pub sends_per_minute: u32,
    /// Ask for status reports (TP-SRR), so `delivered` can be known.
    pub delivery_reports: bool,
}

/// Pool-wide policy, derived from the validated config by `Config::dispatch_config` (the
/// dispatcher does not know the config). `DispatchConfig::default()`, implemented next to that
/// derivation, is the policy of the default config.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// What to do when a send's outcome is unknown, and with messages found `sending` at start.
    pub on_unknown_outcome: UnknownOutcomePolicy,
    /// First retry delay after a temporary error; doubles with each attempt.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How long to wait before claiming again after the store failed, so a broken disk does not
    /// turn the loop into a busy spin.
    pub store_error_pause: Duration,
    /// Attempts (hand-overs to a modem) after which a failure fails the message; 0 = no cap.
    pub max_attempts: u32,
    /// Unknown outcomes after which a message fails instead of being resent (at least 1).
    pub max_unknown_outcomes: u32,
    /// Whole resends of a multi-part text after a send that failed with some parts accepted.
    pub max_partial_resends: u32,
}

/// First retry delay after a temporary error (not a config key).
pub const RETRY_BASE: Duration = Duration::from_secs(2);
/// Longest retry delay (not a config key).
pub const RETRY_MAX: Duration = Duration::from_secs(60);
/// The pause before claiming again after a store error (not a config key).
pub const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

impl DispatchConfig {
    /// What the store applies to an unknown outcome (during a run and at start-up).
    pub fn unknown_rule(&self) -> UnknownOutcomeRule {
        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as Millis;
        UnknownOutcomeRule {
            policy: self.on_unknown_outcome,
            max_unknown: self.max_unknown_outcomes.max(1),
            max_attempts: self.max_attempts,
            backoff_base_ms: ms(self.retry_base),
            backoff_max_ms: ms(self.retry_max),
        }
    }
}

/// The delay before attempt `attempts + 1` after a temporary error on attempt `attempts`.
pub fn backoff(cfg: &DispatchConfig, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    cfg.retry_base
        .saturating_mul(1u32 << doublings)
        .min(cfg.retry_max)
}

mod events;
mod pool;
mod send;
#[cfg(test)]
mod tests;

pub use events::{record_status_report, run_events, run_retention};
pub use pool::{DispatchStats, Dispatcher, FAILURES_BEFORE_REST};
