//! `GET /v1/modems` of a real `simgate serve`: which SIM is in the modem (ICCID, IMSI, SMSC)
//! and, for a modem that stays disconnected, why, in the words `simgate doctor` uses.

#[path = "support/daemon.rs"]
mod daemon;

use std::time::{Duration, Instant};

use daemon::{Daemon, request, spawn_serve};
use serde_json::Value;

#[test]
fn a_ready_modem_shows_its_sim_and_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), None);
    d.wait_ready();
    let m = d.get("/v1/modems").body;
    let modem = &m["modems"][0];
    assert_eq!(modem["state"], "ready", "{m}");
    assert_eq!(modem["iccid"], "89001012012345678905", "{m}");
    assert!(modem["imsi"].as_str().is_some_and(|i| i.len() == 15), "{m}");
    assert!(
        modem["smsc"].as_str().is_some_and(|s| s.starts_with('+')),
        "{m}"
    );
    assert!(modem["last_error"].is_null(), "{m}");
    // The fields SPEC.md lists are all still there.
    for key in [
        "id",
        "device",
        "state",
        "manufacturer",
        "model",
        "imei",
        "operator",
        "registration",
        "signal",
        "sent",
        "failed",
    ] {
        assert!(modem.get(key).is_some(), "{key} missing: {m}");
    }
}

#[test]
fn a_device_that_is_no_modem_says_why_it_stays_disconnected() {
    // Issue 16: `serve --device /dev/null` stayed "disconnected" with no reason outside the log.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut child, listen, _log) = spawn_serve(&data, &["--device", "/dev/null"], None, &[]);
    let token = std::fs::read_to_string(data.join("api-token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let base = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let modem = loop {
        let a = request(
            &base,
            "GET",
            "/v1/modems",
            None,
            &[("Authorization", &bearer)],
        )
        .expect("daemon answers");
        let modem: Value = a.body["modems"][0].clone();
        if !modem["last_error"].is_null() || Instant::now() > deadline {
            break modem;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(modem["state"], "disconnected", "{modem}");
    assert_eq!(
        modem["last_error"], "/dev/null is not a serial port, so it cannot be a modem",
        "{modem}"
    );
}
