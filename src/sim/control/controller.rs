//! [`Controller`]: one request object in, one answer object out, in-process. Checks each
//! operation's fields and hands the change to the runner; separate from the socket so tests
//! and the hub call it directly.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};

use super::observed::{Shared, counters_json, modem_json, stored_json};
use super::request::{Req, deliver_parts, delivered_json, fields, outcome, registration};
use super::{Job, JobMsg};
use crate::sim::ReportTarget;
use crate::sim::core::SimChange;
use crate::sim::core::control::{Control, Reply};
/// A handle on a running simulator: the same operations as the socket, in-process. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Controller {
    jobs: mpsc::Sender<JobMsg>,
    pub(super) shared: Arc<Shared>,
}

impl Controller {
    pub(in crate::sim) fn new(jobs: mpsc::Sender<JobMsg>, shared: Arc<Shared>) -> Controller {
        Controller { jobs, shared }
    }

    /// Carries out one request object and returns its answer object (never fails: an error
    /// is `{"ok": false, "error": ...}`).
    pub async fn call(&self, request: &Value) -> Value {
        match self.call_inner(request).await {
            Ok(mut fields) => {
                fields.insert("ok".into(), Value::Bool(true));
                Value::Object(fields)
            }
            Err(e) => json!({"ok": false, "error": e}),
        }
    }

