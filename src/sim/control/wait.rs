//! The `wait` operation and its conditions: watch the version counter until every condition
//! holds or the timeout passes. Separate because it is the one operation that blocks.

use std::time::Duration;

use serde_json::{Map, Value};

use super::controller::Controller;
use super::observed::{Observed, counter, counters_json};
use super::request::{Req, fields};
/// The longest `wait` allowed.
const MAX_WAIT: Duration = Duration::from_secs(600);

impl Controller {
    /// Waits until `until` holds or `timeout_ms` (default 5000) passes.
    pub(super) async fn wait(&self, r: &Req<'_>) -> Result<Map<String, Value>, String> {
        let until =
            r.0.get("until")
                .and_then(Value::as_object)
                .ok_or("\"until\" is an object such as {\"sent\": 3}")?;
        let conditions = until
            .iter()
            .map(|(k, v)| Condition::parse(k, v))
            .collect::<Result<Vec<_>, _>>()?;
        if conditions.is_empty() {
            return Err("\"until\" names no condition".into());
        }
        let timeout = Duration::from_millis(r.u64("timeout_ms")?.unwrap_or(5000));
        if timeout > MAX_WAIT {
            return Err(format!(
                "\"timeout_ms\" is at most {}",
                MAX_WAIT.as_millis()
            ));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut version = self.shared.version.subscribe();
        loop {
            version.borrow_and_update();
            {
                let s = self.shared.lock();
                if conditions.iter().all(|c| c.holds(&s)) {
                    return Ok(fields(counters_json(&s)));
                }
            }
            match tokio::time::timeout_at(deadline, version.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("the simulator has stopped".into()),
                Err(_) => {
                    let s = self.shared.lock();
                    let unmet: Vec<String> = conditions
                        .iter()
                        .filter(|c| !c.holds(&s))
                        .map(|c| c.describe(&s))
                        .collect();
                    return Err(format!(
                        "timeout after {} ms waiting for {}",
                        timeout.as_millis(),
                        unmet.join(", ")
                    ));
                }
            }
        }
    }
}

/// One `wait` condition.
#[derive(Debug)]
enum Condition {
    /// A counter has reached a value.
    AtLeast(&'static str, u64),
    /// A command line starting with this (case-insensitive) was received.
    Command(String),
    /// Plugged in or not.
    Plugged(bool),
    /// This many reports are held for a `report`.
    Held(u64),
    /// The SIM is in this state.
    Sim(String),
}

impl Condition {
    fn parse(key: &str, v: &Value) -> Result<Condition, String> {
        let counter = [
            "commands",
            "parts",
            "sent",
            "refused",
            "reports",
            "delivered",
            "answered",
            "unplugs",
            "replugs",
            "stored",
        ];
        if let Some(name) = counter.iter().find(|n| **n == key) {
            let n = v
                .as_u64()
                .ok_or_else(|| format!("\"{key}\" in \"until\" is a number"))?;
            return Ok(Condition::AtLeast(name, n));
        }
        match key {
            "command" => Ok(Condition::Command(
                v.as_str()
                    .ok_or("\"command\" in \"until\" is a string such as \"AT+CNMI\"")?
                    .to_ascii_uppercase(),
            )),
            "plugged" => Ok(Condition::Plugged(
                v.as_bool()
                    .ok_or("\"plugged\" in \"until\" is true or false")?,
            )),
            "held" => Ok(Condition::Held(
                v.as_u64().ok_or("\"held\" in \"until\" is a number")?,
            )),
            "sim" => Ok(Condition::Sim(
                v.as_str()
                    .ok_or("\"sim\" in \"until\" is ready, pin, puk or removed")?
                    .to_string(),
            )),
            _ => Err(format!(
                "unknown condition {key:?}; one of {}, command, plugged, held, sim",
                counter.join(", ")
            )),
        }
    }

    fn holds(&self, s: &Observed) -> bool {
        match self {
            Condition::AtLeast(name, n) => counter(s, name) >= *n,
            Condition::Command(prefix) => s
                .commands
                .iter()
                .any(|c| c.to_ascii_uppercase().starts_with(prefix.as_str())),
            Condition::Plugged(p) => s.plugged == *p,
            Condition::Held(n) => s.held.len() as u64 >= *n,
            Condition::Sim(state) => s.sim == state,
        }
    }

    fn describe(&self, s: &Observed) -> String {
        match self {
            Condition::AtLeast(name, n) => format!("{name} >= {n} (now {})", counter(s, name)),
            Condition::Command(p) => format!("a command starting with {p:?}"),
            Condition::Plugged(p) => format!("plugged = {p}"),
            Condition::Held(n) => format!("held >= {n} (now {})", s.held.len()),
            Condition::Sim(state) => format!("sim = {state} (now {})", s.sim),
        }
    }
}
