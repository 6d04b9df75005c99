//! `simgate modem probe` against the simulator, and against things that are not modems.

mod support;

use std::process::Command;

use support::SimProcess;

fn probe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["modem", "probe"])
        .args(args)
        .env_remove("SIMGATE_PIN")
        .output()
        .expect("run simgate modem probe")
}

#[test]
fn probes_the_simulator_as_text_and_json() {
    let sim = SimProcess::start(&["--profile", "huawei"]);
    let link = sim.link.to_str().unwrap();
    let out = probe(&["--device", link, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["manufacturer"], "huawei");
    assert_eq!(v["model"], "E3372");
    assert_eq!(v["imei"], "867223021234563");
    assert_eq!(v["sim"], "ready");
    assert_eq!(v["registration"], "home");
    assert_eq!(v["operator"], "Simgate Mobile");
    assert_eq!(v["signal_dbm"], -71);

    let out = probe(&["--device", link]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("manufacturer: huawei"), "{text}");
    assert!(text.contains("IMEI:         867223021234563"), "{text}");
}

#[test]
fn probe_unlocks_with_a_pin_once() {
    let sim = SimProcess::start(&["--pin", "1111"]);
    let link = sim.link.to_str().unwrap();
    let out = probe(&["--device", link, "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sim"], "PIN required");

    let out = probe(&["--device", link, "--json", "--pin", "2222"]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reason"], "pin-rejected");
    let stderr = sim.stderr_text();
    assert!(stderr.contains("pin attempt 1 rejected") && !stderr.contains("pin attempt 2"));

    let out = probe(&["--device", link, "--json", "--pin", "1111"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sim"], "ready");
}

#[test]
fn probe_explains_what_is_not_a_modem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("ttyUSB7");
    let out = probe(&["--device", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such device"), "{err}");

    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"").unwrap();
    let out = probe(&["--device", file.to_str().unwrap(), "--json"]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        ["not-a-serial-port", "open-failed"].contains(&v["reason"].as_str().unwrap()),
        "{v}"
    );

    // A pty whose modem never answers.
    let mute = SimProcess::start(&["--hang-after", "0"]);
    let out = probe(&[
        "--device",
        mute.link.to_str().unwrap(),
        "--json",
        "--timeout",
        "1",
    ]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reason"], "no-answer", "{v}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no answer to AT"));

    // A port that is open (exclusively) elsewhere is busy.
    let sim = SimProcess::start(&[]);
    let _held = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let port = simgate::transport::open(&sim.link, 115_200).unwrap();
        (rt, port)
    };
    let out = probe(&["--device", sim.link.to_str().unwrap(), "--json"]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reason"], "busy", "{v}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("busy"));
}
