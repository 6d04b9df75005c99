//! The loop: the pool's bookkeeping, claims, readiness and rate limits (see the module docs of
//! [`crate::dispatch`]).

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
use crate::metrics::{Metrics, SendOutcome};
use crate::store::{Store, StoreError, UnknownOutcomePolicy};

use super::send::*;
use super::*;

/// governor's clock over tokio's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub(super) struct TokioClock {
    pub(super) origin: Instant,
}

impl clock::Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

pub(super) type Limiter =
    RateLimiter<state::NotKeyed, state::InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// Pool bookkeeping for one modem; owned by the loop only.
pub(super) struct Slot<M> {
    pub(super) port: Arc<M>,
    pub(super) limiter: Option<Limiter>,
    pub(super) delivery_reports: bool,
    /// Claims of this modem not yet finished: 0 (idle), 1 (a send in flight, or about to be),
    /// 2 (one in flight and the next one claimed, encoded and waiting for it).
    pub(super) in_flight: u8,
    /// Resolves when the newest send task of this modem is done with the modem; the next task
    /// waits for it before sending.
    pub(super) turn: Option<oneshot::Receiver<()>>,
    /// How long this modem's last successful send took; bounds how long a message claimed in
    /// advance waits for it.
    pub(super) last_send: Option<Duration>,
    /// Since when the modem's current send has (about) been on the wire.
    pub(super) on_wire_since: Option<Instant>,
    /// A rate-limiter cell was taken but the claim found nothing: the next send uses it.
    pub(super) permit_held: bool,
    /// When this modem last started a send; the least recently used idle modem goes first.
    pub(super) last_start: Option<Instant>,
    /// Sends in a row that failed for reasons of the modem or network (temporary, unknown
    /// outcome, not ready), not of the message.
    pub(super) failures_in_a_row: u32,
    /// A modem that keeps failing rests until then, so its work goes to the others.
    pub(super) resting_until: Option<Instant>,
}

/// Takes queued messages and sends them through a pool of modems. See the module docs.
pub struct Dispatcher<M: ModemPort> {
    pub(super) store: Store,
    pub(super) slots: Vec<Slot<M>>,
    pub(super) cfg: DispatchConfig,
    pub(super) wake: Arc<Notify>,
    pub(super) opener: Opener,
    /// The wall clock the store's timestamps are compared with (injected: see [`Clock`]).
    pub(super) clock: Clock,
    /// Anchor of the governor clock: rate limits measure tokio's monotonic time since here.
    pub(super) origin: Instant,
    pub(super) stats: Arc<DispatchStats>,
    pub(super) metrics: Option<Arc<Metrics>>,
    /// Send tasks report here the moment their modem is free again (before recording the
    /// result), so the next claim and the previous result share a group commit.
    pub(super) freed_tx: mpsc::UnboundedSender<FreedMsg>,
    pub(super) freed_rx: mpsc::UnboundedReceiver<FreedMsg>,
    /// Turns true when the dispatcher stops: messages claimed in advance go back to the queue.
    pub(super) stopping: watch::Sender<bool>,
}

/// A modem is free again: which, what its send said about it, and how long the send took.
pub(super) type FreedMsg = (usize, ModemVerdict, Option<Duration>);

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
        // With other nodes on the same queue (PostgreSQL), a node that dies leaves claims that
        // no event announces: only the lapse of their lease does. The loop looks when the
        // earliest lease of another node runs out (renewals push it on, so it wakes about three
        // times a lease while others send), and at least once a lease for claims made since.
        // A single node has nothing to look for.
        let lease = self.store.claim_lease_ms();
        let mut abandoned_at = lease.map(|_| Instant::now());
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
                _ = tokio::time::sleep_until(abandoned_at.unwrap_or_else(Instant::now)), if abandoned_at.is_some() => {
                    self.recover_abandoned().await;
                    abandoned_at = Some(self.next_abandon_check(lease.unwrap_or(30_000)).await);
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

    /// Takes over the claims of nodes that stopped renewing them, under the unknown-outcome
    /// rule. A failure is only logged: the next tick tries again, and claiming goes on.
    async fn recover_abandoned(&self) {
        match self
            .store
            .recover_abandoned(self.cfg.unknown_rule(), self.clock.now_ms())
            .await
        {
            Ok(0) => {}
            Ok(count) => tracing::warn!(
                count,
                policy = ?self.cfg.on_unknown_outcome,
                "took over messages another node claimed and stopped renewing"
            ),
            Err(e) => tracing::warn!("cannot look for abandoned claims: {e}"),
        }
    }

    /// When to look for abandoned claims next: just after the earliest lease of another node
    /// runs out, and no later than a lease from now.
    async fn next_abandon_check(&self, lease_ms: Millis) -> Instant {
        let now = self.clock.now_ms();
        let at = match self.store.next_foreign_lease_expiry().await {
            // A little after, so the lease has surely lapsed on the database's side too.
            Ok(Some(expiry)) => (expiry + 20).min(now + lease_ms),
            Ok(None) => now + lease_ms,
            Err(_) => now + 1000,
        };
        Instant::now() + Duration::from_millis((at - now).max(50) as u64)
    }

    /// A modem finished a send: free it, and rest it after [`FAILURES_BEFORE_REST`] failures in a
    /// row (for the backoff of that many attempts), so a SIM the network keeps refusing stops
    /// taking work the other modems could send.
    pub(super) fn modem_done(
        &mut self,
        slot: usize,
        verdict: ModemVerdict,
        took: Option<Duration>,
    ) {
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
    pub(super) async fn dispatch_ready(&mut self, sends: &mut JoinSet<()>) -> Option<Instant> {
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
    pub(super) async fn watch_expiry(&self, until: &mut Option<Instant>) {
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
    pub(super) fn pick_modem(&mut self, until: &mut Option<Instant>) -> Option<usize> {
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
pub(super) fn finish(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        tracing::error!(error = %e, "dispatcher send task failed");
    }
}

/// Consecutive modem-side failures after which a modem rests.
pub const FAILURES_BEFORE_REST: u32 = 3;
