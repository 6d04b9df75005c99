//! What comes back from the modems (status reports, incoming texts) and the retention sweep;
//! the driver's handle as a [`ModemPort`].

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::log_throttle::Throttle;
use crate::metrics::{Metrics, ReportResult};
use crate::modem::{ModemEvent, ModemHandle, ModemState};
use crate::pdu::{DeliveryOutcome, EncodedPart};
use crate::store::{Millis, ReportEffect, ReportOutcome, StatusReport, Store, StoreError};

use super::*;

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
pub(super) fn takes_sends(state: &ModemState) -> bool {
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
                failure: p.error,
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
