//! The simulator's control interface: what a test uses to steer a running simulated modem
//! (`simgate sim --control ADDR`, or [`Simulator::controller`](super::Simulator::controller)
//! in-process) and to read what happened on its serial side.
//!
//! The protocol is JSON lines: one request object per line, one answer object per line, in
//! order, on a Unix socket or a loopback TCP port. A request names its operation in `op`; an
//! answer is `{"ok": true, ...}` or `{"ok": false, "error": "..."}`. docs/simulator.md lists
//! every operation.
//!
//! Changes go to the runner over a channel and are carried out between two serial reads, so
//! the modem side never waits for a test; what a test reads (the sent log, counters, the
//! storage, recent commands) is a copy the runner refreshes under a small lock after each
//! step, and `wait` watches a version counter instead of polling.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::core::Routed;
use super::core::SimChange;
use super::core::StoredReport;
use super::core::control::{Control, PartRoute, Reply, Tally};
use super::inbound::{self, InboundPart, Reference};
use super::{ReportOutcome, ReportTarget};

/// Command lines kept for `commands`.
const RECENT_COMMANDS: usize = 1000;
/// The longest request line accepted: a long multi-part text with room to spare.
const MAX_REQUEST: usize = 256 * 1024;
/// The longest `wait` allowed.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// Where the control interface listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAddr {
    /// A Unix socket path (created owner-only, removed at exit).
    Unix(PathBuf),
    /// A loopback TCP address.
    Tcp(SocketAddr),
}

impl ControlAddr {
    /// A path (anything with a `/`), or a loopback `host:port` (`127.0.0.1`, `[::1]`,
    /// `localhost`). Other hosts are refused: the socket can make the modem do anything.
    pub fn parse(s: &str) -> Result<ControlAddr, String> {
        if s.contains('/') {
            return Ok(ControlAddr::Unix(PathBuf::from(s)));
        }
        let addr = if let Some(port) = s.strip_prefix("localhost:") {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("{s:?}: the port must be a number"))?;
            SocketAddr::from(([127, 0, 0, 1], port))
        } else {
            s.parse::<SocketAddr>().map_err(|_| {
                format!(
                    "{s:?} is neither a socket path (give one with a '/', e.g. ./sim.sock) nor a \
                     loopback host:port such as 127.0.0.1:7000"
                )
            })?
        };
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{s:?} is not a loopback address: the control socket steers the modem, so it \
                 listens on 127.0.0.1, [::1] or a Unix socket only"
            ));
        }
        Ok(ControlAddr::Tcp(addr))
    }
}

impl std::fmt::Display for ControlAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlAddr::Unix(p) => write!(f, "{}", p.display()),
            ControlAddr::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// What the runner is asked to do.
#[derive(Debug)]
pub(super) enum Job {
    /// A change the core carries out.
    Core(Control),
    /// Vanish now; come back after `replug_after` (else on `replug`), at `link` if given.
    Unplug {
        replug_after: Option<Duration>,
        link: Option<PathBuf>,
    },
    /// Come back now, at `link` if given.
    Replug { link: Option<PathBuf> },
}

/// A job and where its answer goes.
pub(super) type JobMsg = (Job, oneshot::Sender<Result<Reply, String>>);

/// Running totals, summed over replugs.
#[derive(Debug, Clone, Default)]
pub(super) struct Counters {
    commands: u64,
    parts: u64,
    sent: u64,
    refused: u64,
    reports: u64,
    delivered: u64,
    answered: u64,
    unplugs: u64,
    replugs: u64,
}

/// What a test can read without asking the runner.
#[derive(Debug, Default)]
pub(super) struct Observed {
    /// The simulator's log lines (SPEC.md), as JSON values, whether or not `--log` is set.
    sent: Vec<Value>,
    counters: Counters,
    /// The last [`RECENT_COMMANDS`] command lines.
    commands: VecDeque<String>,
    /// The message storage as of `store_rev`, 1-based indexes.
    stored: Vec<(u32, StoredReport)>,
    store_rev: u64,
    /// Reports held for a `report` answer: (TP-MR, recipient).
    held: Vec<(u8, String)>,
    plugged: bool,
    link: PathBuf,
    device: PathBuf,
    /// `ready`, `pin`, `puk` or `removed`.
    sim: &'static str,
    /// `none`, `ringing` or `answered`.
    call: &'static str,
    /// What `AT+CGSN` and `AT+CCID` answer, to tell modems apart.
    imei: String,
    iccid: String,
}

