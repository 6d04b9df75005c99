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
//! Time: store timestamps are the injected wall clock ([`Clock`], the service's too); sleeps
//! and rate limits use tokio's monotonic clock.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{Quota, RateLimiter, clock, middleware::NoOpMiddleware, state};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::log_throttle::Throttle;
use crate::metrics::{Metrics, ReportResult, SendOutcome};
use crate::modem::{ModemEvent, ModemHandle, ModemState, SendError};
use crate::pdu::{self, DeliveryOutcome, EncodedPart, SubmitOptions};
use crate::store::{
    Body, Claimed, Millis, ReportEffect, ReportOutcome, StatusReport, Store, StoreError,
    UnknownOutcomePolicy, UnknownOutcomeRule,
};

/// Why a modem did not send a message, as the driver classifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendFailure {
    /// Worth retrying later (network busy, no registration, `+CMS ERROR` of a temporary kind).
    Temporary(String),
    /// Retrying cannot help (invalid number, barred destination, rejected by the SMSC).
    Permanent(String),
    /// The PDU went out but no answer came: the message may or may not have been sent.
    OutcomeUnknown(String),
    /// The modem could not take the send at all (not registered, re-initialising, unplugged).
    NotReady,
}

/// A send that did not complete: why, and the TP-MRs of the parts the modem accepted before it
/// stopped (in part order; empty when nothing went out or the message has one part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The driver's classification of the failure.
    pub failure: SendFailure,
    /// TP-MRs of the leading parts that were accepted.
    pub accepted: Vec<u8>,
}

impl From<SendFailure> for Failed {
    fn from(failure: SendFailure) -> Self {
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

/// governor's clock over tokio's monotonic clock.
#[derive(Debug, Clone, Copy)]
struct TokioClock {
    origin: Instant,
}

impl clock::Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

type Limiter =
    RateLimiter<state::NotKeyed, state::InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// Pool bookkeeping for one modem; owned by the loop only.
struct Slot<M> {
    port: Arc<M>,
    limiter: Option<Limiter>,
    delivery_reports: bool,
    /// Claims of this modem not yet finished: 0 (idle), 1 (a send in flight, or about to be),
    /// 2 (one in flight and the next one claimed, encoded and waiting for it).
    in_flight: u8,
    /// Resolves when the newest send task of this modem is done with the modem; the next task
    /// waits for it before sending.
    turn: Option<oneshot::Receiver<()>>,
    /// How long this modem's last successful send took; bounds how long a message claimed in
    /// advance waits for it.
    last_send: Option<Duration>,
    /// Since when the modem's current send has (about) been on the wire.
    on_wire_since: Option<Instant>,
    /// A rate-limiter cell was taken but the claim found nothing: the next send uses it.
    permit_held: bool,
    /// When this modem last started a send; the least recently used idle modem goes first.
    last_start: Option<Instant>,
    /// Sends in a row that failed for reasons of the modem or network (temporary, unknown
    /// outcome, not ready), not of the message.
    failures_in_a_row: u32,
    /// A modem that keeps failing rests until then, so its work goes to the others.
    resting_until: Option<Instant>,
}

/// Takes queued messages and sends them through a pool of modems. See the module docs.
pub struct Dispatcher<M: ModemPort> {
    store: Store,
    slots: Vec<Slot<M>>,
    cfg: DispatchConfig,
    wake: Arc<Notify>,
    opener: Opener,
    /// The wall clock the store's timestamps are compared with (injected: see [`Clock`]).
    clock: Clock,
    /// Anchor of the governor clock: rate limits measure tokio's monotonic time since here.
    origin: Instant,
    stats: Arc<DispatchStats>,
    metrics: Option<Arc<Metrics>>,
    /// Send tasks report here the moment their modem is free again (before recording the
    /// result), so the next claim and the previous result share a group commit.
    freed_tx: mpsc::UnboundedSender<FreedMsg>,
    freed_rx: mpsc::UnboundedReceiver<FreedMsg>,
    /// Turns true when the dispatcher stops: messages claimed in advance go back to the queue.
    stopping: watch::Sender<bool>,
}

/// A modem is free again: which, what its send said about it, and how long the send took.
type FreedMsg = (usize, ModemVerdict, Option<Duration>);

/// Counters for tests and metrics: how often the loop went to the store to claim.
#[derive(Debug, Default)]
pub struct DispatchStats {
    /// Claims attempted (found or not). An idle dispatcher leaves this unchanged, which is how
    /// the tests prove that it sleeps instead of polling.
    pub claims: AtomicU64,
    /// Sends started.
    pub sends: AtomicU64,
}

impl<M: ModemPort> Dispatcher<M> {
    /// Builds the dispatcher. `wake` is the `Notify` the service pokes after each enqueue.
    pub fn new(
        store: Store,
        modems: Vec<PoolModem<M>>,
        cfg: DispatchConfig,
        wake: Arc<Notify>,
        opener: Opener,
    ) -> Self {
        let origin = Instant::now();
        let (freed_tx, freed_rx) = mpsc::unbounded_channel();
        let slots = modems
            .into_iter()
            .map(|m| Slot {
                port: Arc::new(m.port),
                limiter: NonZeroU32::new(m.sends_per_minute).map(|n| {
                    RateLimiter::direct_with_clock(Quota::per_minute(n), TokioClock { origin })
                }),
                delivery_reports: m.delivery_reports,
                in_flight: 0,
                turn: None,
                last_send: None,
                on_wire_since: None,
                permit_held: false,
                last_start: None,
                failures_in_a_row: 0,
                resting_until: None,
            })
            .collect();
        Dispatcher {
            store,
            slots,
            cfg,
            wake,
            opener,
            clock: Clock::system(),
            origin,
            stats: Arc::default(),
            metrics: None,
            freed_tx,
            freed_rx,
            stopping: watch::channel(false).0,
        }
    }

    /// Reports send outcomes and latencies to `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Live counters of this dispatcher.
    pub fn stats(&self) -> Arc<DispatchStats> {
        self.stats.clone()
    }

    /// Stamps and reads the store on `clock` instead of the system clock (tests: the same
    /// fake time the service or the test uses).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The clock the dispatcher stamps the store with.
    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// Recovers interrupted sends, then dispatches until `shutdown` resolves; in-flight sends are
    /// allowed to finish (the driver's send timeout bounds them) so their results are recorded.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), StoreError> {
        let recovered = self
            .store
            .recover_interrupted(self.cfg.unknown_rule(), self.clock.now_ms())
            .await?;
        if recovered > 0 {
            tracing::warn!(
                count = recovered,
                policy = ?self.cfg.on_unknown_outcome,
                "messages were being sent when the previous process stopped"
            );
        }
        // Readiness watchers: one small task per modem turns its changes into one shared poke.
        let poke = Arc::new(Notify::new());
        let mut watchers = JoinSet::new();
        for slot in &self.slots {
            let (port, poke) = (slot.port.clone(), poke.clone());
            watchers.spawn(async move {
                loop {
                    let was_ready = port.is_ready();
                    port.readiness_changed(was_ready).await;
                    poke.notify_one();
                }
            });
        }
        let mut sends: JoinSet<()> = JoinSet::new();
        let mut shutdown = pin!(shutdown);
        loop {
            let wake = self.wake.clone();
            let mut woken = pin!(wake.notified());
            woken.as_mut().enable();
            let mut poked = pin!(poke.notified());
            poked.as_mut().enable();

            let until = self.dispatch_ready(&mut sends).await;
            let sleep = async {
                match until {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = woken => {}
                _ = poked => {}
                Some((slot, verdict, took)) = self.freed_rx.recv() => {
                    self.modem_done(slot, verdict, took);
                }
                Some(done) = sends.join_next(), if !sends.is_empty() => {
                    finish(done);
                }
                _ = sleep => {}
            }
        }
        watchers.abort_all();
        self.stopping.send_replace(true);
        while let Some(done) = sends.join_next().await {
            finish(done);
        }
        Ok(())
    }

    /// A modem finished a send: free it, and rest it after [`FAILURES_BEFORE_REST`] failures in a
    /// row (for the backoff of that many attempts), so a SIM the network keeps refusing stops
    /// taking work the other modems could send.
    fn modem_done(&mut self, slot: usize, verdict: ModemVerdict, took: Option<Duration>) {
        let cfg = &self.cfg;
        let s = &mut self.slots[slot];
        s.in_flight = s.in_flight.saturating_sub(1);
        if took.is_some() {
            // The send on the wire ended: the message claimed in advance, if any, starts now.
            s.on_wire_since = (s.in_flight > 0).then(Instant::now);
        } else if s.in_flight == 0 {
            s.on_wire_since = None;
        }
        // Otherwise a task ended without sending (given back, expired): the send on the wire,
        // if any, keeps its start, so a hung one is not mistaken for a fresh one.
        match verdict {
            ModemVerdict::Healthy => {
                s.failures_in_a_row = 0;
                if took.is_some() {
                    s.last_send = took;
                }
            }
            ModemVerdict::Unknown => {}
            ModemVerdict::Failing => {
                s.failures_in_a_row += 1;
                if s.failures_in_a_row >= FAILURES_BEFORE_REST {
                    let rest = backoff(cfg, s.failures_in_a_row - FAILURES_BEFORE_REST + 1);
                    tracing::warn!(modem = %s.port.id(), failures = s.failures_in_a_row,
                        rest_ms = rest.as_millis() as u64, "modem keeps failing; resting it");
                    s.resting_until = Some(Instant::now() + rest);
                }
            }
        }
    }

    /// Starts a send on every free modem while there is due work. Returns when the loop should
    /// look again at the latest, if nothing else wakes it.
    async fn dispatch_ready(&mut self, sends: &mut JoinSet<()>) -> Option<Instant> {
        let mut until: Option<Instant> = None;
        let earliest = |until: &mut Option<Instant>, at: Instant| {
            *until = Some(until.map_or(at, |u| u.min(at)));
        };
        loop {
            let Some(index) = self.pick_modem(&mut until) else {
                // No modem can take work, so no claim will expire overdue messages either:
                // watch the queue's deadlines here, so an OTP expires on time even with every
                // modem down or busy.
                self.watch_expiry(&mut until).await;
                return until;
            };
            let now = self.clock.now_ms();
            self.stats.claims.fetch_add(1, Ordering::Relaxed);
            match self.store.claim_next(now).await {
                Ok(Some(claimed)) => {
                    let slot = &mut self.slots[index];
                    slot.permit_held = false;
                    let (done, next_turn) = oneshot::channel();
                    let previous = slot.turn.replace(next_turn);
                    let turn = Turn {
                        // An idle modem's previous task is over: nothing to wait for.
                        wait: previous.filter(|_| slot.in_flight > 0),
                        done: Some(done),
                        // A hung send must not hold the next message: three times the modem's
                        // last send, at least a second, then it goes back to the queue.
                        patience: slot.last_send.map_or(PREFETCH_PATIENCE_MIN, |d| {
                            (d * 3).max(PREFETCH_PATIENCE_MIN)
                        }),
                        stopping: self.stopping.subscribe(),
                    };
                    if slot.in_flight == 0 {
                        slot.on_wire_since = Some(Instant::now());
                    }
                    slot.in_flight += 1;
                    slot.last_start = Some(Instant::now());
                    let job = SendJob {
                        store: self.store.clone(),
                        port: slot.port.clone(),
                        opener: self.opener.clone(),
                        cfg: self.cfg.clone(),
                        clock: self.clock.clone(),
                        delivery_reports: slot.delivery_reports,
                        metrics: self.metrics.clone(),
                    };
                    self.stats.sends.fetch_add(1, Ordering::Relaxed);
                    let freed = Freed {
                        tx: self.freed_tx.clone(),
                        slot: Some(index),
                    };
                    sends.spawn(job.run(claimed, freed, turn));
                }
                Ok(None) => {
                    match self.store.next_due().await {
                        Ok(Some(due)) => earliest(&mut until, self.clock.instant_at(due)),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "dispatcher cannot read the queue");
                            earliest(&mut until, Instant::now() + self.cfg.store_error_pause);
                        }
                    }
                    return until;
                }
                Err(e) => {
                    tracing::error!(error = %e, "dispatcher cannot claim from the queue");
                    earliest(&mut until, Instant::now() + self.cfg.store_error_pause);
                    return until;
                }
            }
        }
    }

