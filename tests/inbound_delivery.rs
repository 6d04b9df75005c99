//! Inbound texts end to end, each case delivered by the network of a real `simgate sim` (its
//! control socket's `deliver`) to a real `simgate serve` with `[inbound] enabled = true` over a
//! real pty, and read back from `GET /v1/inbound` on loopback: concatenated texts with 8- and
//! 16-bit references (TS 23.040 §9.2.3.24.1, .8), UCS-2 with emoji split across parts, parts out
//! of order, a part missing until the reassembly timeout (and arriving after it), redelivered
//! parts and PDUs, both routings of TS 27.005 §3.4.1 (stored with `+CMTI`, which simgate asks
//! for, and `+CMT` from a modem that routes texts anyway, with and without `+CNMA`), and texts
//! already on the SIM when the daemon starts (`AT+CMGL=4`).
//!
//! Each test has its own simulator and daemon, so the harness runs them side by side.

#[path = "support/faults.rs"]
mod faults;
#[path = "support/routing_proxy.rs"]
mod routing_proxy;
mod support;
#[path = "support/webhook_receiver.rs"]
mod webhook_receiver;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use faults::{ServeProcess, config_for};
use routing_proxy::RoutingProxy;
use serde_json::{Value, json};
use simgate::pdu::{Address, Concat, Deliver, Encoding, Timestamp, encode_deliver, plan};
use simgate::sim::control::Client;
use support::SimProcess;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How long anything the tests wait for may take on a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(30);
/// The modem's id in every config, as `GET /v1/inbound` names it.
const MODEM: &str = "inbox-modem";
/// TP-SCTS of the PDUs the tests build: 2026-11-22 10:33:21 at UTC+01:00 (four quarter hours).
const SCTS: Timestamp = Timestamp {
    year: 2026,
    month: 11,
    day: 22,
    hour: 10,
    minute: 33,
    second: 21,
    tz_quarter_hours: 4,
};
const SCTS_TEXT: &str = "2026-11-22T10:33:21+01:00";

/// How the modem hands texts over.
#[derive(Clone, Copy)]
enum Route {
    /// As simgate configures it: stored, `+CMTI`, read with `+CMGR`, deleted with `+CMGD`.
    Stored,
    /// Routed as `+CMT` (a [`RoutingProxy`] rewrites <mt>), `+CSMS` service 1 or 0.
    Cmt { service_1: bool },
    /// Stored, through a [`RoutingProxy`] that can hold back the daemon's `AT+CMGD`.
    StoredProxied,
}

