//! The data directory is trusted only while nobody but its owner can change it, with real
//! `simgate serve --simulate` processes: a directory group or others can write, a secret file
//! others can read and a symlink planted at any of simgate's file names are refused with an
//! error naming the path and the fix (and the symlink's target is left alone); every file
//! simgate creates is 0600 and a data directory it creates is 0700.

#[path = "support/daemon.rs"]
mod daemon;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use daemon::request;
use serde_json::{Value, json};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A `simgate --json serve --simulate --data-dir <data>` child; the data directory is left as
/// the test made it (or missing), unlike `daemon::spawn_serve`, which creates it.
struct Serve {
    child: Child,
    stderr: PathBuf,
}

impl Serve {
    fn spawn(data: &Path, scratch: &Path) -> Serve {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let stderr = scratch.join(format!(
            "serve-{}.stderr",
            RUNS.fetch_add(1, Ordering::Relaxed)
        ));
        let child = Command::new(env!("CARGO_BIN_EXE_simgate"))
            .args(["--json", "serve", "--simulate", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", "simgate=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn simgate serve");
        Serve { child, stderr }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the banner; returns the API's base URL.
    fn banner(&mut self) -> String {
        let stdout = self.child.stdout.take().expect("stdout");
        let line = daemon::first_line(stdout, Duration::from_secs(30)).unwrap_or_default();
        let banner: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("no banner ({line:?}); log:\n{}", self.log()));
        format!("http://{}", banner["listen"].as_str().unwrap())
    }

    /// Waits for the process to end (it must refuse to start); returns its log.
    fn refused(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = self.log();
                assert!(!status.success(), "{status}\n{log}");
                return log;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("serve started instead of refusing:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn terminate(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}\n{}", self.log());
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a daemon on `data`, sends one text through its simulator, and stops it cleanly, so
/// every file it keeps exists (the WAL and shared memory files while it runs).
fn populate(data: &Path, scratch: &Path, while_running: impl FnOnce()) {
    let mut serve = Serve::spawn(data, scratch);
    let base = serve.banner();
    let token = std::fs::read_to_string(data.join("api-token")).unwrap();
    let bearer = format!("Bearer {}", token.trim());
    let auth = [("Authorization", bearer.as_str())];
    let posted = request(
        &base,
        "POST",
        "/v1/messages",
        Some(json!({"to": "+15551234567", "text": "mode check"}).to_string()),
        &auth,
    )
    .unwrap();
    assert_eq!(posted.status, 202, "{:?}\n{}", posted.body, serve.log());
    let id = posted.body["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = request(&base, "GET", &format!("/v1/messages/{id}"), None, &auth).unwrap();
        if m.body["status"] == "sent" || m.body["status"] == "delivered" {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}\n{}", m.body, serve.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    while_running();
    serve.terminate();
}

#[test]
fn every_file_is_owner_only_and_a_new_data_dir_is_0700() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("new/data");
    populate(&data, tmp.path(), || {
        for name in [
            "api-token",
            "otp-keys",
            "simgate.db",
            "simgate.db-wal",
            "simgate.db-shm",
            "sim-sent.jsonl",
            "lock",
        ] {
            assert_eq!(mode(&data.join(name)), 0o600, "{name}");
        }
    });
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("sim-sent.jsonl")), 0o600);
    // A restart on the same files is accepted.
    let mut again = Serve::spawn(&data, tmp.path());
    again.banner();
    again.terminate();
}

#[test]
fn a_data_dir_others_can_write_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in [0o777, 0o1777, 0o775] {
        let data = tmp.path().join(format!("open-{bad:o}"));
        std::fs::create_dir(&data).unwrap();
        chmod(&data, bad);
        let log = Serve::spawn(&data, tmp.path()).refused();
        assert!(log.contains(&data.display().to_string()), "{log}");
        assert!(log.contains(&format!("mode {bad:03o}")), "{log}");
        assert!(
            log.contains(&format!("chmod 700 {}", data.display())),
            "{log}"
        );
        assert_eq!(
            std::fs::read_dir(&data).unwrap().count(),
            0,
            "nothing created in it"
        );
    }
}

#[test]
fn secret_files_others_can_read_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    populate(&data, tmp.path(), || {});
    for name in ["simgate.db", "api-token", "otp-keys", "sim-sent.jsonl"] {
        let path = data.join(name);
        chmod(&path, 0o644);
        let log = Serve::spawn(&data, tmp.path()).refused();
        assert!(log.contains("mode 644"), "{name}: {log}");
        assert!(
            log.contains(&format!("chmod 600 {}", path.display())),
            "{name}: {log}"
        );
        chmod(&path, 0o600);
    }
    let mut ok = Serve::spawn(&data, tmp.path());
    ok.banner();
    ok.terminate();
}