    /// Expires overdue queued messages and lowers `until` to the next queued deadline.
    async fn watch_expiry(&self, until: &mut Option<Instant>) {
        let mut earliest = |at: Instant| *until = Some(until.map_or(at, |u| u.min(at)));
        let result = async {
            let now = self.clock.now_ms();
            let mut next = self.store.next_expiry().await?;
            if next.is_some_and(|d| d <= now) {
                let expired = self.store.expire_overdue(now).await?;
                if let Some(m) = &self.metrics {
                    for _ in 0..expired {
                        m.record_send(SendOutcome::Expired);
                    }
                }
                next = self.store.next_expiry().await?;
            }
            Ok::<_, StoreError>(next)
        }
        .await;
        match result {
            Ok(Some(deadline)) => earliest(self.clock.instant_at(deadline)),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "dispatcher cannot expire overdue messages");
                earliest(Instant::now() + self.cfg.store_error_pause);
            }
        }
    }

    /// The least busy free modem: idle and ready, least recently started first, that its rate
    /// limit lets send now. Rate-limited modems lower `until` to when they may send again.
    /// Without an idle one, a ready modem whose send is on the wire and has nothing claimed in
    /// advance yet (see the module docs): the one expected to be free first, judging by its
    /// last send. A modem whose current send has run twice as long as its last is left out
    /// (it may be stuck), and nothing is claimed in advance while a busy modem has never sent.
    fn pick_modem(&mut self, until: &mut Option<Instant>) -> Option<usize> {
        let now = Instant::now();
        let mut free: Vec<usize> = Vec::new();
        // (modem, how long its current send should still take)
        let mut ahead: Vec<(usize, Duration)> = Vec::new();
        // A busy modem without a past send: when it will be free cannot be told, so no modem
        // is claimed for in advance (it might be free first and then find nothing).
        let mut unknown_end = false;
        let claim_ahead = self.cfg.on_unknown_outcome == UnknownOutcomePolicy::Resend;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if !slot.port.is_ready() {
                continue;
            }
            if slot.in_flight > 0 {
                // Only on a modem whose send is expected to end soon: one that has sent before,
                // and whose current send has not yet run twice as long as its last one.
                let remaining = match (slot.last_send, slot.on_wire_since) {
                    (Some(last), Some(since)) => {
                        let ran = now.saturating_duration_since(since);
                        (ran < last * 2).then(|| last.saturating_sub(ran))
                    }
                    _ => {
                        unknown_end |= slot.in_flight == 1;
                        None
                    }
                };
                let may = claim_ahead
                    && slot.in_flight == 1
                    && slot.limiter.is_none()
                    && slot.resting_until.is_none_or(|at| at <= now);
                if let Some(remaining) = remaining.filter(|_| may) {
                    ahead.push((i, remaining));
                }
                continue;
            }
            match slot.resting_until {
                Some(at) if at > now => {
                    *until = Some(until.map_or(at, |u| u.min(at)));
                    continue;
                }
                Some(_) => slot.resting_until = None,
                None => {}
            }
            free.push(i);
        }
        free.sort_by_key(|&i| self.slots[i].last_start);
        for i in free {
            let slot = &mut self.slots[i];
            if slot.permit_held {
                return Some(i);
            }
            match &slot.limiter {
                None => return Some(i),
                Some(limiter) => match limiter.check() {
                    Ok(()) => {
                        slot.permit_held = true;
                        return Some(i);
                    }
                    Err(not_until) => {
                        let at = self.origin + not_until.earliest_possible();
                        *until = Some(until.map_or(at, |u| u.min(at)));
                    }
                },
            }
        }
        if unknown_end {
            return None;
        }
        // The modem expected to be free first takes it, as it would without claiming ahead.
        ahead.sort_by_key(|&(_, remaining)| remaining);
        ahead.first().map(|&(i, _)| i)
    }
}

/// Logs a send task that did not end normally. Its modem was still freed (see [`Freed`]); its
/// message stays `sending` and is recovered as an unknown outcome at the next start.
fn finish(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "dispatcher send task failed");
    }
}

/// Consecutive modem-side failures after which a modem rests.
pub const FAILURES_BEFORE_REST: u32 = 3;

/// The shortest wait of a message claimed in advance for its modem's current send.
const PREFETCH_PATIENCE_MIN: Duration = Duration::from_secs(1);

/// A send task's place in its modem's line: it sends only after the previous task is done
/// with the modem, and tells the next one when it is.
struct Turn {
    /// The previous task's `done`; `None` when the modem was idle at the claim.
    wait: Option<oneshot::Receiver<()>>,
    /// Fired (or dropped, on any early return) when this task no longer needs the modem.
    done: Option<oneshot::Sender<()>>,
    /// How long to wait for the previous task before giving the message back.
    patience: Duration,
    /// The dispatcher is stopping: give the message back instead of sending it.
    stopping: watch::Receiver<bool>,
}

/// What a finished send says about the modem (not the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModemVerdict {
    /// The modem worked: the network took the text, or refused it for the message's own sake.
    Healthy,
    /// Temporary error, unknown outcome or not ready: the modem or its network is in trouble.
    Failing,
    /// The modem was never asked (expired, unreadable body, encoding error).
    Unknown,
}

/// Tells the loop that a modem is free, exactly once: when the send is over, or when the task
/// ends any other way (early return, panic), by `Drop`.
struct Freed {
    tx: mpsc::UnboundedSender<FreedMsg>,
    slot: Option<usize>,
}

impl Freed {
    fn now(&mut self, verdict: ModemVerdict, took: Option<Duration>) {
        if let Some(slot) = self.slot.take() {
            // The loop outlives its send tasks; a closed channel only means shutdown.
            let _ = self.tx.send((slot, verdict, took));
        }
    }
}

impl Drop for Freed {
    fn drop(&mut self) {
        self.now(ModemVerdict::Unknown, None);
    }
}

/// Everything one send needs, moved into its task.
struct SendJob<M> {
    store: Store,
    port: Arc<M>,
    opener: Opener,
    cfg: DispatchConfig,
    clock: Clock,
    delivery_reports: bool,
    metrics: Option<Arc<Metrics>>,
}

impl<M: ModemPort> SendJob<M> {
    async fn run(self, claimed: Claimed, mut freed: Freed, mut turn: Turn) {
        let id = claimed.id.clone();
        if let Err(e) = self.send(claimed, &mut freed, &mut turn).await {
            // The row stays `sending`; the next start recovers it as an unknown outcome.
            tracing::error!(message = %id, error = %e, "cannot record the outcome of a send");
        }
    }

