//! The CLI clients against a real `simgate serve --simulate`: the token is found where `serve`
//! put it (`./simgate-data/api-token`, no `--token`), the code is the one the simulated phone
//! received, and `simgate log` shows the delivery log the dispatcher wrote.

#[path = "support/daemon.rs"]
mod daemon;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use daemon::{Daemon, code_in};
use serde_json::Value;

const TO: &str = "+15551230001";

/// Runs the CLI in `cwd` against `base`, without any token given explicitly.
fn cli(cwd: &Path, base: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_simgate"))
        .current_dir(cwd)
        .args(args)
        .args(["--url", base])
        .env_remove("SIMGATE_TOKEN")
        .env_remove("SIMGATE_URL")
        .output()
        .expect("run simgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait_received(d: &Daemon, to: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(line) = d.sim_log().into_iter().find(|l| l["to"] == to) {
            return line["text"].as_str().expect("text").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no SMS to {to}; daemon log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn otp_send_verify_and_log_through_the_cli() {
    let root = tempfile::tempdir().unwrap();
    // Where `serve --simulate` keeps its data by default, relative to the working directory.
    let data_dir = root.path().join("simgate-data");
    let d = Daemon::start(&data_dir, None);
    let cwd = root.path();

    let (code, out, err) = cli(cwd, &d.base, &["--json", "otp", "send", "--to", TO]);
    assert_eq!(code, 0, "{out}{err}");
    let created: Value = serde_json::from_str(out.trim()).expect("JSON answer");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "pending");

    let text = wait_received(&d, TO);
    let received = code_in(&text);
    let wrong = if received == "000000" {
        "111111"
    } else {
        "000000"
    };
    let (code, out, _) = cli(
        cwd,
        &d.base,
        &["otp", "verify", "--id", &id, "--code", wrong],
    );
    // 3: the code was not accepted (not 1, which any other failure gives).
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("4 attempts remaining"), "{out}");
    let (code, out, err) = cli(
        cwd,
        &d.base,
        &["otp", "verify", "--id", &id, "--code", &received],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), format!("approved: {id}"));

    let (code, out, err) = cli(
        cwd,
        &d.base,
        &["send", "--to", TO, "--text", "Grüße aus dem Simulator"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("queued msg_") && out.contains("(1 part)"),
        "{out}"
    );

    // Both texts reach the log; the OTP's text is shown with its code masked.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, err) = cli(cwd, &d.base, &["--json", "log", "--to", TO]);
        assert_eq!(code, 0, "{err}");
        let log: Value = serde_json::from_str(out.trim()).unwrap();
        let msgs = log["messages"].as_array().unwrap();
        let done = msgs.len() == 2
            && msgs
                .iter()
                .all(|m| m["status"] == "sent" || m["status"] == "delivered");
        if done {
            assert!(!out.contains(&received), "the log shows the code: {out}");
            assert_eq!(msgs[0]["text"], "Grüße aus dem Simulator");
            assert_eq!(msgs[1]["otp_id"], id.as_str());
            break;
        }
        assert!(Instant::now() < deadline, "log never settled: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, out, _) = cli(cwd, &d.base, &["log", "--status", "bogus"]);
    assert_eq!(code, 1, "{out}");

    // Elsewhere, with no token to be found, the CLI says where it looked.
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, _, err) = cli(elsewhere.path(), &d.base, &["log"]);
    // 4: authentication (no token found, or a token the daemon refused).
    assert_eq!(code, 4, "{err}");
    // (A machine with a system-wide daemon has a token in /var/lib/simgate; it is not this one's.)
    assert!(err.contains("no API token") || err.contains("401"), "{err}");
}
