//! Prometheus metrics (prometheus-client registry, no globals).
//!
//! One [`Metrics`] value is built at start and shared (`Arc<Metrics>`) by the HTTP layer, the
//! service, the dispatcher and the modem supervisors; `GET /metrics` calls [`Metrics::encode`].
//! No global recorder: tests build their own and read the text back.
//!
//! Labels carry only bounded, non-secret values: outcome names, modem ids, modem state names,
//! limit names, route templates (`/v1/otp/{id}`, never the concrete path) and status classes.
//! Never a number, a code, a text or a token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds of the send-latency buckets in seconds: a healthy send takes 1–5 s, a congested
/// network 10–30 s, and 60 s is the default `send_timeout_seconds`.
pub const SEND_LATENCY_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// What happened to one send attempt, for `simgate_sends_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendOutcome {
    /// The modem accepted every part (`+CMGS`).
    Sent,
    /// A permanent error; the message is `failed`.
    Failed,
    /// A temporary error; the message goes back to the queue.
    Retried,
    /// The message's deadline passed before it could be sent.
    Expired,
    /// The PDU was written but no answer came: it may or may not have gone out.
    Unknown,
}

impl SendOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SendOutcome::Sent => "sent",
            SendOutcome::Failed => "failed",
            SendOutcome::Retried => "retried",
            SendOutcome::Expired => "expired",
            SendOutcome::Unknown => "unknown",
        }
    }
}

impl EncodeLabelValue for SendOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: SendOutcome,
}

/// What became of one status report (`+CDS`), for `simgate_status_reports_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportResult {
    /// It matched a sent part (modem, TP-MR, whole recipient, plausible time) and was applied.
    Matched,
    /// It matched nothing: late beyond the window, for another SIM's send, or forged.
    Unmatched,
    /// The store could not record it.
    Error,
}

