//! A `simgate serve` child that drives an EXTERNAL simulator (a [`super::SimProcess`] started
//! with faults), plus a probe thread that measures how fast the API answers while a fault is in
//! progress.
//!
//! Include it together with the simulator helpers and the daemon's HTTP helpers:
//! `mod support;` and `#[path = "support/faults.rs"] mod faults;` (which includes
//! `support/daemon.rs` itself for `request`).

#![allow(dead_code)]

#[path = "daemon.rs"]
pub mod daemon;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use daemon::{Answer, code_in, read_jsonl, request};
use serde_json::{Value, json};

/// The bearer token every fault test configures in `api.tokens`.
pub const TOKEN: &str = "fault-test-token-0123456789abcdef";

/// A running `simgate serve` with a config file of the test's making.
pub struct ServeProcess {
    /// Its data directory (database, key file).
    pub data_dir: PathBuf,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The bearer token requests carry (the first of `api.tokens`).
    pub token: String,
    /// Its stderr (the daemon's log), kept for assertions and failure messages.
    pub stderr_path: PathBuf,
    /// The child; `None` once stopped, so `Drop` is idempotent.
    child: Option<Child>,
}

/// A config for one external modem at `device`: no per-number limits (tests use many numbers
/// and many OTPs per number), no per-SIM send rate, a short send timeout so a hung modem is
/// noticed quickly. `extra` is appended verbatim (more `[limits]` keys go in `limits_extra`).
pub fn config_for(device: &Path, limits_extra: &str, extra: &str) -> String {
    format!(
        r#"[api]
tokens = ["{TOKEN}"]

[limits]
otp_per_number = "off"
otp_per_number_per_day = 0
verify_per_number = "off"
otp_per_prefix = "off"
{limits_extra}

[[modem]]
device = "{}"
sends_per_minute = 0
send_timeout_seconds = 5
delivery_reports = true
{extra}"#,
        device.display()
    )
}

/// A temporary directory for a daemon's data on tmpfs (`/dev/shm`) when the machine has one,
/// else in the default temporary directory.
///
/// The fault tests bound the API's latency while the *modem* misbehaves. Every `202` waits for a
/// synced SQLite commit, so on a disk shared with parallel builds the fsync floor alone reaches
/// hundreds of milliseconds (measured on the 2-core development machine: fsync p99 337 ms, max
/// 766 ms while other engineers compiled) and the bound would measure the disk instead. The
/// disk's share of the latency is measured by the benchmark (README, "Performance").
pub fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("simgate-fault-")
            .tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("create temporary directory")
}

