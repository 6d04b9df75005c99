//! Debian's `gammu` accepts `simgate sim` as a modem: identify, getsecuritystatus, networkinfo,
//! and sendsms (short, long, unicode) whose texts arrive intact in the simulator's log.
//! Skips with a printed reason when `gammu` is not installed. The modem is the crate's test
//! fixture, `simgate::sim::Sim`, in-process: what it received is read through its control
//! operations.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use simgate::sim::{Profile, Sim};

/// Writes a gammu config for the simulator's link in `dir` and returns its path.
fn gammurc(sim: &Sim, dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("gammurc");
    let text = format!(
        "[gammu]\ndevice = {}\nconnection = at\nlogfile = {}\nlogformat = textall\n",
        sim.link().display(),
        dir.path().join("gammu.log").display()
    );
    std::fs::write(&path, text).expect("write gammurc");
    path
}

/// The texts the modem accepted, once there are `n`.
fn sent(sim: &Sim, n: usize) -> Vec<Value> {
    sim.wait(json!({"sent": n}), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}; last commands {:?}", sim.commands(20)));
    sim.sent()
}

fn gammu_present() -> bool {
    match Command::new("gammu").arg("--version").output() {
        Ok(o) => o.status.success(),
        Err(_) => false,
    }
}

/// Runs `gammu -c <rc> <args>` and returns stdout; panics with both streams on failure.
fn gammu(rc: &Path, args: &[&str]) -> String {
    let out = Command::new("gammu")
        .arg("-c")
        .arg(rc)
        .args(args)
        .output()
        .expect("run gammu");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "gammu {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn gammu_identifies_the_modem_and_reads_its_state() {
    if !gammu_present() {
        eprintln!("skipping: gammu is not installed");
        return;
    }
    let sim = Sim::builder().start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rc = gammurc(&sim, &dir);
    let id = gammu(&rc, &["identify"]);
    assert!(id.contains("simgate"), "{id}");
    assert!(id.contains("356938035643809"), "IMEI missing: {id}");
    assert!(id.contains("001010123456789"), "IMSI missing: {id}");
    let sec = gammu(&rc, &["getsecuritystatus"]);
    assert!(sec.contains("Nothing to enter"), "{sec}");
    let net = gammu(&rc, &["networkinfo"]);
    assert!(net.contains("home network"), "{net}");
    assert!(net.contains("001 01"), "{net}");
    assert!(net.contains("Simgate Mobile"), "{net}");
}

#[test]
fn gammu_reports_a_locked_sim_and_unlocks_it() {
    if !gammu_present() {
        eprintln!("skipping: gammu is not installed");
        return;
    }
    let sim = Sim::builder().pin("1234").start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rc = gammurc(&sim, &dir);
    let sec = gammu(&rc, &["getsecuritystatus"]);
    assert!(sec.contains("Waiting for PIN"), "{sec}");
    gammu(&rc, &["entersecuritycode", "PIN", "1234"]);
    let sec = gammu(&rc, &["getsecuritystatus"]);
    assert!(sec.contains("Nothing to enter"), "{sec}");
    let pins: Vec<String> = sim
        .commands(1000)
        .into_iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("AT+CPIN="))
        .collect();
    assert_eq!(
        pins,
        ["AT+CPIN=\"1234\""],
        "gammu sent one PIN, the right one"
    );
    assert_eq!(sim.call(json!({"op": "ping"})).unwrap()["sim"], "ready");
}

#[test]
fn gammu_sends_short_long_and_unicode_texts() {
    if !gammu_present() {
        eprintln!("skipping: gammu is not installed");
        return;
    }
    let sim = Sim::builder().start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rc = gammurc(&sim, &dir);
    gammu(
        &rc,
        &[
            "sendsms",
            "TEXT",
            "+15551234567",
            "-text",
            "Your code is 481516",
        ],
    );
    let long: String = (0..400)
        .map(|i| char::from(b'A' + (i % 26) as u8))
        .collect();
    gammu(
        &rc,
        &[
            "sendsms",
            "TEXT",
            "+15551234567",
            "-len",
            "400",
            "-text",
            &long,
        ],
    );
    let unicode = "Код: 42 ✓ 日本";
    gammu(
        &rc,
        &[
            "sendsms",
            "TEXT",
            "+15551234567",
            "-unicode",
            "-text",
            unicode,
        ],
    );
    let lines = sent(&sim, 3);
    assert_eq!(lines[0]["text"], "Your code is 481516");
    assert_eq!(lines[0]["to"], "+15551234567");
    assert_eq!(lines[0]["parts"], 1);
    assert_eq!(lines[1]["text"], long.as_str());
    assert_eq!(lines[1]["parts"], 3);
    assert_eq!(lines[1]["pdu"].as_array().unwrap().len(), 3);
    assert_eq!(lines[2]["text"], unicode);
}

#[test]
fn gammu_copes_with_the_noisy_huawei_and_the_simcom_profiles() {
    if !gammu_present() {
        eprintln!("skipping: gammu is not installed");
        return;
    }
    // gammu recognises the Huawei by +CGMI and sends AT^CURC=0 and AT^PORTSEL=1 itself.
    for profile in [Profile::Huawei, Profile::Simcom] {
        let sim = Sim::builder().profile(profile).start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let rc = gammurc(&sim, &dir);
        let id = gammu(&rc, &["identify"]);
        let name = profile.name();
        assert!(id.contains("Manufacturer"), "{name}: {id}");
        gammu(&rc, &["sendsms", "TEXT", "+15551234567", "-text", name]);
        assert_eq!(sent(&sim, 1)[0]["text"], name);
    }
}
