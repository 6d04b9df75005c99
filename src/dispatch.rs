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
//! - outcome unknown (PDU written, no `+CMGS`) → noted, then resent or failed per
//!   [`UnknownOutcomePolicy`]; the same holds for messages found `sending` at start-up;
//! - modem not ready → back to `queued` at once, for another modem to take.
//!
//! Time: the loop reads the wall clock as `wall-clock at start + tokio elapsed`, so tests can run
//! it under paused tokio time and still get consistent store timestamps.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::{Quota, RateLimiter, clock, middleware::NoOpMiddleware, state};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::metrics::{Metrics, SendOutcome};
use crate::pdu::{self, DeliveryOutcome, EncodedPart, SubmitOptions};
use crate::store::{
    Body, Claimed, Millis, ReportEffect, ReportOutcome, StatusReport, Store, StoreError,
    UnknownOutcomePolicy,
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

/// What the dispatcher needs from one modem. Implemented by the driver's handle; tests use
/// in-memory fakes.
pub trait ModemPort: Send + Sync + 'static {
    /// Stable name, recorded with each sent part: TP-MR is only unique per modem.
    fn id(&self) -> &str;
    /// Whether a send may be attempted now.
    fn is_ready(&self) -> bool;
    /// Resolves the next time readiness may have changed (spurious wake-ups are fine; it must not
    /// resolve again immediately if nothing changed, or the watcher would spin).
    fn readiness_changed(&self) -> impl Future<Output = ()> + Send;
    /// Sends every part of one message, returning the TP-MR of each part in order.
    fn send(
        &self,
        parts: Vec<EncodedPart>,
    ) -> impl Future<Output = Result<Vec<u8>, SendFailure>> + Send;
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

/// Pool-wide policy.
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
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            on_unknown_outcome: UnknownOutcomePolicy::Resend,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(60),
            store_error_pause: Duration::from_secs(1),
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

/// Wall-clock milliseconds derived from tokio's clock (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Unix milliseconds at `origin`.
    wall_origin: Millis,
    /// The tokio instant matching `wall_origin`.
    origin: Instant,
}

impl Clock {
    /// Anchors the clock at the current system time.
    pub fn start() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0);
        Clock {
            wall_origin: wall,
            origin: Instant::now(),
        }
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> Millis {
        self.wall_origin + self.origin.elapsed().as_millis() as Millis
    }

    /// The tokio instant at which the wall clock reads `ms`.
    pub fn instant_at(&self, ms: Millis) -> Instant {
        let delta = ms - self.wall_origin;
        if delta <= 0 {
            self.origin
        } else {
            self.origin + Duration::from_millis(delta as u64)
        }
    }
}

/// governor's clock over tokio time, so rate limits follow paused time in tests.
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
    /// A send is in flight on this modem.
    busy: bool,
    /// A rate-limiter cell was taken but the claim found nothing: the next send uses it.
    permit_held: bool,
    /// When this modem last started a send; the least recently used idle modem goes first.
    last_start: Option<Instant>,
}

