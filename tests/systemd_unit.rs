//! The systemd unit and sysusers entry, checked by systemd's own tools.
//!
//! `systemd-analyze verify` resolves `ExecStart=` against the file system, and this machine has
//! no /usr/bin/simgate, so the unit is verified inside a scratch root (`--root=`) that holds the
//! distribution's units, our unit and the freshly built binary at /usr/bin/simgate.
//! `systemd-analyze security --offline=true` rates the sandboxing without a running manager;
//! README states the figure, and this test keeps the two in step. `systemd-sysusers --root=`
//! creates the user in a scratch /etc. Each test skips with a reason when the tool is absent
//! (`.ci/run` installs systemd).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNIT: &str = include_str!("../systemd/simgate.service");
const SYSUSERS: &str = include_str!("../systemd/simgate.sysusers");

/// The highest exposure we accept (systemd-analyze's scale: 0 safest, 10 worst).
const MAX_EXPOSURE: f64 = 2.0;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(name: &str) -> bool {
    let found = Command::new(name).arg("--version").output().is_ok();
    if !found {
        eprintln!("skipping: {name} is not installed (Debian package systemd)");
    }
    found
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Diagnostics that describe this container rather than the unit.
fn is_environment_noise(line: &str) -> bool {
    line.trim().is_empty() || line.contains("Failed to read $container of PID 1")
}

/// A scratch root with the system's units, our unit, and (optionally) the binary.
fn scratch_root(with_binary: bool) -> tempfile::TempDir {
    // Under the target dir, so the binary can be hard-linked instead of copied.
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let units = root.path().join("lib/systemd/system");
    fs::create_dir_all(&units).unwrap();
    for entry in fs::read_dir("/lib/systemd/system").unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        let target = units.join(entry.file_name());
        if kind.is_file() {
            fs::copy(entry.path(), &target).unwrap();
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path()).unwrap(), &target).unwrap();
        }
    }
    fs::write(units.join("simgate.service"), UNIT).unwrap();
    if with_binary {
        let bin = root.path().join("usr/bin");
        fs::create_dir_all(&bin).unwrap();
        let exe = Path::new(env!("CARGO_BIN_EXE_simgate"));
        if fs::hard_link(exe, bin.join("simgate")).is_err() {
            fs::copy(exe, bin.join("simgate")).unwrap();
        }
    }
    root
}

fn verify(root: &Path) -> Output {
    Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .arg("simgate.service")
        .output()
        .unwrap()
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    if !tool("systemd-analyze") || !Path::new("/lib/systemd/system/multi-user.target").exists() {
        return;
    }
    let root = scratch_root(true);
    let out = verify(root.path());
    let complaints: Vec<&str> = std::str::from_utf8(&out.stderr)
        .unwrap()
        .lines()
        .chain(std::str::from_utf8(&out.stdout).unwrap().lines())
        .filter(|l| !is_environment_noise(l))
        .collect();
    // verify exits 0 on unknown keys and bad values (it only warns), so any output fails.
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify: {complaints:#?}"
    );
}

#[test]
fn verify_notices_a_missing_binary() {
    // The check above is only meaningful if verify looks inside the scratch root.
    if !tool("systemd-analyze") || !Path::new("/lib/systemd/system/multi-user.target").exists() {
        return;
    }
    let root = scratch_root(false);
    let out = verify(root.path());
    assert!(
        text(&out).contains("/usr/bin/simgate"),
        "verify did not complain about the absent binary: {}",
        text(&out)
    );
}

/// The overall exposure `systemd-analyze security` prints, e.g. 1.3.
fn exposure(report: &str) -> f64 {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level for simgate.service:"))
        .unwrap_or_else(|| panic!("no overall exposure in: {report}"));
    let figure = line
        .split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    figure.parse().unwrap()
}