impl ServeProcess {
    /// Starts `simgate --json serve --config <data_dir>.toml --data-dir <data_dir> --listen
    /// 127.0.0.1:0` with `config` as the file's text and `RUST_LOG` set to `rust_log`.
    pub fn start(data_dir: &Path, config: &str, rust_log: &str) -> ServeProcess {
        let (child, listen, stderr_path) =
            daemon::spawn_serve(data_dir, &[], Some(config), &[("RUST_LOG", rust_log)]);
        ServeProcess {
            data_dir: data_dir.to_path_buf(),
            base: format!("http://{listen}"),
            token: TOKEN.to_owned(),
            stderr_path,
            child: Some(child),
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `Authorization` header value.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// `POST` a JSON body with the token.
    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.request("POST", path, Some(body.to_string()), true)
    }

    /// `GET` with the token.
    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None, true)
    }

    fn request(&self, method: &str, path: &str, body: Option<String>, auth: bool) -> Answer {
        let bearer = self.bearer();
        let headers: &[(&str, &str)] = if auth {
            &[("Authorization", &bearer)]
        } else {
            &[]
        };
        request(&self.base, method, path, body, headers)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    /// The state `/v1/modems` shows for the only modem.
    pub fn modem_state(&self) -> String {
        let a = self.get("/v1/modems");
        assert_eq!(a.status, 200, "{a:?}");
        a.body["modems"][0]["state"]
            .as_str()
            .unwrap_or("<none>")
            .to_owned()
    }

    /// Waits until the modem's state is `want`, returning every distinct state seen on the way
    /// (in order); panics with the daemon's log when `timeout` passes.
    pub fn wait_state(&self, want: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen: Vec<String> = Vec::new();
        loop {
            let state = self.modem_state();
            if seen.last() != Some(&state) {
                seen.push(state.clone());
            }
            if state == want {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "modem never reached {want:?}; states seen {seen:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Creates an OTP for `to` and returns the id of its message; panics unless `202`.
    pub fn create_otp(&self, to: &str) -> String {
        let a = self.post("/v1/otp", &json!({ "to": to }));
        assert_eq!(a.status, 202, "POST /v1/otp for {to}: {a:?}");
        a.body["message_id"]
            .as_str()
            .expect("message_id")
            .to_owned()
    }

    /// Whether any message is still `queued` (including one waiting for a retry) or `sending`.
    /// Two list requests, so waiting stays cheap for the daemon however many messages there are.
    pub fn any_open(&self) -> bool {
        ["queued", "sending"].iter().any(|s| {
            let a = self.get(&format!("/v1/messages?status={s}&limit=1"));
            assert_eq!(a.status, 200, "{a:?}");
            a.body["messages"].as_array().is_some_and(|m| !m.is_empty())
        })
    }

    /// Ids of the messages still `queued` or `sending` (up to 1000 of each).
    pub fn open_ids(&self) -> std::collections::HashSet<String> {
        let mut out = std::collections::HashSet::new();
        for s in ["queued", "sending"] {
            let a = self.get(&format!("/v1/messages?status={s}&limit=1000"));
            assert_eq!(a.status, 200, "{a:?}");
            for m in a.body["messages"].as_array().into_iter().flatten() {
                out.insert(m["id"].as_str().unwrap_or_default().to_owned());
            }
        }
        out
    }

    /// Waits until no message is open, then returns the messages `ids` (which must be final).
    pub fn wait_final(&self, ids: &[String], timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        while self.any_open() {
            assert!(
                Instant::now() < deadline,
                "messages still open after {timeout:?}: {}; log tail:\n{}",
                self.get("/v1/messages?limit=5").body,
                self.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        ids.iter()
            .map(|id| {
                let m = self.get(&format!("/v1/messages/{id}")).body;
                assert!(
                    !matches!(m["status"].as_str(), Some("queued" | "sending") | None),
                    "message {id} not final: {m}"
                );
                m
            })
            .collect()
    }

    /// The last `n` lines of the daemon's log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a [`Probe`] measured.
#[derive(Debug)]
pub struct ProbeReport {
    /// Latencies of `GET /healthz`, sorted.
    pub healthz: Vec<Duration>,
    /// Latencies of `POST /v1/otp`, sorted.
    pub otp: Vec<Duration>,
    /// Message ids of the OTPs the probe created (each answered 202): they must end sent too.
    pub message_ids: Vec<String>,
    /// Answers that were neither the expected status nor a connection success, with reasons.
    pub failures: Vec<String>,
}

/// The `p`-th percentile (0..=100) of sorted samples; zero when there are none.
pub fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * p).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl ProbeReport {
    /// Panics unless both routes kept p99 below `bound` and every probe request succeeded.
    pub fn assert_responsive(&self, what: &str, bound: Duration) {
        let h99 = percentile(&self.healthz, 99);
        let o99 = percentile(&self.otp, 99);
        eprintln!(
            "{what}: probe /healthz n={} p50={:?} p99={:?} max={:?}; POST /v1/otp n={} p50={:?} \
             p99={:?} max={:?}",
            self.healthz.len(),
            percentile(&self.healthz, 50),
            h99,
            self.healthz.last().copied().unwrap_or_default(),
            self.otp.len(),
            percentile(&self.otp, 50),
            o99,
            self.otp.last().copied().unwrap_or_default(),
        );
        assert!(
            self.failures.is_empty(),
            "{what}: probe requests failed: {:?}",
            self.failures
        );
        assert!(
            self.healthz.len() >= 10 && self.otp.len() >= 10,
            "{what}: too few probe samples"
        );
        assert!(h99 < bound, "{what}: /healthz p99 {h99:?} >= {bound:?}");
        assert!(o99 < bound, "{what}: POST /v1/otp p99 {o99:?} >= {bound:?}");
    }
}

/// A thread that alternates `GET /healthz` and `POST /v1/otp` (to fresh numbers under
/// `prefix`) every `interval` until stopped, timing each answer.
pub struct Probe {
    /// Tells the thread to finish.
    stop: Arc<AtomicBool>,
    /// The thread, joined by [`Probe::finish`].
    handle: Option<JoinHandle<ProbeReport>>,
}

impl Probe {
    /// Starts probing `base` with `token`.
    pub fn start(base: &str, token: &str, prefix: &str, interval: Duration) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let (base, bearer, prefix) = (
            base.to_owned(),
            format!("Bearer {token}"),
            prefix.to_owned(),
        );
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut report = ProbeReport {
                healthz: Vec::new(),
                otp: Vec::new(),
                message_ids: Vec::new(),
                failures: Vec::new(),
            };
            // One keep-alive agent, as a real client of the API would hold.
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into();
            let mut n = 0u32;
            while !stop2.load(Ordering::Relaxed) {
                let t = Instant::now();
                match agent.get(format!("{base}/healthz")).call() {
                    Ok(mut a) if a.status() == 200 => {
                        let _ = a.body_mut().read_to_string();
                        report.healthz.push(t.elapsed());
                    }
                    Ok(a) => report
                        .failures
                        .push(format!("/healthz answered {}", a.status())),
                    Err(e) => report.failures.push(format!("/healthz: {e}")),
                }
                n += 1;
                let to = format!("{prefix}{n:04}");
                let body = json!({ "to": to }).to_string();
                let t = Instant::now();
                let answer = agent
                    .post(format!("{base}/v1/otp"))
                    .header("Authorization", &bearer)
                    .content_type("application/json")
                    .send(body);
                match answer {
                    Ok(mut a) => {
                        let status = a.status().as_u16();
                        let text = a.body_mut().read_to_string().unwrap_or_default();
                        let elapsed = t.elapsed();
                        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        if status == 202 {
                            report.otp.push(elapsed);
                            if let Some(id) = body["message_id"].as_str() {
                                report.message_ids.push(id.to_owned());
                            }
                        } else {
                            report
                                .failures
                                .push(format!("POST /v1/otp answered {status}: {text}"));
                        }
                    }
                    Err(e) => report.failures.push(format!("POST /v1/otp: {e}")),
                }
                std::thread::sleep(interval);
            }
            report.healthz.sort();
            report.otp.sort();
            report
        });
        Probe {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the thread and returns what it measured.
    pub fn finish(mut self) -> ProbeReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("probe running")
            .join()
            .expect("probe thread")
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A hostile modem: a pty of its own in front of a [`super::SimProcess`], passing every byte
/// through, except that the simulator's `+CMGS: <mr>` answer to a PDU for `poisoned_to` is
/// rewritten to `+CMGS: 999`, a message reference no modem may give (TP-MR is one octet,
/// TS 23.040 §9.2.3.6). The simulator did accept (and log) the text, so the daemon faces a send
/// whose outcome it cannot know, which really went out: exactly what makes resends duplicates.
pub struct CmgsMangler {
    /// The symlink to this pty's serial end: the daemon's `device`.
    pub link: PathBuf,
    /// How many answers were rewritten.
    pub mangled: Arc<std::sync::atomic::AtomicUsize>,
    /// The master end, for [`CmgsMangler::inject`]; shared with the forwarding thread.
    to_daemon: Arc<std::sync::Mutex<std::fs::File>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl CmgsMangler {
    /// Starts the proxy between `sim_link` and a new symlink `link`.
    pub fn start(sim_link: &Path, link: &Path, poisoned_to: &str) -> CmgsMangler {
        use nix::sys::termios::{self, SetArg};
        use std::os::unix::fs::OpenOptionsExt;
        let pair = nix::pty::openpty(None, None).expect("openpty");
        let mut t = termios::tcgetattr(&pair.slave).expect("tcgetattr");
        termios::cfmakeraw(&mut t);
        termios::tcsetattr(&pair.slave, SetArg::TCSANOW, &t).expect("tcsetattr");
        let device = nix::unistd::ttyname(&pair.slave).expect("ttyname");
        std::os::unix::fs::symlink(&device, link).expect("symlink the mangler's pty");
        let sim = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(sim_link)
            .expect("open the simulator's serial end");
        let master = std::fs::File::from(pair.master);
        let to_daemon_end = Arc::new(std::sync::Mutex::new(master.try_clone().unwrap()));
        let stop = Arc::new(AtomicBool::new(false));
        let poison_next = Arc::new(AtomicBool::new(false));
        let mangled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // The slave stays open for the proxy's life, or reads on the master would spin on EIO
        // between the daemon's opens.
        let slave = pair.slave;
        let to_sim = {
            let (mut from, mut to) = (master.try_clone().unwrap(), sim.try_clone().unwrap());
            let (stop, poison_next) = (stop.clone(), poison_next.clone());
            let poisoned_to = poisoned_to.to_owned();
            use std::io::Write;
            std::thread::spawn(move || {
                let _slave = slave;
                let mut line: Vec<u8> = Vec::new();
                pump(&mut from, &stop, |chunk| {
                    for &b in chunk {
                        match b {
                            // Ctrl-Z ends a PDU (TS 27.005 §3.5.1): look at its destination.
                            0x1A => {
                                let hex = String::from_utf8_lossy(&line).trim().to_owned();
                                let to_poisoned = hex::decode(&hex)
                                    .ok()
                                    .and_then(|bytes| simgate::pdu::decode(&bytes).ok())
                                    .is_some_and(|pdu| match pdu {
                                        simgate::pdu::Pdu::Submit(s) => {
                                            s.destination.to_string() == poisoned_to
                                        }
                                        _ => false,
                                    });
                                poison_next.store(to_poisoned, Ordering::SeqCst);
                                line.clear();
                            }
                            b'\r' | b'\n' => line.clear(),
                            _ => line.push(b),
                        }
                    }
                    to.write_all(chunk)
                });
            })
        };
        let to_daemon = {
            let (mut from, to) = (sim, to_daemon_end.clone());
            let (stop, mangled) = (stop.clone(), mangled.clone());
            use std::io::Write;
            std::thread::spawn(move || {
                let mut held: Vec<u8> = Vec::new();
                pump(&mut from, &stop, |chunk| {
                    held.extend_from_slice(chunk);
                    // Hold back a `+CMGS:` line until it is complete, so it can be rewritten.
                    if let Some(at) = find(&held, b"+CMGS:")
                        && find(&held[at..], b"\r\n").is_none()
                    {
                        return Ok(());
                    }
                    if let Some(at) = find(&held, b"+CMGS:")
                        && poison_next.swap(false, Ordering::SeqCst)
                    {
                        let end = at + find(&held[at..], b"\r\n").expect("complete line");
                        held.splice(at..end, b"+CMGS: 999".iter().copied());
                        mangled.fetch_add(1, Ordering::SeqCst);
                    }
                    let out = std::mem::take(&mut held);
                    to.lock().unwrap().write_all(&out)
                });
            })
        };
        CmgsMangler {
            link: link.to_owned(),
            mangled,
            to_daemon: to_daemon_end,
            stop,
            threads: vec![to_sim, to_daemon],
        }
    }
}

impl CmgsMangler {
    /// Writes `bytes` to the daemon as if the modem had sent them (URCs of a forger, say).
    pub fn inject(&self, bytes: &[u8]) {
        use std::io::Write;
        self.to_daemon
            .lock()
            .unwrap()
            .write_all(bytes)
            .expect("write to the daemon's pty");
    }
}

impl Drop for CmgsMangler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads `from` until `stop`, handing each chunk to `each`; polls so that `stop` is seen.
fn pump(
    from: &mut std::fs::File,
    stop: &AtomicBool,
    mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
) {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let mut fd = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for a descriptor `from` keeps open during the call.
        let ready = unsafe { libc::poll(&mut fd, 1, 50) };
        if ready == 0
            || (ready < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted)
        {
            continue;
        }
        if ready < 0 {
            return;
        }
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if each(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
