//! `simgate doctor` as a user runs it: the real binary against `simgate sim` on a real pty, a
//! pty that never answers, paths that are not modems, and the machine's own ports.

mod support;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use support::SimProcess;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn doctor(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_simgate"))
        .arg("doctor")
        .args(args)
        .env_remove("SIMGATE_PIN")
        .output()
        .expect("run simgate doctor");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn doctor_on(device: &Path, json: bool) -> Run {
    let device = device.to_str().unwrap();
    if json {
        doctor(&["--device", device, "--json"])
    } else {
        doctor(&["--device", device])
    }
}

fn json_of(run: &Run) -> serde_json::Value {
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", run.stdout))
}

/// The findings of a `--json` run as (severity, port, problem, fix).
fn findings(v: &serde_json::Value) -> Vec<(String, Option<String>, String, String)> {
    v["findings"]
        .as_array()
        .expect("findings array")
        .iter()
        .map(|f| {
            (
                f["severity"].as_str().unwrap().to_string(),
                f.get("port").and_then(|p| p.as_str()).map(str::to_string),
                f["problem"].as_str().unwrap().to_string(),
                f["fix"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_healthy_simulated_modem_is_ready() {
    let sim = SimProcess::start(&[]);
    let run = doctor_on(&sim.link, false);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    for line in [
        "USB:          not a USB device (pty or built-in UART)",
        "open:         ok",
        "AT:           answers (simgate simgate-sim)",
        "SIM:          ready",
        "registration: home (Simgate Mobile)",
        "SMSC:         +15550000000",
        "Result: ready to send (SIM ready, registered):",
    ] {
        assert!(run.stdout.contains(line), "no {line:?} in:\n{}", run.stdout);
    }
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("  signal:") && l.ends_with(" dBm")),
        "no signal in dBm:\n{}",
        run.stdout
    );
    assert!(!run.stdout.contains("Findings:"), "{}", run.stdout);

    let run = doctor_on(&sim.link, true);
    assert_eq!(run.code, Some(0));
    let v = json_of(&run);
    assert_eq!(findings(&v), vec![]);
    assert_eq!(v["usable"][0], sim.link.to_str().unwrap());
    let port = &v["ports"][0];
    assert_eq!(port["path"], sim.link.to_str().unwrap());
    assert!(port["target"].as_str().unwrap().starts_with("/dev/pts/"));
    assert!(port["usb"].is_null());
    assert_eq!(port["open"], "ok");
    assert_eq!(port["answers_at"], true);
    assert_eq!(port["modem"]["sim"], "ready");
    assert_eq!(port["modem"]["registration"], "home");
    assert!(port["modem"]["signal_dbm"].as_i64().unwrap() < 0);
}

#[test]
fn a_sim_that_wants_its_pin_says_how_to_configure_it() {
    let sim = SimProcess::start(&["--pin", "1234"]);
    let run = doctor_on(&sim.link, true);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let v = json_of(&run);
    let f = findings(&v);
    assert_eq!(f.len(), 1, "{f:#?}");
    let (severity, port, problem, fix) = &f[0];
    assert_eq!(severity, "error");
    assert_eq!(port.as_deref(), sim.link.to_str());
    assert!(problem.contains("wants its PIN"), "{problem}");
    assert!(
        fix.contains("pin_file") && fix.contains("SIMGATE_PIN"),
        "{fix}"
    );
    assert_eq!(v["ports"][0]["modem"]["sim"], "PIN required");
    assert!(v["usable"].as_array().unwrap().is_empty());
    // Doctor changes nothing: it never sent a PIN, so the SIM still asks for one.
    let again = doctor_on(&sim.link, false);
    assert_eq!(again.code, Some(1));
    assert!(
        again.stdout.contains("SIM:          PIN required"),
        "{}",
        again.stdout
    );
    assert!(
        !sim.stderr_text().contains("pin attempt"),
        "{}",
        sim.stderr_text()
    );
}

#[test]
fn no_network_points_at_antenna_and_plan() {
    let sim = SimProcess::start(&["--no-network"]);
    let run = doctor_on(&sim.link, false);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("SIM:          ready"), "{}", run.stdout);
    assert!(
        run.stdout.contains("is not registered on a network"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("antenna"), "{}", run.stdout);
    assert!(run.stdout.contains("plan is active"), "{}", run.stdout);
    assert!(run.stdout.contains("Result: no usable modem."));
}

#[test]
fn a_pty_that_never_answers_does_not_answer_at() {
    // A terminal with nobody on the other end: the master is held but never read or written.
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let path =
        std::fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd())).expect("slave path");
    let run = doctor_on(&path, true);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let v = json_of(&run);
    let f = findings(&v);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].0, "error");
    assert_eq!(f[0].1.as_deref(), path.to_str());
    assert!(f[0].2.ends_with("does not answer AT"), "{}", f[0].2);
    assert!(f[0].3.contains("not a modem's AT port"), "{}", f[0].3);
    assert_eq!(v["ports"][0]["open"], "ok");
    assert_eq!(v["ports"][0]["answers_at"], false);
    drop(pty);
}

#[test]
fn paths_that_are_not_modems() {
    let run = doctor_on(Path::new("/dev/null"), false);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout.contains("/dev/null is not a serial port"),
        "{}",
        run.stdout
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("ttyUSB9");
    let run = doctor_on(&missing, false);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout
            .contains(&format!("{} does not exist", missing.display())),
        "{}",
        run.stdout
    );
}

