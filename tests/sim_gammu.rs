//! Debian's `gammu` accepts `simgate sim` as a modem: identify, getsecuritystatus, networkinfo,
//! and sendsms (short, long, unicode) whose texts arrive intact in the simulator's log.
//! Skips with a printed reason when `gammu` is not installed.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::SimProcess;

/// Writes a gammu config for the simulator's link and returns its path.
fn gammurc(sim: &SimProcess) -> std::path::PathBuf {
    let path = sim.dir.path().join("gammurc");
    let text = format!(
        "[gammu]\ndevice = {}\nconnection = at\nlogfile = {}\nlogformat = textall\n",
        sim.link.display(),
        sim.dir.path().join("gammu.log").display()
    );
    std::fs::write(&path, text).expect("write gammurc");
    path
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
    let sim = SimProcess::start(&[]);
    let rc = gammurc(&sim);
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
    let sim = SimProcess::start(&["--pin", "1234"]);
    let rc = gammurc(&sim);
    let sec = gammu(&rc, &["getsecuritystatus"]);
    assert!(sec.contains("Waiting for PIN"), "{sec}");
    gammu(&rc, &["entersecuritycode", "PIN", "1234"]);
    let sec = gammu(&rc, &["getsecuritystatus"]);
    assert!(sec.contains("Nothing to enter"), "{sec}");
    assert!(
        !sim.stderr_text().contains("pin attempt"),
        "gammu sent a wrong PIN"
    );
}

#[test]
fn gammu_sends_short_long_and_unicode_texts() {
    if !gammu_present() {
        eprintln!("skipping: gammu is not installed");
        return;
    }
    let sim = SimProcess::start(&[]);
    let rc = gammurc(&sim);
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
    let lines = sim.wait_for_log_lines(3, Duration::from_secs(10));
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
    for profile in ["huawei", "simcom"] {
        let sim = SimProcess::start(&["--profile", profile]);
        let rc = gammurc(&sim);
        let id = gammu(&rc, &["identify"]);
        assert!(id.contains("Manufacturer"), "{profile}: {id}");
        gammu(&rc, &["sendsms", "TEXT", "+15551234567", "-text", profile]);
        let lines = sim.wait_for_log_lines(1, Duration::from_secs(10));
        assert_eq!(lines[0]["text"], profile);
    }
}
