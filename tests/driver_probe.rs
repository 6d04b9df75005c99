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
    assert_eq!(v["iccid"], "89001012012345678905");
    assert!(v["imsi"].as_str().is_some_and(|i| i.len() == 15), "{v}");
    assert!(
        v["smsc"].as_str().is_some_and(|s| s.starts_with('+')),
        "{v}"
    );
    assert_eq!(
        (&v["usable"], &v["reason"]),
        (&true.into(), &"ready".into())
    );

    let out = probe(&["--device", link]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("manufacturer: huawei"), "{text}");
    assert!(text.contains("IMEI:         867223021234563"), "{text}");
    assert!(
        text.contains("ICCID:        89001012012345678905"),
        "{text}"
    );
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn a_locked_sim_exits_7_with_everything_learnt_and_how_to_give_the_pin() {
    // Issue 15.2: this used to exit 0.
    let sim = SimProcess::start(&["--pin", "1111"]);
    let link = sim.link.to_str().unwrap();
    let out = probe(&["--device", link, "--json"]);
    assert_eq!(out.status.code(), Some(7));
    let v = json(&out);
    assert_eq!(v["sim"], "PIN required");
    assert_eq!(
        (&v["usable"], &v["reason"]),
        (&false.into(), &"pin-required".into())
    );
    // What the modem said is still there: identity, and the ICCID a locked SIM reveals.
    assert_eq!(v["imei"], "356938035643809", "{v}");
    assert_eq!(v["iccid"], "89001012012345678905");
    assert!(v["imsi"].is_null(), "a locked SIM hides its IMSI: {v}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for hint in [
        "wants its PIN",
        "install -o simgate -g simgate -m 0600",
        "SIMGATE_PIN",
    ] {
        assert!(stderr.contains(hint), "{hint}: {stderr}");
    }
    // Text output too: the report on stdout, the reason on stderr, the same exit code.
    let out = probe(&["--device", link]);
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SIM:          PIN required"));
}

#[test]
fn probe_unlocks_with_a_pin_once() {
    let sim = SimProcess::start(&["--pin", "1111"]);
    let link = sim.link.to_str().unwrap();
    let out = probe(&["--device", link, "--json", "--pin", "2222"]);
    assert_eq!(out.status.code(), Some(8));
    let v = json(&out);
    assert_eq!(v["reason"], "pin-rejected");
    assert_eq!(v["sim"], "PIN required", "{v}");
    assert_eq!(v["manufacturer"], "simgate", "what it learnt is kept: {v}");
    let stderr = sim.stderr_text();
    assert!(stderr.contains("pin attempt 1 rejected") && !stderr.contains("pin attempt 2"));

    let out = probe(&["--device", link, "--json", "--pin", "1111"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["sim"], "ready");
}

#[test]
fn a_blocked_sim_exits_7_and_says_puk() {
    let sim = SimProcess::start(&["--pin", "1111"]);
    let link = sim.link.to_str().unwrap();
    for attempt in 1..=3 {
        let out = probe(&["--device", link, "--json", "--pin", "9999"]);
        assert_eq!(out.status.code(), Some(8), "attempt {attempt}");
    }
    // The third rejection says the SIM is now blocked.
    let out = probe(&["--device", link, "--json"]);
    assert_eq!(out.status.code(), Some(7));
    let v = json(&out);
    assert_eq!(v["reason"], "puk-required", "{v}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("wants its PUK"));
}

#[test]
fn probe_explains_what_is_not_a_modem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("ttyUSB7");
    let out = probe(&["--device", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    // Doctor's words (issue 16.5), not the system's terse "no such device".
    assert!(err.contains("ttyUSB7 does not exist"), "{err}");
    assert!(err.contains("fix: check the path"), "{err}");

    // /dev/null opens but is no terminal: it used to print "Not a typewriter".
    let out = probe(&["--device", "/dev/null", "--json"]);
    assert_eq!(out.status.code(), Some(6));
    let v = json(&out);
    assert_eq!(v["reason"], "not-a-serial-port");
    assert_eq!(
        v["error"],
        "/dev/null is not a serial port, so it cannot be a modem"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("typewriter"));

    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"").unwrap();
    let out = probe(&["--device", file.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(6));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["reason"] == "not-a-serial-port", "{v}");

    // A pty whose modem never answers.
    let mute = SimProcess::start(&["--hang-after", "0"]);
    let out = probe(&[
        "--device",
        mute.link.to_str().unwrap(),
        "--json",
        "--timeout",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(6));
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
    assert_eq!(out.status.code(), Some(5));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reason"], "busy", "{v}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("busy"));
}

#[test]
fn help_documents_every_exit_code() {
    let out = Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["modem", "probe", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for line in [
        "3   not found",
        "4   permission denied",
        "5   busy",
        "6   not a modem",
        "7   the SIM wants its PIN or PUK",
        "8   the PIN given was rejected",
        "9   no SIM card",
        "install -o simgate -g simgate -m 0600",
    ] {
        assert!(help.contains(line), "{line}: {help}");
    }
}