    /// Parses a request line and answers it.
    pub async fn call_line(&self, line: &str) -> Value {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => self.call(&v).await,
            Err(e) => json!({"ok": false, "error": format!("the request is not JSON: {e}")}),
        }
    }

    async fn run(&self, job: Job) -> Result<Reply, String> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((job, tx))
            .await
            .map_err(|_| "the simulator has stopped".to_string())?;
        rx.await
            .map_err(|_| "the simulator has stopped".to_string())?
    }

    async fn call_inner(&self, req: &Value) -> Result<Map<String, Value>, String> {
        let obj = req
            .as_object()
            .ok_or("a request is a JSON object with an \"op\"")?;
        let r = Req(obj);
        let op = r.str("op")?.ok_or("the request has no \"op\"")?;
        let done = |reply: Result<Reply, String>| reply.map(|_| Map::new());
        match op {
            "ping" => {
                let s = self.shared.lock();
                Ok(fields(modem_json(&s)))
            }
            "call" => {
                let from = r.str("from")?;
                if let Some(f) = from {
                    let digits = f.strip_prefix('+').unwrap_or(f);
                    if digits.is_empty()
                        || digits.len() > 20
                        || !digits.bytes().all(|b| b.is_ascii_digit())
                    {
                        return Err(format!("\"from\" {f:?}: a number, + and digits or digits"));
                    }
                }
                let rings = r.u64("rings")?.unwrap_or(5);
                if !(1..=100).contains(&rings) {
                    return Err("\"rings\" is 1 to 100".into());
                }
                let interval = Duration::from_millis(r.u64("interval_ms")?.unwrap_or(3000).max(10));
                done(
                    self.run(Job::Core(Control::Call {
                        from: from.map(String::from),
                        rings: rings as u32,
                        interval,
                    }))
                    .await,
                )
            }
            "hangup" => done(self.run(Job::Core(Control::Hangup)).await),
            "sim" => {
                let change = match r.str("state")? {
                    Some("removed") => SimChange::Remove,
                    Some("inserted") => SimChange::Insert,
                    Some("pin") => SimChange::Lock(r.str("pin")?.map(String::from)),
                    Some("puk") => SimChange::Block,
                    Some("ready") => SimChange::Unlock,
                    other => {
                        return Err(format!(
                            "\"state\" {other:?}: removed, inserted, pin, puk or ready"
                        ));
                    }
                };
                if let Some(pin) = r.str("pin")?
                    && !(4..=8).contains(&pin.len())
                {
                    return Err("a PIN is 4 to 8 digits".into());
                }
                if let Some(pin) = r.str("pin")?
                    && !pin.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err("a PIN is 4 to 8 digits".into());
                }
                done(self.run(Job::Core(Control::Sim(change))).await)
            }
            "deliver" => {
                let parts = deliver_parts(&r)?;
                match self.run(Job::Core(Control::Deliver(parts))).await? {
                    Reply::Delivered(routes) => Ok(delivered_json(routes)),
                    other => Err(format!("unexpected reply {other:?}")),
                }
            }
            "report" => {
                let target = match (r.u64("mr")?, r.str("to")?) {
                    (Some(mr), None) => ReportTarget::Mr(
                        u8::try_from(mr).map_err(|_| "\"mr\" is a TP-MR, 0 to 255")?,
                    ),
                    (None, Some(to)) => ReportTarget::To(to.to_string()),
                    _ => {
                        return Err(
                            "name the sent part by \"mr\" or by \"to\" (one of them)".into()
                        );
                    }
                };
                let outcome = outcome(&r)?;
                match self
                    .run(Job::Core(Control::Report { target, outcome }))
                    .await?
                {
                    Reply::Reports {
                        answered,
                        rule_added,
                    } => Ok(fields(
                        json!({"answered": answered, "rule_added": rule_added}),
                    )),
                    other => Err(format!("unexpected reply {other:?}")),
                }
            }
            "report_default" => done(
                self.run(Job::Core(Control::ReportDefault(outcome(&r)?)))
                    .await,
            ),
            "report_clear" => done(self.run(Job::Core(Control::ReportClear)).await),
            "network" => {
                let stat = match obj.get("registration") {
                    None => return Err("\"registration\" is missing".into()),
                    Some(Value::String(s)) if s == "auto" => None,
                    Some(Value::String(s)) => Some(registration(s)?),
                    Some(Value::Number(n)) => Some(
                        n.as_u64()
                            .filter(|n| *n <= 5)
                            .ok_or("a registration stat is 0 to 5")? as u8,
                    ),
                    Some(_) => return Err("\"registration\" is a name or a stat 0 to 5".into()),
                };
                done(self.run(Job::Core(Control::Registration(stat))).await)
            }
            "signal" => {
                let rssi = r.u64("rssi")?.ok_or("\"rssi\" is missing")?;
                let ber = r.u64("ber")?.unwrap_or(99);
                if !(rssi <= 31 || rssi == 99) || !(ber <= 7 || ber == 99) {
                    return Err("\"rssi\" is 0 to 31 or 99, \"ber\" 0 to 7 or 99".into());
                }
                done(
                    self.run(Job::Core(Control::Signal(rssi as u8, ber as u8)))
                        .await,
                )
            }
            "operator" => {
                let long = r.str("long")?.ok_or("\"long\" is missing")?;
                let short = r.str("short")?.unwrap_or(long);
                let numeric = r.str("numeric")?.unwrap_or("00101");
                for name in [long, short, numeric] {
                    if name.is_empty() || name.len() > 24 || name.contains(['"', '\r', '\n']) {
                        return Err(format!(
                            "operator name {name:?}: 1 to 24 characters, no quotes or line breaks"
                        ));
                    }
                }
                let names = [long, short, numeric].map(String::from);
                done(self.run(Job::Core(Control::Operator(names))).await)
            }
            "errors" => {
                let rate = obj
                    .get("rate")
                    .and_then(Value::as_f64)
                    .ok_or("\"rate\" (0 to 1) is missing")?;
                if !(0.0..=1.0).contains(&rate) {
                    return Err("\"rate\" is between 0 and 1".into());
                }
                let codes = match obj.get("codes") {
                    None => vec![38, 42],
                    Some(Value::Array(a)) => a
                        .iter()
                        .map(|c| c.as_u64().filter(|c| *c <= 999).map(|c| c as u16))
                        .collect::<Option<Vec<_>>>()
                        .filter(|c| !c.is_empty())
                        .ok_or("\"codes\" is a list of +CMS ERROR numbers 0 to 999")?,
                    Some(_) => return Err("\"codes\" is a list of numbers".into()),
                };
                done(self.run(Job::Core(Control::Errors { rate, codes })).await)
            }
            "send_delay" => {
                let ms = r.u64("ms")?.ok_or("\"ms\" is missing")?;
                done(
                    self.run(Job::Core(Control::SendDelay(Duration::from_millis(ms))))
                        .await,
                )
            }
            "hang" => {
                let d = r.u64("ms")?.map(Duration::from_millis);
                done(self.run(Job::Core(Control::Hang(d))).await)
            }
            "resume" => done(self.run(Job::Core(Control::Resume)).await),
            "unplug" => {
                let replug_after = r.u64("replug_after_ms")?.map(Duration::from_millis);
                let link = r.str("link")?.map(PathBuf::from);
                done(self.run(Job::Unplug { replug_after, link }).await)
            }
            "replug" => {
                let link = r.str("link")?.map(PathBuf::from);
                done(self.run(Job::Replug { link }).await)
            }
            "urc" => {
                let line = r.str("line")?.ok_or("\"line\" is missing")?;
                if line.contains(['\r', '\n']) {
                    return Err("\"line\" is one line; send two requests for two".into());
                }
                done(self.run(Job::Core(Control::Urc(line.to_string()))).await)
            }
            "sent" => {
                let since = r.u64("since")?.unwrap_or(0) as usize;
                let s = self.shared.lock();
                let lines: Vec<Value> = s.sent.iter().skip(since).cloned().collect();
                Ok(fields(json!({"count": s.sent.len(), "lines": lines})))
            }
            "stored" => {
                let s = self.shared.lock();
                let messages: Vec<Value> = s.stored.iter().map(stored_json).collect();
                Ok(fields(json!({"messages": messages})))
            }
            "counters" => {
                let s = self.shared.lock();
                Ok(fields(counters_json(&s)))
            }
            "commands" => {
                let last = r.u64("last")?.unwrap_or(20) as usize;
                let s = self.shared.lock();
                let skip = s.commands.len().saturating_sub(last);
                let commands: Vec<&String> = s.commands.iter().skip(skip).collect();
                Ok(fields(json!({"commands": commands})))
            }
            "wait" => self.wait(&r).await,
            other => Err(format!(
                "unknown op {other:?}; see docs/simulator.md for the operations"
            )),
        }
    }
}