/// A simulator with a control socket and a daemon driving it (through a proxy for `+CMT`).
struct Rig {
    _sim: SimProcess,
    ctl: PathBuf,
    /// `None` only while it restarts.
    serve: Option<ServeProcess>,
    data: PathBuf,
    config: String,
    proxy: Option<RoutingProxy>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Rig {
    fn sim() -> (SimProcess, PathBuf, tempfile::TempDir) {
        Rig::sim_with(&[])
    }

    /// A simulator with `extra` arguments (a `--profile`, say).
    fn sim_with(extra: &[&str]) -> (SimProcess, PathBuf, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let ctl = dir.path().join("ctl.sock");
        let ready = dir.path().join("ready.json");
        let mut args = vec![
            "--control",
            ctl.to_str().unwrap(),
            "--ready-file",
            ready.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let sim = SimProcess::start(&args);
        let deadline = Instant::now() + PATIENCE;
        while !ready.exists() {
            assert!(
                Instant::now() < deadline,
                "no ready file: {}",
                sim.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (sim, ctl, dir)
    }

    /// Starts the daemon on an already running simulator.
    fn serve(sim: (SimProcess, PathBuf, tempfile::TempDir), route: Route, timeout_s: u32) -> Rig {
        Rig::serve_with(sim, route, timeout_s, "")
    }

    /// As [`Rig::serve`], with `extra` appended to the config (after `[inbound]`).
    fn serve_with(
        (sim, ctl, ctl_dir): (SimProcess, PathBuf, tempfile::TempDir),
        route: Route,
        timeout_s: u32,
        extra: &str,
    ) -> Rig {
        let proxy = match route {
            Route::Stored => None,
            Route::Cmt { service_1 } => Some(RoutingProxy::start(&sim.link, true, service_1)),
            Route::StoredProxied => Some(RoutingProxy::start(&sim.link, false, false)),
        };
        let device = proxy.as_ref().map_or(sim.link.clone(), |p| p.link.clone());
        let dir = faults::fast_tempdir();
        let data = dir.path().join("data");
        let config = config_for(
            &device,
            "",
            &format!(
                "id = \"{MODEM}\"\n\n[inbound]\nenabled = true\nreassembly_timeout_seconds = {timeout_s}\n{extra}"
            ),
        );
        // trace: the AT traffic, to see when the daemon lets go of a text.
        let daemon = ServeProcess::start(&data, &config, "simgate=trace,info");
        daemon.wait_state("ready", PATIENCE);
        Rig {
            _sim: sim,
            ctl,
            serve: Some(daemon),
            data,
            config,
            proxy,
            _dirs: (ctl_dir, dir),
        }
    }

    fn start(route: Route, timeout_s: u32) -> Rig {
        Rig::serve(Rig::sim(), route, timeout_s)
    }

    /// SIGKILLs the daemon and starts it again on the same data directory.
    fn restart(&mut self) {
        // Dropping a ServeProcess SIGKILLs and reaps it: no shutdown code runs.
        drop(self.serve.take());
        let d = ServeProcess::start(&self.data, &self.config, "simgate=trace,info");
        d.wait_state("ready", PATIENCE);
        self.serve = Some(d);
    }

    fn daemon(&self) -> &ServeProcess {
        self.serve.as_ref().expect("the daemon runs")
    }

    fn ctl(&self, req: Value) -> Value {
        ctl(&self.ctl, req)
    }

    /// `deliver` with `fields`; asserts every part went the expected way and returns the parts.
    fn deliver(&self, fields: Value, routed: &str) -> Vec<Value> {
        let mut req = json!({"op": "deliver"});
        req.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let a = self.ctl(req);
        let parts = a["parts"].as_array().unwrap().clone();
        for p in &parts {
            assert_eq!(p["routed"], routed, "{a}");
        }
        parts
    }

    /// Messages still in the simulated SIM's storage.
    fn stored(&self) -> usize {
        self.ctl(json!({"op": "stored"}))["messages"]
            .as_array()
            .unwrap()
            .len()
    }

    /// Command lines the simulator received that start with `prefix`.
    fn commands(&self, prefix: &str) -> usize {
        self.ctl(json!({"op": "commands", "last": 1000}))["commands"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c.as_str().unwrap().starts_with(prefix))
            .count()
    }

    fn rows(&self) -> Vec<Value> {
        let a = self.daemon().get("/v1/inbound?limit=1000");
        assert_eq!(a.status, 200, "{a:?}");
        a.body["inbound"].as_array().unwrap().clone()
    }

    fn rows_from(&self, from: &str) -> Vec<Value> {
        self.rows()
            .into_iter()
            .filter(|r| r["from"] == from)
            .collect()
    }

    /// `simgate_inbound_parts_total{result}` of `/metrics`.
    fn parts_metric(&self, result: &str) -> u64 {
        let body = ureq::get(format!("{}/metrics", self.daemon().base))
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        let key = format!("simgate_inbound_parts_total{{result=\"{result}\"}}");
        body.lines()
            .find_map(|l| l.strip_prefix(&key)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until the daemon has taken `parts` parts in (stored or recognised as seen before)
    /// and, for stored routing, the SIM's storage is empty again.
    fn wait_taken(&self, parts: u64) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let taken = self.parts_metric("stored") + self.parts_metric("duplicate");
            if taken >= parts && self.stored() == 0 {
                assert_eq!(taken, parts, "more parts taken in than delivered");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{taken} of {parts} parts taken in, {} left on the SIM:\n{}",
                self.stored(),
                self.daemon().log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `from` has `n` rows; returns them (newest first).
    fn wait_rows(&self, from: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let rows = self.rows_from(from);
            if rows.len() >= n {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "{from}: {} of {n} rows: {rows:?}\n{}",
                rows.len(),
                self.daemon().log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn ctl(path: &Path, req: Value) -> Value {
    Client::connect(path.to_str().unwrap())
        .unwrap()
        .ok(&req)
        .unwrap_or_else(|e| panic!("{req}: {e}"))
}

/// SMS-DELIVER PDUs (hex, empty SMSC prefix) of `texts` from `from`, all stamped [`SCTS`]:
/// one part without a header, or concatenated with `reference` (16-bit above 255).
fn pdus(from: &str, texts: &[&str], reference: u16) -> Vec<String> {
    let encoding = if texts.iter().all(|t| plan(t).encoding == Encoding::Gsm7) {
        Encoding::Gsm7
    } else {
        Encoding::Ucs2
    };
    let total = texts.len() as u8;
    texts
        .iter()
        .zip(1..)
        .map(|(text, seq)| {
            let d = Deliver {
                smsc: None,
                originator: Address::parse_destination(from).unwrap(),
                pid: 0,
                // TS 23.038 §4: general data coding, GSM 7-bit or UCS-2.
                dcs: if encoding == Encoding::Gsm7 {
                    0x00
                } else {
                    0x08
                },
                encoding,
                sc_timestamp: SCTS,
                concat: (total > 1).then_some(Concat {
                    reference,
                    total,
                    seq,
                }),
                text: (*text).to_owned(),
                user_data: Vec::new(),
                more_messages: false,
            };
            encode_deliver(&d).unwrap().to_hex()
        })
        .collect()
}

/// A GSM 7-bit text of three SMS (more than 2 × 153 characters), distinct per `tag`.
fn long_text(tag: &str) -> String {
    let mut t = format!("{tag}: ");
    let mut n = 0;
    while t.len() < 400 {
        t += &format!("line {n} of a long inbound text, ");
        n += 1;
    }
    t
}

/// Asserts one complete row: its text, parts and SC timestamp (`None`: the simulator's clock,
/// between `t0` and now).
fn check_row(row: &Value, text: &str, parts: u32, scts: Option<&str>, t0: OffsetDateTime) {
    assert_eq!(row["text"], text, "{row}");
    assert_eq!(row["parts"], parts, "{row}");
    assert_eq!(row["complete"], true, "{row}");
    assert_eq!(row["missing_parts"], json!([]), "{row}");
    assert_eq!(row["modem"], MODEM, "{row}");
    let got = row["sc_timestamp"].as_str().unwrap();
    match scts {
        Some(want) => assert_eq!(got, want, "{row}"),
        None => {
            // TP-SCTS has whole seconds.
            let t = OffsetDateTime::parse(got, &Rfc3339).unwrap();
            let now = OffsetDateTime::now_utc();
            assert!(
                t >= t0 - Duration::from_secs(1) && t <= now,
                "{got} not between {t0} and {now}"
            );
        }
    }
    let id = row["id"].as_str().unwrap();
    assert!(id.starts_with("in_"), "{id}");
}

/// After everything was taken in: no row shows up later, and every sender has exactly one.
fn assert_once(rig: &Rig, senders: &[&str]) {
    std::thread::sleep(Duration::from_millis(500));
    let rows = rig.rows();
    assert_eq!(rows.len(), senders.len(), "{rows:#?}");
    for s in senders {
        assert_eq!(rig.rows_from(s).len(), 1, "{s}: {rows:#?}");
    }
}

/// The log lines where the daemon recorded a part (stored or dropped as seen before).
fn is_record_line(line: &str) -> bool {
    line.contains("inbound text stored")
        || line.contains("inbound part stored")
        || line.contains("inbound part seen before")
}

/// Asserts that the k-th AT command starting with `command` in the daemon's log comes after at
/// least k recorded parts: the modem lets go of a text only once its row is committed.
fn assert_released_after_commit(log: &str, command: &str, expected: usize) {
    let mut recorded = 0;
    let mut released = 0;
    for line in log.lines() {
        if is_record_line(line) {
            recorded += 1;
        } else if line.contains("at tx") && line.contains(command) {
            released += 1;
            assert!(
                released <= recorded,
                "{command} number {released} sent before its part was committed:\n{log}"
            );
        }
    }
    assert_eq!(released, expected, "{command} count:\n{log}");
}

// The emoji split across parts: a waving hand and its skin-tone modifier, a flag's two regional
// indicators, each pair in two SMS; reassembly must give back the exact sequences.
const EMOJI_PARTS: [&str; 3] = ["Grüße aus Berlin 👋", "🏽 und bis bald 🇩", "🇪 — 从上海 😀"];

#[test]
fn stored_texts_arrive_once_whole_in_order_and_without_duplicates() {
    let rig = Rig::start(Route::Stored, 3600);
    let t0 = OffsetDateTime::now_utc();
    let a = long_text("A");
    let parts = rig.deliver(
        json!({"from": "+15550003001", "text": a, "ref": 17}),
        "cmti",
    );
    assert_eq!(parts.len(), 3);
    let b = long_text("B");
    let parts = rig.deliver(
        json!({"from": "+15550003002", "text": b, "ref": 4660, "ref_bits": 16}),
        "cmti",
    );
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0]["ref"], 4660);
    // UCS-2, emoji across the part boundaries, as given parts.
    rig.deliver(
        json!({"from": "+15550003003", "parts": EMOJI_PARTS, "ref": 250}),
        "cmti",
    );
    // UCS-2 split by the simulator like a phone would (67 UTF-16 units a part).
    let d = "Ünïcödé 😀 ".repeat(15);
    let parts = rig.deliver(json!({"from": "+15550003006", "text": d, "ref": 3}), "cmti");
    assert_eq!(parts.len(), 3);
    // Out of order.
    let e = long_text("E");
    let parts = rig.deliver(
        json!({"from": "+15550003004", "text": e, "ref": 99, "order": [3, 1, 2]}),
        "cmti",
    );
    assert_eq!(parts[0]["seq"], 3);
    // A part redelivered while its message waits for the others.
    let f = ["Part one, ", "part two, ", "part three."];
    let f_pdus = pdus("+15550003005", &f, 7);
    rig.deliver(json!({"pdu": f_pdus, "order": [1, 2, 1, 3]}), "cmti");
    // A whole single PDU twice (its +CNMA came too late, or it was read again).
    let g = pdus("+15550003007", &["Your parcel is here"], 0);
    rig.deliver(json!({"pdu": g[0]}), "cmti");
    rig.deliver(json!({"pdu": g[0]}), "cmti");
    // An alphanumeric sender, class 1, and GSM 7-bit escapes (two septets each, TS 23.038
    // §6.2.1.1) that the split must keep whole.
    let m = "Preis 10€ [inkl.] {MwSt} ~ ^ | \\ ".repeat(12);
    let parts = rig.deliver(
        json!({"from": "MyBank", "text": m, "class": 1, "ref": 60000, "ref_bits": 16}),
        "cmti",
    );
    let m_parts = parts.len();
    assert!(m_parts >= 3, "{parts:?}");
    rig.wait_taken(3 + 3 + 3 + 3 + 3 + 4 + 2 + m_parts as u64);
    assert_eq!(rig.parts_metric("duplicate"), 2);
    let one = |from: &str| {
        let rows = rig.wait_rows(from, 1);
        rows[0].clone()
    };
    check_row(&one("+15550003001"), &a, 3, None, t0);
    check_row(&one("+15550003002"), &b, 3, None, t0);
    check_row(&one("+15550003003"), &EMOJI_PARTS.concat(), 3, None, t0);
    check_row(&one("+15550003006"), &d, 3, None, t0);
    check_row(&one("+15550003004"), &e, 3, None, t0);
    check_row(&one("+15550003005"), &f.concat(), 3, Some(SCTS_TEXT), t0);
    check_row(
        &one("+15550003007"),
        "Your parcel is here",
        1,
        Some(SCTS_TEXT),
        t0,
    );
    check_row(&one("MyBank"), &m, m_parts as u32, None, t0);
    let senders = [
        "MyBank",
        "+15550003001",
        "+15550003002",
        "+15550003003",
        "+15550003006",
        "+15550003004",
        "+15550003005",
        "+15550003007",
    ];
    assert_once(&rig, &senders);
    // Paging walks every row once, newest first; `from` finds a number.
    let all: Vec<Value> = rig.rows().into_iter().map(|r| r["id"].clone()).collect();
    let mut paged = Vec::new();
    let mut path = "/v1/inbound?limit=3".to_owned();
    loop {
        let page = rig.daemon().get(&path).body;
        paged.extend(
            page["inbound"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].clone()),
        );
        match page["next_before"].as_str() {
            Some(next) => path = format!("/v1/inbound?limit=3&before={next}"),
            None => break,
        }
    }
    assert_eq!(paged, all);
    let by_number = rig.daemon().get("/v1/inbound?from=%2B15550003002").body;
    assert_eq!(by_number["inbound"][0]["text"], b.as_str());
    assert_eq!(by_number["inbound"].as_array().unwrap().len(), 1);
    // Later redeliveries of parts of complete messages change nothing either.
    rig.deliver(json!({"pdu": [&f_pdus[1], &g[0]]}), "cmti");
    rig.deliver(json!({"pdu": f_pdus}), "cmti");
    let taken = 21 + m_parts as u64 + 2 + 3;
    rig.wait_taken(taken);
    assert_eq!(rig.parts_metric("duplicate"), 2 + 5);
    assert_once(&rig, &senders);
    let log = rig.daemon().log();
    // Every part was deleted from the SIM, each after its commit.
    assert_released_after_commit(&log, "AT+CMGD=", taken as usize);
    assert_eq!(rig.commands("AT+CNMA"), 0, "+CSMS service 0: no +CNMA");
    for text in [a.as_str(), "Part one", "Your parcel is here", "Grüße"] {
        assert!(!log.contains(text), "no text content in the log");
    }
}

/// `+CMT` routing: the same cases, never stored on the SIM; with service 1 each `+CMT` is
/// acknowledged after its commit, with service 0 never.
fn routed_texts(service_1: bool) {
    let rig = Rig::start(Route::Cmt { service_1 }, 3600);
    let t0 = OffsetDateTime::now_utc();
    rig.deliver(
        json!({"from": "+15550006001", "text": "Hello from a phone 4711"}),
        "cmt",
    );
    let b = long_text("B");
    rig.deliver(
        json!({"from": "+15550006002", "text": b, "ref": 4660, "ref_bits": 16, "order": [2, 3, 1]}),
        "cmt",
    );
    let c = long_text("C");
    rig.deliver(
        json!({"from": "+15550006004", "text": c, "ref": 201}),
        "cmt",
    );
    rig.deliver(
        json!({"from": "+15550006003", "parts": EMOJI_PARTS, "ref": 77, "order": [3, 1, 2]}),
        "cmt",
    );
    let g = pdus("+15550006005", &["Ihr Paket ist da"], 0);
    rig.deliver(json!({"pdu": [&g[0], &g[0]]}), "cmt");
    rig.wait_taken(1 + 3 + 3 + 3 + 2);
    assert_eq!(rig.parts_metric("duplicate"), 1);
    check_row(
        &rig.wait_rows("+15550006001", 1)[0],
        "Hello from a phone 4711",
        1,
        None,
        t0,
    );
    check_row(&rig.wait_rows("+15550006002", 1)[0], &b, 3, None, t0);
    check_row(&rig.wait_rows("+15550006004", 1)[0], &c, 3, None, t0);
    check_row(
        &rig.wait_rows("+15550006003", 1)[0],
        &EMOJI_PARTS.concat(),
        3,
        None,
        t0,
    );
    check_row(
        &rig.wait_rows("+15550006005", 1)[0],
        "Ihr Paket ist da",
        1,
        Some(SCTS_TEXT),
        t0,
    );
    assert_once(
        &rig,
        &[
            "+15550006001",
            "+15550006002",
            "+15550006004",
            "+15550006003",
            "+15550006005",
        ],
    );
    let log = rig.daemon().log();
    assert!(log.contains("+CMT: ,"), "{log}");
    assert!(
        !log.contains("AT+CMGR="),
        "nothing read from storage:\n{log}"
    );
    let acks = if service_1 { 12 } else { 0 };
    assert_released_after_commit(&log, "AT+CNMA", acks);
    assert_eq!(rig.commands("AT+CNMA"), acks);
}

#[test]
fn routed_texts_are_acknowledged_after_the_commit_under_service_1() {
    routed_texts(true);
}

#[test]
fn routed_texts_are_not_acknowledged_under_service_0() {
    routed_texts(false);
}

#[test]
fn a_part_missing_until_the_timeout_is_kept_incomplete_and_a_late_one_is_not_lost() {
    let mut rig = Rig::start(Route::Stored, 2);
    let from = "+15550004001";
    let h = ["First part, ", "second part, ", "third part."];
    let h_pdus = pdus(from, &h, 33);
    let sent = Instant::now();
    rig.deliver(json!({"pdu": [&h_pdus[0], &h_pdus[2]]}), "cmti");
    rig.wait_taken(2);
    let early = rig.rows_from(from);
    if sent.elapsed() < Duration::from_secs(2) {
        assert!(
            early.is_empty(),
            "given up on before the timeout: {early:?}"
        );
    }
    // A crash while the parts wait loses nothing: they are rows, and the restarted daemon gives
    // up on them once their time is up.
    rig.restart();
    let rows = rig.wait_rows(from, 1);
    assert!(sent.elapsed() >= Duration::from_secs(2));
    let row = &rows[0];
    assert_eq!(row["text"], "First part, third part.", "{row}");
    assert_eq!(
        (&row["parts"], &row["complete"], &row["missing_parts"]),
        (&json!(3), &json!(false), &json!([2])),
        "{row}"
    );
    assert_eq!(row["sc_timestamp"], SCTS_TEXT);
    assert_eq!(row["modem"], MODEM);
    let log = rig.daemon().log();
    assert!(
        log.contains("parts missing after the reassembly timeout"),
        "{}",
        rig.daemon().log_tail(40)
    );
    // The late part: not merged into the row already reported (its `inbound.received` event is
    // out), but not dropped either: it waits like any part and, its siblings given up on, becomes
    // an incomplete text of its own.
    let late = Instant::now();
    rig.deliver(json!({"pdu": &h_pdus[1]}), "cmti");
    rig.wait_taken(1);
    let rows = rig.wait_rows(from, 2);
    assert!(late.elapsed() >= Duration::from_secs(2));
    let row = &rows[0];
    assert_eq!(row["text"], "second part, ", "{row}");
    assert_eq!(
        (&row["parts"], &row["complete"], &row["missing_parts"]),
        (&json!(3), &json!(false), &json!([1, 3])),
        "{row}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rig.rows_from(from).len(), 2);
    // The same late part again is a redelivery: nothing new.
    rig.deliver(json!({"pdu": &h_pdus[1]}), "cmti");
    rig.wait_taken(2);
    assert_eq!(rig.parts_metric("duplicate"), 1);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(rig.rows_from(from).len(), 2, "{:#?}", rig.rows());
}

#[test]
fn texts_on_the_sim_at_start_up_are_read_once_and_deleted_after_the_commit() {
    let (sim, ctl_path, ctl_dir) = Rig::sim();
    // Before any client set +CNMI (<mt>=0): the texts are stored silently, as on a SIM that
    // received them while the daemon was down.
    let single = pdus("+15550005001", &["Stored while you were away"], 0);
    let pair = pdus(
        "+15550005002",
        &["Zwei Teile, ", "beide gespeichert 😀"],
        41,
    );
    for p in single.iter().chain(&pair) {
        let a = ctl(&ctl_path, json!({"op": "deliver", "pdu": p}));
        assert_eq!(a["parts"][0]["routed"], "stored", "{a}");
    }
    let mut rig = Rig::serve((sim, ctl_path, ctl_dir), Route::Stored, 3600);
    rig.wait_taken(3);
    check_row(
        &rig.wait_rows("+15550005001", 1)[0],
        "Stored while you were away",
        1,
        Some(SCTS_TEXT),
        OffsetDateTime::now_utc(),
    );
    check_row(
        &rig.wait_rows("+15550005002", 1)[0],
        "Zwei Teile, beide gespeichert 😀",
        2,
        Some(SCTS_TEXT),
        OffsetDateTime::now_utc(),
    );
    assert_once(&rig, &["+15550005001", "+15550005002"]);
    assert_eq!(rig.parts_metric("duplicate"), 0);
    assert_eq!(rig.commands("AT+CMGL=4"), 1, "listed once");
    assert_eq!(
        rig.commands("AT+CMGR="),
        0,
        "nothing announced, nothing read one by one"
    );
    let log = rig.daemon().log();
    assert!(
        log.contains("reading messages stored before start-up"),
        "{log}"
    );
    assert_released_after_commit(&log, "AT+CMGD=", 3);
    // A restart lists the storage again: it is empty, and nothing is stored twice.
    rig.restart();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rig.commands("AT+CMGL=4"), 2);
    assert_once(&rig, &["+15550005001", "+15550005002"]);
}

#[test]
fn a_crash_between_the_commit_and_the_delete_reads_the_part_again_as_a_redelivery() {
    let mut rig = Rig::start(Route::StoredProxied, 3600);
    let proxy = rig.proxy.as_ref().unwrap();
    proxy.swallow_deletes.store(true, Ordering::SeqCst);
    let from = "+15550007001";
    let k = pdus(from, &["Erster Teil, ", "zweiter Teil."], 150);
    rig.deliver(json!({"pdu": &k[0]}), "cmti");
    // Committed (the part waits for its sibling), and the delete never reached the SIM.
    let deadline = Instant::now() + PATIENCE;
    while rig.parts_metric("stored") < 1 || proxy.swallowed.load(Ordering::SeqCst) < 1 {
        assert!(Instant::now() < deadline, "{}", rig.daemon().log_tail(60));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(rig.stored(), 1);
    // SIGKILL now: the part is a row and still on the SIM.
    rig.proxy
        .as_ref()
        .unwrap()
        .swallow_deletes
        .store(false, Ordering::SeqCst);
    rig.restart();
    // Listed again at start-up (AT+CMGL=4), recognised, and deleted this time.
    rig.wait_taken(1);
    assert_eq!(rig.parts_metric("duplicate"), 1);
    assert!(rig.rows_from(from).is_empty(), "still waiting for part 2");
    rig.deliver(json!({"pdu": &k[1]}), "cmti");
    rig.wait_taken(2);
    let rows = rig.wait_rows(from, 1);
    check_row(
        &rows[0],
        "Erster Teil, zweiter Teil.",
        2,
        Some(SCTS_TEXT),
        OffsetDateTime::now_utc(),
    );
    assert_once(&rig, &[from]);
}

#[test]
fn the_routing_proxy_changes_only_the_routing_and_the_service() {
    let check = |input: &str, service_1: bool, want: &str| {
        assert_eq!(
            String::from_utf8(routing_proxy::rewrite(input.as_bytes(), true, service_1)).unwrap(),
            want,
            "{input:?}"
        );
    };
    check("AT+CNMI=2,1,0,1,0\r", false, "AT+CNMI=2,2,0,1,0\r");
    check("AT+CNMI=1,1\r", false, "AT+CNMI=1,2\r");
    check("AT+CNMI=2,0,0,1,0\r", false, "AT+CNMI=2,0,0,1,0\r");
    check("AT+CMGF=0\r", true, "AT+CMGF=0;+CSMS=1\r");
    check("AT+CMGF=0\r", false, "AT+CMGF=0\r");
    check("0791AB\x1a", true, "0791AB\x1a");
    assert_eq!(
        routing_proxy::rewrite(b"AT+CNMI=2,1,0,1,0\r", false, false),
        b"AT+CNMI=2,1,0,1,0\r"
    );
}

/// A sender that splits a surrogate pair between two parts (the 😀 U+1F600 is D83D DE00 in
/// UTF-16): each part alone holds half a character, and only the joined parts hold the emoji.
#[test]
fn a_surrogate_pair_split_between_two_parts_is_joined() {
    let rig = Rig::start(Route::Stored, 3600);
    let from = "+15550008001";
    // Ж (U+0416, one UCS-2 unit, not in the GSM alphabet) holds the places of the halves, patched into the hex below.
    let p = pdus(from, &["Split here Ж", "Ж done"], 90);
    let first = p[0]
        .strip_suffix("0416")
        .map(|head| format!("{head}D83D"))
        .expect("Ж ends part 1");
    // The concatenation element of part 2: IEI 00, length 3, reference 90, 2 parts, part 2.
    let udh = "0500035A0202";
    let at = p[1].find(udh).expect("part 2's header") + udh.len();
    assert_eq!(&p[1][at..at + 4], "0416");
    let second = format!("{}DE00{}", &p[1][..at], &p[1][at + 4..]);
    rig.deliver(json!({"pdu": [first, second]}), "cmti");
    rig.wait_taken(2);
    let rows = rig.wait_rows(from, 1);
    check_row(
        &rows[0],
        "Split here 😀 done",
        2,
        Some(SCTS_TEXT),
        OffsetDateTime::now_utc(),
    );
}

/// Every modem profile the simulator imitates (their own URCs in between: Huawei's `^RSSI`
/// until `AT^CURC=0`, the boot lines of SIMCom and Quectel), a stored text and a routed one.
#[test]
fn texts_arrive_on_every_modem_profile() {
    std::thread::scope(|scope| {
        for (profile, route) in [
            ("huawei", Route::Stored),
            ("simcom", Route::Cmt { service_1: true }),
            ("quectel", Route::Stored),
        ] {
            scope.spawn(move || {
                let rig = Rig::serve(Rig::sim_with(&["--profile", profile]), route, 3600);
                let from = "+15550009001";
                let text = long_text(profile);
                let t0 = OffsetDateTime::now_utc();
                let routed = match route {
                    Route::Cmt { .. } => "cmt",
                    _ => "cmti",
                };
                rig.deliver(
                    json!({"from": from, "text": text, "ref": 5, "order": [2, 3, 1]}),
                    routed,
                );
                rig.wait_taken(3);
                let rows = rig.wait_rows(from, 1);
                check_row(&rows[0], &text, 3, None, t0);
                assert_once(&rig, &[from]);
            });
        }
    });
}

/// Each inbound text reaches a webhook receiver exactly once, as one `inbound.received` with
/// its text: a short one, three parts out of order, UCS-2 with emoji across parts, a PDU
/// delivered twice, and a text whose middle part never comes (sent when the timeout ends).
#[test]
fn each_inbound_text_reaches_a_webhook_receiver_exactly_once() {
    use webhook_receiver::{Behaviour, Receiver};
    let rx = Receiver::start(Behaviour::Status(204));
    let hook = format!(
        "\n[[webhook]]\nurl = \"{}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
         events = [\"inbound.received\"]\n",
        rx.url()
    );
    let rig = Rig::serve_with(Rig::sim(), Route::Stored, 3, &hook);
    let long = long_text("out of order");
    let gap = long_text("with a gap");
    let emoji = ["Grüße 👋🏽 aus ", "Berlin 😀 und 从上海"];
    rig.deliver(json!({"from": "+15550007001", "text": "short one"}), "cmti");
    rig.deliver(
        json!({"from": "+15550007002", "text": long, "order": [3, 1, 2]}),
        "cmti",
    );
    rig.deliver(json!({"from": "+15550007003", "parts": emoji}), "cmti");
    let twice = pdus("+15550007004", &["delivered twice"], 0);
    rig.deliver(json!({"pdu": twice[0]}), "cmti");
    rig.deliver(json!({"pdu": twice[0]}), "cmti");
    rig.deliver(
        json!({"from": "+15550007005", "text": gap, "omit": [2]}),
        "cmti",
    );
    let senders = [
        "+15550007001",
        "+15550007002",
        "+15550007003",
        "+15550007004",
        "+15550007005",
    ];
    for s in senders {
        rig.wait_rows(s, 1);
    }
    rx.wait(PATIENCE, |r| r.len() >= senders.len());
    // Time for a second (wrong) delivery to show up, if anything went twice.
    std::thread::sleep(Duration::from_secs(1));
    let got = rx.requests();
    assert_eq!(got.len(), senders.len(), "{got:?}");
    let rows = rig.rows();
    for s in senders {
        let row = rows.iter().find(|r| r["from"] == s).unwrap();
        let hits: Vec<_> = got.iter().filter(|r| r.body["data"]["from"] == s).collect();
        assert_eq!(hits.len(), 1, "{s}: {got:?}");
        let ev = &hits[0].body;
        assert_eq!(ev["type"], "inbound.received");
        assert_eq!(ev["subject"], row["id"]);
        assert_eq!(ev["data"]["text"], row["text"], "{s}");
        assert_eq!(ev["data"]["complete"], row["complete"], "{s}");
    }
    let gap_event = got
        .iter()
        .find(|r| r.body["data"]["from"] == "+15550007005")
        .unwrap();
    assert_eq!(gap_event.body["data"]["complete"], false);
    assert_eq!(gap_event.body["data"]["missing_parts"], json!([2]));
    let emoji_event = got
        .iter()
        .find(|r| r.body["data"]["from"] == "+15550007003")
        .unwrap();
    assert_eq!(emoji_event.body["data"]["text"], emoji.concat());
}