    async fn send(
        &self,
        claimed: Claimed,
        freed: &mut Freed,
        turn: &mut Turn,
    ) -> Result<(), StoreError> {
        let modem = self.port.id().to_owned();
        let now = self.clock.now_ms();
        if claimed.deadline <= now {
            return self.expire(&claimed, now).await;
        }
        let text = match &claimed.body {
            Body::Clear(t) => t.clone(),
            Body::Sealed(sealed) => match (self.opener)(sealed) {
                Ok(t) => t,
                Err(why) => {
                    let reason = format!("cannot open the sealed text: {why}");
                    return self.store.mark_failed(&claimed.id, &reason, now).await;
                }
            },
        };
        let parts = match self.encode(&claimed, &text, now).await? {
            Ok(parts) => parts,
            Err(e) => {
                let reason = format!("cannot encode: {e}");
                return self.store.mark_failed(&claimed.id, &reason, now).await;
            }
        };
        if let Some(previous) = turn.wait.take() {
            let stopping = turn.stopping.wait_for(|stop| *stop);
            let given_back = tokio::select! {
                biased;
                _ = stopping => Some("the dispatcher is stopping"),
                _ = previous => None,
                _ = tokio::time::sleep(turn.patience) => Some("the modem's current send takes too long"),
            };
            if let Some(why) = given_back {
                tracing::info!(message = %claimed.id, modem = %modem, "{why}: message claimed in advance goes back to the queue");
                let reason = format!("{modem}: claimed in advance, not sent: {why}");
                return self
                    .store
                    .mark_not_taken(&claimed.id, &reason, self.clock.now_ms())
                    .await;
            }
            let now = self.clock.now_ms();
            if claimed.deadline <= now {
                return self.expire(&claimed, now).await;
            }
        }
        let total = parts.len();
        let started = Instant::now();
        let result = self.port.send(parts).await;
        let took = started.elapsed();
        // The next message of this modem is encoded and waiting: let it go first.
        if let Some(done) = turn.done.take() {
            let _ = done.send(());
        }
        freed.now(
            match &result {
                Ok(_)
                | Err(Failed {
                    failure: SendFailure::Permanent(_),
                    ..
                }) => ModemVerdict::Healthy,
                Err(_) => ModemVerdict::Failing,
            },
            Some(took),
        );
        let now = self.clock.now_ms();
        if let Some(m) = &self.metrics {
            m.observe_send_latency(started.elapsed());
            m.record_send(match &result {
                Ok(_) => SendOutcome::Sent,
                Err(f) => match f.failure {
                    SendFailure::Permanent(_) => SendOutcome::Failed,
                    SendFailure::OutcomeUnknown(_) => SendOutcome::Unknown,
                    SendFailure::Temporary(_) | SendFailure::NotReady => SendOutcome::Retried,
                },
            });
        }
        let result = match result {
            Ok(mrs) => Ok(mrs),
            Err(Failed { failure, accepted }) if !accepted.is_empty() && accepted.len() < total => {
                let k = accepted.len();
                let partials = self
                    .store
                    .record_partial_send(&claimed.id, &modem, accepted, now)
                    .await?;
                if partials > self.cfg.max_partial_resends
                    && !matches!(failure, SendFailure::Permanent(_))
                {
                    let why = match &failure {
                        SendFailure::Temporary(w)
                        | SendFailure::Permanent(w)
                        | SendFailure::OutcomeUnknown(w) => w.clone(),
                        SendFailure::NotReady => "modem not ready".into(),
                    };
                    tracing::warn!(message = %claimed.id, modem = %modem, parts_accepted = k,
                        total, partials, "part of a long text failed; not resending it whole again");
                    let reason = format!(
                        "{modem}: part {} of {total} failed ({why}) after parts 1..={k} were \
                         accepted; {} whole resend(s) already, each duplicating the accepted \
                         parts, so not resent again",
                        k + 1,
                        partials - 1
                    );
                    return self.store.mark_failed(&claimed.id, &reason, now).await;
                }
                Err(failure)
            }
            Err(f) => Err(f.failure),
        };
        let capped = |attempts: u32| self.cfg.max_attempts > 0 && attempts >= self.cfg.max_attempts;
        match result {
            Ok(mrs) => {
                tracing::info!(message = %claimed.id, modem = %modem, parts = mrs.len(), "sent");
                self.store.mark_sent(&claimed.id, &modem, mrs, now).await
            }
            Err(SendFailure::Temporary(why)) => {
                let next = now + backoff(&self.cfg, claimed.attempts).as_millis() as Millis;
                let reason = format!("{modem}: {why}");
                if capped(claimed.attempts) {
                    tracing::warn!(message = %claimed.id, modem = %modem, error = %why,
                        attempts = claimed.attempts, "temporary error, attempts exhausted");
                    let reason = format!(
                        "gave up after {} attempts; last: {reason}",
                        claimed.attempts
                    );
                    self.store.mark_failed(&claimed.id, &reason, now).await
                } else if next >= claimed.deadline {
                    tracing::warn!(message = %claimed.id, modem = %modem, error = %why,
                        "temporary error, no time left before the deadline");
                    let reason = format!("{reason} (no time left to retry)");
                    self.store.mark_expired(&claimed.id, &reason, now).await
                } else {
                    tracing::info!(message = %claimed.id, modem = %modem, error = %why,
                        attempt = claimed.attempts, "temporary error, will retry");
                    self.store.mark_retry(&claimed.id, &reason, next, now).await
                }
            }
            Err(SendFailure::Permanent(why)) => {
                tracing::warn!(message = %claimed.id, modem = %modem, error = %why, "failed");
                let reason = format!("{modem}: {why}");
                self.store.mark_failed(&claimed.id, &reason, now).await
            }
            Err(SendFailure::OutcomeUnknown(why)) => {
                tracing::warn!(message = %claimed.id, modem = %modem, error = %why,
                    policy = ?self.cfg.on_unknown_outcome, "send outcome unknown");
                let reason = format!("{modem}: {why}");
                self.store
                    .mark_unknown_outcome(&claimed.id, &reason, self.cfg.unknown_rule(), now)
                    .await
                    .map(drop)
            }
            Err(SendFailure::NotReady) => {
                // Not this message's fault: straight back to the queue for another modem.
                let reason = format!("{modem} not ready");
                self.store.mark_not_taken(&claimed.id, &reason, now).await
            }
        }
    }

    async fn expire(&self, claimed: &Claimed, now: Millis) -> Result<(), StoreError> {
        if let Some(m) = &self.metrics {
            m.record_send(SendOutcome::Expired);
        }
        self.store
            .mark_expired(&claimed.id, "deadline passed before sending", now)
            .await
    }

    /// Encodes the SMS-SUBMIT parts. The validity period is the message's remaining lifetime,
    /// rounded up, so the SMSC drops an OTP it could not deliver in time instead of delivering a
    /// dead code later. A concatenation reference is drawn from the store only when the text
    /// needs more than one part, keeping the common one-part send at two writes (claim, sent).
    async fn encode(
        &self,
        claimed: &Claimed,
        text: &str,
        now: Millis,
    ) -> Result<Result<Vec<EncodedPart>, pdu::EncodeError>, StoreError> {
        let remaining_ms = (claimed.deadline - now).max(1);
        let opts = SubmitOptions {
            status_report: self.delivery_reports,
            validity_minutes: Some(
                ((remaining_ms + 59_999) / 60_000).min(i64::from(u32::MAX)) as u32
            ),
            ..SubmitOptions::default()
        };
        let first = pdu::encode_submit(&claimed.to, text, &opts, 0);
        match first {
            Ok(parts) if parts.len() > 1 => {
                let reference = self.store.next_concat_reference().await?;
                Ok(pdu::encode_submit(&claimed.to, text, &opts, reference))
            }
            other => Ok(other),
        }
    }
}

/// Applies a decoded status report (a driver `+CDS`) to the store: TP-ST grouped per
/// TS 23.040 §9.2.3.15; "still trying" is history only, both kinds of giving up fail the message.
pub async fn record_status_report(
    store: &Store,
    modem_id: &str,
    message_reference: u8,
    recipient: &str,
    status: u8,
    outcome: DeliveryOutcome,
    now: Millis,
) -> Result<Option<ReportEffect>, StoreError> {
    let outcome = match outcome {
        DeliveryOutcome::Delivered => ReportOutcome::Delivered,
        DeliveryOutcome::StillTrying => {
            ReportOutcome::Pending(format!("TP-ST 0x{status:02X}, SMSC still trying"))
        }
        DeliveryOutcome::PermanentFailure => {
            ReportOutcome::Failed(format!("TP-ST 0x{status:02X}, permanent error"))
        }
        DeliveryOutcome::TemporaryFailure => ReportOutcome::Failed(format!(
            "TP-ST 0x{status:02X}, SMSC gave up after temporary errors"
        )),
    };
    let effect = store
        .record_status_report(StatusReport {
            modem_id: modem_id.to_owned(),
            message_reference,
            recipient: recipient.to_owned(),
            outcome,
            at: now,
        })
        .await?;
    match &effect {
        Some(e) => tracing::info!(message = %e.message_id, status = e.status.as_str(),
            modem = modem_id, mr = message_reference, "status report"),
        None => {
            if let Some(suppressed) = UNMATCHED_REPORTS.admit() {
                tracing::info!(
                    modem = modem_id,
                    mr = message_reference,
                    suppressed,
                    "status report matches no recent send"
                );
            }
        }
    }
    Ok(effect)
}