impl EncodeLabelValue for ReportResult {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            ReportResult::Matched => "matched",
            ReportResult::Unmatched => "unmatched",
            ReportResult::Error => "error",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReportLabels {
    result: ReportResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModemStateLabels {
    modem: String,
    state: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LimitLabels {
    limit: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: String,
}

/// The registry and every metric simgate exports.
pub struct Metrics {
    /// Owns the metric descriptions; only [`Metrics::encode`] reads it.
    registry: Registry,
    /// Messages waiting to be sent, set by the daemon from the store.
    queue_depth: Gauge,
    /// Send attempts by outcome.
    sends: Family<OutcomeLabels, Counter>,
    /// Seconds from handing a message to a modem until its outcome.
    send_latency: Histogram,
    /// 1 for each modem's current state, 0 for states it has left.
    modem_state: Family<ModemStateLabels, Gauge>,
    /// The state last set per modem, so leaving it can be recorded as 0.
    current_state: Mutex<HashMap<String, String>>,
    /// Requests refused by a rate limit, by limit name.
    rate_limited: Family<LimitLabels, Counter>,
    /// HTTP requests by route template and status class (`2xx`, `4xx`, ...).
    http_requests: Family<HttpLabels, Counter>,
    /// SMS parts of the messages the API accepted, by kind (`otp`, `text`): what the SIM will
    /// be billed for, where the message count alone hides a 3-part text.
    parts_accepted: Family<KindLabels, Counter>,
    /// Status reports by what became of them; the log shows only a sample of unmatched ones.
    status_reports: Family<ReportLabels, Counter>,
    /// Incoming texts (`+CMT`, read from storage), which simgate does not route.
    incoming_texts: Counter,
    /// Inbound messages stored (`[inbound] enabled`), by whether every part arrived.
    inbound_texts: Family<CompleteLabels, Counter>,
    /// Inbound SMS parts by what the store made of them (stored, duplicate, error).
    inbound_parts: Family<ResultLabels, Counter>,
    /// URCs the AT engine dropped because nobody read them fast enough (a flood).
    urcs_dropped: Counter,
    /// PDUs from a modem that did not decode.
    undecodable_pdus: Counter,
    /// The store writer's group commits, by whether they were synced (one WAL fsync each).
    store_batches: Family<SyncedLabels, Counter>,
    /// Operations committed by the store writer.
    store_ops: Counter,
    /// Seconds operations waited in front of the writer, summed.
    store_queue_wait: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Seconds spent in COMMIT, summed, by whether the commit was synced.
    store_commit: Family<SyncedLabels, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// Webhook delivery attempts by endpoint (its URL without credentials) and result.
    webhook_deliveries: Family<EndpointResultLabels, Counter>,
    /// 1 while an endpoint is disabled (it answered 410 Gone), else 0.
    webhook_disabled: Family<EndpointLabels, Gauge>,
    /// Events recorded after an endpoint's cursor: not yet delivered, dead or filtered out.
    webhook_backlog: Family<EndpointLabels, Gauge>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointResultLabels {
    endpoint: String,
    result: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CompleteLabels {
    complete: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SyncedLabels {
    synced: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered under the `simgate_` prefix.
    pub fn new() -> Metrics {
        Metrics::for_node(None)
    }

    /// [`Metrics::new`] for a node of a cluster: every series carries `node="<id>"`, so the
    /// nodes' scrapes add up without relabelling.
    pub fn for_node(node: Option<&str>) -> Metrics {
        let mut registry = match node {
            None => Registry::with_prefix("simgate"),
            Some(node) => Registry::with_prefix_and_labels(
                "simgate",
                std::iter::once((
                    std::borrow::Cow::Borrowed("node"),
                    std::borrow::Cow::Owned(node.to_owned()),
                )),
            ),
        };
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Messages queued and not yet final",
            queue_depth.clone(),
        );
        let sends = Family::<OutcomeLabels, Counter>::default();
        registry.register("sends", "Send attempts by outcome", sends.clone());
        let send_latency = Histogram::new(SEND_LATENCY_BUCKETS);
        registry.register_with_unit(
            "send_latency",
            "Time from handing a message to a modem until its outcome",
            Unit::Seconds,
            send_latency.clone(),
        );
        let modem_state = Family::<ModemStateLabels, Gauge>::default();
        registry.register(
            "modem_state",
            "1 for each modem's current state",
            modem_state.clone(),
        );
        let rate_limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "rate_limit_rejections",
            "Requests refused by a rate limit, by limit",
            rate_limited.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status class",
            http_requests.clone(),
        );
        let parts_accepted = Family::<KindLabels, Counter>::default();
        registry.register(
            "sms_parts_accepted",
            "SMS parts of the messages accepted for sending, by kind (otp, text)",
            parts_accepted.clone(),
        );
        let status_reports = Family::<ReportLabels, Counter>::default();
        registry.register(
            "status_reports",
            "Status reports by result (matched a sent part, unmatched, not recorded)",
            status_reports.clone(),
        );
        let incoming_texts = Counter::default();
        registry.register(
            "incoming_texts",
            "Incoming texts received and ignored",
            incoming_texts.clone(),
        );
        let inbound_texts = Family::<CompleteLabels, Counter>::default();
        registry.register(
            "inbound_texts",
            "Inbound texts stored, by whether every part arrived (complete=false: given up after the reassembly timeout)",
            inbound_texts.clone(),
        );
        let inbound_parts = Family::<ResultLabels, Counter>::default();
        registry.register(
            "inbound_parts",
            "Inbound SMS parts by result (stored, duplicate: a redelivery dropped, error: not stored)",
            inbound_parts.clone(),
        );
        let store_batches = Family::<SyncedLabels, Counter>::default();
        registry.register(
            "store_batches",
            "Group commits of the store writer, by whether they were synced (one fsync each)",
            store_batches.clone(),
        );
        let store_ops = Counter::default();
        registry.register(
            "store_ops",
            "Write operations committed by the store writer",
            store_ops.clone(),
        );
        let store_queue_wait = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "store_queue_wait",
            "Time write operations waited for their group commit to start, summed",
            Unit::Seconds,
            store_queue_wait.clone(),
        );
        let store_commit =
            Family::<SyncedLabels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register_with_unit(
            "store_commit",
            "Time spent in COMMIT, summed, by whether the commit was synced",
            Unit::Seconds,
            store_commit.clone(),
        );
        let urcs_dropped = Counter::default();
        registry.register(
            "urcs_dropped",
            "Unsolicited result codes dropped because they came faster than they were handled",
            urcs_dropped.clone(),
        );
        let undecodable_pdus = Counter::default();
        registry.register(
            "undecodable_pdus",
            "PDUs from a modem that did not decode",
            undecodable_pdus.clone(),
        );
        let webhook_deliveries = Family::<EndpointResultLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by endpoint and result (delivered: 2xx; failed: retried later; dead: given up after the retry period; gone: 410, endpoint disabled)",
            webhook_deliveries.clone(),
        );
        let webhook_disabled = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "webhook_endpoint_disabled",
            "1 while a webhook endpoint is disabled because it answered 410 Gone (until its config changes)",
            webhook_disabled.clone(),
        );
        let webhook_backlog = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "webhook_backlog",
            "Events recorded after a webhook endpoint's cursor (undelivered, or not yet passed over by its filter)",
            webhook_backlog.clone(),
        );
        Metrics {
            registry,
            webhook_deliveries,
            webhook_disabled,
            webhook_backlog,
            parts_accepted,
            status_reports,
            incoming_texts,
            inbound_texts,
            inbound_parts,
            urcs_dropped,
            undecodable_pdus,
            store_batches,
            store_ops,
            store_queue_wait,
            store_commit,
            queue_depth,
            sends,
            send_latency,
            modem_state,
            current_state: Mutex::new(HashMap::new()),
            rate_limited,
            http_requests,
        }
    }

