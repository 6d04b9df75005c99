//! Inbound texts from the modems' events into the store: each decoded SMS-DELIVER part is
//! recorded (and its custody answered, so the driver deletes or acknowledges it only after the
//! commit), and a task gives up on concatenated texts whose parts stop coming.
//!
//! **Invariant:** no text of a received SMS reaches a log line or a metric label; the log names
//! only the modem and counts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock::Clock;
use crate::log_throttle::Throttle;
use crate::metrics::Metrics;
use crate::model::Millis;
use crate::modem::Custody;
use crate::pdu::Concat;
use crate::store::{InboundOutcome, InboundPart, Store};

/// Store failures come as fast as texts: one line per 10 s with the count of the others.
static ERRORS: Throttle = Throttle::new(Duration::from_secs(10));

/// Records inbound parts; shared by the event pump and the expiry task.
#[derive(Clone)]
pub struct Inbound {
    /// Where the parts go.
    store: Store,
    /// `[inbound] reassembly_timeout_seconds`.
    timeout: Duration,
    /// Counters of `/metrics`, when the daemon has them.
    metrics: Option<Arc<Metrics>>,
    /// Wakes the expiry task when a part starts (or extends) a wait for more parts.
    waiting: Arc<Notify>,
}

/// One received part, as the driver's event carries it.
#[derive(Debug)]
pub struct Received {
    /// The receiving modem.
    pub modem_id: String,
    /// TP-OA as text.
    pub from: String,
    /// The part's decoded text.
    pub text: String,
    /// Its UTF-16 units, when it holds half of a character another part completes.
    pub split_units: Option<Vec<u16>>,
    /// TP-SCTS in RFC 3339.
    pub sc_timestamp: String,
    /// The concatenation element, if any.
    pub concat: Option<Concat>,
    /// The driver's wait for the commit.
    pub custody: Option<Custody>,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Inbound {
    /// A recorder over `store` with the given reassembly timeout.
    pub fn new(store: Store, timeout: Duration, metrics: Option<Arc<Metrics>>) -> Inbound {
        Inbound {
            store,
            timeout,
            metrics,
            waiting: Arc::new(Notify::new()),
        }
    }

    fn timeout_ms(&self) -> Millis {
        Millis::try_from(self.timeout.as_millis()).unwrap_or(Millis::MAX)
    }

    /// Records one part at `now` and tells its driver whether it is stored.
    pub async fn record(&self, r: Received, now: Millis) {
        let part = InboundPart {
            modem_id: r.modem_id.clone(),
            sender: r.from,
            sc_timestamp: r.sc_timestamp,
            concat: r.concat.map(|c| (c.reference, c.total, c.seq)),
            text: r.text,
            units: r.split_units,
            received_at: now,
        };
        let result = self.store.record_inbound_part(part).await;
        let count_part = |result| {
            if let Some(m) = &self.metrics {
                m.record_inbound_part(result);
            }
        };
        match result {
            Ok(record) => {
                for closed in &record.closed {
                    self.count_text(closed.complete);
                    tracing::warn!(modem = %r.modem_id, id = %closed.id, parts = closed.parts, missing = ?closed.missing,
                        "concatenated text kept incomplete: its reference was reused before the missing parts came");
                }
                match record.outcome {
                    InboundOutcome::Stored(m) => {
                        count_part("stored");
                        self.count_text(m.complete);
                        tracing::info!(modem = %r.modem_id, id = %m.id, parts = m.parts, "inbound text stored");
                    }
                    InboundOutcome::Waiting { received, total } => {
                        count_part("stored");
                        tracing::debug!(modem = %r.modem_id, received, total, "inbound part stored; waiting for the others");
                        self.waiting.notify_one();
                    }
                    InboundOutcome::Duplicate => {
                        count_part("duplicate");
                        tracing::info!(modem = %r.modem_id, "inbound part seen before (redelivered or read again); dropped");
                    }
                }
                if let Some(c) = r.custody {
                    c.stored();
                }
            }
            Err(e) => {
                count_part("error");
                if let Some(suppressed) = ERRORS.admit() {
                    tracing::error!(modem = %r.modem_id, error = %e, suppressed, "cannot store an inbound text");
                }
                if let Some(c) = r.custody {
                    c.failed();
                }
            }
        }
    }

    fn count_text(&self, complete: bool) {
        if let Some(m) = &self.metrics {
            m.record_inbound_text(complete);
        }
    }

    /// Gives up on messages whose parts waited longer than the timeout, until `shutdown`: at
    /// start (parts left by a previous run) and whenever the oldest waiting part comes due.
    pub async fn run_expiry(self, clock: Clock, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        // A store that fails to answer is asked again after this long.
        const RETRY: Duration = Duration::from_secs(30);
        loop {
            let now = clock.now_ms();
            let due = match self.store.expire_inbound(now, self.timeout_ms()).await {
                Ok(given_up) => {
                    for m in &given_up {
                        self.count_text(false);
                        tracing::warn!(modem = %m.modem_id, id = %m.id, parts = m.parts, missing = ?m.missing,
                            "concatenated text kept incomplete: parts missing after the reassembly timeout");
                    }
                    self.store.next_inbound_expiry(self.timeout_ms()).await
                }
                Err(e) => Err(e),
            };
            let wait = match due {
                Ok(Some(at)) => Duration::from_millis(u64::try_from(at - now).unwrap_or(0)),
                // Nothing waits: sleep until a part starts a wait.
                Ok(None) => Duration::MAX,
                Err(e) => {
                    tracing::error!(error = %e, "cannot expire inbound parts");
                    RETRY
                }
            };
            let sleep = tokio::time::sleep(wait.min(Duration::from_secs(86_400)));
            tokio::select! {
                _ = &mut shutdown => return,
                _ = sleep => {}
                _ = self.waiting.notified(), if wait == Duration::MAX => {}
            }
        }
    }
}
