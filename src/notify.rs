//! Talking to systemd: the `sd_notify` datagram protocol, without a crate.
//!
//! Under a `Type=notify` unit systemd passes `$NOTIFY_SOCKET`, a Unix datagram socket (a path, or
//! an abstract name when it starts with `@`). Each datagram is newline-separated `KEY=VALUE`
//! assignments: `READY=1` once the daemon serves, `STATUS=` for `systemctl status`, `WATCHDOG=1`
//! as a keep-alive when the unit has `WatchdogSec=` (systemd then also passes `WATCHDOG_USEC`, and
//! `WATCHDOG_PID` naming the process it expects pings from), `STOPPING=1` when shutdown begins.
//! See sd_notify(3) and systemd.service(5).
//!
//! Outside systemd (no `$NOTIFY_SOCKET`) there is no [`Notifier`] at all, so callers need no
//! "am I under systemd" checks beyond the `Option`.
//!
//! [`supervise`] is the long-running part: it turns the modems' published status into `STATUS=`
//! lines and sends `WATCHDOG=1` only while the daemon is healthy (see its documentation for what
//! "healthy" means), so a wedged daemon is restarted by systemd instead of silently not sending.

use std::ffi::OsStr;
use std::future::Future;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::modem::{ModemState, ModemStatus};

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    /// An unbound datagram socket: systemd identifies the sender by its credentials (PID), not
    /// by an address, so there is nothing to bind.
    socket: UnixDatagram,
    /// Where every datagram goes (`$NOTIFY_SOCKET`).
    target: SocketAddr,
    /// The watchdog timeout from `$WATCHDOG_USEC`, when the unit has `WatchdogSec=` and the
    /// pings are meant for this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier systemd asked for through the environment; `None` when the process does
    /// not run under a service manager that listens (or the variable is unusable, which is
    /// logged).
    pub fn from_env() -> Option<Notifier> {
        let socket = std::env::var_os("NOTIFY_SOCKET")?;
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Notifier::from_vars(&socket, usec.as_deref(), pid.as_deref(), std::process::id())
    }

    /// [`Notifier::from_env`] with the variables and our own PID passed in, so tests need not
    /// change the process environment (which is unsafe with threads around).
    pub fn from_vars(
        notify_socket: &OsStr,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> Option<Notifier> {
        let target = match socket_addr(notify_socket) {
            Ok(Some(addr)) => addr,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(
                    socket = %notify_socket.to_string_lossy(),
                    error = %e,
                    "NOTIFY_SOCKET is unusable; not notifying systemd"
                );
                return None;
            }
        };
        let socket = match UnixDatagram::unbound() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the sd_notify socket");
                return None;
            }
        };
        Some(Notifier {
            socket,
            target,
            watchdog: watchdog_timeout(watchdog_usec, watchdog_pid, own_pid),
        })
    }

    /// The unit's watchdog timeout (`WatchdogSec=`); `None` when no watchdog is enabled for
    /// this process. Pings must come more often than this; [`supervise`] pings at half of it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one datagram of newline-separated `KEY=VALUE` assignments as is.
    pub fn send(&self, assignments: &str) -> io::Result<()> {
        let sent = self
            .socket
            .send_to_addr(assignments.as_bytes(), &self.target)?;
        if sent != assignments.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "sd_notify datagram truncated",
            ));
        }
        Ok(())
    }

    /// `READY=1`: start-up is complete (the store is open and the API listens). Until then
    /// `systemctl start` waits, and units ordered after simgate do not start.
    pub fn ready(&self) {
        self.send_logged("READY=1");
    }

    /// `STATUS=<text>`: a one-line state shown by `systemctl status`. Line breaks would start a
    /// new assignment, so they become spaces.
    pub fn status(&self, text: &str) {
        let line: String = text
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        self.send_logged(&format!("STATUS={line}"));
    }

    /// `WATCHDOG=1`: a keep-alive. Only [`supervise`] should call it, after its health checks.
    pub fn watchdog(&self) {
        self.send_logged("WATCHDOG=1");
    }

    /// `STOPPING=1`: shutdown has begun, so systemd shows "deactivating" instead of treating
    /// the coming exit as a crash.
    pub fn stopping(&self) {
        self.send_logged("STOPPING=1");
    }

    /// Sends and logs a failure: there is nothing better a daemon can do when its service
    /// manager stops listening, and it must keep serving.
    fn send_logged(&self, assignments: &str) {
        if let Err(e) = self.send(assignments) {
            let key = assignments.split('=').next().unwrap_or_default();
            tracing::warn!(%key, error = %e, "sd_notify failed");
        }
    }
}