/// The state shared by the runner (writer) and the control side (readers).
#[derive(Debug)]
pub(super) struct Shared {
    state: Mutex<Observed>,
    /// Bumped after every change, for `wait`.
    version: watch::Sender<u64>,
}

impl Shared {
    pub(super) fn new(link: &Path, device: &Path, identity: (String, String)) -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(Observed {
                plugged: true,
                link: link.to_path_buf(),
                device: device.to_path_buf(),
                imei: identity.0,
                iccid: identity.1,
                sim: "ready",
                call: "none",
                ..Observed::default()
            }),
            version: watch::channel(0).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Observed> {
        // A panic while holding it leaves plain data behind: keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Adds what the core did (and its storage, when it changed).
    pub(super) fn record(
        &self,
        tally: Tally,
        storage: Option<(u64, Vec<(u32, StoredReport)>)>,
        held: Vec<(u8, String)>,
        sim: &'static str,
        call: &'static str,
    ) {
        let empty = tally == Tally::default() && storage.is_none();
        let mut s = self.lock();
        if empty && s.held == held && s.sim == sim && s.call == call {
            return;
        }
        s.sim = sim;
        s.call = call;
        let c = &mut s.counters;
        c.commands += tally.commands.len() as u64;
        c.parts += tally.parts;
        c.refused += tally.refused;
        c.reports += tally.reports;
        c.delivered += tally.delivered;
        c.answered += tally.answered;
        for line in tally.commands {
            if s.commands.len() == RECENT_COMMANDS {
                s.commands.pop_front();
            }
            s.commands.push_back(line);
        }
        if let Some((rev, stored)) = storage {
            s.store_rev = rev;
            s.stored = stored;
        }
        s.held = held;
        drop(s);
        self.bump();
    }

    /// A whole message was logged.
    pub(super) fn sent(&self, line: &str) {
        let value = serde_json::from_str(line).unwrap_or(Value::Null);
        let mut s = self.lock();
        s.sent.push(value);
        s.counters.sent += 1;
        drop(s);
        self.bump();
    }

    /// The modem vanished.
    pub(super) fn unplugged(&self) {
        let mut s = self.lock();
        s.plugged = false;
        s.counters.unplugs += 1;
        // A fresh core starts with an empty storage and its own revision count.
        s.stored.clear();
        s.store_rev = 0;
        s.held.clear();
        s.call = "none";
        drop(s);
        self.bump();
    }

    /// The modem is back at `link`.
    pub(super) fn replugged(&self, link: &Path, device: &Path) {
        let mut s = self.lock();
        s.plugged = true;
        s.counters.replugs += 1;
        s.link = link.to_path_buf();
        s.device = device.to_path_buf();
        drop(s);
        self.bump();
    }
}

/// A handle on a running simulator: the same operations as the socket, in-process. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Controller {
    jobs: mpsc::Sender<JobMsg>,
    shared: Arc<Shared>,
}

