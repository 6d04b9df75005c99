//! Issue 17.8: a flood of forged status reports must neither flood the log nor mark the wrong
//! message delivered. A real daemon drives a real simulator through a pty
//! ([`faults::CmgsMangler`], here only passing bytes through) into which the test writes
//! `+CDS` URCs (TS 27.005 §3.4.1) of its own: one for a number that is only the tail of a real
//! recipient, with that message's TP-MR, and then 20,000 that match nothing.

#[path = "support/faults.rs"]
mod faults;
mod support;

use std::time::{Duration, Instant};

use faults::{CmgsMangler, ServeProcess, config_for};
use serde_json::json;
use simgate::pdu::{self, Address, StatusReport, Timestamp};
use support::SimProcess;

const TO: &str = "+4915112345678";

fn cds(mr: u8, recipient: &str) -> Vec<u8> {
    let now = Timestamp {
        year: 2026,
        month: 12,
        day: 3,
        hour: 8,
        minute: 0,
        second: 0,
        tz_quarter_hours: 0,
    };
    let part = pdu::encode_status_report(&StatusReport {
        smsc: None,
        message_reference: mr,
        recipient: Address::parse_destination(recipient).unwrap(),
        sc_timestamp: now,
        discharge_time: now,
        status: 0,
    });
    format!("\r\n+CDS: {}\r\n{}\r\n", part.tpdu_len, part.to_hex()).into_bytes()
}

fn metric(d: &ServeProcess, line_start: &str) -> u64 {
    let text = ureq::get(format!("{}/metrics", d.base))
        .call()
        .expect("GET /metrics")
        .into_body()
        .read_to_string()
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn forged_reports_are_counted_not_logged_and_match_only_the_whole_number() {
    // No report from the simulator itself within the test: only forged ones arrive.
    let sim = SimProcess::start(&["--report-delay", "3600"]);
    let mangler = CmgsMangler::start(&sim.link, &sim.dir.path().join("proxy"), "+0");
    let dir = faults::fast_tempdir();
    let config = config_for(&mangler.link, "", "");
    let d = ServeProcess::start(&dir.path().join("data"), &config, "simgate=debug,info");
    d.wait_state("ready", Duration::from_secs(30));

    let a = d.post("/v1/messages", &json!({"to": TO, "text": "a text"}));
    assert_eq!(a.status, 202, "{a:?}");
    let id = a.body["id"].as_str().expect("id").to_owned();
    d.wait_final(std::slice::from_ref(&id), Duration::from_secs(20));
    // The TP-MR the simulator gave, from the driver's debug line "part sent ... mr=N".
    let mr: u8 = d
        .log()
        .lines()
        .filter(|l| l.contains("part sent"))
        .find_map(|l| {
            let at = l.find("mr=")?;
            l[at + 3..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .expect("the driver logged the TP-MR");

    // A report for the tail of the number, with the right TP-MR: not this message.
    mangler.inject(&cds(mr, "+5112345678"));
    let flood_started = Instant::now();
    let mut flood = Vec::new();
    for i in 0..20_000u32 {
        flood.extend(cds((i % 256) as u8 ^ mr ^ 0x80, "+15550001111"));
    }
    mangler.inject(&flood);
    // Wait until the reports are through (or dropped), counted in /metrics.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = u64::MAX;
    loop {
        let unmatched = metric(&d, "simgate_status_reports_total{result=\"unmatched\"}");
        // Done when the count stops moving (the rest of the flood was dropped at the engine).
        if unmatched >= 1 && unmatched == last {
            break;
        }
        last = unmatched;
        assert!(
            Instant::now() < deadline,
            "no report counted; log tail:\n{}",
            d.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(1000));
    }
    let m = d.get(&format!("/v1/messages/{id}")).body;
    assert_eq!(
        m["status"], "sent",
        "a report for another number marked it: {m}"
    );
    let unmatched = metric(&d, "simgate_status_reports_total{result=\"unmatched\"}");
    // What the AT engine dropped before the store is counted too: nothing vanishes unseen.
    let dropped = metric(&d, "simgate_urcs_dropped_total");
    assert_eq!(
        unmatched + dropped,
        20_001,
        "unmatched {unmatched} + dropped {dropped}"
    );
    let log = d.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("URC dropped") || l.contains("matches no recent send"))
        .count();
    eprintln!(
        "20,001 forged reports in {:?}: {unmatched} counted unmatched, {dropped} dropped by the AT engine, {lines} log lines about them",
        flood_started.elapsed()
    );
    assert!(unmatched >= 1);
    assert!(lines <= 20, "{lines} log lines for a report flood");
}
