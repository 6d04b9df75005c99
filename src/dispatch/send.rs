//! One send task: waits for its modem's turn, opens and encodes the text, sends it and records
//! the outcome.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::metrics::{Metrics, SendOutcome};
use crate::pdu::{self, Address, EncodedPart, SubmitOptions};
use crate::store::{Body, Claimed, Millis, Store, StoreError};

use super::pool::*;
use super::*;

/// The shortest wait of a message claimed in advance for its modem's current send.
pub(super) const PREFETCH_PATIENCE_MIN: Duration = Duration::from_secs(1);

/// A send task's place in its modem's line: it sends only after the previous task is done
/// with the modem, and tells the next one when it is.
pub(super) struct Turn {
    /// The previous task's `done`; `None` when the modem was idle at the claim.
    pub(super) wait: Option<oneshot::Receiver<()>>,
    /// Fired (or dropped, on any early return) when this task no longer needs the modem.
    pub(super) done: Option<oneshot::Sender<()>>,
    /// How long to wait for the previous task before giving the message back.
    pub(super) patience: Duration,
    /// The dispatcher is stopping: give the message back instead of sending it.
    pub(super) stopping: watch::Receiver<bool>,
}

/// What a finished send says about the modem (not the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ModemVerdict {
    /// The modem worked: the network took the text, or refused it for the message's own sake.
    Healthy,
    /// Temporary error, unknown outcome or not ready: the modem or its network is in trouble.
    Failing,
    /// The modem was never asked (expired, unreadable body, encoding error).
    Unknown,
}

/// Tells the loop that a modem is free, exactly once: when the send is over, or when the task
/// ends any other way (early return, panic), by `Drop`.
pub(super) struct Freed {
    pub(super) tx: mpsc::UnboundedSender<FreedMsg>,
    pub(super) slot: Option<usize>,
}

impl Freed {
    pub(super) fn now(&mut self, verdict: ModemVerdict, took: Option<Duration>) {
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
pub(super) struct SendJob<M> {
    pub(super) store: Store,
    pub(super) port: Arc<M>,
    pub(super) opener: Opener,
    pub(super) cfg: DispatchConfig,
    pub(super) clock: Clock,
    pub(super) delivery_reports: bool,
    pub(super) metrics: Option<Arc<Metrics>>,
}

impl<M: ModemPort> SendJob<M> {
    pub(super) async fn run(self, claimed: Claimed, mut freed: Freed, mut turn: Turn) {
        let id = claimed.id.clone();
        if let Err(e) = self.send(claimed, &mut freed, &mut turn).await {
            // The row stays `sending`; the next start recovers it as an unknown outcome.
            tracing::error!(message = %id, error = %e, "cannot record the outcome of a send");
        }
    }

    pub(super) async fn send(
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
                    failure: SendError::Permanent(_),
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
                    SendError::Permanent(_) => SendOutcome::Failed,
                    SendError::OutcomeUnknown(_) => SendOutcome::Unknown,
                    SendError::Temporary(_) | SendError::NotReady => SendOutcome::Retried,
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
                    && !matches!(failure, SendError::Permanent(_))
                {
                    let why = match &failure {
                        SendError::Temporary(w) | SendError::Permanent(w) => w.to_string(),
                        SendError::OutcomeUnknown(w) => w.clone(),
                        SendError::NotReady => "modem not ready".to_owned(),
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
            Err(SendError::Temporary(why)) => {
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
            Err(SendError::Permanent(why)) => {
                tracing::warn!(message = %claimed.id, modem = %modem, error = %why, "failed");
                let reason = format!("{modem}: {why}");
                self.store.mark_failed(&claimed.id, &reason, now).await
            }
            Err(SendError::OutcomeUnknown(why)) => {
                tracing::warn!(message = %claimed.id, modem = %modem, error = %why,
                    policy = ?self.cfg.on_unknown_outcome, "send outcome unknown");
                let reason = format!("{modem}: {why}");
                self.store
                    .mark_unknown_outcome(&claimed.id, &reason, self.cfg.unknown_rule(), now)
                    .await
                    .map(drop)
            }
            Err(SendError::NotReady) => {
                // Not this message's fault: straight back to the queue for another modem.
                let reason = format!("{modem} not ready");
                self.store.mark_not_taken(&claimed.id, &reason, now).await
            }
        }
    }

    pub(super) async fn expire(&self, claimed: &Claimed, now: Millis) -> Result<(), StoreError> {
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
    pub(super) async fn encode(
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
        let first = pdu::encode_submit_to(Address::from(&claimed.to), text, &opts, 0);
        match first {
            Ok(parts) if parts.len() > 1 => {
                let reference = self.store.next_concat_reference().await?;
                Ok(pdu::encode_submit_to(
                    Address::from(&claimed.to),
                    text,
                    &opts,
                    reference,
                ))
            }
            other => Ok(other),
        }
    }
}
