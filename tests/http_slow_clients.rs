//! Hostile HTTP clients against the real daemon on loopback: connections that send nothing, half
//! a request head, or half a body must be closed after their timeout, the connection cap must
//! keep the daemon's descriptors bounded while `/healthz` keeps answering, and `SIGTERM` must end
//! the process promptly while such connections are open (SECURITY.md, "Slow and silent HTTP
//! clients").

#[path = "support/daemon.rs"]
mod daemon;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use daemon::Daemon;

/// One second per phase and a cap well under the number of hostile connections.
const TIGHT: &str = "[api]\nidle_timeout_seconds = 1\nheader_timeout_seconds = 1\n\
                     body_timeout_seconds = 1\nmax_connections = 40\n";

fn addr(d: &Daemon) -> SocketAddr {
    d.base.trim_start_matches("http://").parse().unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Hostile {
    /// Connects and sends nothing.
    Silent,
    /// Sends part of a request head and stops.
    HalfHead,
    /// Sends a whole head announcing 100 body bytes, and 10 of them.
    HalfBody,
    /// One complete request, then keeps the connection open without another.
    KeepAlive,
}

fn open(d: &Daemon, kind: Hostile) -> TcpStream {
    let mut s = TcpStream::connect(addr(d)).unwrap();
    let head = |extra: &str| {
        format!(
            "POST /v1/otp HTTP/1.1\r\nHost: localhost\r\nAuthorization: {}\r\n\
             Content-Type: application/json\r\n{extra}",
            d.bearer()
        )
    };
    match kind {
        Hostile::Silent => {}
        Hostile::HalfHead => s.write_all(head("X-Slow: ").as_bytes()).unwrap(),
        Hostile::HalfBody => s
            .write_all(format!("{}\r\n{{\"to\": \"+", head("Content-Length: 100\r\n")).as_bytes())
            .unwrap(),
        Hostile::KeepAlive => {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        }
    }
    s
}

/// Reads until the daemon closes the connection (EOF or reset); the time it took, or `None`
/// when it is still open at `deadline`.
fn closed_by(s: &mut TcpStream, deadline: Instant) -> Option<Instant> {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(Instant::now()),
            // A body timeout may first answer; keep reading to the close.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(_) => return Some(Instant::now()),
        }
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn healthz_within(d: &Daemon, limit: Duration) -> Duration {
    let started = Instant::now();
    let a = daemon::request(&d.base, "GET", "/healthz", None, &[])
        .unwrap_or_else(|e| panic!("/healthz failed: {e}\n{}", d.log()));
    assert_eq!(a.status, 200);
    let took = started.elapsed();
    assert!(took < limit, "/healthz took {took:?}");
    took
}

#[test]
fn slow_and_silent_clients_are_disconnected_and_capped() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), Some(TIGHT));
    d.wait_ready();
    let base_fds = open_fds(d.pid());

    // 120 hostile connections against a cap of 40.
    let kinds = [
        Hostile::Silent,
        Hostile::HalfHead,
        Hostile::HalfBody,
        Hostile::KeepAlive,
    ];
    let opened = Instant::now();
    let mut conns: Vec<(Hostile, TcpStream)> = Vec::new();
    for i in 0..120 {
        let kind = kinds[i % kinds.len()];
        // A keep-alive client needs its answer, which waits for a slot once the cap is reached.
        let kind = if i >= 40 && matches!(kind, Hostile::KeepAlive) {
            Hostile::Silent
        } else {
            kind
        };
        conns.push((kind, open(&d, kind)));
    }
    std::thread::sleep(Duration::from_millis(300));
    let fds_during = open_fds(d.pid());
    eprintln!("daemon descriptors: {base_fds} before, {fds_during} with 120 hostile connections");
    assert!(
        fds_during <= base_fds + 40 + 2,
        "{fds_during} descriptors (base {base_fds}, cap 40)"
    );

    // The accept backlog drains as the timeouts free slots, so /healthz gets its turn.
    let took = healthz_within(&d, Duration::from_secs(8));
    eprintln!("/healthz answered in {took:?} under the flood");

    let deadline = opened + Duration::from_secs(15);
    let mut slowest = Duration::ZERO;
    for (kind, s) in &mut conns {
        let at = closed_by(s, deadline)
            .unwrap_or_else(|| panic!("a {kind:?} connection is still open after 15 s"));
        slowest = slowest.max(at - opened);
    }
    eprintln!("all 120 hostile connections closed within {slowest:?}");
    drop(conns);
    std::thread::sleep(Duration::from_millis(200));
    assert!(open_fds(d.pid()) <= base_fds + 2, "descriptors leaked");
    healthz_within(&d, Duration::from_secs(2));
}

#[test]
fn a_body_that_stops_is_cut_off_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(&dir.path().join("data"), Some(TIGHT));
    let start = Instant::now();
    let mut s = open(&d, Hostile::HalfBody);
    let at = closed_by(&mut s, start + Duration::from_secs(10)).expect("still open after 10 s");
    let took = at - start;
    eprintln!("half-sent body closed after {took:?}");
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
    assert!(
        d.sim_log().is_empty(),
        "a cut-off request reached the modem"
    );
}

#[test]
fn sigterm_stops_promptly_with_hostile_connections_open() {
    let dir = tempfile::tempdir().unwrap();
    // Default timeouts (30 s idle, 10 s head and body): shutdown must not wait for them.
    let mut d = Daemon::start(&dir.path().join("data"), None);
    d.wait_ready();
    let mut conns = Vec::new();
    for kind in [
        Hostile::Silent,
        Hostile::HalfHead,
        Hostile::HalfBody,
        Hostile::KeepAlive,
    ] {
        for _ in 0..5 {
            conns.push(open(&d, kind));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    assert!(d.terminate(), "daemon did not exit cleanly:\n{}", d.log());
    let took = started.elapsed();
    eprintln!("SIGTERM with 20 hostile connections open: exited in {took:?}");
    // The shutdown grace for a request still being received is 5 s.
    assert!(took < Duration::from_secs(8), "SIGTERM took {took:?}");
}