/// Anyone who can reach the modem's SMSC can send reports that match nothing; they are counted
/// in `simgate_status_reports_total{result="unmatched"}` and sampled in the log.
static UNMATCHED_REPORTS: Throttle = Throttle::new(Duration::from_secs(10));
/// The same for store failures while recording reports, which come as fast as the reports.
static REPORT_ERRORS: Throttle = Throttle::new(Duration::from_secs(10));
/// Incoming texts are not routed; a flood of them gets one line per interval.
static INCOMING: Throttle = Throttle::new(Duration::from_secs(10));

/// Whether a driver state takes sends. `Sending` counts: the dispatcher is the only sender and
/// keeps one send per modem itself, so a driver still saying `Sending` as the previous send ends
/// must not stall the next one.
fn takes_sends(state: &ModemState) -> bool {
    matches!(state, ModemState::Ready | ModemState::Sending)
}

impl ModemPort for ModemHandle {
    fn id(&self) -> &str {
        ModemHandle::id(self)
    }

    fn is_ready(&self) -> bool {
        takes_sends(&self.status().borrow().state)
    }

    async fn readiness_changed(&self, was_ready: bool) {
        let mut rx = self.status();
        // Signal and counter updates change the status too; only a change of readiness is news.
        while takes_sends(&rx.borrow_and_update().state) == was_ready {
            if rx.changed().await.is_err() {
                // The driver is gone for good: readiness can never change again.
                std::future::pending::<()>().await;
            }
        }
    }

    async fn send(&self, parts: Vec<EncodedPart>) -> Result<Vec<u8>, Failed> {
        ModemHandle::send_detailed(self, parts)
            .await
            .map_err(|p| Failed {
                failure: match p.error {
                    SendError::Temporary(why) => SendFailure::Temporary(why.to_string()),
                    SendError::Permanent(why) => SendFailure::Permanent(why.to_string()),
                    SendError::OutcomeUnknown(why) => SendFailure::OutcomeUnknown(why),
                    SendError::NotReady => SendFailure::NotReady,
                },
                accepted: p.sent,
            })
    }
}

/// Applies the modems' events to the store until every sender is gone: status reports update
/// their parts and messages; incoming texts go to `inbound` when inbound storage is on, else
/// they are only counted and logged (never the sender or the text). All are counted in
/// `metrics`.
pub async fn run_events(
    store: Store,
    mut events: mpsc::Receiver<ModemEvent>,
    clock: Clock,
    metrics: Option<Arc<Metrics>>,
    inbound: Option<crate::inbound::Inbound>,
) {
    let count = |r: ReportResult| {
        if let Some(m) = &metrics {
            m.record_status_report(r);
        }
    };
    while let Some(event) = events.recv().await {
        match event {
            ModemEvent::StatusReport {
                modem_id,
                message_reference,
                recipient,
                status,
                outcome,
                ..
            } => {
                let result = record_status_report(
                    &store,
                    &modem_id,
                    message_reference,
                    &recipient,
                    status,
                    outcome,
                    clock.now_ms(),
                )
                .await;
                match result {
                    Ok(Some(_)) => count(ReportResult::Matched),
                    Ok(None) => count(ReportResult::Unmatched),
                    Err(e) => {
                        count(ReportResult::Error);
                        if let Some(suppressed) = REPORT_ERRORS.admit() {
                            tracing::error!(error = %e, modem = %modem_id, suppressed,
                                "cannot record a status report");
                        }
                    }
                }
            }
            ModemEvent::Incoming {
                modem_id,
                from,
                text,
                split_units,
                sc_timestamp,
                concat,
                custody,
            } => {
                if let Some(m) = &metrics {
                    m.record_incoming_text();
                }
                if let Some(inbound) = &inbound {
                    let received = crate::inbound::Received {
                        modem_id,
                        from,
                        text,
                        split_units,
                        sc_timestamp,
                        concat,
                        custody,
                    };
                    inbound.record(received, clock.now_ms()).await;
                    continue;
                }
                if let Some(suppressed) = INCOMING.admit() {
                    tracing::info!(modem = %modem_id, suppressed, "incoming text not stored: simgate keeps no inbound texts yet");
                }
            }
        }
    }
}