    /// Sets the queue depth gauge.
    pub fn set_queue_depth(&self, depth: u64) {
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// Counts one send attempt.
    pub fn record_send(&self, outcome: SendOutcome) {
        self.sends.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Records how long a send took.
    pub fn observe_send_latency(&self, latency: Duration) {
        self.send_latency.observe(latency.as_secs_f64());
    }

    /// Marks `state` as the current state of modem `modem` (and its previous state as 0).
    pub fn set_modem_state(&self, modem: &str, state: &str) {
        let mut current = self.current_state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(prev) = current.insert(modem.to_string(), state.to_string())
            && prev != state
        {
            self.modem_state
                .get_or_create(&ModemStateLabels {
                    modem: modem.to_string(),
                    state: prev,
                })
                .set(0);
        }
        self.modem_state
            .get_or_create(&ModemStateLabels {
                modem: modem.to_string(),
                state: state.to_string(),
            })
            .set(1);
    }

    /// Counts one rejection by the limit named `limit` (see `limits::LimitName::as_str`).
    pub fn record_rate_limited(&self, limit: &str) {
        self.rate_limited
            .get_or_create(&LimitLabels {
                limit: limit.to_string(),
            })
            .inc();
    }

    /// Counts one status report by what became of it.
    pub fn record_status_report(&self, result: ReportResult) {
        self.status_reports
            .get_or_create(&ReportLabels { result })
            .inc();
    }

    /// Counts one incoming text.
    pub fn record_incoming_text(&self) {
        self.incoming_texts.inc();
    }

    /// Counts one webhook delivery attempt: `delivered`, `failed`, `dead` or `gone`.
    pub fn record_webhook(&self, endpoint: &str, result: &'static str) {
        self.webhook_deliveries
            .get_or_create(&EndpointResultLabels {
                endpoint: endpoint.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// Sets an endpoint's disabled flag and backlog.
    pub fn set_webhook_endpoint(&self, endpoint: &str, disabled: bool, backlog: u64) {
        let labels = EndpointLabels {
            endpoint: endpoint.to_string(),
        };
        self.webhook_disabled
            .get_or_create(&labels)
            .set(i64::from(disabled));
        self.webhook_backlog
            .get_or_create(&labels)
            .set(i64::try_from(backlog).unwrap_or(i64::MAX));
    }

    /// Counts one inbound message stored.
    pub fn record_inbound_text(&self, complete: bool) {
        self.inbound_texts
            .get_or_create(&CompleteLabels {
                complete: complete.to_string(),
            })
            .inc();
    }

    /// Counts one inbound part by `result`: `stored`, `duplicate` or `error`.
    pub fn record_inbound_part(&self, result: &'static str) {
        self.inbound_parts
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// Brings the store writer's counters up to `s` (read at each scrape; only this moves them).
    pub fn set_store_writer(&self, s: &crate::store::WriterSnapshot) {
        let synced = |b: bool| SyncedLabels {
            synced: b.to_string(),
        };
        let up_to = |c: &Counter, v: u64| {
            c.inc_by(v.saturating_sub(c.get()));
        };
        let up_to_f = |c: &Counter<f64, std::sync::atomic::AtomicU64>, v: f64| {
            let delta = v - c.get();
            if delta > 0.0 {
                c.inc_by(delta);
            }
        };
        up_to(
            &self.store_batches.get_or_create(&synced(true)),
            s.synced_batches,
        );
        up_to(
            &self.store_batches.get_or_create(&synced(false)),
            s.batches - s.synced_batches.min(s.batches),
        );
        up_to(&self.store_ops, s.ops);
        up_to_f(&self.store_queue_wait, s.queue_wait.as_secs_f64());
        up_to_f(
            &self.store_commit.get_or_create(&synced(true)),
            s.synced_commit.as_secs_f64(),
        );
        up_to_f(
            &self.store_commit.get_or_create(&synced(false)),
            s.commit.saturating_sub(s.synced_commit).as_secs_f64(),
        );
    }

    /// Brings the counts of dropped URCs and undecodable PDUs (kept by the AT engine and the
    /// driver, which know no metrics) up to the given totals.
    pub fn set_modem_noise(&self, urcs_dropped: u64, undecodable_pdus: u64) {
        for (c, v) in [
            (&self.urcs_dropped, urcs_dropped),
            (&self.undecodable_pdus, undecodable_pdus),
        ] {
            c.inc_by(v.saturating_sub(c.get()));
        }
    }

    /// Counts one HTTP request. `route` must be the route template, not the concrete path, so
    /// ids never become label values.
    pub fn record_http(&self, route: &str, status: u16) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                status: class.to_string(),
            })
            .inc();
    }

    /// Counts the SMS parts of one accepted message of `kind` (`otp` or `text`).
    pub fn record_parts_accepted(&self, kind: &str, parts: u32) {
        self.parts_accepted
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc_by(u64::from(parts));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_encoded_after_use() {
        let m = Metrics::new();
        m.set_queue_depth(7);
        m.record_send(SendOutcome::Sent);
        m.record_send(SendOutcome::Sent);
        m.record_send(SendOutcome::Unknown);
        m.observe_send_latency(Duration::from_millis(1500));
        m.set_modem_state("modem0", "ready");
        m.record_rate_limited("otp_per_number");
        m.record_http("/v1/otp", 202);
        m.record_http("/v1/otp", 429);
        m.record_parts_accepted("otp", 3);
        m.record_parts_accepted("otp", 1);
        m.record_status_report(ReportResult::Unmatched);
        m.record_status_report(ReportResult::Unmatched);
        m.record_status_report(ReportResult::Matched);
        m.record_incoming_text();
        m.set_modem_noise(5, 2);
        m.set_modem_noise(7, 2);
        m.set_store_writer(&crate::store::WriterSnapshot {
            batches: 10,
            synced_batches: 4,
            ops: 50,
            queue_wait: Duration::from_millis(1500),
            commit: Duration::from_millis(30),
            synced_commit: Duration::from_millis(20),
        });
        let text = m.encode();
        for want in [
            "simgate_queue_depth 7",
            "simgate_sends_total{outcome=\"sent\"} 2",
            "simgate_sends_total{outcome=\"unknown\"} 1",
            "simgate_send_latency_seconds_count 1",
            "simgate_send_latency_seconds_bucket{le=\"2.5\"} 1",
            "simgate_send_latency_seconds_bucket{le=\"1.0\"} 0",
            "simgate_modem_state{modem=\"modem0\",state=\"ready\"} 1",
            "simgate_rate_limit_rejections_total{limit=\"otp_per_number\"} 1",
            "simgate_http_requests_total{route=\"/v1/otp\",status=\"2xx\"} 1",
            "simgate_http_requests_total{route=\"/v1/otp\",status=\"4xx\"} 1",
            "simgate_sms_parts_accepted_total{kind=\"otp\"} 4",
            "simgate_status_reports_total{result=\"unmatched\"} 2",
            "simgate_status_reports_total{result=\"matched\"} 1",
            "simgate_incoming_texts_total 1",
            "simgate_urcs_dropped_total 7",
            "simgate_undecodable_pdus_total 2",
            "simgate_store_batches_total{synced=\"true\"} 4",
            "simgate_store_batches_total{synced=\"false\"} 6",
            "simgate_store_ops_total 50",
            "simgate_store_queue_wait_seconds_total 1.5",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn modem_state_moves() {
        let m = Metrics::new();
        m.set_modem_state("modem0", "initializing");
        m.set_modem_state("modem0", "ready");
        m.set_modem_state("modem0", "ready");
        m.set_modem_state("modem1", "disconnected");
        let text = m.encode();
        assert!(text.contains("simgate_modem_state{modem=\"modem0\",state=\"initializing\"} 0"));
        assert!(text.contains("simgate_modem_state{modem=\"modem0\",state=\"ready\"} 1"));
        assert!(text.contains("simgate_modem_state{modem=\"modem1\",state=\"disconnected\"} 1"));
    }

    #[test]
    fn status_classes() {
        let m = Metrics::new();
        for s in [101, 204, 301, 404, 500, 503] {
            m.record_http("/healthz", s);
        }
        let text = m.encode();
        for c in ["1xx", "2xx", "3xx", "4xx"] {
            assert!(text.contains(&format!("status=\"{c}\"}} 1")), "{c}");
        }
        assert!(text.contains("status=\"5xx\"} 2"));
    }

    #[test]
    fn a_cluster_node_labels_every_series_with_its_node() {
        let m = Metrics::for_node(Some("node-a"));
        m.set_queue_depth(3);
        let text = m.encode();
        assert!(
            text.contains("simgate_queue_depth{node=\"node-a\"} 3"),
            "{text}"
        );
        assert!(!Metrics::new().encode().contains("node="));
    }
}
