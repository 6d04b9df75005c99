//! A SIGTERM that arrives the moment `serve` prints its banner, or `sim` its link, is a clean
//! shutdown: exit status 0, the data dir's lock file and the simulator's link removed. systemd,
//! test suites and scripts send it as soon as they see the process is up; before the handlers
//! were installed ahead of the announcement, a loaded machine let such a signal hit the default
//! action and kill the process with its lock and link left behind.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Reads the first stdout line (the announcement), then sends SIGTERM at once; returns whether
/// the process exited with status 0, and its stderr.
fn sigterm_after_first_line(mut child: Child) -> (bool, String) {
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(!line.is_empty(), "no announcement");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    // Keep reading: the rest of the announcement must not meet a closed pipe.
    let drain = std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    let out = child.wait_with_output().unwrap();
    let _ = drain.join();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_stops_cleanly_on_a_sigterm_right_after_its_banner() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let child = Command::new(env!("CARGO_BIN_EXE_simgate"))
            .args(["--json", "serve", "--simulate", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn simgate serve");
        let (ok, log) = sigterm_after_first_line(child);
        assert!(ok, "round {round}: not a clean exit\n{log}");
        assert!(
            !data.join("lock").exists(),
            "round {round}: lock left\n{log}"
        );
        assert!(
            std::fs::symlink_metadata(data.join("sim-modem")).is_err(),
            "round {round}: simulator link left\n{log}"
        );
    }
}

#[test]
fn sim_stops_cleanly_on_a_sigterm_right_after_its_link() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("modem");
        let child = Command::new(env!("CARGO_BIN_EXE_simgate"))
            .arg("sim")
            .arg("--link")
            .arg(&link)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn simgate sim");
        let (ok, log) = sigterm_after_first_line(child);
        assert!(ok, "round {round}: not a clean exit\n{log}");
        assert!(
            std::fs::symlink_metadata(&link).is_err(),
            "round {round}: link left\n{log}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
