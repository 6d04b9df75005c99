//! Inbound storage end to end: a real `simgate sim` on a pty whose network delivers texts
//! (`--incoming`, stored on the SIM and announced with `+CMTI`), a real `simgate serve` with
//! `[inbound] enabled = true`, a real SQLite file. Each text arrives once at `GET /v1/inbound`,
//! leaves the SIM, and a restart of the daemon does not store it again.

#[path = "support/faults.rs"]
mod faults;
mod support;

use std::time::{Duration, Instant};

use faults::{ServeProcess, config_for};
use support::SimProcess;

const SHORT: (&str, &str) = ("+15550001111", "Hello from a phone 4711");
const EMOJI: (&str, &str) = ("+15550002222", "Grüße 👋🏽 从上海");

fn inbound(d: &ServeProcess) -> Vec<serde_json::Value> {
    let a = d.get("/v1/inbound?limit=100");
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body["inbound"].as_array().unwrap().clone()
}

fn wait_inbound(d: &ServeProcess, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = inbound(d);
        if rows.len() >= n {
            return rows;
        }
        assert!(Instant::now() < deadline, "{rows:?}\n{}", d.log_tail(40));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn texts_arrive_once_leave_the_sim_and_survive_a_restart() {
    let sim = SimProcess::start(&[
        "--incoming",
        &format!("{}:{}", SHORT.0, SHORT.1),
        "--incoming",
        &format!("{}:{}", EMOJI.0, EMOJI.1),
        "--incoming-after",
        "0.2",
    ]);
    let dir = faults::fast_tempdir();
    let data = dir.path().join("data");
    let config = config_for(&sim.link, "", "\n[inbound]\nenabled = true\n");
    let mut d = ServeProcess::start(&data, &config, "simgate=trace,info");
    let rows = wait_inbound(&d, 2);
    // Time for a second (wrong) row to show up, if anything stored twice.
    std::thread::sleep(Duration::from_millis(500));
    let rows2 = inbound(&d);
    assert_eq!(rows2.len(), 2, "{rows2:?}");
    for (from, text) in [SHORT, EMOJI] {
        let row = rows
            .iter()
            .find(|r| r["from"] == from)
            .unwrap_or_else(|| panic!("{from}: {rows:?}"));
        assert_eq!(row["text"], text);
        assert_eq!(row["parts"], 1);
        assert_eq!(row["complete"], true);
        let id = row["id"].as_str().unwrap();
        assert!(id.starts_with("in_") && id.len() == 35, "{id}");
        let one = d.get(&format!("/v1/inbound/{id}"));
        assert_eq!((one.status, &one.body["text"]), (200, &row["text"]));
    }
    let filtered = d.get(&format!("/v1/inbound?from=%2B{}", &SHORT.0[1..]));
    assert_eq!(filtered.body["inbound"].as_array().unwrap().len(), 1);
    let bad = d.get("/v1/inbound/in_nothex");
    assert_eq!(bad.status, 400);
    let missing = d.get(&format!("/v1/inbound/in_{}", "0".repeat(32)));
    assert_eq!(missing.status, 404);
    // `simgate inbox` shows the same rows.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args([
            "--json", "inbox", "--from", SHORT.0, "--url", &d.base, "--token", &d.token,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["inbound"][0]["text"], SHORT.1, "{v}");
    assert_eq!(v["inbound"].as_array().unwrap().len(), 1, "{v}");
    let log = d.log();
    assert!(log.contains("AT+CMGD="), "deleted after the commit:\n{log}");
    assert!(!log.contains(SHORT.1), "no text content in the log");
    drop(d);
    // A restart lists the storage again (AT+CMGL=4): nothing is left, nothing is stored twice.
    d = ServeProcess::start(&data, &config, "simgate=trace,info");
    d.wait_state("ready", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(inbound(&d).len(), 2);
    assert!(d.log().contains("AT+CMGL=4"), "{}", d.log_tail(40));
}