#[test]
fn a_symlink_planted_at_any_file_name_is_refused_and_its_target_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    populate(&data, tmp.path(), || {});
    for name in [
        "simgate.db",
        "simgate.db-wal",
        "simgate.db-shm",
        "api-token",
        "otp-keys",
        "sim-sent.jsonl",
        "lock",
    ] {
        let path = data.join(name);
        let saved = tmp.path().join(format!("saved-{name}"));
        let existed = path.exists();
        if existed {
            std::fs::rename(&path, &saved).unwrap();
        }
        // A dangling link: following it would create the file where the attacker wants it.
        let target = tmp.path().join(format!("target-{name}"));
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let log = Serve::spawn(&data, tmp.path()).refused();
        assert!(
            log.contains(&format!("{} is a symbolic link", path.display())),
            "{name}: {log}"
        );
        assert!(!target.exists(), "{name}: nothing created through the link");
        std::fs::remove_file(&path).unwrap();
        if existed {
            std::fs::rename(&saved, &path).unwrap();
        }
    }
    let mut ok = Serve::spawn(&data, tmp.path());
    ok.banner();
    ok.terminate();
}

#[test]
fn a_symlink_at_the_key_file_is_refused_by_the_library_too() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("elsewhere");
    std::os::unix::fs::symlink(&target, tmp.path().join("otp-keys")).unwrap();
    let e = simgate::otp::Keys::load_or_create(tmp.path()).unwrap_err();
    assert!(e.to_string().contains("symbolic link"), "{e}");
    assert!(!target.exists());
}

#[test]
fn the_standalone_simulators_log_is_owner_only() {
    let tmp = tempfile::tempdir().unwrap();
    let link = tmp.path().join("modem");
    let log = tmp.path().join("sent.jsonl");
    let mut sim = Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["sim", "--link"])
        .arg(&link)
        .arg("--log")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !link.exists() {
        assert!(Instant::now() < deadline, "no link");
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = mode(&log);
    let _ = sim.kill();
    let _ = sim.wait();
    assert_eq!(m, 0o600);
}

#[test]
fn config_check_reports_a_data_dir_serve_would_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    chmod(&data, 0o777);
    let config = tmp.path().join("simgate.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\ndata_dir = \"{}\"\n[[modem]]\ndevice = \"/dev/null\"\n",
            data.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["config", "check"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("store.data_dir"), "{stderr}");
    assert!(
        stderr.contains(&format!("chmod 700 {}", data.display())),
        "{stderr}"
    );
}

/// Writes `<dir>/api-token` owner-only, as an administrator would.
fn write_token(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("api-token");
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, text).unwrap();
    chmod(&path, 0o600);
    path
}

#[test]
fn a_token_file_follows_the_same_rule_as_config_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in [
        "x\n",
        "fifteen-chars-x",
        "sixteen chars ok",
        "tab\tseparated-token",
    ] {
        let path = write_token(tmp.path(), bad);
        let e = simgate::daemon::load_or_create_token(&path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 16 printable ASCII"), "{bad:?}: {e}");
        assert!(e.contains(&path.display().to_string()), "{e}");
        if bad.trim().len() > 4 {
            assert!(!e.contains(bad.trim()), "the token is never echoed: {e}");
        }
    }
    let path = write_token(tmp.path(), "sixteen-chars-ok\n");
    assert_eq!(
        simgate::daemon::load_or_create_token(&path).unwrap(),
        "sixteen-chars-ok"
    );
}

#[test]
fn serve_refuses_a_one_character_token_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    chmod(&data, 0o700);
    write_token(&data, "q\n");
    let log = Serve::spawn(&data, tmp.path()).refused();
    assert!(log.contains("api-token"), "{log}");
    assert!(log.contains("at least 16 printable ASCII"), "{log}");
    assert!(
        !data.join("simgate.db").exists(),
        "refused before the store"
    );
}