/// Takes queued messages and sends them through a pool of modems. See the module docs.
pub struct Dispatcher<M: ModemPort> {
    store: Store,
    slots: Vec<Slot<M>>,
    cfg: DispatchConfig,
    wake: Arc<Notify>,
    opener: Opener,
    clock: Clock,
    stats: Arc<DispatchStats>,
    metrics: Option<Arc<Metrics>>,
    /// Which slot each running send task occupies, so even a panicked task frees its modem.
    running: Vec<(tokio::task::Id, usize)>,
}

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
        let clock = Clock::start();
        let slots = modems
            .into_iter()
            .map(|m| Slot {
                port: Arc::new(m.port),
                limiter: NonZeroU32::new(m.sends_per_minute).map(|n| {
                    RateLimiter::direct_with_clock(
                        Quota::per_minute(n),
                        TokioClock {
                            origin: clock.origin,
                        },
                    )
                }),
                delivery_reports: m.delivery_reports,
                busy: false,
                permit_held: false,
                last_start: None,
            })
            .collect();
        Dispatcher {
            store,
            slots,
            cfg,
            wake,
            opener,
            clock,
            stats: Arc::default(),
            metrics: None,
            running: Vec::new(),
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

    /// The clock the dispatcher stamps the store with.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Recovers interrupted sends, then dispatches until `shutdown` resolves; in-flight sends are
    /// allowed to finish (the driver's send timeout bounds them) so their results are recorded.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), StoreError> {
        let recovered = self
            .store
            .recover_interrupted(self.cfg.on_unknown_outcome, self.clock.now_ms())
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
                    port.readiness_changed().await;
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
                Some(done) = sends.join_next_with_id(), if !sends.is_empty() => {
                    self.finish(done);
                }
                _ = sleep => {}
            }
        }
        watchers.abort_all();
        while let Some(done) = sends.join_next_with_id().await {
            self.finish(done);
        }
        Ok(())
    }

    fn finish(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match done {
            Ok((id, ())) => id,
            Err(e) => {
                // A bug in a send task; its message stays `sending` and is recovered as an
                // unknown outcome at the next start. The modem itself is fine to use again.
                tracing::error!(error = %e, "dispatcher send task failed");
                e.id()
            }
        };
        if let Some(pos) = self.running.iter().position(|(t, _)| *t == id) {
            let (_, slot) = self.running.swap_remove(pos);
            self.slots[slot].busy = false;
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
                return until;
            };
            let now = self.clock.now_ms();
            self.stats.claims.fetch_add(1, Ordering::Relaxed);
            match self.store.claim_next(now).await {
                Ok(Some(claimed)) => {
                    let slot = &mut self.slots[index];
                    slot.permit_held = false;
                    slot.busy = true;
                    slot.last_start = Some(Instant::now());
                    let job = SendJob {
                        store: self.store.clone(),
                        port: slot.port.clone(),
                        opener: self.opener.clone(),
                        cfg: self.cfg.clone(),
                        clock: self.clock,
                        delivery_reports: slot.delivery_reports,
                        metrics: self.metrics.clone(),
                    };
                    self.stats.sends.fetch_add(1, Ordering::Relaxed);
                    let task = sends.spawn(job.run(claimed));
                    self.running.push((task.id(), index));
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

    /// The least busy free modem: idle and ready, least recently started first, that its rate
    /// limit lets send now. Rate-limited modems lower `until` to when they may send again.
    fn pick_modem(&mut self, until: &mut Option<Instant>) -> Option<usize> {
        let mut free: Vec<usize> = (0..self.slots.len())
            .filter(|&i| !self.slots[i].busy && self.slots[i].port.is_ready())
            .collect();
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
                        let at = self.clock.origin + not_until.earliest_possible();
                        *until = Some(until.map_or(at, |u| u.min(at)));
                    }
                },
            }
        }
        None
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
    async fn run(self, claimed: Claimed) {
        let id = claimed.id.clone();
        if let Err(e) = self.send(claimed).await {
            // The row stays `sending`; the next start recovers it as an unknown outcome.
            tracing::error!(message = %id, error = %e, "cannot record the outcome of a send");
        }
    }

    async fn send(&self, claimed: Claimed) -> Result<(), StoreError> {
        let modem = self.port.id().to_owned();
        let now = self.clock.now_ms();
        if claimed.deadline <= now {
            if let Some(m) = &self.metrics {
                m.record_send(SendOutcome::Expired);
            }
            return self
                .store
                .mark_expired(&claimed.id, "deadline passed before sending", now)
                .await;
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
        let started = Instant::now();
        let result = self.port.send(parts).await;
        let now = self.clock.now_ms();
        if let Some(m) = &self.metrics {
            m.observe_send_latency(started.elapsed());
            m.record_send(match &result {
                Ok(_) => SendOutcome::Sent,
                Err(SendFailure::Permanent(_)) => SendOutcome::Failed,
                Err(SendFailure::OutcomeUnknown(_)) => SendOutcome::Unknown,
                Err(SendFailure::Temporary(_) | SendFailure::NotReady) => SendOutcome::Retried,
            });
        }
        match result {
            Ok(mrs) => {
                tracing::info!(message = %claimed.id, modem = %modem, parts = mrs.len(), "sent");
                self.store.mark_sent(&claimed.id, &modem, mrs, now).await
            }
            Err(SendFailure::Temporary(why)) => {
                let next = now + backoff(&self.cfg, claimed.attempts).as_millis() as Millis;
                let reason = format!("{modem}: {why}");
                if next >= claimed.deadline {
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
                    .mark_unknown_outcome(&claimed.id, &reason, self.cfg.on_unknown_outcome, now)
                    .await
                    .map(drop)
            }
            Err(SendFailure::NotReady) => {
                // Not this message's fault: straight back to the queue for another modem.
                let reason = format!("{modem} not ready");
                self.store.mark_retry(&claimed.id, &reason, now, now).await
            }
        }
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
        None => tracing::info!(
            modem = modem_id,
            mr = message_reference,
            "status report matches no recent send"
        ),
    }
    Ok(effect)
}
