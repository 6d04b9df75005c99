//! `simgate status`: a running daemon at a glance — readiness, queue depth, sends since start
//! and each modem — the way `systemctl status` shows a unit.
//!
//! Built only from the existing API: `/readyz` and `/metrics` (no token needed) and
//! `/v1/modems` (token). Without a usable token the modems are shown from `/metrics` (id and
//! state only) and a note on stderr says why the details are missing. Exit status 0 when a
//! modem is ready, 7 when the daemon answers but none is, 8 when nothing answers.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde_json::{Map, Value, json};

use crate::commands::client::{Client, ClientError, ConnArgs, EXIT_STATUS_HELP, Exit, table};

/// `simgate status`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS_HELP)]
pub struct StatusArgs {
    /// How to reach the daemon.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// One sample of the metrics text: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    /// Metric name with its `_total` and the like.
    name: String,
    /// Label pairs in the order written.
    labels: Vec<(String, String)>,
    /// The value.
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the Prometheus / OpenMetrics text exposition; comment lines and lines it cannot read
/// are skipped (a status display must not fail on a metric it does not know).
fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_sample).collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, after) = parse_labels(&line[open + 1..])?;
            (&line[..open], labels, after)
        }
        None => {
            let (name, rest) = line.split_once(' ')?;
            (name, Vec::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Reads `k="v",…}` and returns the pairs and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches(',');
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_owned(), value));
        s = &rest[end + 1..];
    }
}

/// What `status` shows, gathered from the daemon.
#[derive(Debug, Clone, PartialEq)]
struct Status {
    /// The daemon's base URL.
    url: String,
    /// `/readyz` answered 200.
    ready: bool,
    /// `/readyz`'s detail when not ready.
    detail: Option<String>,
    /// `simgate_queue_depth`.
    queue_depth: Option<u64>,
    /// `simgate_sends_total` by outcome.
    sends: BTreeMap<String, u64>,
    /// `simgate_rate_limit_rejections_total` by limit.
    rate_limited: BTreeMap<String, u64>,
    /// `/v1/modems`, or id and state from `/metrics`.
    modems: Vec<Value>,
    /// Whether `modems` came from `/v1/modems` (else only id and state are known).
    modem_details: bool,
}

impl Status {
    /// Reads readiness and the metrics; `modems` is the answer of `/v1/modems` when there is one.
    fn from_parts(
        url: &str,
        ready: bool,
        detail: Option<String>,
        metrics: &[Sample],
        modems: Option<Vec<Value>>,
    ) -> Status {
        let mut queue_depth = None;
        let mut sends = BTreeMap::new();
        let mut rate_limited = BTreeMap::new();
        let mut states: BTreeMap<String, String> = BTreeMap::new();
        for m in metrics {
            let count = m.value.max(0.0) as u64;
            match m.name.as_str() {
                "simgate_queue_depth" => queue_depth = Some(count),
                "simgate_sends_total" => {
                    if let Some(o) = m.label("outcome") {
                        *sends.entry(o.to_owned()).or_insert(0) += count;
                    }
                }
                "simgate_rate_limit_rejections_total" => {
                    if let Some(l) = m.label("limit") {
                        *rate_limited.entry(l.to_owned()).or_insert(0) += count;
                    }
                }
                "simgate_modem_state" if m.value >= 1.0 => {
                    if let (Some(id), Some(st)) = (m.label("modem"), m.label("state")) {
                        states.insert(id.to_owned(), st.to_owned());
                    }
                }
                _ => {}
            }
        }
        let modem_details = modems.is_some();
        let modems = modems.unwrap_or_else(|| {
            states
                .into_iter()
                .map(|(id, state)| json!({"id": id, "state": state}))
                .collect()
        });
        Status {
            url: url.to_owned(),
            ready,
            detail,
            queue_depth,
            sends,
            rate_limited,
            modems,
            modem_details,
        }
    }

    fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("url".into(), json!(self.url));
        o.insert("ready".into(), json!(self.ready));
        if let Some(d) = &self.detail {
            o.insert("detail".into(), json!(d));
        }
        o.insert("queue_depth".into(), json!(self.queue_depth));
        o.insert("sends".into(), json!(self.sends));
        o.insert("rate_limited".into(), json!(self.rate_limited));
        o.insert("modems".into(), Value::Array(self.modems.clone()));
        o.insert("modem_details".into(), json!(self.modem_details));
        Value::Object(o)
    }

    fn to_text(&self) -> String {
        let ready = self.modems.iter().filter(|m| m["state"] == "ready").count();
        let mut out = if self.ready {
            format!(
                "simgate at {}: ready ({ready} of {} modem{} ready)",
                self.url,
                self.modems.len(),
                if self.modems.len() == 1 { "" } else { "s" }
            )
        } else {
            format!(
                "simgate at {}: not ready ({})",
                self.url,
                self.detail.as_deref().unwrap_or("no modem is ready")
            )
        };
        if let Some(q) = self.queue_depth {
            out.push_str(&format!(
                "\n   queue: {q} message{} waiting",
                if q == 1 { "" } else { "s" }
            ));
        }
        if !self.sends.is_empty() {
            let parts: Vec<String> = self
                .sends
                .iter()
                .map(|(outcome, n)| format!("{n} {outcome}"))
                .collect();
            out.push_str(&format!(
                "\n   sends: {} (attempts since start)",
                parts.join(", ")
            ));
        }
        let limited: u64 = self.rate_limited.values().sum();
        if limited > 0 {
            let parts: Vec<String> = self
                .rate_limited
                .iter()
                .map(|(limit, n)| format!("{n} {limit}"))
                .collect();
            out.push_str(&format!(
                "\n limited: {limited} request{} refused since start ({})",
                if limited == 1 { "" } else { "s" },
                parts.join(", ")
            ));
        }
        if self.modems.is_empty() {
            out.push_str("\n  modems: none");
            return out;
        }
        out.push_str("\n  modems:");
        let text = |m: &Value, k: &str| match &m[k] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            v => v.to_string(),
        };
        let mut rows = Vec::new();
        if self.modem_details {
            rows.push(
                [
                    "ID", "STATE", "DEVICE", "MODEL", "OPERATOR", "SIGNAL", "SENT", "FAILED",
                ]
                .map(str::to_owned),
            );
        } else {
            rows.push(["ID", "STATE", "", "", "", "", "", ""].map(str::to_owned));
        }
        for m in &self.modems {
            let model = [text(m, "manufacturer"), text(m, "model")]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            let operator = match (text(m, "operator"), text(m, "registration")) {
                (o, r) if o.is_empty() => r,
                (o, r) if r.is_empty() => o,
                (o, r) => format!("{o} ({r})"),
            };
            let signal = m["signal"]
                .as_i64()
                .map(|s| format!("{s} dBm"))
                .unwrap_or_default();
            rows.push([
                text(m, "id"),
                text(m, "state"),
                text(m, "device"),
                model,
                operator,
                signal,
                text(m, "sent"),
                text(m, "failed"),
            ]);
        }
        let right = [false, false, false, false, false, true, true, true];
        for line in table(&rows, &right).lines() {
            out.push_str("\n    ");
            out.push_str(line);
        }
        out
    }
}

