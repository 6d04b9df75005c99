//! A `[[modem]]` named by IMEI alone, end to end: the real `simgate serve` reads the config
//! file, scans a glob of two simulator links (real ptys) and sends an OTP through the modem with
//! that IMEI only.

#[path = "support/faults.rs"]
mod faults;
mod support;

use std::time::Duration;

use faults::{ServeProcess, TOKEN};
use support::SimProcess;

#[test]
fn serve_binds_the_modem_named_by_imei() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let other = SimProcess::start_at(
        &d.join("modem-a"),
        &d.join("a.jsonl"),
        &["--imei", "356938035643811"],
    );
    let wanted = SimProcess::start_at(
        &d.join("modem-b"),
        &d.join("b.jsonl"),
        &["--imei", "356938035643822"],
    );
    let config = format!(
        r#"[api]
tokens = ["{TOKEN}"]

[[modem]]
id = "by-imei"
imei = "356938035643822"
scan = ["{}/modem-*"]
sends_per_minute = 0
"#,
        d.display()
    );
    let data = tempfile::tempdir().unwrap();
    let serve = ServeProcess::start(&data.path().join("data"), &config, "simgate=info");
    serve.wait_state("ready", Duration::from_secs(20));
    let modems = serve.get("/v1/modems");
    assert_eq!(modems.body["modems"][0]["id"], "by-imei", "{modems:?}");
    assert_eq!(
        modems.body["modems"][0]["imei"], "356938035643822",
        "{modems:?}"
    );

    serve.create_otp("+15551230042");
    let lines = wanted.wait_for_log_lines(1, Duration::from_secs(15));
    assert_eq!(lines[0]["to"], "+15551230042");
    assert!(other.log_lines().is_empty(), "the other modem sent a text");
    assert!(
        serve.log().contains("modem found by identity"),
        "{}",
        serve.log()
    );
}
