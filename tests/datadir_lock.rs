//! One process per data directory and per simulator link, with real processes: a second
//! `simgate serve` on a data directory in use must exit non-zero naming the first one's PID
//! before it recovers anything (else it resends the first one's text in flight), links
//! anything or binds; a second `simgate sim` on a link must leave the first one's link alone;
//! and the lock file a SIGKILLed daemon leaves behind must not block the next start.

#[path = "support/daemon.rs"]
mod daemon;
mod support;

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use daemon::{request, spawn_serve};
use serde_json::{Value, json};
use support::SimProcess;

/// A `simgate serve` started by [`spawn_serve`], with what a test needs to talk to it.
struct Serve {
    child: std::process::Child,
    base: String,
    token: String,
    stderr_path: std::path::PathBuf,
}

impl Serve {
    fn start(data: &Path, args: &[&str]) -> Serve {
        let (child, listen, stderr_path) =
            spawn_serve(data, args, None, &[("RUST_LOG", "simgate=debug,info")]);
        let token = std::fs::read_to_string(data.join("api-token"))
            .expect("api-token")
            .trim()
            .to_owned();
        Serve {
            child,
            base: format!("http://{listen}"),
            token,
            stderr_path,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> daemon::Answer {
        let bearer = format!("Bearer {}", self.token);
        request(
            &self.base,
            method,
            path,
            body.map(|b| b.to_string()),
            &[("Authorization", &bearer)],
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while request(&self.base, "GET", "/readyz", None, &[])
            .map(|a| a.status)
            .ok()
            != Some(200)
        {
            assert!(Instant::now() < deadline, "never ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the message's status is one of `states`; returns its JSON.
    fn wait_status(&self, id: &str, states: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.call("GET", &format!("/v1/messages/{id}"), None).body;
            if states.iter().any(|s| m["status"] == *s) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "message never reached {states:?}: {m}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `simgate <args>` to its end (killed after `timeout`: a second process that does not
/// refuse to start would run forever); returns its exit status (`None`: it had to be killed)
/// and its stderr.
fn run_to_end(args: &[&str], timeout: Duration) -> (Option<ExitStatus>, String) {
    let dir = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(args)
        .env("RUST_LOG", "simgate=debug,info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("spawn simgate");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            // SIGTERM first, so a simulator that took over a link shows what it does on exit.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            std::thread::sleep(Duration::from_millis(500));
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status,
        std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[test]
fn a_second_daemon_on_a_data_dir_in_use_refuses_before_recovering_anything() {
    let slow = SimProcess::start(&["--send-delay", "4"]);
    let other = SimProcess::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let a = Serve::start(&data, &["--device", s(&slow.link)]);
    a.wait_ready();
    let posted = a.call(
        "POST",
        "/v1/messages",
        Some(json!({"to": "+15551234567", "text": "only once please"})),
    );
    assert_eq!(posted.status, 202, "{:?}", posted.body);
    let id = posted.body["id"].as_str().unwrap().to_owned();
    // Daemon A has written the PDU and waits the simulator's 4 s of "network time".
    a.wait_status(&id, &["sending"], Duration::from_secs(10));

    let (status, stderr) = run_to_end(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            s(&data),
            "--device",
            s(&other.link),
        ],
        Duration::from_secs(15),
    );
    let status = status.unwrap_or_else(|| panic!("the second daemon kept running:\n{stderr}"));
    assert!(!status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains(&format!("PID {}", a.pid())),
        "the refusal names the holder's PID:\n{stderr}"
    );
    assert!(
        stderr.contains(s(&data)),
        "and the data directory:\n{stderr}"
    );
    assert!(
        !stderr.contains("previous process stopped"),
        "no recovery ran:\n{stderr}"
    );

    let m = a.wait_status(&id, &["sent", "delivered"], Duration::from_secs(20));
    assert_eq!(m["attempts"], 1, "{m}");
    assert_eq!(slow.wait_for_log_lines(1, Duration::from_secs(5)).len(), 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(slow.log_lines().len(), 1, "sent once");
    assert!(
        other.log_lines().is_empty(),
        "the second modem sent nothing: {:?}",
        other.log_lines()
    );
}

#[test]
fn a_second_simulated_daemon_leaves_the_first_ones_link_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let a = Serve::start(&data, &["--simulate"]);
    a.wait_ready();
    let link = data.join("sim-modem");
    let device = std::fs::read_link(&link).expect("A's link");

    let (status, stderr) = run_to_end(
        &[
            "serve",
            "--simulate",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            s(&data),
        ],
        Duration::from_secs(15),
    );
    let status = status.unwrap_or_else(|| panic!("the second daemon kept running:\n{stderr}"));
    assert!(!status.success(), "{status}: {stderr}");
    assert!(stderr.contains(&format!("PID {}", a.pid())), "{stderr}");
    assert_eq!(
        std::fs::read_link(&link).ok(),
        Some(device),
        "A's link is untouched"
    );

    // And A still sends through it.
    let posted = a.call(
        "POST",
        "/v1/messages",
        Some(json!({"to": "+15551234567", "text": "still here"})),
    );
    assert_eq!(posted.status, 202, "{:?}", posted.body);
    let id = posted.body["id"].as_str().unwrap().to_owned();
    a.wait_status(&id, &["sent", "delivered"], Duration::from_secs(20));
}

#[test]
fn a_killed_daemons_lock_file_does_not_block_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut a = Serve::start(&data, &["--simulate"]);
    a.wait_ready();
    let lock = data.join("lock");
    assert_eq!(
        std::fs::read_to_string(&lock)
            .expect("the lock file")
            .trim(),
        a.pid().to_string()
    );
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    assert!(lock.exists(), "SIGKILL leaves the file behind");

    let b = Serve::start(&data, &["--simulate"]);
    b.wait_ready();
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap().trim(),
        b.pid().to_string()
    );
    drop(a);
}

#[test]
fn a_cleanly_stopped_daemon_removes_its_lock_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut a = Serve::start(&data, &["--simulate"]);
    a.wait_ready();
    let pid = nix::unistd::Pid::from_raw(a.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = a.child.wait().unwrap();
    assert!(status.success(), "{status}\n{}", a.log());
    assert!(!data.join("lock").exists());
    assert!(!data.join("sim-modem").exists());
}

#[test]
fn a_second_simulator_on_a_link_refuses_and_leaves_the_link() {
    let first = SimProcess::start(&[]);
    let device = std::fs::read_link(&first.link).expect("first link");
    let log = first.dir.path().join("second.jsonl");
    let (status, stderr) = run_to_end(
        &["sim", "--link", s(&first.link), "--log", s(&log)],
        Duration::from_secs(5),
    );
    let status = status.unwrap_or_else(|| panic!("the second simulator kept running:\n{stderr}"));
    assert!(!status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains(&format!("PID {}", first.pid())),
        "the refusal names the holder's PID:\n{stderr}"
    );
    assert_eq!(std::fs::read_link(&first.link).ok(), Some(device));
}

#[test]
fn a_killed_simulators_lock_file_does_not_block_the_next_one() {
    let mut first = SimProcess::start(&[]);
    let lock = first.dir.path().join("modem.lock");
    assert_eq!(
        std::fs::read_to_string(&lock).expect("lock file").trim(),
        first.pid().to_string()
    );
    first.kill();
    assert!(lock.exists());
    let second = SimProcess::start_at(&first.link, &first.log, &[]);
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap().trim(),
        second.pid().to_string()
    );
}