/// Runs `simgate status`.
pub fn run(args: StatusArgs, json: bool) -> ExitCode {
    let client = match Client::resolve_lenient(&args.conn) {
        Ok(c) => c,
        Err(e) => return e.report(json),
    };
    let ready = match client.get_public("/readyz") {
        Ok(a) => a,
        Err(e) => return e.report(json),
    };
    let readyz: Value = serde_json::from_str(&ready.body).unwrap_or(Value::Null);
    let is_ready = ready.status == 200;
    if !is_ready && ready.status != 503 {
        let mut e = ClientError {
            kind: "not-simgate".into(),
            status: Some(ready.status),
            title: "The answer is not simgate's".into(),
            detail: format!(
                "{} answered GET /readyz with {}; is it a simgate daemon?",
                client.base, ready.status
            ),
            exit: Exit::Unreachable,
            retry_after: None,
        };
        if let Some(d) = readyz["detail"].as_str() {
            e.detail.push_str(&format!(" ({d})"));
        }
        return e.report(json);
    }
    let detail = (!is_ready).then(|| {
        readyz["detail"]
            .as_str()
            .unwrap_or("no modem is ready")
            .to_owned()
    });
    let metrics = match client.get_public("/metrics") {
        Ok(a) if a.status == 200 => parse_metrics(&a.body),
        Ok(_) => Vec::new(),
        Err(e) => return e.report(json),
    };
    let modems = match client.request("GET", "/v1/modems", &[], None, None) {
        Ok(v) => v["modems"].as_array().cloned(),
        Err(e) if e.exit == Exit::Unreachable => return e.report(json),
        Err(e) => {
            note(&e, json);
            None
        }
    };
    let status = Status::from_parts(&client.base, is_ready, detail, &metrics, modems);
    if json {
        println!("{}", status.to_json());
    } else {
        println!("{}", status.to_text());
    }
    if is_ready {
        Exit::Success.into()
    } else {
        Exit::Unavailable.into()
    }
}

/// Says on stderr why the modem details are missing, without failing the command.
fn note(e: &ClientError, json: bool) {
    if json {
        eprintln!("{}", e.to_json());
    } else {
        eprintln!(
            "simgate: modem details unavailable: {} (showing what /metrics tells)",
            e.to_text()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Metrics, SendOutcome};

    #[test]
    fn reads_the_daemons_own_metrics() {
        let m = Metrics::new();
        m.set_queue_depth(3);
        m.record_send(SendOutcome::Sent);
        m.record_send(SendOutcome::Sent);
        m.record_send(SendOutcome::Failed);
        m.set_modem_state("modem0", "ready");
        m.set_modem_state("modem1", "waiting-for-network");
        m.record_rate_limited("otp_per_number");
        let samples = parse_metrics(&m.encode());
        let st = Status::from_parts("http://127.0.0.1:1", true, None, &samples, None);
        assert_eq!(st.queue_depth, Some(3));
        assert_eq!(st.sends["sent"], 2);
        assert_eq!(st.sends["failed"], 1);
        assert_eq!(st.rate_limited["otp_per_number"], 1);
        assert_eq!(
            st.modems,
            [
                json!({"id": "modem0", "state": "ready"}),
                json!({"id": "modem1", "state": "waiting-for-network"})
            ]
        );
        let text = st.to_text();
        assert!(
            text.starts_with("simgate at http://127.0.0.1:1: ready (1 of 2 modems ready)"),
            "{text}"
        );
        assert!(text.contains("queue: 3 messages waiting"), "{text}");
        assert!(text.contains("2 sent"), "{text}");
    }

    #[test]
    fn label_values_with_escapes() {
        let s = parse_sample(r#"x_total{a="b\"c",d="e\\f"} 4"#).unwrap();
        assert_eq!(s.label("a"), Some("b\"c"));
        assert_eq!(s.label("d"), Some("e\\f"));
        assert_eq!(s.value, 4.0);
        assert_eq!(parse_sample("# EOF"), None);
        assert_eq!(parse_sample("garbage"), None);
    }
}
