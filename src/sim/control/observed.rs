//! What a test can read without asking the runner: the counters, the sent log, recent
//! commands and the storage the runner copies in after each step, and their JSON views.
//! Separate because the runner writes it and every reader (controller, wait, hub) shares it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::sim::core::StoredReport;
use crate::sim::core::control::Tally;

/// Command lines kept for `commands`.
const RECENT_COMMANDS: usize = 1000;
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
    pub(super) sent: Vec<Value>,
    pub(super) counters: Counters,
    /// The last [`RECENT_COMMANDS`] command lines.
    pub(super) commands: VecDeque<String>,
    /// The message storage as of `store_rev`, 1-based indexes.
    pub(super) stored: Vec<(u32, StoredReport)>,
    pub(super) store_rev: u64,
    /// Reports held for a `report` answer: (TP-MR, recipient).
    pub(super) held: Vec<(u8, String)>,
    pub(super) plugged: bool,
    pub(super) link: PathBuf,
    pub(super) device: PathBuf,
    /// `ready`, `pin`, `puk` or `removed`.
    pub(super) sim: &'static str,
    /// `none`, `ringing` or `answered`.
    pub(super) call: &'static str,
    /// What `AT+CGSN` and `AT+CCID` answer, to tell modems apart.
    pub(super) imei: String,
    pub(super) iccid: String,
}

/// The state shared by the runner (writer) and the control side (readers).
#[derive(Debug)]
pub(in crate::sim) struct Shared {
    state: Mutex<Observed>,
    /// Bumped after every change, for `wait`.
    pub(super) version: watch::Sender<u64>,
}

impl Shared {
    pub(in crate::sim) fn new(
        link: &Path,
        device: &Path,
        identity: (String, String),
    ) -> Arc<Shared> {
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

    pub(super) fn lock(&self) -> MutexGuard<'_, Observed> {
        // A panic while holding it leaves plain data behind: keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Adds what the core did (and its storage, when it changed).
    pub(in crate::sim) fn record(
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
    pub(in crate::sim) fn sent(&self, line: &str) {
        let value = serde_json::from_str(line).unwrap_or(Value::Null);
        let mut s = self.lock();
        s.sent.push(value);
        s.counters.sent += 1;
        drop(s);
        self.bump();
    }

    /// The modem vanished.
    pub(in crate::sim) fn unplugged(&self) {
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
    pub(in crate::sim) fn replugged(&self, link: &Path, device: &Path) {
        let mut s = self.lock();
        s.plugged = true;
        s.counters.replugs += 1;
        s.link = link.to_path_buf();
        s.device = device.to_path_buf();
        drop(s);
        self.bump();
    }
}

pub(super) fn counter(s: &Observed, name: &str) -> u64 {
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
pub(super) fn modem_json(s: &Observed) -> Value {
    json!({
        "link": s.link, "device": s.device, "plugged": s.plugged,
        "imei": s.imei, "iccid": s.iccid, "sim": s.sim, "call": s.call,
    })
}

pub(super) fn counters_json(s: &Observed) -> Value {
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

pub(super) fn stored_json((index, r): &(u32, StoredReport)) -> Value {
    let report = r.text_fields.starts_with("6,");
    json!({
        "index": index,
        "kind": if report { "report" } else { "text" },
        "read": r.read,
        "tpdu_len": r.tpdu_len,
        "pdu": r.pdu_hex,
    })
}
