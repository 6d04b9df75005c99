//! The Twilio-compatible routes driven by Twilio's official Python SDK (PyPI `twilio`) against
//! a real `simgate serve --simulate`: messages reach the simulated modem, Verify codes read from
//! the simulator's log check out, and errors raise `TwilioRestException` with Twilio's numbers.

#[path = "support/daemon.rs"]
mod daemon;

use std::process::Command;

const CONFIG: &str = r#"
[twilio]
enabled = true
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token = "0123456789abcdef0123456789abcdef"
verify_service_sid = "VA0123456789abcdef0123456789abcdef"
from = ["+15559990000"]
"#;

fn python_with_twilio() -> Option<String> {
    daemon::python_with("twilio.rest")
}

#[test]
fn the_python_sdk_sends_lists_and_verifies() {
    let Some(py) = python_with_twilio() else {
        eprintln!(
            "skipping: no python with the twilio package (pip install twilio into /opt/simgate-venv)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = daemon::Daemon::start(dir.path(), Some(CONFIG));
    d.wait_ready();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/twilio_sdk.py");
    let out = Command::new(&py)
        .arg(script)
        .arg(&d.base)
        .arg(d.data_dir.join("sim-sent.jsonl"))
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sdk script failed:\n{stdout}\n{}\n--- daemon log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    for step in [
        "create", "fetch", "list", "errors", "verify", "exhaust", "cancel",
    ] {
        assert!(
            stdout.contains(&format!("ok {step}")),
            "{step} missing:\n{stdout}"
        );
    }
    // Both APIs see the same objects: the SDK's message is simgate's message.
    let listed = d.get("/v1/messages?limit=100");
    assert_eq!(listed.status, 200);
    assert!(listed.body["messages"].as_array().unwrap().len() >= 4);
}

/// Two senders: only the stored `From` tells which one a message used.
const CALLBACK_CONFIG: &str = r#"
[twilio]
enabled = true
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token = "fedcba9876543210fedcba9876543210"
from = ["+15559990000", "+15559990001"]
"#;

#[test]
fn status_callbacks_pass_the_python_sdks_request_validator() {
    let Some(py) = python_with_twilio() else {
        eprintln!(
            "skipping: no python with the twilio package (pip install twilio into /opt/simgate-venv)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = daemon::Daemon::start(dir.path(), Some(CALLBACK_CONFIG));
    d.wait_ready();
    let out = Command::new(&py)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/twilio_callbacks.py"
        ))
        .arg(&d.base)
        .arg("fedcba9876543210fedcba9876543210")
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "callback script failed:\n{stdout}\n{}\n--- daemon log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    for step in ["callbacks", "from", "refused"] {
        assert!(
            stdout.contains(&format!("ok {step}")),
            "{step} missing:\n{stdout}"
        );
    }
}

/// The npm `twilio` package installed by `.ci/run` (or `$SIMGATE_NPM`'s `node_modules`).
fn node_with_twilio() -> Option<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(
        std::env::var("SIMGATE_NPM").unwrap_or_else(|_| "/opt/simgate-npm".into()),
    );
    let ok = dir.join("node_modules/twilio/package.json").is_file()
        && Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    ok.then_some(dir.join("node_modules"))
}

#[test]
fn the_node_sdk_sends_and_verifies() {
    let Some(modules) = node_with_twilio() else {
        eprintln!(
            "skipping: no node with the twilio npm package in /opt/simgate-npm (see .ci/run)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = daemon::Daemon::start(dir.path(), Some(CONFIG));
    d.wait_ready();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/twilio_sdk.js");
    let out = Command::new("node")
        .env("NODE_PATH", &modules)
        .arg(script)
        .arg(&d.base)
        .arg(d.data_dir.join("sim-sent.jsonl"))
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sdk script failed:\n{stdout}\n{}\n--- daemon log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    for step in ["create", "fetch list", "errors", "verify"] {
        assert!(
            stdout.contains(&format!("ok {step}")),
            "{step} missing:\n{stdout}"
        );
    }
}