#[test]
fn usage_errors_exit_2() {
    let run = doctor(&["--no-such-flag"]);
    assert_eq!(run.code, Some(2), "{}", run.stderr);
}

#[test]
fn this_machine_without_a_modem() {
    let run = doctor(&["--json"]);
    let v = json_of(&run);
    if run.code == Some(0) {
        eprintln!(
            "skipped: this machine has a usable modem ({}), so there is no 'no modem' verdict",
            v["usable"]
        );
        return;
    }
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let f = findings(&v);
    let verdict = f
        .iter()
        .find(|f| f.2.starts_with("no modem found"))
        .unwrap_or_else(|| panic!("no 'no modem found' finding: {f:#?}"));
    assert_eq!(verdict.0, "error");
    assert_eq!(verdict.1, None);
    assert!(verdict.3.contains("lsusb") && verdict.3.contains("usb_modeswitch"));
    assert!(v["ports"].is_array());
    let text = doctor(&[]);
    assert_eq!(text.code, Some(1));
    assert!(text.stdout.contains("no modem found"), "{}", text.stdout);
    assert!(text.stdout.contains("ModemManager: "), "{}", text.stdout);
}

/// A config file in the simulator's directory naming its link, with an optional pin_file.
fn config_for(sim: &SimProcess, pin_file: Option<&Path>) -> std::path::PathBuf {
    let path = sim.dir.path().join("simgate.toml");
    let mut text = format!("[[modem]]\ndevice = \"{}\"\n", sim.link.display());
    if let Some(pin) = pin_file {
        text += &format!("pin_file = \"{}\"\n", pin.display());
    }
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn scanning_checks_the_configured_modem_too() {
    let sim = SimProcess::start(&[]);
    let config = config_for(&sim, None);
    let run = doctor(&["--config", config.to_str().unwrap(), "--json"]);
    let v = json_of(&run);
    assert_eq!(run.code, Some(0), "{v:#}");
    assert_eq!(v["usable"], serde_json::json!([sim.link.to_str().unwrap()]));
    let f = findings(&v);
    assert!(
        !f.iter().any(|f| f.2.starts_with("no modem found")),
        "{f:#?}"
    );
}

#[test]
fn a_configured_pin_file_explains_a_locked_sim() {
    use std::os::unix::fs::PermissionsExt;
    let sim = SimProcess::start(&["--pin", "1234"]);
    let pin = sim.dir.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = config_for(&sim, Some(&pin));
    let run = doctor(&[
        "--device",
        sim.link.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let f = findings(&json_of(&run));
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].0, "warning");
    assert!(
        f[0].2
            .contains(&format!("the config gives it in {}", pin.display())),
        "{}",
        f[0].2
    );
    assert!(
        !run.stdout.contains("1234"),
        "the PIN leaked: {}",
        run.stdout
    );
}

#[test]
fn a_pin_file_serve_refuses_is_refused_by_doctor_too() {
    // Issue 16.4: doctor passed a config with a 0644 pin_file, which serve refuses at start.
    use std::os::unix::fs::PermissionsExt;
    let sim = SimProcess::start(&["--pin", "1234"]);
    let pin = sim.dir.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = config_for(&sim, Some(&pin));
    let run = doctor(&[
        "--device",
        sim.link.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--json",
    ]);
    let f = findings(&json_of(&run));
    let refused = f
        .iter()
        .find(|f| f.2.contains("serve would not start with this config file"))
        .unwrap_or_else(|| panic!("no config finding: {f:#?}"));
    assert_eq!(refused.0, "error");
    assert!(refused.2.contains("modem[0].pin_file"), "{}", refused.2);
    assert!(refused.2.contains("group or others"), "{}", refused.2);
    // serve says the same, from the same check, before it opens anything.
    let data = tempfile::tempdir().unwrap();
    let serve = Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["serve", "--config", config.to_str().unwrap(), "--data-dir"])
        .arg(data.path())
        .env_remove("SIMGATE_PIN")
        .output()
        .unwrap();
    assert_eq!(serve.status.code(), Some(2));
    let err = String::from_utf8_lossy(&serve.stderr);
    assert!(
        err.contains("modem[0].pin_file") && err.contains("group or others"),
        "{err}"
    );
    assert!(
        !run.stdout.contains("1234") && !err.contains("1234"),
        "the PIN leaked"
    );
}

#[test]
fn a_broken_config_file_is_reported() {
    let sim = SimProcess::start(&[]);
    let config = sim.dir.path().join("simgate.toml");
    std::fs::write(&config, "[api]\nlisen = \"127.0.0.1:1\"\n").unwrap();
    let run = doctor(&[
        "--device",
        sim.link.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    // The modem itself is fine, so the exit code says so; the finding says serve would not start.
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("serve would not start with this config file"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("api.lisen"), "{}", run.stdout);
}

#[test]
fn every_simulated_vendor_profile_is_ready() {
    for profile in ["generic", "huawei", "simcom", "quectel"] {
        let sim = SimProcess::start(&["--profile", profile]);
        let run = doctor_on(&sim.link, true);
        let v = json_of(&run);
        assert_eq!(run.code, Some(0), "{profile}: {v:#}");
        assert_eq!(findings(&v), vec![], "{profile}");
        let modem = &v["ports"][0]["modem"];
        assert!(
            !modem["manufacturer"].as_str().unwrap_or("").is_empty(),
            "{profile}: {modem}"
        );
        assert_eq!(modem["sim"], "ready", "{profile}");
    }
}