impl Controller {
    pub(super) fn new(jobs: mpsc::Sender<JobMsg>, shared: Arc<Shared>) -> Controller {
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

    /// Waits until `until` holds or `timeout_ms` (default 5000) passes.
    async fn wait(&self, r: &Req<'_>) -> Result<Map<String, Value>, String> {
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

/// The simulators behind one control socket (`simgate sim --link A --link B`): a request's
/// `modem` field, the index from 0 or the link path, picks one; without it, the first.
#[derive(Debug, Clone)]
pub struct Hub {
    modems: Vec<Controller>,
}

impl From<Controller> for Hub {
    fn from(c: Controller) -> Hub {
        Hub { modems: vec![c] }
    }
}

impl Hub {
    /// One control socket for these modems, in the order `modem` indexes them.
    pub fn new(modems: Vec<Controller>) -> Hub {
        assert!(!modems.is_empty(), "a hub needs at least one modem");
        Hub { modems }
    }

    /// Answers one request: `modems` lists them all, anything else goes to the modem named.
    pub async fn call(&self, request: &Value) -> Value {
        if request.get("op").and_then(Value::as_str) == Some("modems") {
            let list: Vec<Value> = self
                .modems
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut v = modem_json(&c.shared.lock());
                    v["modem"] = json!(i);
                    v
                })
                .collect();
            return json!({"ok": true, "modems": list});
        }
        match self.pick(request) {
            Ok(c) => c.call(request).await,
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

    fn pick(&self, request: &Value) -> Result<&Controller, String> {
        let links = || {
            self.modems
                .iter()
                .map(|c| c.shared.lock().link.display().to_string())
                .collect::<Vec<_>>()
        };
        match request.get("modem") {
            None | Some(Value::Null) => Ok(&self.modems[0]),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|i| self.modems.get(i as usize))
                .ok_or_else(|| {
                    format!(
                        "\"modem\" {n}: there are {} (0 to {})",
                        self.modems.len(),
                        self.modems.len() - 1
                    )
                }),
            Some(Value::String(s)) => {
                let links = links();
                links
                    .iter()
                    .position(|l| l == s)
                    .map(|i| &self.modems[i])
                    .ok_or_else(|| format!("\"modem\" {s:?} is none of the links {links:?}"))
            }
            Some(_) => Err("\"modem\" is an index from 0 or a link path".into()),
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

fn counter(s: &Observed, name: &str) -> u64 {
    let c = &s.counters;
    match name {
        "commands" => c.commands,
        "parts" => c.parts,
        "sent" => c.sent,
        "refused" => c.refused,
        "reports" => c.reports,
        "delivered" => c.delivered,
        "answered" => c.answered,
        "unplugs" => c.unplugs,
        "replugs" => c.replugs,
        "stored" => s.stored.len() as u64,
        _ => 0,
    }
}

/// Who and where a modem is.
fn modem_json(s: &Observed) -> Value {
    json!({
        "link": s.link, "device": s.device, "plugged": s.plugged,
        "imei": s.imei, "iccid": s.iccid, "sim": s.sim, "call": s.call,
    })
}

fn counters_json(s: &Observed) -> Value {
    let c = &s.counters;
    json!({
        "commands": c.commands,
        "parts": c.parts,
        "sent": c.sent,
        "refused": c.refused,
        "reports": c.reports,
        "delivered": c.delivered,
        "answered": c.answered,
        "call": s.call,
        "stored": s.stored.len(),
        "held": s.held.iter().map(|(mr, to)| json!({"mr": mr, "to": to})).collect::<Vec<_>>(),
        "unplugs": c.unplugs,
        "replugs": c.replugs,
        "plugged": s.plugged,
        "link": s.link,
        "sim": s.sim,
    })
}

fn stored_json((index, r): &(u32, StoredReport)) -> Value {
    let report = r.text_fields.starts_with("6,");
    json!({
        "index": index,
        "kind": if report { "report" } else { "text" },
        "read": r.read,
        "tpdu_len": r.tpdu_len,
        "pdu": r.pdu_hex,
    })
}

fn delivered_json(routes: Vec<PartRoute>) -> Map<String, Value> {
    let parts: Vec<Value> = routes
        .into_iter()
        .map(|(concat, route)| {
            let mut v = match route {
                Ok(Routed::Cmt) => json!({"routed": "cmt"}),
                Ok(Routed::Stored { index, announced }) => {
                    json!({"routed": if announced { "cmti" } else { "stored" }, "index": index})
                }
                Err(e) => json!({"routed": "lost", "error": e}),
            };
            if let Some((reference, total, seq)) = concat {
                v["ref"] = json!(reference);
                v["total"] = json!(total);
                v["seq"] = json!(seq);
            }
            v
        })
        .collect();
    fields(json!({"parts": parts}))
}

/// The parts a `deliver` request describes, in delivery order.
fn deliver_parts(r: &Req<'_>) -> Result<Vec<InboundPart>, String> {
    let mut parts = if let Some(pdu) = r.0.get("pdu") {
        let list: Vec<&str> = match pdu {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a
                .iter()
                .map(Value::as_str)
                .collect::<Option<_>>()
                .ok_or("\"pdu\" is a hex string or a list of them")?,
            _ => return Err("\"pdu\" is a hex string or a list of them".into()),
        };
        list.into_iter()
            .map(inbound::raw)
            .collect::<Result<Vec<_>, _>>()?
    } else {
        let from = r
            .str("from")?
            .ok_or("\"from\" is missing (or give \"pdu\")")?;
        let class = match r.u64("class")? {
            Some(c) if c <= 3 => Some(c as u8),
            Some(_) => return Err("\"class\" is 0 to 3".into()),
            None => None,
        };
        let bits = r.u64("ref_bits")?.unwrap_or(8);
        if bits != 8 && bits != 16 {
            return Err("\"ref_bits\" is 8 or 16".into());
        }
        let reference = match r.u64("ref")? {
            Some(v) => Some(Reference {
                value: u16::try_from(v).map_err(|_| "\"ref\" is at most 65535")?,
                sixteen_bit: bits == 16,
            }),
            None => None,
        };
        let wall = OffsetDateTime::now_utc();
        match (r.str("text")?, r.0.get("parts")) {
            (Some(text), None) => inbound::split(from, text, class, reference, wall)?,
            (None, Some(Value::Array(a))) => {
                let texts = a
                    .iter()
                    .map(|t| t.as_str().map(String::from))
                    .collect::<Option<Vec<_>>>()
                    .ok_or("\"parts\" is a list of strings")?;
                let reference = reference.or(Some(Reference {
                    value: 0,
                    sixteen_bit: bits == 16,
                }));
                inbound::build(from, &texts, class, reference, wall)?
            }
            _ => return Err("give \"text\" or \"parts\" (a list of texts), not both".into()),
        }
    };
    if let Some(order) = r.0.get("order") {
        let order = order
            .as_array()
            .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
            .ok_or("\"order\" is a list of part numbers such as [2, 1, 3]")?;
        let mut reordered = Vec::with_capacity(order.len());
        for seq in order {
            let part = parts
                .get((seq as usize).wrapping_sub(1))
                .ok_or_else(|| format!("\"order\" names part {seq} of {}", parts.len()))?;
            reordered.push(part.clone());
        }
        parts = reordered;
    }
    if let Some(omit) = r.0.get("omit") {
        let omit = omit
            .as_array()
            .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
            .ok_or("\"omit\" is a list of part numbers")?;
        parts.retain(|p| !omit.contains(&u64::from(p.concat.map_or(1, |c| c.2))));
    }
    if parts.is_empty() {
        return Err("no part is left to deliver".into());
    }
    Ok(parts)
}

/// A report outcome from `outcome`, `status`, `delay_ms`, `then_status`, `then_delay_ms`.
fn outcome(r: &Req<'_>) -> Result<ReportOutcome, String> {
    let name = r
        .str("outcome")?
        .ok_or("\"outcome\" is missing: delivered, failed, delayed, never or hold")?;
    let delay = Duration::from_millis(r.u64("delay_ms")?.unwrap_or(0));
    let status =
        |default: u8, range: std::ops::RangeInclusive<u8>, what: &str| match r.u64("status")? {
            None => Ok(default),
            Some(s) => u8::try_from(s)
                .ok()
                .filter(|s| range.contains(s))
                .ok_or_else(|| format!("a {what} TP-ST is {} to {}", range.start(), range.end())),
        };
    // TS 23.040 §9.2.3.15: 0..=2 completed, 0x20..=0x3F still trying, 0x40..=0x7F failed.
    Ok(match name {
        "delivered" => ReportOutcome::Status {
            status: status(0, 0..=2, "delivered")?,
            delay,
        },
        "failed" => ReportOutcome::Status {
            status: status(0x40, 0x40..=0x7F, "failed")?,
            delay,
        },
        "delayed" => ReportOutcome::Delayed {
            status: status(0x20, 0x20..=0x3F, "delayed")?,
            delay,
            then_status: match r.u64("then_status")? {
                None => 0,
                Some(s) => u8::try_from(s)
                    .ok()
                    .filter(|s| *s <= 2 || (0x40..=0x7F).contains(s))
                    .ok_or("\"then_status\" is a final TP-ST: 0 to 2 or 64 to 127")?,
            },
            then_delay: Duration::from_millis(r.u64("then_delay_ms")?.unwrap_or(1000)),
        },
        "never" => ReportOutcome::Never,
        "hold" => ReportOutcome::Hold,
        other => {
            return Err(format!(
                "outcome {other:?}: delivered, failed, delayed, never or hold"
            ));
        }
    })
}

/// TS 27.007 §7.2 <stat> by name.
fn registration(name: &str) -> Result<u8, String> {
    Ok(match name {
        "none" | "not_searching" => 0,
        "home" | "registered" => 1,
        "searching" => 2,
        "denied" => 3,
        "unknown" => 4,
        "roaming" => 5,
        other => {
            return Err(format!(
                "registration {other:?}: home, roaming, searching, denied, unknown, none or auto"
            ));
        }
    })
}

fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Typed access to a request's fields.
struct Req<'a>(&'a Map<String, Value>);

impl Req<'_> {
    fn str(&self, key: &str) -> Result<Option<&str>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("\"{key}\" is a string")),
        }
    }