#[test]
fn sandboxing_rates_at_most_2_0_and_readme_says_so() {
    if !tool("systemd-analyze") {
        return;
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        // The threshold is on a 0..100 scale: 20 means 2.0.
        .arg(format!("--threshold={}", (MAX_EXPOSURE * 10.0) as u32))
        .arg(repo().join("systemd/simgate.service"))
        .output()
        .unwrap();
    let report = text(&out);
    let level = exposure(&report);
    assert!(
        out.status.success() && level <= MAX_EXPOSURE,
        "exposure {level}:\n{report}"
    );
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let claim = format!("rates it {level:.1}");
    assert!(
        readme.contains(&claim),
        "README.md should say the unit's systemd-analyze security figure: \"{claim}\""
    );
}

#[test]
fn sysusers_creates_the_service_user_in_dialout() {
    if !tool("systemd-sysusers") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("usr/lib/sysusers.d");
    fs::create_dir_all(&dir).unwrap();
    fs::create_dir_all(root.path().join("etc")).unwrap();
    fs::write(dir.join("simgate.conf"), SYSUSERS).unwrap();
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .output()
        .unwrap();
    let complaints: Vec<String> = text(&out)
        .lines()
        .filter(|l| !is_environment_noise(l) && !l.starts_with("Creating "))
        .map(String::from)
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "{complaints:#?}"
    );
    let passwd = fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let user: Vec<&str> = passwd
        .lines()
        .find(|l| l.starts_with("simgate:"))
        .expect("no simgate user")
        .split(':')
        .collect();
    assert!(
        user[2].parse::<u32>().unwrap() < 1000,
        "not a system uid: {user:?}"
    );
    assert_eq!(user[5], "/var/lib/simgate");
    assert!(user[6].ends_with("nologin"), "login shell: {user:?}");
    let group = fs::read_to_string(root.path().join("etc/group")).unwrap();
    let dialout = group
        .lines()
        .find(|l| l.starts_with("dialout:"))
        .expect("no dialout group");
    assert!(
        dialout
            .rsplit(':')
            .next()
            .unwrap()
            .split(',')
            .any(|m| m == "simgate"),
        "{dialout}"
    );
}

/// The unit's settings as (key, value) pairs, in order, comments dropped.
fn settings() -> Vec<(&'static str, &'static str)> {
    UNIT.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| l.split_once('=').expect("key=value"))
        .collect()
}

fn values(key: &str) -> Vec<&'static str> {
    settings()
        .into_iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn unit_matches_what_the_daemon_does() {
    // What src/notify.rs and the daemon rely on; none of it is checked by systemd-analyze.
    let one = |key: &str| -> &'static str {
        let v = values(key);
        assert_eq!(v.len(), 1, "{key}: {v:?}");
        v[0]
    };
    assert_eq!(
        one("ExecStart"),
        "/usr/bin/simgate serve --config /etc/simgate/simgate.toml"
    );
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    assert_eq!(one("Restart"), "on-failure");
    assert!(one("WatchdogSec").ends_with('s'));
    assert_eq!(one("User"), "simgate");
    assert_eq!(one("SupplementaryGroups"), "dialout");
    // The config's default data_dir is /var/lib/simgate, its default path /etc/simgate/.
    assert_eq!(one("StateDirectory"), "simgate");
    assert_eq!(one("ConfigurationDirectory"), "simgate");
    assert_eq!(one("DevicePolicy"), "closed");
    let devices = values("DeviceAllow");
    for class in ["char-ttyUSB rw", "char-ttyACM rw", "char-usb_device rw"] {
        assert!(devices.contains(&class), "DeviceAllow={class} missing");
    }
    // sd_notify and the journal need AF_UNIX; the listener needs AF_INET/AF_INET6.
    assert_eq!(one("RestrictAddressFamilies"), "AF_UNIX AF_INET AF_INET6");
    assert_eq!(one("CapabilityBoundingSet"), "");
    // The daemon lowers api.max_connections to the open-file limit minus what it reserves;
    // the unit's limit must leave the default cap and its reserve whole, with room to raise it.
    let nofile: usize = one("LimitNOFILE").parse().expect("LimitNOFILE is a number");
    let cap = simgate::config::Config::default()
        .api
        .connections
        .max_connections;
    assert_eq!(
        simgate::http::server::connection_cap(cap, Some(nofile as u64)),
        cap
    );
    assert!(
        nofile >= 4 * cap,
        "LimitNOFILE={nofile} for a default cap of {cap}"
    );
}
