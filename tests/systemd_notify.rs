//! The real `simgate serve --simulate` binary under a fake systemd: the test binds the
//! `$NOTIFY_SOCKET` datagram socket itself and reads what the daemon says on it (sd_notify(3)).
//!
//! Proves: READY=1 comes first and only once the API answers; STATUS= lines describe the
//! modem; with `WATCHDOG_USEC` the daemon pings WATCHDOG=1 at about half the interval; a
//! `WATCHDOG_PID` naming another process silences the pings; SIGTERM sends STOPPING=1 and the
//! daemon exits cleanly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Generous bounds for a busy two-core machine; none of them measures speed.
const START: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(20);

/// The daemon under test; killed if the test fails before it stops it.
struct Serve {
    child: Child,
    banner: mpsc::Receiver<String>,
    socket: UnixDatagram,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, watchdog_pid: Option<&str>) -> Serve {
    let sock = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&sock).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_simgate"));
    cmd.args(["--json", "serve", "--simulate", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("NOTIFY_SOCKET", &sock)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(pid) = watchdog_pid {
        cmd.env("WATCHDOG_PID", pid);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, banner) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if BufReader::new(stdout).read_line(&mut line).is_ok() {
            let _ = tx.send(line);
        }
    });
    Serve {
        child,
        banner,
        socket,
    }
}

impl Serve {
    /// The next datagram and when it arrived; panics after `within`.
    fn recv(&self, within: Duration) -> (String, Instant) {
        self.socket.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self
            .socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no sd_notify datagram within {within:?}: {e}"));
        (
            String::from_utf8(buf[..n].to_vec()).unwrap(),
            Instant::now(),
        )
    }

    /// The API address from the JSON banner line.
    fn listen(&self) -> String {
        let line = self
            .banner
            .recv_timeout(WAIT)
            .expect("no banner line on stdout");
        let banner: serde_json::Value = serde_json::from_str(&line).unwrap();
        banner["listen"]
            .as_str()
            .unwrap_or_else(|| panic!("no listen address in {line}"))
            .to_owned()
    }

    fn terminate(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }
}

/// `GET /healthz` over a plain socket; the status code.
fn healthz(addr: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {answer}"))
}

#[test]
fn ready_after_the_api_answers_then_status_and_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = start(dir.path(), None);

    // Nothing is said before READY=1: it is the first datagram.
    let (first, _) = serve.recv(START);
    assert_eq!(first, "READY=1");
    // The daemon prints its banner and sends READY only after binding the listener, so the
    // API answers right away.
    let addr = serve.listen();
    assert_eq!(healthz(&addr), 200);

    let mut statuses = Vec::new();
    let mut pings = Vec::new();
    let deadline = Instant::now() + WAIT;
    while pings.len() < 6 || !statuses.iter().any(|s: &String| s.contains("ready")) {
        assert!(
            Instant::now() < deadline,
            "after {WAIT:?}: statuses {statuses:?}, {} pings",
            pings.len()
        );
        let (msg, at) = serve.recv(WAIT);
        if msg == "WATCHDOG=1" {
            pings.push(at);
        } else if let Some(status) = msg.strip_prefix("STATUS=") {
            statuses.push(status.to_owned());
        } else {
            panic!("unexpected datagram {msg:?}");
        }
    }
    // One modem, the simulator (id sim0); its line names its state, and it reached ready.
    assert!(
        statuses.iter().all(|s| s.starts_with("sim0 ")),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().any(|s| s.contains(" ready")),
        "{statuses:?}"
    );
    // WATCHDOG_USEC=400000: a ping every 200 ms. Loose: neither a burst nor a sleeper.
    let span = pings[pings.len() - 1] - pings[0];
    let mean_gap = span / (pings.len() as u32 - 1);
    assert!(
        mean_gap >= Duration::from_millis(100) && mean_gap <= Duration::from_millis(400),
        "mean gap between pings {mean_gap:?}"
    );

    serve.terminate();
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no STOPPING=1 after SIGTERM");
        if serve.recv(WAIT).0 == "STOPPING=1" {
            break;
        }
    }
    let status = serve.child.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
}

#[test]
fn no_pings_when_the_watchdog_is_meant_for_another_process() {
    let dir = tempfile::tempdir().unwrap();
    // PID 1 is never the daemon: the variables were meant for someone else.
    let mut serve = start(dir.path(), Some("1"));
    assert_eq!(serve.recv(START).0, "READY=1");
    let addr = serve.listen();
    assert_eq!(healthz(&addr), 200);
    // Ten ping intervals: only STATUS= lines may arrive.
    let quiet_until = Instant::now() + Duration::from_secs(2);
    while let Some(left) = quiet_until.checked_duration_since(Instant::now()) {
        serve
            .socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 4096];
        match serve.socket.recv(&mut buf) {
            Ok(n) => {
                let msg = std::str::from_utf8(&buf[..n]).unwrap();
                assert!(msg.starts_with("STATUS="), "unexpected datagram {msg:?}");
            }
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{e}"
            ),
        }
    }
    serve.terminate();
    assert!(serve.child.wait().unwrap().success());
}
