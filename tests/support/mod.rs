//! Shared helpers for integration tests: a `simgate sim` child process on a real pty.
//!
//! Every test that needs a modem starts one with [`SimProcess::start`]; the simulator's serial
//! end is a symlink inside a fresh temporary directory, its JSON-lines log sits next to it, and
//! its stderr is captured to a file there so a test can assert on what it reported (for example
//! `sim: pin attempt N rejected`). Each test file uses a subset of these helpers.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a simulator may take to create its link before a test gives up: generous, because
/// the machine running the suite may be busy compiling.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `simgate sim` child process.
pub struct SimProcess {
    /// The symlink to the simulator's serial end: what a client opens as its device.
    pub link: PathBuf,
    /// The simulator's JSON-lines log of accepted messages (docs/SPEC.md "The simulator's log").
    pub log: PathBuf,
    /// Owns the temporary directory holding link, log and captured stderr; removed on drop.
    pub dir: tempfile::TempDir,
    /// The child process; `None` once killed, so `kill` and `Drop` are idempotent.
    child: Option<Child>,
    /// Where the child's stderr goes, read back by `stderr_text`.
    stderr_path: PathBuf,
}

impl SimProcess {
    /// Starts a simulator with its link and log in a fresh temporary directory and waits until
    /// the link exists. `extra_args` are appended to `simgate sim --link .. --log ..`.
    pub fn start(extra_args: &[&str]) -> SimProcess {
        let dir = tempfile::tempdir().expect("create temporary directory");
        let link = dir.path().join("modem");
        let log = dir.path().join("sim.jsonl");
        Self::spawn(dir, link, log, extra_args)
    }

    /// Starts a simulator on a given link and log path (for example the same link again, as a
    /// replugged modem would appear). The temporary directory still holds the captured stderr.
    pub fn start_at(link: &Path, log: &Path, extra_args: &[&str]) -> SimProcess {
        let dir = tempfile::tempdir().expect("create temporary directory");
        Self::spawn(dir, link.to_path_buf(), log.to_path_buf(), extra_args)
    }

    fn spawn(dir: tempfile::TempDir, link: PathBuf, log: PathBuf, extra: &[&str]) -> SimProcess {
        let stderr_path = dir.path().join("sim.stderr");
        let stderr = File::create(&stderr_path).expect("create stderr capture file");
        let child = Command::new(env!("CARGO_BIN_EXE_simgate"))
            .arg("sim")
            .arg("--link")
            .arg(&link)
            .arg("--log")
            .arg(&log)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("SIMGATE_SIM_LOG").unwrap_or_else(|_| "simgate=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn simgate sim");
        let mut sim = SimProcess {
            link,
            log,
            dir,
            child: Some(child),
            stderr_path,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !sim.link.exists() {
            if let Some(child) = sim.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "simgate sim exited ({status}) before creating its link; stderr:\n{}",
                    sim.stderr_text()
                );
            }
            if Instant::now() > deadline {
                let text = sim.stderr_text();
                sim.kill();
                panic!(
                    "simgate sim did not create {:?} in time; stderr:\n{text}",
                    sim.link
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        sim
    }

    /// Every complete JSON line of the log so far (a line still being written is skipped).
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        let Ok(text) = std::fs::read_to_string(&self.log) else {
            return Vec::new();
        };
        text.split_inclusive('\n')
            .filter(|line| line.ends_with('\n'))
            .map(|line| {
                serde_json::from_str(line.trim_end())
                    .unwrap_or_else(|e| panic!("simulator log line is not JSON ({e}): {line}"))
            })
            .collect()
    }

    /// Waits until the log holds at least `n` lines and returns them all; panics with the
    /// simulator's stderr when `timeout` passes first.
    pub fn wait_for_log_lines(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.log_lines();
            if lines.len() >= n {
                return lines;
            }
            if Instant::now() > deadline {
                panic!(
                    "expected {n} simulator log lines, found {}: {lines:?}; stderr:\n{}",
                    lines.len(),
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The simulator's process id (its child is still running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("simulator running").id()
    }

    /// Everything the simulator printed on stderr so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Kills the simulator (SIGKILL) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the simulator the way an operator would (SIGTERM), so it removes its link, and
    /// waits up to `timeout` for it to exit; returns whether it exited in time.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