/// The address in `$NOTIFY_SOCKET`: `Ok(None)` when it is empty, an error when it is neither an
/// absolute path nor an abstract name (`@name`), which sd_notify(3) does not allow either.
fn socket_addr(value: &OsStr) -> io::Result<Option<SocketAddr>> {
    let bytes = value.as_bytes();
    match bytes.first() {
        None => Ok(None),
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]).map(Some),
        Some(b'/') => SocketAddr::from_pathname(value).map(Some),
        Some(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "neither an absolute path nor an abstract socket name",
        )),
    }
}

/// The watchdog timeout from `WATCHDOG_USEC`, unless `WATCHDOG_PID` names another process
/// (the variables leaked into a child) or the value is not a positive number.
fn watchdog_timeout(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid
        && pid.trim().parse::<u32>().ok()? != own_pid
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// One modem's part of the `STATUS=` line, e.g. `modem0 ready (Operator, -71 dBm)`.
fn describe(id: &str, status: &ModemStatus) -> String {
    let mut out = format!("{id} {}", status.state.as_str());
    match &status.state {
        ModemState::Failed(reason) => {
            out.push_str(": ");
            out.push_str(reason);
        }
        ModemState::Ready | ModemState::Sending | ModemState::WaitingForNetwork => {
            let details: Vec<String> = status
                .operator
                .iter()
                .cloned()
                .chain(status.signal_dbm.map(|dbm| format!("{dbm} dBm")))
                .collect();
            if !details.is_empty() {
                out.push_str(&format!(" ({})", details.join(", ")));
            }
        }
        ModemState::Disconnected | ModemState::Initializing => {}
    }
    out
}

/// The whole `STATUS=` text for every modem; `None` for a modem whose driver has ended.
pub fn status_line(modems: &[(String, Option<ModemStatus>)]) -> String {
    if modems.is_empty() {
        return "no modems configured".to_owned();
    }
    modems
        .iter()
        .map(|(id, status)| match status {
            Some(s) => describe(id, s),
            None => format!("{id} driver stopped"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Keeps systemd informed until `shutdown` resolves: a `STATUS=` line whenever a modem's status
/// changes what the line says, and, when the unit has a watchdog, `WATCHDOG=1` every half
/// watchdog interval while the daemon is healthy.
///
/// "Healthy", checked at each ping, means all of:
/// - the event loop turns: the ping is sent from a timer tick of the runtime, so a runtime that
///   is stalled (all workers blocked, a deadlock on the timer) sends nothing and systemd restarts
///   the daemon one watchdog interval later. A tick that fires late by more than a quarter of the
///   interval is logged with its lateness, so short stalls leave a trace before they grow;
/// - every modem driver task is alive (its status channel is still open): a driver that ended
///   outside shutdown has panicked, and only a restart brings the modem back;
/// - `health()` resolves to `true` within a quarter of the watchdog interval: the caller's own
///   probe, e.g. a trivial query of the store, which proves its writer/reader threads answer.
///
/// When a check fails the ping is skipped and the reason logged; the next tick tries again, so
/// a transient failure costs at most one ping and a lasting one ends in a restart.
pub async fn supervise<F, H>(
    notifier: Notifier,
    modems: Vec<(String, watch::Receiver<ModemStatus>)>,
    mut health: F,
    shutdown: impl Future<Output = ()> + Send,
) where
    F: FnMut() -> H + Send,
    H: Future<Output = bool> + Send,
{
    // One forwarder per modem merges the watch channels into one queue; each sends `None` and
    // ends when its driver's sender is gone. The JoinSet aborts them when we return.
    let (tx, mut changes) = mpsc::channel::<(usize, Option<ModemStatus>)>(16);
    let mut forwarders = JoinSet::new();
    let mut current: Vec<(String, Option<ModemStatus>)> = Vec::with_capacity(modems.len());
    for (index, (id, mut rx)) in modems.into_iter().enumerate() {
        current.push((id, Some(rx.borrow_and_update().clone())));
        let tx = tx.clone();
        forwarders.spawn(async move {
            while rx.changed().await.is_ok() {
                let status = rx.borrow_and_update().clone();
                if tx.send((index, Some(status))).await.is_err() {
                    return;
                }
            }
            let _ = tx.send((index, None)).await;
        });
    }
    drop(tx);

    let timeout = notifier.watchdog_interval();
    let mut ticker = timeout.map(|t| {
        let mut ticker = tokio::time::interval(t / 2);
        // After a stall, ping once and resume the rhythm rather than bursting missed pings.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker
    });

    let mut shown = status_line(&current);
    notifier.status(&shown);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some((index, status)) = changes.recv() => {
                current[index].1 = status;
                let line = status_line(&current);
                if line != shown {
                    notifier.status(&line);
                    shown = line;
                }
            }
            due = next_tick(ticker.as_mut()) => {
                // `timeout` is Some whenever a tick can fire.
                let timeout = timeout.unwrap_or_default();
                let late = Instant::now().saturating_duration_since(due);
                if late > timeout / 4 {
                    tracing::warn!(late_ms = late.as_millis() as u64, "event loop stalled");
                }
                match unhealthy(&current, &mut health, timeout / 4).await {
                    None => notifier.watchdog(),
                    Some(reason) => tracing::warn!(%reason, "unhealthy: watchdog ping skipped"),
                }
            }
        }
    }
    forwarders.abort_all();
}

/// Why the daemon is not healthy right now, or `None` when it is (see [`supervise`]).
async fn unhealthy<F, H>(
    modems: &[(String, Option<ModemStatus>)],
    health: &mut F,
    budget: Duration,
) -> Option<String>
where
    F: FnMut() -> H,
    H: Future<Output = bool>,
{
    if let Some((id, _)) = modems.iter().find(|(_, s)| s.is_none()) {
        return Some(format!("the driver of {id} has stopped"));
    }
    match tokio::time::timeout(budget, health()).await {
        Ok(true) => None,
        Ok(false) => Some("the health probe failed".to_owned()),
        Err(_) => Some(format!(
            "the health probe did not answer within {} ms",
            budget.as_millis()
        )),
    }
}

/// The deadline of the next watchdog tick; never resolves when there is no watchdog.
async fn next_tick(ticker: Option<&mut tokio::time::Interval>) -> Instant {
    match ticker {
        Some(t) => t.tick().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;

    fn bind(path: &Path) -> tokio::net::UnixDatagram {
        tokio::net::UnixDatagram::bind(path).unwrap()
    }

    /// Receives one datagram, failing the test if none comes within a generous bound.
    async fn recv(socket: &tokio::net::UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
            .await
            .expect("no datagram within 10 s")
            .unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn notifier_for(path: &Path, watchdog_usec: Option<&str>) -> Notifier {
        Notifier::from_vars(path.as_os_str(), watchdog_usec, None, 1).unwrap()
    }

    #[test]
    fn socket_addresses() {
        assert!(socket_addr(OsStr::new("")).unwrap().is_none());
        let path = socket_addr(OsStr::new("/run/systemd/notify"))
            .unwrap()
            .unwrap();
        assert_eq!(path.as_pathname(), Some(Path::new("/run/systemd/notify")));
        let abs = socket_addr(OsStr::new("@/org/freedesktop/systemd1/notify"))
            .unwrap()
            .unwrap();
        assert_eq!(
            abs.as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify"[..])
        );
        assert!(socket_addr(OsStr::new("relative/notify")).is_err());
        assert!(Notifier::from_vars(OsStr::new(""), None, None, 1).is_none());
        assert!(Notifier::from_vars(OsStr::new("relative"), None, None, 1).is_none());
    }

    #[test]
    fn watchdog_timeouts() {
        let check = |usec: Option<&str>, pid: Option<&str>, expect: Option<u64>| {
            assert_eq!(
                watchdog_timeout(usec, pid, 42),
                expect.map(Duration::from_micros),
                "WATCHDOG_USEC={usec:?} WATCHDOG_PID={pid:?}"
            );
        };
        check(Some("400000"), None, Some(400_000));
        check(Some("400000"), Some("42"), Some(400_000));
        check(Some("30000000"), Some(" 42 "), Some(30_000_000));
        // Meant for our parent, inherited by us: not ours to answer.
        check(Some("400000"), Some("41"), None);
        check(Some("400000"), Some("garbage"), None);
        check(Some("0"), None, None);
        check(Some("-5"), None, None);
        check(Some("soon"), None, None);
        check(None, Some("42"), None);
        check(None, None, None);
    }

    #[test]
    fn status_lines() {
        let ready = ModemStatus {
            state: ModemState::Ready,
            operator: Some("Operator".into()),
            signal_dbm: Some(-71),
            ..ModemStatus::default()
        };
        let waiting = ModemStatus {
            state: ModemState::WaitingForNetwork,
            signal_dbm: Some(-101),
            ..ModemStatus::default()
        };
        let failed = ModemStatus {
            state: ModemState::Failed("SIM PIN rejected".into()),
            ..ModemStatus::default()
        };
        let check = |modems: &[(&str, Option<ModemStatus>)], expect: &str| {
            let modems: Vec<(String, Option<ModemStatus>)> = modems
                .iter()
                .map(|(id, s)| (id.to_string(), s.clone()))
                .collect();
            assert_eq!(status_line(&modems), expect);
        };
        check(&[], "no modems configured");
        check(
            &[
                ("modem0", Some(ready.clone())),
                ("modem1", Some(ModemStatus::default())),
            ],
            "modem0 ready (Operator, -71 dBm); modem1 disconnected",
        );
        check(&[("m", Some(waiting))], "m waiting-for-network (-101 dBm)");
        check(&[("m", Some(failed))], "m failed: SIM PIN rejected");
        check(
            &[(
                "m",
                Some(ModemStatus {
                    operator: None,
                    signal_dbm: None,
                    ..ready
                }),
            )],
            "m ready",
        );
        check(&[("m", None)], "m driver stopped");
    }

    #[tokio::test]
    async fn datagrams_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = bind(&path);
        let notifier = notifier_for(&path, Some("400000"));
        assert_eq!(
            notifier.watchdog_interval(),
            Some(Duration::from_millis(400))
        );
        notifier.ready();
        notifier.status("two\nlines");
        notifier.watchdog();
        notifier.stopping();
        assert_eq!(recv(&socket).await, "READY=1");
        assert_eq!(recv(&socket).await, "STATUS=two lines");
        assert_eq!(recv(&socket).await, "WATCHDOG=1");
        assert_eq!(recv(&socket).await, "STOPPING=1");
    }

    #[tokio::test]
    async fn datagrams_reach_an_abstract_socket() {
        let name = format!("simgate-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let std_socket = UnixDatagram::bind_addr(&addr).unwrap();
        std_socket.set_nonblocking(true).unwrap();
        let socket = tokio::net::UnixDatagram::from_std(std_socket).unwrap();
        let notifier = Notifier::from_vars(OsStr::new(&format!("@{name}")), None, None, 1).unwrap();
        assert_eq!(notifier.watchdog_interval(), None);
        notifier.ready();
        assert_eq!(recv(&socket).await, "READY=1");
    }

    #[test]
    fn a_vanished_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.sock");
        let notifier = notifier_for(&path, None);
        assert!(notifier.send("READY=1").is_err());
        // The logging variants swallow it: the daemon keeps serving.
        notifier.ready();
    }

    /// Runs `supervise` on a real socket with a 200 ms watchdog (pings every 100 ms) and
    /// returns its socket, the modem's status sender and the way to stop it.
    struct Harness {
        _dir: tempfile::TempDir,
        socket: tokio::net::UnixDatagram,
        modem: Option<watch::Sender<ModemStatus>>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
    }

    fn start(healthy: bool) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = bind(&path);
        let notifier = notifier_for(&path, Some("200000"));
        let (modem, rx) = watch::channel(ModemStatus::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(supervise(
            notifier,
            vec![("modem0".to_owned(), rx)],
            move || async move { healthy },
            async move {
                let _ = stopped.await;
            },
        ));
        Harness {
            _dir: dir,
            socket,
            modem: Some(modem),
            stop: Some(stop),
            task,
        }
    }

    /// The next datagram that is not a watchdog ping, and how many pings came before it.
    async fn next_status(socket: &tokio::net::UnixDatagram) -> (String, usize) {
        let mut pings = 0;
        loop {
            let msg = recv(socket).await;
            if msg == "WATCHDOG=1" {
                pings += 1;
            } else {
                return (msg, pings);
            }
        }
    }

    #[tokio::test]
    async fn status_follows_the_modem_and_pings_while_healthy() {
        let mut h = start(true);
        assert_eq!(next_status(&h.socket).await.0, "STATUS=modem0 disconnected");
        let modem = h.modem.as_ref().unwrap();
        modem.send_modify(|s| s.state = ModemState::Initializing);
        assert_eq!(next_status(&h.socket).await.0, "STATUS=modem0 initializing");
        // Counters are not part of the line, so they do not resend it.
        modem.send_modify(|s| s.sent += 1);
        modem.send_modify(|s| {
            s.state = ModemState::Ready;
            s.operator = Some("Operator".into());
            s.signal_dbm = Some(-71);
        });
        assert_eq!(
            next_status(&h.socket).await.0,
            "STATUS=modem0 ready (Operator, -71 dBm)"
        );
        for _ in 0..3 {
            assert_eq!(recv(&h.socket).await, "WATCHDOG=1");
        }
        h.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), &mut h.task)
            .await
            .expect("supervise ends at shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn no_pings_when_the_probe_fails() {
        let mut h = start(false);
        assert_eq!(recv(&h.socket).await, "STATUS=modem0 disconnected");
        // Ten ping periods without a ping; the status still flows.
        tokio::time::sleep(Duration::from_secs(1)).await;
        h.modem
            .as_ref()
            .unwrap()
            .send_modify(|s| s.state = ModemState::Initializing);
        assert_eq!(
            next_status(&h.socket).await,
            ("STATUS=modem0 initializing".to_owned(), 0)
        );
        h.stop.take().unwrap().send(()).unwrap();
        (&mut h.task).await.unwrap();
    }

    #[tokio::test]
    async fn no_pings_once_a_driver_has_stopped() {
        let mut h = start(true);
        assert_eq!(next_status(&h.socket).await.0, "STATUS=modem0 disconnected");
        // Healthy at first...
        assert_eq!(recv(&h.socket).await, "WATCHDOG=1");
        // ...then the driver task ends (its sender is dropped) outside shutdown.
        drop(h.modem.take());
        assert_eq!(
            next_status(&h.socket).await.0,
            "STATUS=modem0 driver stopped"
        );
        let mut buf = [0u8; 64];
        let quiet = tokio::time::timeout(Duration::from_secs(1), h.socket.recv(&mut buf)).await;
        assert!(quiet.is_err(), "a datagram came after the driver stopped");
        h.stop.take().unwrap().send(()).unwrap();
        (&mut h.task).await.unwrap();
    }
}