/// Retention: prunes the delivery log every `every` until `shutdown` resolves (first run at
/// start). `retention` and `mask_after` as in [`Store::prune`]; `None` disables either.
pub async fn run_retention(
    store: Store,
    retention: Option<Duration>,
    mask_after: Option<Duration>,
    every: Duration,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
) {
    let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as Millis;
    let mut shutdown = pin!(shutdown);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        match store
            .prune(clock.now_ms(), retention.map(ms), mask_after.map(ms))
            .await
        {
            Ok(stats) => tracing::info!(
                deleted = stats.messages_deleted,
                otps = stats.otps_deleted,
                masked = stats.numbers_masked,
                events = stats.events_deleted,
                "retention pass"
            ),
            Err(e) => tracing::error!(error = %e, "retention pass failed"),
        }
        // Inbound texts follow the same rules (`store::inbound`).
        match store
            .prune_inbound(clock.now_ms(), retention.map(ms), mask_after.map(ms))
            .await
        {
            Ok(stats) => tracing::info!(
                deleted = stats.deleted,
                masked = stats.masked,
                "inbound retention pass"
            ),
            Err(e) => tracing::error!(error = %e, "inbound retention pass failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::watch;

    use super::*;
    use crate::store::{
        CreateOutcome, MessageKind, MessageStatus, NewMessage, NewOtp, StoreOptions,
    };

    /// What a fake modem saw: the decoded text of each send, in order.
    struct FakeState {
        id: String,
        ready: watch::Sender<bool>,
        /// Scripted answers, used first; afterwards every send succeeds.
        script: Mutex<VecDeque<Result<Vec<u8>, Failed>>>,
        /// How long a send takes, in ms (changeable, to make a modem hang).
        delay_ms: AtomicU64,
        sent: Mutex<Vec<(String, Instant)>>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        next_mr: AtomicUsize,
        /// Turns the modem not-ready the moment it answers `NotReady`, like an unplugged dongle.
        drop_on_not_ready: bool,
        /// Every send of this text fails this way (a modem that chokes on one message).
        poisoned: Mutex<Option<(String, SendFailure)>>,
    }

    #[derive(Clone)]
    struct Fake(Arc<FakeState>);

    impl Fake {
        fn new(id: &str, delay: Duration) -> Fake {
            Fake(Arc::new(FakeState {
                id: id.into(),
                ready: watch::channel(true).0,
                script: Mutex::new(VecDeque::new()),
                delay_ms: AtomicU64::new(delay.as_millis() as u64),
                sent: Mutex::new(Vec::new()),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
                next_mr: AtomicUsize::new(1),
                drop_on_not_ready: true,
                poisoned: Mutex::new(None),
            }))
        }
        fn poison(self, text: &str, failure: SendFailure) -> Fake {
            *self.0.poisoned.lock().unwrap() = Some((text.into(), failure));
            self
        }
        fn script(self, answers: Vec<Result<Vec<u8>, SendFailure>>) -> Fake {
            let answers = answers.into_iter().map(|a| a.map_err(Failed::from));
            self.0.script.lock().unwrap().extend(answers);
            self
        }
        /// Scripts a send that fails after the modem accepted `accepted` parts.
        fn script_partial(self, accepted: Vec<u8>, failure: SendFailure) -> Fake {
            let answer = Err(Failed { failure, accepted });
            self.0.script.lock().unwrap().push_back(answer);
            self
        }
        fn set_ready(&self, ready: bool) {
            self.0.ready.send_replace(ready);
        }
        fn texts(&self) -> Vec<String> {
            self.0
                .sent
                .lock()
                .unwrap()
                .iter()
                .map(|s| s.0.clone())
                .collect()
        }
        fn send_times(&self) -> Vec<Instant> {
            self.0.sent.lock().unwrap().iter().map(|s| s.1).collect()
        }
    }

    impl ModemPort for Fake {
        fn id(&self) -> &str {
            &self.0.id
        }
        fn is_ready(&self) -> bool {
            *self.0.ready.borrow()
        }
        async fn readiness_changed(&self, was_ready: bool) {
            let mut rx = self.0.ready.subscribe();
            let _ = rx.wait_for(|ready| *ready != was_ready).await;
        }
        async fn send(&self, parts: Vec<EncodedPart>) -> Result<Vec<u8>, Failed> {
            let s = &self.0;
            let now_in = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            s.max_in_flight.fetch_max(now_in, Ordering::SeqCst);
            let text: String = parts
                .iter()
                .map(|p| match pdu::decode(&p.bytes) {
                    Ok(pdu::Pdu::Submit(sub)) => sub.text,
                    other => panic!("not a SUBMIT: {other:?}"),
                })
                .collect();
            s.sent.lock().unwrap().push((text.clone(), Instant::now()));
            tokio::time::sleep(Duration::from_millis(s.delay_ms.load(Ordering::SeqCst))).await;
            s.in_flight.fetch_sub(1, Ordering::SeqCst);
            if let Some((poisoned, failure)) = &*s.poisoned.lock().unwrap()
                && *poisoned == text
            {
                return Err(failure.clone().into());
            }
            let scripted = s.script.lock().unwrap().pop_front();
            match scripted {
                Some(Err(Failed {
                    failure: SendFailure::NotReady,
                    ..
                })) if s.drop_on_not_ready => {
                    s.ready.send_replace(false);
                    Err(SendFailure::NotReady.into())
                }
                Some(answer) => answer,
                None => Ok(parts
                    .iter()
                    .map(|_| s.next_mr.fetch_add(1, Ordering::SeqCst) as u8)
                    .collect()),
            }
        }
    }

    struct Rig {
        store: Store,
        wake: Arc<Notify>,
        clock: Clock,
        stats: Arc<DispatchStats>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<Result<(), StoreError>>,
        /// Under paused time, the task that holds the time still between the test's steps.
        hold: Option<tokio::task::JoinHandle<()>>,
        _dir: tempfile::TempDir,
    }

    fn quick() -> DispatchConfig {
        DispatchConfig {
            on_unknown_outcome: UnknownOutcomePolicy::Resend,
            retry_base: Duration::from_millis(40),
            retry_max: Duration::from_secs(1),
            store_error_pause: Duration::from_millis(50),
            ..DispatchConfig::default()
        }
    }

    fn opener() -> Opener {
        // A stand-in for otp.rs: the "sealed" form is the text reversed.
        Arc::new(|sealed: &[u8]| {
            let mut b = sealed.to_vec();
            b.reverse();
            String::from_utf8(b).map_err(|_| "not utf-8".to_string())
        })
    }

    fn seal(text: &str) -> Vec<u8> {
        let mut b = text.as_bytes().to_vec();
        b.reverse();
        b
    }

    /// Opens a store, optionally pre-fills it (before the dispatcher starts), then runs the
    /// dispatcher over `modems`.
    async fn rig_with(
        modems: Vec<(Fake, u32)>,
        cfg: DispatchConfig,
        prefill: impl AsyncFnOnce(&Store, Millis),
    ) -> Rig {
        start_rig(modems, cfg, prefill, false).await
    }

    /// [`rig_with`] on paused tokio time (the test is `start_paused`) that moves only by the
    /// test's steps ([`Rig::pass`]): a waiting test costs store round trips, not sleeps.
    ///
    /// Left alone, paused time jumps to the next timer whenever every task waits, including
    /// for the store's threads, which paused time cannot see: a claim's commit would let a
    /// fake send of seconds end "before" it. A task that keeps yielding means the runtime is
    /// never idle, so tokio never advances the time by itself.
    async fn paused_rig_with(
        modems: Vec<(Fake, u32)>,
        cfg: DispatchConfig,
        prefill: impl AsyncFnOnce(&Store, Millis),
    ) -> Rig {
        start_rig(modems, cfg, prefill, true).await
    }

    async fn start_rig(
        modems: Vec<(Fake, u32)>,
        cfg: DispatchConfig,
        prefill: impl AsyncFnOnce(&Store, Millis),
        paused: bool,
    ) -> Rig {
        let hold = paused.then(|| {
            tokio::spawn(async {
                loop {
                    tokio::task::yield_now().await;
                }
            })
        });
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &dir.path().join("q.db"),
            StoreOptions {
                durability: crate::store::Durability::Normal,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let wake = Arc::new(Notify::new());
        let pool = modems
            .into_iter()
            .map(|(port, rate)| PoolModem {
                port,
                sends_per_minute: rate,
                delivery_reports: true,
            })
            .collect();
        let clock = Clock::following_tokio(Clock::system().now_ms());
        let d = Dispatcher::new(store.clone(), pool, cfg, wake.clone(), opener())
            .with_clock(clock.clone());
        prefill(&store, clock.now_ms()).await;
        let stats = d.stats();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(d.run(async move {
            let _ = rx.await;
        }));
        Rig {
            store,
            wake,
            clock,
            stats,
            stop: Some(tx),
            task,
            hold,
            _dir: dir,
        }
    }

    async fn rig(modems: Vec<(Fake, u32)>) -> Rig {
        rig_with(modems, quick(), async |_, _| {}).await
    }

    async fn pass(paused: bool, d: Duration) {
        if paused {
            tokio::time::advance(d).await;
        } else {
            tokio::time::sleep(d).await;
        }
    }

    async fn paused_rig(modems: Vec<(Fake, u32)>) -> Rig {
        paused_rig_with(modems, quick(), async |_, _| {}).await
    }

    fn text_msg(id: &str, to: &str, at: Millis) -> NewMessage {
        NewMessage {
            id: id.into(),
            to: to.into(),
            kind: MessageKind::Text,
            log_text: format!("text {id}"),
            body: Body::Clear(format!("text {id}")),
            parts: 1,
            created_at: at,
            deadline: at + 3_600_000,
        }
    }

    impl Rig {
        async fn enqueue(&self, id: &str) {
            let m = text_msg(id, "+15551230000", self.clock.now_ms());
            let out = self.store.enqueue_text(m, None, 0).await.unwrap();
            assert_eq!(out, CreateOutcome::Created);
            self.wake.notify_one();
        }

        /// Waits for `id` to reach `want`, letting time pass (in 5 ms steps under paused time).
        async fn wait_status(&self, id: &str, want: MessageStatus) {
            // Wall time: paused time runs as fast as the store answers, not as the disk syncs.
            let give_up = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let m = self.store.get_message(id).await.unwrap();
                if m.as_ref().map(|m| m.status) == Some(want) {
                    return;
                }
                assert!(
                    std::time::Instant::now() < give_up,
                    "{id} never became {want:?}: {m:?}"
                );
                self.pass(Duration::from_millis(5)).await;
            }
        }

        /// Under paused time: waits for `id` to reach `want` while no time passes, so no timer
        /// fires meanwhile (a send on the wire stays there).
        async fn settle_status(&self, id: &str, want: MessageStatus) {
            let store = self.store.clone();
            let status = async || store.get_message(id).await.unwrap().map(|m| m.status);
            self.settle(&format!("{id} never became {want:?}"), async || {
                status().await == Some(want)
            })
            .await;
        }

        /// Under paused time: waits for `cond` while no time passes.
        async fn settle(&self, what: &str, mut cond: impl AsyncFnMut() -> bool) {
            assert!(self.hold.is_some(), "only paused time can stand still");
            let give_up = std::time::Instant::now() + Duration::from_secs(10);
            while !cond().await {
                assert!(std::time::Instant::now() < give_up, "{what}");
                tokio::task::yield_now().await;
            }
        }

        /// Under paused time: lets time pass in 5 ms steps until `cond`.
        async fn pass_until(&self, what: &str, mut cond: impl AsyncFnMut() -> bool) {
            assert!(self.hold.is_some(), "paused time only");
            let give_up = std::time::Instant::now() + Duration::from_secs(10);
            while !cond().await {
                assert!(std::time::Instant::now() < give_up, "{what}");
                self.pass(Duration::from_millis(5)).await;
            }
        }

        /// Lets `d` pass: a real sleep, or a step of paused time (followed by a store round
        /// trip, so paused time cannot run far ahead of the store's threads).
        async fn pass(&self, d: Duration) {
            pass(self.hold.is_some(), d).await;
            if self.hold.is_some() {
                self.store.queue_depth().await.unwrap();
            }
        }

        async fn stop(mut self) -> Store {
            let _ = self.stop.take().unwrap().send(());
            if let Some(hold) = self.hold.take() {
                // Paused time: give the loop a moment of wall time to see the stop (it may be
                // waiting for the store), then let sends in flight finish as their time passes.
                let seen = std::time::Instant::now() + Duration::from_millis(100);
                while std::time::Instant::now() < seen && !self.task.is_finished() {
                    tokio::task::yield_now().await;
                }
                while !self.task.is_finished() {
                    pass(true, Duration::from_millis(5)).await;
                    self.store.queue_depth().await.unwrap();
                }
                hold.abort();
            }
            (&mut self.task).await.unwrap().unwrap();
            self.store
        }
    }

    #[tokio::test]
    async fn sends_oldest_first() {
        let modem = Fake::new("m0", Duration::ZERO);
        let rig = rig_with(vec![(modem.clone(), 0)], quick(), async |store, now| {
            for (i, id) in ["msg_a", "msg_b", "msg_c"].into_iter().enumerate() {
                let m = text_msg(id, "+15551230000", now + i as Millis);
                store.enqueue_text(m, None, 0).await.unwrap();
            }
        })
        .await;
        rig.wait_status("msg_c", MessageStatus::Sent).await;
        rig.wait_status("msg_b", MessageStatus::Sent).await;
        assert_eq!(modem.texts(), ["text msg_a", "text msg_b", "text msg_c"]);
        let m = rig.store.get_message("msg_a").await.unwrap().unwrap();
        assert_eq!(m.modem_id.as_deref(), Some("m0"));
        rig.stop().await;
    }

    #[tokio::test]
    async fn wakes_on_enqueue_without_polling() {
        let modem = Fake::new("m0", Duration::ZERO);
        let rig = rig(vec![(modem.clone(), 0)]).await;
        // Let the loop settle into its idle wait, then watch it do nothing.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let idle_claims = rig.stats.claims.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            rig.stats.claims.load(Ordering::SeqCst),
            idle_claims,
            "an idle dispatcher must not touch the store"
        );
        rig.enqueue("msg_a").await;
        rig.wait_status("msg_a", MessageStatus::Sent).await;
        assert_eq!(modem.texts(), ["text msg_a"]);
        rig.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn spreads_over_idle_modems_one_send_each() {
        let slow = Duration::from_millis(300);
        let (a, b) = (Fake::new("m0", slow), Fake::new("m1", slow));
        let rig = paused_rig(vec![(a.clone(), 0), (b.clone(), 0)]).await;
        for id in ["msg_1", "msg_2", "msg_3", "msg_4"] {
            rig.enqueue(id).await;
        }
        // Both modems take their first message before any send time passes.
        rig.settle("both modems send", async || {
            !a.texts().is_empty() && !b.texts().is_empty()
        })
        .await;
        for id in ["msg_1", "msg_2", "msg_3", "msg_4"] {
            rig.wait_status(id, MessageStatus::Sent).await;
        }
        // Both modems worked, in parallel, never two sends at once on one modem.
        assert_eq!(a.texts().len(), 2);
        assert_eq!(b.texts().len(), 2);
        assert_eq!(a.0.max_in_flight.load(Ordering::SeqCst), 1);
        assert_eq!(b.0.max_in_flight.load(Ordering::SeqCst), 1);
        let first_a = a.send_times()[0];
        let first_b = b.send_times()[0];
        let gap = if first_a > first_b {
            first_a - first_b
        } else {
            first_b - first_a
        };
        assert!(gap < slow, "the second modem did not wait for the first");
        rig.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_message_is_claimed_while_the_current_one_is_on_the_wire() {
        let modem = Fake::new("m0", Duration::from_millis(150));
        let rig = paused_rig_with(vec![(modem.clone(), 0)], quick(), async |store, now| {
            for (i, id) in ["msg_a", "msg_b", "msg_c", "msg_d"].into_iter().enumerate() {
                let m = text_msg(id, "+15551230000", now + i as Millis);
                store.enqueue_text(m, None, 0).await.unwrap();
            }
        })
        .await;
        // msg_a gives the modem a send time to judge by; from msg_b on, the next message is
        // claimed (durably `sending`) while the current one is on the wire.
        rig.pass_until("msg_b never went out", async || modem.texts().len() >= 2)
            .await;
        rig.settle_status("msg_c", MessageStatus::Sending).await;
        rig.pass(Duration::from_millis(50)).await;
        assert_eq!(modem.texts().len(), 2, "msg_b is still on the wire");
        let c = rig.store.get_message("msg_c").await.unwrap().unwrap();
        assert_eq!(c.status, MessageStatus::Sending, "msg_c claimed in advance");
        let d = rig.store.get_message("msg_d").await.unwrap().unwrap();
        assert_eq!(
            d.status,
            MessageStatus::Queued,
            "one message in advance at most"
        );
        rig.wait_status("msg_d", MessageStatus::Sent).await;
        // Still one send at a time, in queue order, each counted once.
        assert_eq!(modem.0.max_in_flight.load(Ordering::SeqCst), 1);
        assert_eq!(
            modem.texts(),
            ["text msg_a", "text msg_b", "text msg_c", "text msg_d"]
        );
        for id in ["msg_a", "msg_b", "msg_c", "msg_d"] {
            let m = rig.store.get_message(id).await.unwrap().unwrap();
            assert_eq!((m.status, m.attempts), (MessageStatus::Sent, 1), "{id}");
        }
        rig.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_gives_a_message_claimed_in_advance_back_to_the_queue() {
        let modem = Fake::new("m0", Duration::from_millis(200));
        let rig = paused_rig_with(vec![(modem.clone(), 0)], quick(), async |store, now| {
            for (i, id) in ["msg_a", "msg_b", "msg_c"].into_iter().enumerate() {
                let m = text_msg(id, "+15551230000", now + i as Millis);
                store.enqueue_text(m, None, 0).await.unwrap();
            }
        })
        .await;
        rig.pass_until("msg_b never went out", async || modem.texts().len() >= 2)
            .await;
        rig.settle_status("msg_c", MessageStatus::Sending).await;
        let store = rig.stop().await;
        // msg_b was on the wire and finished; msg_c never left and is queued again, uncounted.
        assert_eq!(modem.texts(), ["text msg_a", "text msg_b"]);
        let b = store.get_message("msg_b").await.unwrap().unwrap();
        assert_eq!(b.status, MessageStatus::Sent);
        let c = store.get_message("msg_c").await.unwrap().unwrap();
        assert_eq!((c.status, c.attempts), (MessageStatus::Queued, 0));
        assert!(c.error.unwrap().contains("claimed in advance, not sent"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_claimed_in_advance_goes_back_when_the_current_send_hangs() {
        let modem = Fake::new("m0", Duration::from_millis(20));
        let rig = paused_rig(vec![(modem.clone(), 0)]).await;
        rig.enqueue("msg_a").await;
        rig.wait_status("msg_a", MessageStatus::Sent).await;
        // The modem now takes 2.5 s per send: msg_c, claimed in advance behind msg_b, waits at
        // most max(1 s, 3 x 20 ms) and goes back to the queue uncounted.
        modem.0.delay_ms.store(2_500, Ordering::SeqCst);
        rig.enqueue("msg_b").await;
        rig.enqueue("msg_c").await;
        rig.settle_status("msg_c", MessageStatus::Sending).await;
        let give_up = Instant::now() + Duration::from_secs(2);
        let c = loop {
            let c = rig.store.get_message("msg_c").await.unwrap().unwrap();
            if c.status == MessageStatus::Queued {
                break c;
            }
            assert!(Instant::now() < give_up, "msg_c: {c:?}");
            rig.pass(Duration::from_millis(5)).await;
        };
        assert_eq!(c.attempts, 0);
        assert!(c.error.unwrap().contains("takes too long"));
        assert_eq!(modem.texts(), ["text msg_a", "text msg_b"]);
        modem.0.delay_ms.store(0, Ordering::SeqCst);
        rig.wait_status("msg_c", MessageStatus::Sent).await;
        assert_eq!(modem.texts(), ["text msg_a", "text msg_b", "text msg_c"]);
        assert_eq!(modem.0.max_in_flight.load(Ordering::SeqCst), 1);
        rig.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_modem_is_passed_over() {
        let a = Fake::new("m0", Duration::from_millis(500));
        let b = Fake::new("m1", Duration::ZERO);
        let rig = paused_rig(vec![(a.clone(), 0), (b.clone(), 0)]).await;
        rig.enqueue("msg_long").await;
        // Both idle and never used: the first in pool order takes it and stays busy for a while
        // (no time passes until the other three are sent).
        rig.settle("m0 never took msg_long", async || !a.texts().is_empty())
            .await;
        for id in ["msg_x", "msg_y", "msg_z"] {
            rig.enqueue(id).await;
        }
        for id in ["msg_x", "msg_y", "msg_z"] {
            rig.settle_status(id, MessageStatus::Sent).await;
        }
        rig.wait_status("msg_long", MessageStatus::Sent).await;
        assert_eq!(a.texts(), ["text msg_long"]);
        assert_eq!(b.texts(), ["text msg_x", "text msg_y", "text msg_z"]);
        rig.stop().await;
    }

    #[tokio::test]
    async fn temporary_errors_retry_with_backoff_then_send() {
        let modem = Fake::new("m0", Duration::ZERO).script(vec![
            Err(SendFailure::Temporary("+CMS ERROR: 331".into())),
            Err(SendFailure::Temporary("+CMS ERROR: 332".into())),
        ]);
        let rig = rig(vec![(modem.clone(), 0)]).await;
        rig.enqueue("msg_a").await;
        rig.wait_status("msg_a", MessageStatus::Sent).await;
        let times = modem.send_times();
        assert_eq!(times.len(), 3);
        let cfg = quick();
        assert!(times[1] - times[0] >= backoff(&cfg, 1));
        assert!(times[2] - times[1] >= backoff(&cfg, 2));
        assert!(backoff(&cfg, 2) > backoff(&cfg, 1), "backoff grows");
        let m = rig.store.get_message("msg_a").await.unwrap().unwrap();
        assert_eq!(m.attempts, 3);
        let events = rig.store.message_events("msg_a").await.unwrap();
        let retries = events
            .iter()
            .filter(|e| {
                e.detail
                    .as_deref()
                    .unwrap_or("")
                    .starts_with("retry: m0: +CMS")
            })
            .count();
        assert_eq!(retries, 2);
        rig.stop().await;
    }

    #[tokio::test]
    async fn permanent_error_fails_with_the_modem_reason() {
        let modem = Fake::new("m0", Duration::ZERO).script(vec![Err(SendFailure::Permanent(
            "+CMS ERROR: 21 (short message transfer rejected)".into(),
        ))]);
        let rig = rig(vec![(modem.clone(), 0)]).await;
        rig.enqueue("msg_a").await;
        rig.wait_status("msg_a", MessageStatus::Failed).await;
        let m = rig.store.get_message("msg_a").await.unwrap().unwrap();
        assert!(m.error.unwrap().contains("transfer rejected"));
        assert_eq!(modem.texts().len(), 1, "never retried");
        rig.stop().await;
    }

    #[tokio::test]
    async fn retries_stop_at_the_deadline() {
        let modem = Fake::new("m0", Duration::ZERO).script(vec![
            Err(SendFailure::Temporary("no network".into())),
            Err(SendFailure::Temporary("no network".into())),
            Err(SendFailure::Temporary("no network".into())),
        ]);
        let rig = rig(vec![(modem.clone(), 0)]).await;
        let now = rig.clock.now_ms();
        let mut m = text_msg("msg_a", "+15551230000", now);
        // Room for the first retry (40 ms) but not the second (80 ms more).
        m.deadline = now + 100;
        rig.store.enqueue_text(m, None, 0).await.unwrap();
        rig.wake.notify_one();
        rig.wait_status("msg_a", MessageStatus::Expired).await;
        assert_eq!(modem.texts().len(), 2);
        let m = rig.store.get_message("msg_a").await.unwrap().unwrap();
        assert!(m.error.unwrap().contains("no time left"));
        rig.stop().await;
    }

    #[tokio::test]
    async fn an_otp_that_expires_while_queued_is_never_sent() {
        let modem = Fake::new("m0", Duration::ZERO);
        modem.set_ready(false);
        let rig = rig(vec![(modem.clone(), 0)]).await;
        let now = rig.clock.now_ms();
        let otp = NewOtp {
            id: "otp_1".into(),
            to: "+15551230000".into(),
            code_hmac: vec![0; 32],
            max_attempts: 5,
            expires_at: now + 150,
            created_at: now,
        };
        let msg = NewMessage {
            id: "msg_otp".into(),
            to: "+15551230000".into(),
            kind: MessageKind::Otp,
            log_text: "Your code is ******.".into(),
            body: Body::Sealed(seal("Your code is 123456.")),
            parts: 1,
            created_at: now,
            deadline: now + 150,
        };
        rig.store.create_otp(otp, msg, None, 0, 0).await.unwrap();
        rig.wake.notify_one();
        // Nobody pokes the dispatcher: it must wake by itself at the deadline.
        rig.wait_status("msg_otp", MessageStatus::Expired).await;
        modem.set_ready(true);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(modem.texts().is_empty());
        rig.stop().await;
    }

    #[tokio::test]
    async fn sealed_otp_text_is_opened_and_validity_follows_the_deadline() {
        let modem = Fake::new("m0", Duration::ZERO);
        let rig = rig(vec![(modem.clone(), 0)]).await;
        let now = rig.clock.now_ms();
        let otp = NewOtp {
            id: "otp_1".into(),
            to: "+15551230000".into(),
            code_hmac: vec![0; 32],
            max_attempts: 5,
            expires_at: now + 5 * 60_000,
            created_at: now,
        };
        let msg = NewMessage {
            id: "msg_otp".into(),
            to: "+15551230000".into(),
            kind: MessageKind::Otp,
            log_text: "Your code is ******.".into(),
            body: Body::Sealed(seal("Your code is 123456.")),
            parts: 1,
            created_at: now,
            deadline: now + 5 * 60_000,
        };
        rig.store.create_otp(otp, msg, None, 0, 0).await.unwrap();
        rig.wake.notify_one();
        rig.wait_status("msg_otp", MessageStatus::Sent).await;
        assert_eq!(modem.texts(), ["Your code is 123456."]);
        rig.stop().await;
    }

    #[tokio::test]
    async fn unknown_outcome_is_resent_by_default() {
        let modem = Fake::new("m0", Duration::ZERO)
            .script(vec![Err(SendFailure::OutcomeUnknown("no +CMGS".into()))]);
        let rig = rig(vec![(modem.clone(), 0)]).await;
        rig.enqueue("msg_a").await;
        rig.wait_status("msg_a", MessageStatus::Sent).await;
        assert_eq!(modem.texts(), ["text msg_a", "text msg_a"]);
        let events = rig.store.message_events("msg_a").await.unwrap();
        assert!(events.iter().any(|e| {
            e.detail
                .as_deref()
                .is_some_and(|d| d.contains("outcome unknown"))
        }));
        rig.stop().await;
    }

    #[tokio::test]
    async fn unknown_outcomes_back_off_let_others_pass_and_stop_at_the_cap() {
        // Every send of msg_stuck has an unknown outcome (a modem answering `+CMGS: 999`).
        let unknown = SendFailure::OutcomeUnknown("OK without +CMGS".into());
        let modem = Fake::new("m0", Duration::ZERO).poison("text msg_stuck", unknown);
        let rig = rig(vec![(modem.clone(), 0)]).await;
        rig.enqueue("msg_stuck").await;
        rig.enqueue("msg_other").await;
        rig.wait_status("msg_stuck", MessageStatus::Failed).await;
        rig.wait_status("msg_other", MessageStatus::Sent).await;
        let stuck: Vec<Instant> = modem
            .0
            .sent
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == "text msg_stuck")
            .map(|(_, at)| *at)
            .collect();
        let cfg = quick();
        assert_eq!(
            stuck.len(),
            cfg.max_unknown_outcomes as usize,
            "stops at the cap"
        );
        assert!(stuck[1] - stuck[0] >= backoff(&cfg, 1), "backs off");
        assert!(stuck[2] - stuck[1] >= backoff(&cfg, 2), "backs off longer");
        // The other text went out while the stuck one waited, not after it gave up.
        let other_at = modem.send_times()[modem
            .texts()
            .iter()
            .position(|t| t == "text msg_other")
            .unwrap()];
        assert!(
            other_at < stuck[1],
            "the other text waited behind the stuck one"
        );
        let other = rig.store.get_message("msg_other").await.unwrap().unwrap();
        assert_eq!(other.attempts, 1);
        let m = rig.store.get_message("msg_stuck").await.unwrap().unwrap();
        assert_eq!(m.attempts, 3);
        let error = m.error.unwrap();
        assert!(error.contains("outcome unknown 3 times"), "{error}");
        assert!(error.contains("OK without +CMGS"), "{error}");
        rig.stop().await;
    }

    #[tokio::test]
    async fn temporary_errors_stop_at_max_attempts() {
        let busy = || Err(SendFailure::Temporary("+CMS ERROR: 42".into()));
        let modem = Fake::new("m0", Duration::ZERO).script(vec![busy(); 5]);
        let cfg = DispatchConfig {
            max_attempts: 3,
            retry_base: Duration::from_millis(5),
            ..quick()
        };
        let rig = rig_with(vec![(modem.clone(), 0)], cfg, async |_, _| {}).await;
        rig.enqueue("msg_a").await;
        rig.wait_status("msg_a", MessageStatus::Failed).await;
        assert_eq!(modem.texts().len(), 3);
        let m = rig.store.get_message("msg_a").await.unwrap().unwrap();
        let error = m.error.unwrap();
        assert!(error.contains("gave up after 3 attempts"), "{error}");
        assert!(error.contains("+CMS ERROR: 42"), "{error}");
        rig.stop().await;
    }

    #[tokio::test]
    async fn a_long_text_with_a_failed_last_part_is_resent_whole_at_most_the_cap() {
        let temporary = || SendFailure::Temporary("+CMS ERROR: 42".into());
        let modem = Fake::new("m0", Duration::ZERO)
            .script_partial(vec![7], temporary())
            .script_partial(vec![8], temporary());
        let rig = rig(vec![(modem.clone(), 0)]).await;
        let now = rig.clock.now_ms();
        let mut m = text_msg("msg_long", "+15551230000", now);
        m.body = Body::Clear("y".repeat(300));
        m.parts = 2;
        rig.store.enqueue_text(m, None, 0).await.unwrap();
        rig.wake.notify_one();
        rig.wait_status("msg_long", MessageStatus::Failed).await;
        // The first send and one whole resend (the default cap), never a third.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(modem.texts().len(), 2);
        let m = rig.store.get_message("msg_long").await.unwrap().unwrap();
        let error = m.error.unwrap();
        assert!(error.contains("part 2 of 2 failed"), "{error}");
        assert!(error.contains("1 whole resend"), "{error}");
        // The part that was accepted is on record: its status report still finds the message.
        let effect = record_status_report(
            &rig.store,
            "m0",
            8,
            "+15551230000",
            0,
            DeliveryOutcome::Delivered,
            rig.clock.now_ms(),
        )
        .await
        .unwrap();
        assert_eq!(effect.unwrap().message_id, "msg_long");
        rig.stop().await;
    }

    #[tokio::test]
    async fn a_partial_send_within_the_cap_is_resent_whole_and_sent() {
        let modem = Fake::new("m0", Duration::ZERO)
            .script_partial(vec![7], SendFailure::Temporary("+CMS ERROR: 42".into()));
        let rig = rig(vec![(modem.clone(), 0)]).await;
        let now = rig.clock.now_ms();
        let long = "z".repeat(300);
        let mut m = text_msg("msg_long", "+15551230000", now);
        m.body = Body::Clear(long.clone());
        m.parts = 2;
        rig.store.enqueue_text(m, None, 0).await.unwrap();
        rig.wake.notify_one();
        rig.wait_status("msg_long", MessageStatus::Sent).await;
        assert_eq!(modem.texts(), [long.clone(), long]);
        rig.stop().await;
    }

    #[tokio::test]
    async fn unknown_outcome_fails_when_configured() {
        let modem = Fake::new("m0", Duration::ZERO)
            .script(vec![Err(SendFailure::OutcomeUnknown("no +CMGS".into()))]);
        let cfg = DispatchConfig {
            on_unknown_outcome: UnknownOutcomePolicy::Fail,
            ..quick()
        };
        let rig = rig_with(vec![(modem.clone(), 0)], cfg, async |_, _| {}).await;
        rig.enqueue("msg_a").await;
        rig.wait_status("msg_a", MessageStatus::Failed).await;
        assert_eq!(modem.texts().len(), 1);
        rig.stop().await;
    }

    #[tokio::test]
    async fn messages_left_sending_are_recovered_at_start() {
        let modem = Fake::new("m0", Duration::ZERO);
        let rig = rig_with(vec![(modem.clone(), 0)], quick(), async |store, now| {
            let m = text_msg("msg_a", "+15551230000", now);
            store.enqueue_text(m, None, 0).await.unwrap();
            // A previous process claimed it and died mid-send.
            store.claim_next(now).await.unwrap().unwrap();
        })
        .await;
        rig.wait_status("msg_a", MessageStatus::Sent).await;
        let m = rig.store.get_message("msg_a").await.unwrap().unwrap();
        assert_eq!(m.attempts, 2);
        rig.stop().await;
    }

    #[tokio::test]
    async fn a_failing_modem_hands_its_work_to_the_other() {
        let a = Fake::new("m0", Duration::ZERO).script(vec![Err(SendFailure::NotReady)]);
        let b = Fake::new("m1", Duration::ZERO);
        b.set_ready(false);
        let rig = rig(vec![(a.clone(), 0), (b.clone(), 0)]).await;
        rig.enqueue("msg_a").await;
        // m0 drops out on its first send; m1 comes up afterwards and takes the message.
        let give_up = Instant::now() + Duration::from_secs(5);
        while a.is_ready() {
            assert!(Instant::now() < give_up);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        b.set_ready(true);
        rig.wait_status("msg_a", MessageStatus::Sent).await;
        let m = rig.store.get_message("msg_a").await.unwrap().unwrap();
        assert_eq!(m.modem_id.as_deref(), Some("m1"));
        // m0 never took the text, so only m1's send counts as an attempt.
        assert_eq!(m.attempts, 1);
        assert_eq!(b.texts(), ["text msg_a"]);
        rig.stop().await;
    }

    #[tokio::test]
    async fn status_report_marks_delivered() {
        let modem = Fake::new("m0", Duration::ZERO);
        let rig = rig(vec![(modem.clone(), 0)]).await;
        rig.enqueue("msg_a").await;
        rig.wait_status("msg_a", MessageStatus::Sent).await;
        // The fake numbers TP-MRs from 1.
        let now = rig.clock.now_ms();
        let effect = record_status_report(
            &rig.store,
            "m0",
            1,
            "15551230000",
            0x00,
            DeliveryOutcome::Delivered,
            now,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(effect.message_id, "msg_a");
        assert_eq!(effect.status, MessageStatus::Delivered);
        rig.wait_status("msg_a", MessageStatus::Delivered).await;
        rig.stop().await;
    }

    #[tokio::test]
    async fn permanent_failure_report_fails_the_message() {
        let modem = Fake::new("m0", Duration::ZERO);
        let rig = rig(vec![(modem.clone(), 0)]).await;
        rig.enqueue("msg_a").await;
        rig.wait_status("msg_a", MessageStatus::Sent).await;
        let now = rig.clock.now_ms();
        let effect = record_status_report(
            &rig.store,
            "m0",
            1,
            "+15551230000",
            0x41,
            DeliveryOutcome::PermanentFailure,
            now,
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(effect.status, MessageStatus::Failed);
        let m = rig.store.get_message("msg_a").await.unwrap().unwrap();
        assert!(m.error.unwrap().contains("0x41"));
        rig.stop().await;
    }

    #[tokio::test]
    async fn send_rate_limit_holds_back_the_second_send() {
        // 1 per minute: the second message must wait far longer than this test runs.
        let modem = Fake::new("m0", Duration::ZERO);
        let rig = rig(vec![(modem.clone(), 1)]).await;
        rig.enqueue("msg_a").await;
        rig.enqueue("msg_b").await;
        rig.wait_status("msg_a", MessageStatus::Sent).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(modem.texts(), ["text msg_a"]);
        assert_eq!(
            rig.store
                .get_message("msg_b")
                .await
                .unwrap()
                .unwrap()
                .status,
            MessageStatus::Queued
        );
        rig.stop().await;
    }

    #[tokio::test]
    async fn long_texts_get_fresh_concat_references() {
        let modem = Fake::new("m0", Duration::ZERO);
        let rig = rig(vec![(modem.clone(), 0)]).await;
        let now = rig.clock.now_ms();
        let long = "x".repeat(300);
        let mut m = text_msg("msg_long", "+15551230000", now);
        m.body = Body::Clear(long.clone());
        m.parts = 2;
        rig.store.enqueue_text(m, None, 0).await.unwrap();
        rig.wake.notify_one();
        rig.wait_status("msg_long", MessageStatus::Sent).await;
        assert_eq!(modem.texts(), [long]);
        // The store's counter moved: the reference came from it.
        let store = rig.stop().await;
        assert_eq!(store.next_concat_reference().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn modem_events_pump_applies_status_reports() {
        let modem = Fake::new("m0", Duration::ZERO);
        let rig = rig(vec![(modem.clone(), 0)]).await;
        rig.enqueue("msg_a").await;
        rig.wait_status("msg_a", MessageStatus::Sent).await;
        let (tx, rx) = mpsc::channel(4);
        let metrics = Arc::new(Metrics::new());
        let pump = tokio::spawn(run_events(
            rig.store.clone(),
            rx,
            rig.clock.clone(),
            Some(metrics.clone()),
            None,
        ));
        tx.send(ModemEvent::Incoming {
            modem_id: "m0".into(),
            from: "+15550000000".into(),
            text: "STOP".into(),
            split_units: None,
            sc_timestamp: "2026-12-04T10:00:00Z".into(),
            concat: None,
            custody: None,
        })
        .await
        .unwrap();
        tx.send(ModemEvent::StatusReport {
            modem_id: "m0".into(),
            message_reference: 1,
            recipient: "+15551230000".into(),
            status: 0,
            outcome: DeliveryOutcome::Delivered,
            discharge_time: None,
        })
        .await
        .unwrap();
        // A forged report for the tail of the number, and one for no send at all.
        for (mr, recipient) in [(1, "+5551230000"), (200, "+15551230000")] {
            tx.send(ModemEvent::StatusReport {
                modem_id: "m0".into(),
                message_reference: mr,
                recipient: recipient.into(),
                status: 0,
                outcome: DeliveryOutcome::Delivered,
                discharge_time: None,
            })
            .await
            .unwrap();
        }
        drop(tx);
        pump.await.unwrap();
        rig.wait_status("msg_a", MessageStatus::Delivered).await;
        let text = metrics.encode();
        assert!(
            text.contains("simgate_status_reports_total{result=\"matched\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("simgate_status_reports_total{result=\"unmatched\"} 2"),
            "{text}"
        );
        assert!(text.contains("simgate_incoming_texts_total 1"), "{text}");
        rig.stop().await;
    }

    #[tokio::test]
    async fn retention_task_prunes_old_final_messages() {
        let rig = rig(vec![]).await;
        let now = rig.clock.now_ms();
        let old = text_msg("msg_old", "+15551230000", now - 40 * 86_400_000);
        rig.store.enqueue_text(old, None, 0).await.unwrap();
        rig.store.mark_failed("msg_old", "gone", now).await.unwrap();
        rig.enqueue("msg_new").await;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_retention(
            rig.store.clone(),
            Some(Duration::from_secs(30 * 86_400)),
            Some(Duration::from_secs(7 * 86_400)),
            Duration::from_millis(20),
            rig.clock.clone(),
            async move {
                let _ = stop_rx.await;
            },
        ));
        let give_up = Instant::now() + Duration::from_secs(5);
        while rig.store.get_message("msg_old").await.unwrap().is_some() {
            assert!(Instant::now() < give_up, "never pruned");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = stop_tx.send(());
        task.await.unwrap();
        assert!(rig.store.get_message("msg_new").await.unwrap().is_some());
        rig.stop().await;
    }

    #[tokio::test]
    async fn a_modem_that_keeps_failing_rests_and_the_other_takes_over() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("q.db"), StoreOptions::default()).unwrap();
        let pool = ["m0", "m1"]
            .into_iter()
            .map(|id| PoolModem {
                port: Fake::new(id, Duration::ZERO),
                sends_per_minute: 0,
                delivery_reports: false,
            })
            .collect();
        let mut d = Dispatcher::new(store, pool, quick(), Arc::new(Notify::new()), opener());
        let mut until = None;
        // Never used: pool order.
        assert_eq!(d.pick_modem(&mut until), Some(0));
        d.slots[0].last_start = Some(Instant::now() - Duration::from_secs(10));
        d.slots[1].last_start = Some(Instant::now());
        // m0 is the least recently used; two failures do not change that...
        for _ in 1..FAILURES_BEFORE_REST {
            d.modem_done(0, ModemVerdict::Failing, None);
        }
        assert_eq!(d.pick_modem(&mut until), Some(0));
        // ...a success resets the count...
        d.modem_done(0, ModemVerdict::Healthy, None);
        for _ in 1..FAILURES_BEFORE_REST {
            d.modem_done(0, ModemVerdict::Failing, None);
        }
        assert_eq!(d.pick_modem(&mut until), Some(0));
        // ...the next failure in a row sends it to rest, and m1 gets the work.
        d.modem_done(0, ModemVerdict::Failing, None);
        let mut until = None;
        assert_eq!(d.pick_modem(&mut until), Some(1));
        let rest_end = until.expect("the loop must wake when the rest ends");
        assert!(rest_end > Instant::now());
        // With m1 busy, nothing is free until the rest is over.
        d.slots[1].in_flight = 2;
        let mut until = None;
        assert_eq!(d.pick_modem(&mut until), None);
        assert_eq!(until, Some(rest_end));
        tokio::time::sleep_until(rest_end).await;
        assert_eq!(d.pick_modem(&mut None), Some(0));
        // Each further failure rests it longer.
        d.modem_done(0, ModemVerdict::Failing, None);
        let mut longer = None;
        d.pick_modem(&mut longer);
        assert!(longer.unwrap() - Instant::now() > backoff(&quick(), 1));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cfg = DispatchConfig {
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(60),
            ..DispatchConfig::default()
        };
        let got: Vec<u64> = (1..=8).map(|a| backoff(&cfg, a).as_secs()).collect();
        assert_eq!(got, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(&cfg, 0).as_secs(), 2);
        assert_eq!(backoff(&cfg, u32::MAX).as_secs(), 60);
    }
}