    fn u64(&self, key: &str) -> Result<Option<u64>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| format!("\"{key}\" is a whole number")),
        }
    }
}

/// A listening control socket; dropping it stops accepting and removes a Unix socket file.
pub struct ControlServer {
    addr: ControlAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ControlServer {
    /// Binds `addr` and serves `ctl` on it. A Unix socket is created owner-only; a stale one
    /// (nobody listening) is replaced, anything else at the path is refused.
    pub async fn bind(addr: &ControlAddr, ctl: impl Into<Hub>) -> std::io::Result<ControlServer> {
        let ctl: Hub = ctl.into();
        let (task, bound) = match addr {
            ControlAddr::Unix(path) => {
                match std::fs::symlink_metadata(path) {
                    Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
                        if UnixStream::connect(path).is_ok() {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::AddrInUse,
                                format!("{} is in use by another simulator", path.display()),
                            ));
                        }
                        std::fs::remove_file(path)?;
                    }
                    Ok(_) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::AlreadyExists,
                            format!("{} exists and is not a socket", path.display()),
                        ));
                    }
                    Err(_) => {}
                }
                // Owner-only from the start: whoever can connect can steer the modem.
                let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
                let listener = tokio::net::UnixListener::bind(path);
                nix::sys::stat::umask(old);
                let listener = listener?;
                let task = tokio::spawn(async move {
                    loop {
                        match listener.accept().await {
                            Ok((stream, _)) => {
                                tokio::spawn(serve_conn(stream, ctl.clone()));
                            }
                            Err(e) => {
                                tracing::warn!("sim: control accept failed: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                });
                (task, addr.clone())
            }
            ControlAddr::Tcp(a) => {
                let listener = tokio::net::TcpListener::bind(a).await?;
                let bound = ControlAddr::Tcp(listener.local_addr()?);
                let task = tokio::spawn(async move {
                    loop {
                        match listener.accept().await {
                            Ok((stream, _)) => {
                                tokio::spawn(serve_conn(stream, ctl.clone()));
                            }
                            Err(e) => {
                                tracing::warn!("sim: control accept failed: {e}");
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                    }
                });
                (task, bound)
            }
        };
        Ok(ControlServer { addr: bound, task })
    }

    /// The address it listens on (with the port the system chose for port 0).
    pub fn addr(&self) -> &ControlAddr {
        &self.addr
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        if let ControlAddr::Unix(path) = &self.addr {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One connection: a request line in, an answer line out, until the peer closes.
async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(stream: S, ctl: Hub) {
    let (read, mut write) = tokio::io::split(stream);
    let mut read = tokio::io::BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match (&mut read)
            .take(MAX_REQUEST as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        let answer = if line.len() > MAX_REQUEST {
            let a = json!({"ok": false, "error": format!("a request line is at most {MAX_REQUEST} bytes")});
            let _ = write.write_all(format!("{a}\n").as_bytes()).await;
            return;
        } else {
            match std::str::from_utf8(&line) {
                Ok(text) if text.trim().is_empty() => continue,
                Ok(text) => ctl.call_line(text.trim()).await,
                Err(_) => json!({"ok": false, "error": "the request is not UTF-8"}),
            }
        };
        if write
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A blocking client of a control socket, for tests and `simgate sim ctl`.
pub struct Client {
    reader: BufReader<Box<dyn ReadWrite>>,
}

trait ReadWrite: std::io::Read + std::io::Write + Send {}
impl<T: std::io::Read + std::io::Write + Send> ReadWrite for T {}

impl Client {
    /// Connects to a control address as [`ControlAddr::parse`] reads it.
    pub fn connect(addr: &str) -> std::io::Result<Client> {
        let addr = ControlAddr::parse(addr)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let stream: Box<dyn ReadWrite> = match addr {
            ControlAddr::Unix(p) => Box::new(UnixStream::connect(p)?),
            ControlAddr::Tcp(a) => Box::new(TcpStream::connect(a)?),
        };
        Ok(Client {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one request and returns its answer object as it came.
    pub fn call(&mut self, request: &Value) -> std::io::Result<Value> {
        let stream = self.reader.get_mut();
        stream.write_all(format!("{request}\n").as_bytes())?;
        stream.flush()?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the simulator closed the control connection",
            ));
        }
        serde_json::from_str(&line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Sends one request; an `{"ok": false}` answer becomes `Err` with its `error`.
    pub fn ok(&mut self, request: &Value) -> Result<Value, String> {
        let answer = self.call(request).map_err(|e| e.to_string())?;
        if answer["ok"] == Value::Bool(true) {
            Ok(answer)
        } else {
            Err(answer["error"]
                .as_str()
                .unwrap_or("no error given")
                .to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_paths_or_loopback_only() {
        assert_eq!(
            ControlAddr::parse("./sim.sock"),
            Ok(ControlAddr::Unix("./sim.sock".into()))
        );
        assert_eq!(
            ControlAddr::parse("127.0.0.1:7000"),
            Ok(ControlAddr::Tcp("127.0.0.1:7000".parse().unwrap()))
        );
        assert_eq!(
            ControlAddr::parse("localhost:0"),
            Ok(ControlAddr::Tcp("127.0.0.1:0".parse().unwrap()))
        );
        assert!(ControlAddr::parse("[::1]:7000").is_ok());
        assert!(
            ControlAddr::parse("0.0.0.0:7000")
                .unwrap_err()
                .contains("loopback")
        );
        assert!(ControlAddr::parse("192.168.1.2:7000").is_err());
        assert!(ControlAddr::parse("sim.sock").is_err());
    }

    #[test]
    fn outcomes_check_their_tp_st() {
        let req = |v: Value| outcome(&Req(v.as_object().unwrap()));
        assert_eq!(
            req(json!({"outcome": "failed", "status": 69})),
            Ok(ReportOutcome::Status {
                status: 69,
                delay: Duration::ZERO
            })
        );
        assert!(req(json!({"outcome": "failed", "status": 0})).is_err());
        assert!(req(json!({"outcome": "delayed", "status": 64})).is_err());
        assert!(req(json!({"outcome": "maybe"})).is_err());
        assert_eq!(req(json!({"outcome": "hold"})), Ok(ReportOutcome::Hold));
    }

    #[test]
    fn deliver_requests_reorder_and_omit_parts() {
        let req = json!({"from": "+15550001111", "text": "z".repeat(400), "ref": 9, "order": [3, 1, 2], "omit": [1]});
        let parts = deliver_parts(&Req(req.as_object().unwrap())).unwrap();
        let seqs: Vec<u8> = parts.iter().map(|p| p.concat.unwrap().2).collect();
        assert_eq!(seqs, vec![3, 2]);
        let bad = json!({"from": "+1555", "text": "x", "parts": ["a"]});
        assert!(deliver_parts(&Req(bad.as_object().unwrap())).is_err());
    }
}
