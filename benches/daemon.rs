//! The daemon benchmark (issue 4): a real `simgate serve` process driven over loopback HTTP, its
//! texts taken by simulated modems on pseudo-terminals, measured from the outside only (the CLI,
//! the HTTP API of docs/SPEC.md, the simulator's JSON-lines log and `/proc/PID`).
//!
//! It prints, each beside its target: the durable enqueue rate and latency of `POST /v1/otp` at
//! concurrency 1, 16 and 64; the time from `POST /v1/otp` to the simulator receiving the SMS on
//! an idle modem; the drain rate against 1 and 4 simulators with no send delay and with 0.5 s;
//! the verify rate; the daemon's peak and idle memory and its idle CPU share; the time from an
//! inbound text reaching the daemon (`+CMT`, and `+CMTI` as simgate configures modems) to its
//! row in `GET /v1/inbound`. A markdown table for README.md closes the output.
//!
//! Run with `cargo bench --bench daemon`. Sizes come from environment variables (see
//! [`Sizes::from_env`]) so a quick look and a careful run use the same code. Every scenario gets
//! a fresh data directory, and every child process sits behind a [`ChildGuard`] so that a panic
//! leaves no daemon or simulator running.
//!
//! The client threads run on the same two cores as the daemon and its simulators: the figures
//! are what the whole machine does, a lower bound for the daemon alone.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The binary under test: the one `cargo bench` built with the bench profile (which inherits the
/// release profile, so it is the binary users run), or `SIMGATE_BENCH_BIN` (to measure an older
/// build, or the packaged binary, with the same code).
fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("SIMGATE_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_simgate").into())
    })
}

/// Whether scenario `name` runs: all of them, or those listed in `SIMGATE_BENCH_ONLY`
/// (comma-separated: enqueue, latency, drain, busy, verify, idle, inbound).
fn runs(name: &str) -> bool {
    match std::env::var("SIMGATE_BENCH_ONLY") {
        Ok(list) => list.split(',').any(|s| s.trim() == name),
        Err(_) => true,
    }
}

/// The issue's targets, in one place so the printed lines and the table agree.
const TARGET_ENQUEUE_PER_S: f64 = 2000.0;
const TARGET_ENQUEUE_P99_MS: f64 = 20.0;
const TARGET_POST_TO_CMGS_P99_MS: f64 = 10.0;
const TARGET_DRAIN_NO_DELAY_PER_S: f64 = 140.0;
const TARGET_UTILISATION: f64 = 0.98;
const TARGET_FOUR_MODEM_SPEEDUP: f64 = 3.8;
const TARGET_LOADED_RSS_MIB: f64 = 30.0;
const TARGET_IDLE_RSS_MIB: f64 = 10.0;
const TARGET_IDLE_CPU: f64 = 0.01;

/// The simulated send delay of the "busy modem" drain runs: long enough that the simulator, not
/// the daemon, is the bottleneck, as with a real modem that needs seconds per SMS.
const SLOW_SEND_DELAY: f64 = 0.5;
/// A faster network, where the daemon's own gap between texts weighs twice as much.
const FAST_SEND_DELAY: f64 = 0.25;
/// Busy share targets of one modem under a backlog, per send delay (BENCHMARKS.md: the next
/// message claimed and encoded while the current one is on the wire).
const TARGET_BUSY_FAST: f64 = 0.99;
const TARGET_BUSY_SLOW: f64 = 0.995;

/// Client threads of the drain and verify runs.
const LOAD_THREADS: usize = 16;

/// How big each scenario is; every size is an environment variable so CI can run a small pass.
struct Sizes {
    /// OTPs per enqueue run (`SIMGATE_BENCH_REQUESTS`, default 2000), one run per concurrency.
    requests: usize,
    /// Sequential OTPs of the POST→simulator latency run (`SIMGATE_BENCH_LATENCY_SAMPLES`,
    /// default 200).
    latency_samples: usize,
    /// Texts per drain run without send delay (`SIMGATE_BENCH_DRAIN`, default 1500): enough
    /// for about ten seconds at the 140/s target.
    drain_texts: usize,
    /// Seconds the 0.5 s-delay drain runs would take at full modem utilisation
    /// (`SIMGATE_BENCH_DRAIN_SECS`, default 10); the text count follows from the ceiling.
    drain_secs: f64,
    /// OTPs created and then verified (`SIMGATE_BENCH_VERIFIES`, default 1000).
    verifies: usize,
    /// Seconds of the idle CPU measurement (`SIMGATE_BENCH_IDLE_SECS`, default 5).
    idle_secs: f64,
}

impl Sizes {
    fn from_env() -> Sizes {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number")),
                Err(_) => default,
            }
        }
        let sizes = Sizes {
            requests: var("SIMGATE_BENCH_REQUESTS", 2000),
            latency_samples: var("SIMGATE_BENCH_LATENCY_SAMPLES", 200),
            drain_texts: var("SIMGATE_BENCH_DRAIN", 1500),
            drain_secs: var("SIMGATE_BENCH_DRAIN_SECS", 10.0),
            verifies: var("SIMGATE_BENCH_VERIFIES", 1000),
            idle_secs: var("SIMGATE_BENCH_IDLE_SECS", 5.0),
        };
        // The numbers are built from a 6-digit sequence (see `number`).
        for (name, n) in [
            ("SIMGATE_BENCH_REQUESTS", sizes.requests),
            ("SIMGATE_BENCH_LATENCY_SAMPLES", sizes.latency_samples),
            ("SIMGATE_BENCH_DRAIN", sizes.drain_texts),
            ("SIMGATE_BENCH_VERIFIES", sizes.verifies),
        ] {
            assert!(
                (1..1_000_000).contains(&n),
                "{name} must be 1..=999999, got {n}"
            );
        }
        assert!(
            sizes.drain_secs > 0.0 && sizes.idle_secs > 0.0,
            "durations must be positive"
        );
        sizes
    }
}

/// A distinct destination per (scenario, sequence): a new OTP for a number cancels that
/// number's pending one, so reusing numbers would measure cancellations, not enqueues.
fn number(scenario: u32, i: usize) -> String {
    format!("+1555{scenario:02}{i:06}")
}

fn unix_ns_now() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos() as i128
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted samples.
fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn met(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A child process that is stopped when the guard goes away, on success and on panic alike.
struct ChildGuard {
    /// The process.
    child: Child,
    /// What it is, for messages.
    name: String,
    /// Its stderr, kept for the reader of a failure message.
    log: PathBuf,
}

impl ChildGuard {
    /// Starts `cmd` with stderr to `log` and returns once it printed its first stdout line
    /// (the daemon's JSON banner, the simulator's link), which is returned.
    fn spawn(mut cmd: Command, name: &str, log: &Path) -> (ChildGuard, String) {
        let stderr = File::create(log).expect("create a child's log file");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", bin()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let guard = ChildGuard {
            child,
            name: name.to_owned(),
            log: log.to_path_buf(),
        };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep reading: a closed pipe would turn a later print of the child into EPIPE.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        if line.trim().is_empty() {
            panic!(
                "{name} printed nothing on stdout within 60 s; its stderr: {}",
                log.display()
            );
        }
        (guard, line)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics (naming the log) if the process has exited: a dead daemon must not be measured
    /// as a slow one.
    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); its stderr: {}",
                self.name,
                self.log.display()
            );
        }
    }

    /// SIGTERM, so the daemon can finish its sends in flight and close the store; SIGKILL if it
    /// is still there after 10 s.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        if kill(pid, Signal::SIGTERM).is_ok() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                match self.child.try_wait() {
                    Ok(Some(_)) => return,
                    Ok(None) => thread::sleep(Duration::from_millis(10)),
                    Err(_) => break,
                }
            }
            eprintln!("bench: {} ignored SIGTERM for 10 s; killing it", self.name);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

/// A `VmHWM:` / `VmRSS:` line of `/proc/PID/status`, in MiB.
fn proc_status_mib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    kib / 1024.0
}

/// utime + stime of a process (proc(5): fields 14 and 15 of `/proc/PID/stat`), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')').expect("a stat line has the comm in ()") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so field n is at index n - 3.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(per_second > 0, "sysconf(_SC_CLK_TCK) failed");
    ticks as f64 / per_second as f64
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// One blocking client per thread, keeping its connection alive across requests as a real
/// caller's pool would.
fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    )
}

/// The daemon's store writer counters at one moment; the difference of two readings describes
/// the run between them.
#[derive(Debug, Clone, Copy, Default)]
struct StoreCounters {
    synced_batches: f64,
    other_batches: f64,
    ops: f64,
    queue_wait_s: f64,
    synced_commit_s: f64,
}

impl StoreCounters {
    fn minus(&self, before: &StoreCounters) -> StoreCounters {
        StoreCounters {
            synced_batches: self.synced_batches - before.synced_batches,
            other_batches: self.other_batches - before.other_batches,
            ops: self.ops - before.ops,
            queue_wait_s: self.queue_wait_s - before.queue_wait_s,
            synced_commit_s: self.synced_commit_s - before.synced_commit_s,
        }
    }

    /// Writes per group commit.
    fn group_size(&self) -> f64 {
        self.ops / (self.synced_batches + self.other_batches).max(1.0)
    }

    /// Mean wait of a write in front of the writer, ms.
    fn wait_ms(&self) -> f64 {
        self.queue_wait_s * 1000.0 / self.ops.max(1.0)
    }

    /// Mean duration of a synced COMMIT (the WAL fsync, mostly), ms.
    fn sync_ms(&self) -> f64 {
        self.synced_commit_s * 1000.0 / self.synced_batches.max(1.0)
    }
}

/// Where the API is and how to authenticate.
#[derive(Clone)]
struct Api {
    /// `http://127.0.0.1:PORT`.
    base: String,
    /// `Bearer <token>`.
    auth: String,
}

impl Api {
    fn post(&self, agent: &ureq::Agent, path: &str, body: &Value) -> Result<(u16, Value), String> {
        let mut resp = agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .send_json(body)
            .map_err(|e| format!("POST {path}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_json::<Value>()
            .map_err(|e| format!("POST {path}: answer {status} is not JSON: {e}"))?;
        Ok((status, body))
    }

    fn get(&self, agent: &ureq::Agent, path: &str) -> Result<(u16, Value), String> {
        let mut resp = agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .call()
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_json::<Value>().unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// The store writer's counters from `GET /metrics` (see `simgate_store_*`).
    fn store_counters(&self, agent: &ureq::Agent) -> StoreCounters {
        let text = agent
            .get(format!("{}/metrics", self.base))
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .unwrap_or_default();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0.0)
        };
        StoreCounters {
            synced_batches: value("simgate_store_batches_total{synced=\"true\"}"),
            other_batches: value("simgate_store_batches_total{synced=\"false\"}"),
            ops: value("simgate_store_ops_total"),
            queue_wait_s: value("simgate_store_queue_wait_seconds_total"),
            synced_commit_s: value("simgate_store_commit_seconds_total{synced=\"true\"}"),
        }
    }

    /// `POST /v1/otp` for `to`; the answer's `id` on 202.
    fn create_otp(&self, agent: &ureq::Agent, to: &str) -> Result<String, String> {
        let (status, body) = self.post(agent, "/v1/otp", &json!({ "to": to }))?;
        if status != 202 {
            return Err(format!("POST /v1/otp answered {status}: {body}"));
        }
        body["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("POST /v1/otp: no id in {body}"))
    }
}

/// The outcome of one load run.
struct Load {
    /// Every call's latency, sorted.
    latencies: Vec<Duration>,
    /// Calls that did not get the expected answer.
    failed: usize,
    /// The first failure, to print.
    first_error: Option<String>,
    /// From the first call's start to the last call's end.
    wall: Duration,
}

impl Load {
    fn rate(&self) -> f64 {
        (self.latencies.len() - self.failed) as f64 / self.wall.as_secs_f64()
    }
    fn p(&self, p: f64) -> f64 {
        ms(percentile(&self.latencies, p))
    }
    fn report_failures(&self, what: &str) {
        if self.failed > 0 {
            eprintln!(
                "bench: {what}: {} of {} calls failed; first: {}",
                self.failed,
                self.latencies.len(),
                self.first_error.as_deref().unwrap_or("?")
            );
        }
    }
}

/// Makes `total` calls of `op` (given its sequence number) from `threads` client threads,
/// each with its own keep-alive agent.
fn run_load(
    threads: usize,
    total: usize,
    op: &(dyn Fn(&ureq::Agent, usize) -> Result<(), String> + Sync),
) -> Load {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let per_thread: Vec<(Vec<Duration>, usize, Option<String>)> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let agent = agent();
                    let mut latencies = Vec::new();
                    let mut failed = 0;
                    let mut first_error = None;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            break;
                        }
                        let t = Instant::now();
                        let result = op(&agent, i);
                        latencies.push(t.elapsed());
                        if let Err(e) = result {
                            failed += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                    (latencies, failed, first_error)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread panicked"))
            .collect()
    });
    let wall = start.elapsed();
    let mut load = Load {
        latencies: Vec::with_capacity(total),
        failed: 0,
        first_error: None,
        wall,
    };
    for (latencies, failed, first_error) in per_thread {
        load.latencies.extend(latencies);
        load.failed += failed;
        if load.first_error.is_none() {
            load.first_error = first_error;
        }
    }
    load.latencies.sort_unstable();
    load
}

// ---------------------------------------------------------------------------------------------
// The simulator's log

/// One line of a simulator's log (docs/SPEC.md "The simulator's log").
struct SimLine {
    /// `at`, as nanoseconds since the Unix epoch: when the last part reached the simulator.
    at_ns: i128,
    /// The destination.
    to: String,
    /// The decoded text (holds the OTP code: never printed).
    text: String,
}

/// Follows a simulator log as it grows; a line counts once its newline is there.
struct LogTail {
    /// The log file.
    path: PathBuf,
    /// Open once the simulator created the file.
    file: Option<File>,
    /// Bytes read after the last complete line.
    partial: String,
}

impl LogTail {
    fn new(path: PathBuf) -> LogTail {
        LogTail {
            path,
            file: None,
            partial: String::new(),
        }
    }

    /// The lines completed since the last call.
    fn poll(&mut self) -> Vec<SimLine> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(file) = self.file.as_mut() else {
            return Vec::new();
        };
        file.read_to_string(&mut self.partial)
            .unwrap_or_else(|e| panic!("read {}: {e}", self.path.display()));
        let Some(end) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let complete: String = self.partial.drain(..=end).collect();
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!("{}: a line is not JSON ({e})", self.path.display())
                });
                let at = v["at"].as_str().expect("a simulator log line has `at`");
                let at_ns = OffsetDateTime::parse(at, &Rfc3339)
                    .unwrap_or_else(|e| panic!("`at` {at:?} is not RFC 3339: {e}"))
                    .unix_timestamp_nanos();
                SimLine {
                    at_ns,
                    to: v["to"].as_str().unwrap_or_default().to_owned(),
                    text: v["text"].as_str().unwrap_or_default().to_owned(),
                }
            })
            .collect()
    }
}

/// Polls `tails` until `want` lines arrived in all or `timeout` passed; lines with the modem's
/// index.
fn collect_lines(tails: &mut [LogTail], want: usize, timeout: Duration) -> Vec<(usize, SimLine)> {
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    while lines.len() < want && Instant::now() < deadline {
        let before = lines.len();
        for (k, tail) in tails.iter_mut().enumerate() {
            lines.extend(tail.poll().into_iter().map(|l| (k, l)));
        }
        if lines.len() == before {
            thread::sleep(Duration::from_millis(2));
        }
    }
    lines
}

// ---------------------------------------------------------------------------------------------
// A daemon with its modems

/// Which modems the daemon drives.
enum Modems {
    /// `serve --simulate`: the built-in simulator (no send delay).
    Builtin,
    /// `count` external `simgate sim` processes with this send delay, as `[[modem]]` tables.
    External { count: usize, send_delay: f64 },
}

/// One scenario's daemon, its simulators and its data directory.
///
/// Field order is drop order: the daemon stops first (its modems still there to finish sends in
/// flight), then the simulators, then the directory goes.
struct Setup {
    /// The daemon process.
    daemon: ChildGuard,
    /// External simulators, if any.
    sims: Vec<ChildGuard>,
    /// The simulators' logs, one per modem.
    sim_logs: Vec<PathBuf>,
    /// How to call the API.
    api: Api,
    /// The scenario's scratch directory (data dir, config, logs).
    _dir: tempfile::TempDir,
}

/// `[limits]` that let one client push the daemon as hard as it goes: per-number and
/// per-token limits off, a queue deep enough for every backlog here.
const LOAD_LIMITS: &str = r#"[limits]
otp_per_number = "off"
otp_per_number_per_day = 0
verify_per_number = "off"
otp_per_prefix = "off"
requests_per_token = "off"
queue_max = 1000000
"#;

impl Setup {
    fn start(scratch: &Path, modems: Modems) -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("simgate-bench-")
            .tempdir_in(scratch)
            .expect("create a scratch directory");
        let mut config = String::from(LOAD_LIMITS);
        let mut sims = Vec::new();
        let mut sim_logs = Vec::new();
        let simulate = match modems {
            Modems::Builtin => true,
            Modems::External { count, send_delay } => {
                for k in 0..count {
                    let link = dir.path().join(format!("sim{k}"));
                    let log = dir.path().join(format!("sim{k}.jsonl"));
                    let mut cmd = Command::new(bin());
                    cmd.arg("sim")
                        .arg("--link")
                        .arg(&link)
                        .arg("--log")
                        .arg(&log)
                        .arg("--send-delay")
                        .arg(send_delay.to_string());
                    let (guard, _) = ChildGuard::spawn(
                        cmd,
                        &format!("simulator {k}"),
                        &dir.path().join(format!("sim{k}.stderr")),
                    );
                    assert!(link.exists(), "simulator {k} printed but made no link");
                    sims.push(guard);
                    sim_logs.push(log);
                    // JSON string escaping is valid TOML basic-string escaping.
                    let device = serde_json::to_string(&link.display().to_string())
                        .expect("a string serializes");
                    config.push_str(&format!(
                        "\n[[modem]]\nid = \"modem{k}\"\ndevice = {device}\nsends_per_minute = 0\ndelivery_reports = false\n"
                    ));
                }
                false
            }
        };
        let config_path = dir.path().join("simgate.toml");
        std::fs::write(&config_path, config).expect("write the config");

        let mut cmd = Command::new(bin());
        cmd.arg("--json")
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen")
            .arg("127.0.0.1:0");
        if simulate {
            cmd.arg("--simulate");
        }
        let (daemon, banner) =
            ChildGuard::spawn(cmd, "simgate serve", &dir.path().join("daemon.stderr"));
        let banner: Value = serde_json::from_str(banner.trim())
            .unwrap_or_else(|e| panic!("the daemon's banner {banner:?} is not JSON: {e}"));
        let listen = banner["listen"].as_str().expect("banner has listen");
        let token_file = banner["token_file"]
            .as_str()
            .expect("banner has token_file (no tokens are configured)");
        let token = std::fs::read_to_string(token_file).expect("read the API token");
        if simulate {
            let log = banner["simulator"]["log"]
                .as_str()
                .expect("banner names the simulator log under --simulate");
            sim_logs.push(PathBuf::from(log));
        }
        let mut setup = Setup {
            daemon,
            sims,
            sim_logs,
            api: Api {
                base: format!("http://{listen}"),
                auth: format!("Bearer {}", token.trim()),
            },
            _dir: dir,
        };
        setup.wait_ready();
        setup
    }

    /// Waits until every modem is `ready` in `GET /v1/modems` (`/readyz` needs only one).
    fn wait_ready(&mut self) {
        let agent = agent();
        let want = self.sim_logs.len();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.daemon.assert_alive();
            for sim in &mut self.sims {
                sim.assert_alive();
            }
            if let Ok((200, body)) = self.api.get(&agent, "/v1/modems") {
                let ready = body["modems"]
                    .as_array()
                    .map(|m| m.iter().filter(|m| m["state"] == "ready").count())
                    .unwrap_or(0);
                if ready >= want {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "modems not ready after 60 s; daemon stderr: {}",
                self.daemon.log.display()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    fn tails(&self) -> Vec<LogTail> {
        self.sim_logs.iter().cloned().map(LogTail::new).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// Durable `POST /v1/otp` from `threads` clients.
struct EnqueueResult {
    /// The daemon's CPU time per request, µs (its built-in simulator sending included).
    cpu_per_request_us: f64,
    /// The daemon's CPU time over the run's wall time, in cores: near 2 means CPU-bound on this
    /// machine, well below means waiting (fsync, locks, the client).
    cpu_share: f64,
    /// Concurrent clients.
    threads: usize,
    /// Accepted OTPs per second of wall time.
    rate: f64,
    /// Latency percentiles of the `202`, ms.
    p50: f64,
    p99: f64,
    /// Requests not answered `202`.
    failed: usize,
    /// The daemon's VmHWM after the run, MiB.
    peak_rss: f64,
    /// What the store writer did during the run (the built-in simulator's sends included).
    store: StoreCounters,
}

fn bench_enqueue(scratch: &Path, sizes: &Sizes, threads: usize, scenario: u32) -> EnqueueResult {
    let mut setup = Setup::start(scratch, Modems::Builtin);
    let api = setup.api.clone();
    let store0 = api.store_counters(&agent());
    let cpu0 = cpu_seconds(setup.pid());
    let load = run_load(threads, sizes.requests, &|agent, i| {
        api.create_otp(agent, &number(scenario, i)).map(drop)
    });
    let daemon_cpu = cpu_seconds(setup.pid()) - cpu0;
    let store = api.store_counters(&agent()).minus(&store0);
    load.report_failures(&format!("enqueue at concurrency {threads}"));
    setup.daemon.assert_alive();
    let result = EnqueueResult {
        cpu_per_request_us: daemon_cpu / sizes.requests as f64 * 1e6,
        cpu_share: daemon_cpu / load.wall.as_secs_f64(),
        threads,
        rate: load.rate(),
        p50: load.p(50.0),
        p99: load.p(99.0),
        failed: load.failed,
        peak_rss: proc_status_mib(setup.pid(), "VmHWM:"),
        store,
    };
    let target = if threads == 1 {
        // One client waits for each commit: its rate is 1/latency, so only latency applies.
        format!(
            "target p99 < {TARGET_ENQUEUE_P99_MS} ms: {}",
            met(result.p99 < TARGET_ENQUEUE_P99_MS)
        )
    } else {
        format!(
            "target >= {TARGET_ENQUEUE_PER_S} /s at p99 < {TARGET_ENQUEUE_P99_MS} ms: {}",
            met(result.rate >= TARGET_ENQUEUE_PER_S && result.p99 < TARGET_ENQUEUE_P99_MS)
        )
    };
    println!(
        "enqueue   concurrency {threads:>2}: {:>7.0} OTP/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} requests, {} failed)  [{target}]",
        result.rate, result.p50, result.p99, sizes.requests, result.failed
    );
    println!(
        "          daemon CPU {:.0} µs per request, {:.2} cores busy during the run; load average {}",
        result.cpu_per_request_us,
        result.cpu_share,
        loadavg()
    );
    println!(
        "          store: {:.0} writes in {:.0} group commits ({:.1} per group), {:.0} of them synced ({:.2} fsyncs per OTP); a write waits {:.2} ms for its group to start, a synced COMMIT takes {:.2} ms",
        store.ops,
        store.synced_batches + store.other_batches,
        store.group_size(),
        store.synced_batches,
        store.synced_batches / sizes.requests as f64,
        store.wait_ms(),
        store.sync_ms()
    );
    result
}

/// `POST /v1/otp` → the simulator's log line, one OTP at a time on an idle modem.
struct LatencyResult {
    /// OTPs sent one at a time.
    samples: usize,
    /// POST → simulator log percentiles, ms.
    p50: f64,
    p99: f64,
    /// The `202` alone, ms: separates the commit path from the modem path.
    http_p50: f64,
    http_p99: f64,
}

fn bench_post_to_sim(scratch: &Path, sizes: &Sizes) -> LatencyResult {
    let mut setup = Setup::start(scratch, Modems::Builtin);
    let mut tails = setup.tails();
    let agent = agent();
    let mut to_sim = Vec::with_capacity(sizes.latency_samples);
    let mut http = Vec::with_capacity(sizes.latency_samples);
    for i in 0..sizes.latency_samples {
        let to = number(20, i);
        let t0 = unix_ns_now();
        let sent = Instant::now();
        setup
            .api
            .create_otp(&agent, &to)
            .unwrap_or_else(|e| panic!("latency run: {e}"));
        http.push(sent.elapsed());
        let deadline = Instant::now() + Duration::from_secs(30);
        let line = loop {
            let found = tails[0].poll().into_iter().find(|l| l.to == to);
            if let Some(line) = found {
                break line;
            }
            if Instant::now() > deadline {
                setup.daemon.assert_alive();
                panic!("OTP {i} did not reach the simulator within 30 s");
            }
            thread::sleep(Duration::from_micros(500));
        };
        to_sim.push(Duration::from_nanos((line.at_ns - t0).max(0) as u64));
        // Let the driver read `+CMGS:` and the dispatcher record the send: the next OTP must
        // find the modem idle, not queue behind this one.
        thread::sleep(Duration::from_millis(20));
    }
    to_sim.sort_unstable();
    http.sort_unstable();
    let result = LatencyResult {
        samples: sizes.latency_samples,
        p50: ms(percentile(&to_sim, 50.0)),
        p99: ms(percentile(&to_sim, 99.0)),
        http_p50: ms(percentile(&http, 50.0)),
        http_p99: ms(percentile(&http, 99.0)),
    };
    println!(
        "POST→sim  idle modem:     p50 {:>6.2} ms  p99 {:>6.2} ms  ({} OTPs; the 202 itself: p50 {:.2} ms, p99 {:.2} ms)  [target p99 < {TARGET_POST_TO_CMGS_P99_MS} ms: {}]",
        result.p50,
        result.p99,
        result.samples,
        result.http_p50,
        result.http_p99,
        met(result.p99 < TARGET_POST_TO_CMGS_P99_MS)
    );
    println!(
        "          (client clock just before the POST → the simulator log's `at`; this includes the `> ` prompt round trip and the PDU, so it bounds POST→AT+CMGS from above)"
    );
    result
}

/// A backlog drained into `modems` simulators with `send_delay`.
struct DrainResult {
    /// Simulators driven.
    modems: usize,
    /// Their `--send-delay`, seconds.
    send_delay: f64,
    /// The backlog pushed.
    texts: usize,
    /// Texts that reached a simulator before the timeout.
    drained: usize,
    /// Texts per second from the first POST to the last log line.
    rate: f64,
    /// Texts per simulator: shows whether the dispatcher spreads the load.
    per_modem: Vec<usize>,
    /// Median and p99 time between consecutive texts on one modem, ms: the send delay plus
    /// the daemon's own cost per text, which is where utilisation goes.
    gap_p50: f64,
    gap_p99: f64,
    /// From the clock's start to the first text, ms.
    first_ms: f64,
    /// The daemon's VmHWM after the run, MiB.
    peak_rss: f64,
}

/// The busy-share target of one modem at `send_delay`, if there is one.
fn busy_target(send_delay: f64) -> Option<f64> {
    if send_delay == FAST_SEND_DELAY {
        Some(TARGET_BUSY_FAST)
    } else if send_delay == SLOW_SEND_DELAY {
        Some(TARGET_BUSY_SLOW)
    } else {
        None
    }
}

impl DrainResult {
    /// The modem's share of time on network sends in the steady state: the send delay over the
    /// median time between consecutive texts (the start-up ramp and the tail do not count).
    fn busy_share(&self) -> f64 {
        if self.gap_p50 > 0.0 {
            self.send_delay * 1000.0 / self.gap_p50
        } else {
            0.0
        }
    }

    /// What the simulators could take, texts/s; none without a delay.
    fn ceiling(&self) -> Option<f64> {
        (self.send_delay > 0.0).then(|| self.modems as f64 / self.send_delay)
    }
}

fn bench_drain(
    scratch: &Path,
    sizes: &Sizes,
    modems: usize,
    send_delay: f64,
    scenario: u32,
) -> DrainResult {
    let texts = if send_delay > 0.0 {
        ((modems as f64 / send_delay) * sizes.drain_secs).ceil() as usize
    } else {
        sizes.drain_texts
    };
    let mut setup = Setup::start(
        scratch,
        Modems::External {
            count: modems,
            send_delay,
        },
    );
    let mut tails = setup.tails();
    let api = setup.api.clone();
    // The clock starts before the first POST: the backlog is built while the modems already
    // send, as in production, and the first send's latency counts against utilisation.
    let start_ns = unix_ns_now();
    let load = run_load(LOAD_THREADS, texts, &|agent, i| {
        api.create_otp(agent, &number(scenario, i)).map(drop)
    });
    load.report_failures(&format!(
        "drain backlog ({modems} modems, delay {send_delay} s)"
    ));
    let expected = texts - load.failed;
    let ideal = if send_delay > 0.0 {
        texts as f64 * send_delay / modems as f64
    } else {
        texts as f64 / TARGET_DRAIN_NO_DELAY_PER_S
    };
    let timeout = Duration::from_secs_f64(ideal * 3.0 + 20.0);
    let lines = collect_lines(&mut tails, expected, timeout);
    setup.daemon.assert_alive();
    let mut per_modem = vec![0; modems];
    let mut last_ns = start_ns;
    let mut first_ns = i128::MAX;
    let mut at_by_modem = vec![Vec::new(); modems];
    for (k, line) in &lines {
        per_modem[*k] += 1;
        last_ns = last_ns.max(line.at_ns);
        first_ns = first_ns.min(line.at_ns);
        at_by_modem[*k].push(line.at_ns);
    }
    let mut gaps: Vec<i128> = Vec::new();
    for ats in &mut at_by_modem {
        ats.sort_unstable();
        gaps.extend(ats.windows(2).map(|w| w[1] - w[0]));
    }
    gaps.sort_unstable();
    let secs = (last_ns - start_ns) as f64 / 1e9;
    let result = DrainResult {
        modems,
        send_delay,
        texts,
        drained: lines.len(),
        rate: if secs > 0.0 {
            lines.len() as f64 / secs
        } else {
            0.0
        },
        per_modem,
        gap_p50: percentile(&gaps, 50.0) as f64 / 1e6,
        gap_p99: percentile(&gaps, 99.0) as f64 / 1e6,
        first_ms: if lines.is_empty() {
            0.0
        } else {
            (first_ns - start_ns) as f64 / 1e6
        },
        peak_rss: proc_status_mib(setup.pid(), "VmHWM:"),
    };
    let incomplete = if result.drained < texts {
        format!(
            " — only {} of {texts} arrived within {timeout:.0?}",
            result.drained
        )
    } else {
        String::new()
    };
    let verdict = match result.ceiling() {
        Some(ceiling) => format!(
            "{:.1} % of the simulators' {ceiling:.0}/s  [target >= {:.0} %: {}]",
            100.0 * result.rate / ceiling,
            TARGET_UTILISATION * 100.0,
            met(result.rate / ceiling >= TARGET_UTILISATION)
        ),
        None => format!(
            "[target >= {TARGET_DRAIN_NO_DELAY_PER_S:.0} texts/s: {}]",
            met(result.rate >= TARGET_DRAIN_NO_DELAY_PER_S)
        ),
    };
    println!(
        "drain     {modems} modem(s), delay {send_delay:.1} s: {:>7.1} texts/s  {verdict}  ({texts} texts, per modem {:?}){incomplete}",
        result.rate, result.per_modem
    );
    let steady = if send_delay > 0.0 && result.gap_p50 > 0.0 {
        let busy = result.busy_share();
        let target = if modems == 1 {
            busy_target(send_delay)
                .map(|t| format!(" [target >= {:.1} %: {}]", t * 100.0, met(busy >= t)))
                .unwrap_or_default()
        } else {
            String::new()
        };
        format!(
            "; busy (delay / median gap) {:.2} %{target}, idle between texts p50 {:.2} ms",
            100.0 * busy,
            result.gap_p50 - send_delay * 1000.0
        )
    } else {
        String::new()
    };
    println!(
        "          one modem's gap between texts: p50 {:.1} ms, p99 {:.1} ms (send delay {:.0} ms){steady}; first text {:.1} ms after the first POST",
        result.gap_p50,
        result.gap_p99,
        send_delay * 1000.0,
        result.first_ms
    );
    result
}

/// `POST /v1/otp/{id}/verify` with the right code, from `LOAD_THREADS` clients.
struct VerifyResult {
    /// Verifies made (one per OTP whose text reached the simulator).
    verifies: usize,
    /// Successful verifies per second.
    rate: f64,
    /// Latency percentiles, ms.
    p50: f64,
    p99: f64,
    /// Verifies not answered `200` with `verified: true`.
    failed: usize,
    /// The daemon's VmHWM after the run, MiB.
    peak_rss: f64,
}

fn bench_verify(scratch: &Path, sizes: &Sizes) -> VerifyResult {
    let mut setup = Setup::start(scratch, Modems::Builtin);
    let api = setup.api.clone();
    let ids = Mutex::new(HashMap::new());
    let created = run_load(LOAD_THREADS, sizes.verifies, &|agent, i| {
        let to = number(40, i);
        let id = api.create_otp(agent, &to)?;
        ids.lock().expect("no client panicked").insert(to, id);
        Ok(())
    });
    created.report_failures("verify: creating OTPs");
    let ids = ids.into_inner().expect("no client panicked");
    // The codes are read where a user would read them: in the text that reached the phone.
    let mut tails = setup.tails();
    let lines = collect_lines(
        &mut tails,
        ids.len(),
        Duration::from_secs_f64(ids.len() as f64 / 20.0 + 30.0),
    );
    setup.daemon.assert_alive();
    let mut pairs: Vec<(String, String)> = lines
        .into_iter()
        .filter_map(|(_, line)| {
            let id = ids.get(&line.to)?.clone();
            let code: String = line
                .text
                .split(|c: char| !c.is_ascii_digit())
                .find(|run| run.len() >= 4)?
                .to_owned();
            Some((id, code))
        })
        .collect();
    pairs.sort();
    if pairs.len() < ids.len() {
        eprintln!(
            "bench: verify: only {} of {} OTP texts reached the simulator; verifying those",
            pairs.len(),
            ids.len()
        );
    }
    let load = run_load(LOAD_THREADS, pairs.len(), &|agent, i| {
        let (id, code) = &pairs[i];
        let (status, body) = api.post(
            agent,
            &format!("/v1/otp/{id}/verify"),
            &json!({ "code": code }),
        )?;
        if status == 200 && body["verified"] == true {
            Ok(())
        } else {
            // The body holds no code (only id, status, verified, attempts_remaining).
            Err(format!("verify answered {status}: {body}"))
        }
    });
    load.report_failures("verify");
    setup.daemon.assert_alive();
    let result = VerifyResult {
        verifies: pairs.len(),
        rate: load.rate(),
        p50: load.p(50.0),
        p99: load.p(99.0),
        failed: load.failed,
        peak_rss: proc_status_mib(setup.pid(), "VmHWM:"),
    };
    println!(
        "verify    concurrency {LOAD_THREADS}: {:>7.0} verifies/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} verifies, {} failed)  [no target]",
        result.rate, result.p50, result.p99, result.verifies, result.failed
    );
    result
}

/// A fresh daemon with its built-in simulator, doing nothing.
struct IdleResult {
    /// Which daemon shape idled.
    shape: &'static str,
    /// VmRSS at the end of the idle span, MiB.
    rss: f64,
    /// CPU seconds per second over the idle span.
    cpu_share: f64,
    /// The idle span actually measured, seconds.
    secs: f64,
}

/// `modems`: the built-in simulator (its memory and timers count as the daemon's) or one
/// external simulator (the production shape: the daemon drives a modem it does not host).
fn bench_idle(scratch: &Path, sizes: &Sizes, modems: Modems) -> IdleResult {
    let shape = match modems {
        Modems::Builtin => "serve --simulate",
        Modems::External { .. } => "serve + external simulator",
    };
    let mut setup = Setup::start(scratch, modems);
    // Start-up work (migrations, modem init) is not idling.
    thread::sleep(Duration::from_secs(2));
    let pid = setup.pid();
    let cpu0 = cpu_seconds(pid);
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs_f64(sizes.idle_secs));
    let cpu = cpu_seconds(pid) - cpu0;
    let secs = t0.elapsed().as_secs_f64();
    setup.daemon.assert_alive();
    let result = IdleResult {
        shape,
        rss: proc_status_mib(pid, "VmRSS:"),
        cpu_share: cpu / secs,
        secs,
    };
    println!(
        "idle      {shape}: RSS {:.2} MiB [target < {TARGET_IDLE_RSS_MIB} MiB: {}]  CPU {:.2} % over {:.1} s [target < {:.0} %: {}]  (CPU clock ticks: 1 tick = {:.2} %)",
        result.rss,
        met(result.rss < TARGET_IDLE_RSS_MIB),
        result.cpu_share * 100.0,
        result.secs,
        TARGET_IDLE_CPU * 100.0,
        met(result.cpu_share < TARGET_IDLE_CPU),
        // SAFETY: sysconf only reads a system constant.
        100.0 / (unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64 * result.secs),
    );
    // Where the resident memory is: heap and stacks (anonymous) versus pages of the binary and
    // libraries (file-backed, shared with every other process mapping them).
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .map(|n| n.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    println!(
        "          of which anonymous (heap, stacks) {:.2} MiB, file-backed (binary, libraries) {:.2} MiB; {threads} threads",
        proc_status_mib(pid, "RssAnon:"),
        proc_status_mib(pid, "RssFile:"),
    );
    result
}

// ---------------------------------------------------------------------------------------------
// Inbound texts

/// Makes the simulator route texts as `+CMT` (the daemon asks for `+CMTI`): the tests' proxy.
#[path = "../tests/support/routing_proxy.rs"]
mod routing_proxy;

/// Single-part texts delivered one at a time by a simulator's network, each timed until the
/// daemon shows it.
struct InboundResult {
    /// `+CMT` (routed) or `+CMTI` (stored, read with `AT+CMGR`).
    route: &'static str,
    /// Texts timed.
    samples: usize,
    /// From the control socket's `deliver` answer (the simulator has written the URC) until
    /// `GET /v1/inbound` lists the text, ms.
    p50: f64,
    p99: f64,
    /// The same from just before the `deliver` request (the control round trip included), ms.
    req_p50: f64,
    req_p99: f64,
}

/// `SIMGATE_BENCH_INBOUND` (default 200) texts through a `simgate sim --control` and a daemon
/// with `[inbound] enabled = true`; `routed`: through the tests' [`routing_proxy`], so the
/// simulator hands each text over as `+CMT` (`+CSMS` service 0: no `+CNMA`), else stored and
/// announced with `+CMTI`, read with `AT+CMGR` and deleted with `AT+CMGD` after the commit.
fn bench_inbound(scratch: &Path, routed: bool) -> InboundResult {
    use simgate::sim::control::Client;
    let samples: usize = std::env::var("SIMGATE_BENCH_INBOUND")
        .map(|v| v.trim().parse().expect("SIMGATE_BENCH_INBOUND is a number"))
        .unwrap_or(200);
    assert!((1..1_000_000).contains(&samples));
    let route = if routed { "+CMT" } else { "+CMTI" };
    let dir = tempfile::Builder::new()
        .prefix("simgate-bench-inbound-")
        .tempdir_in(scratch)
        .expect("create a scratch directory");
    let link = dir.path().join("sim");
    let ctl_path = dir.path().join("sim.sock");
    let ready = dir.path().join("sim.ready");
    let mut cmd = Command::new(bin());
    cmd.arg("sim")
        .arg("--link")
        .arg(&link)
        .arg("--control")
        .arg(&ctl_path)
        .arg("--ready-file")
        .arg(&ready);
    let (mut sim, _) = ChildGuard::spawn(cmd, "simulator", &dir.path().join("sim.stderr"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        sim.assert_alive();
        assert!(
            Instant::now() < deadline,
            "the simulator wrote no ready file"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let proxy = routed.then(|| routing_proxy::RoutingProxy::start(&link, true, false));
    let device = proxy.as_ref().map_or(link.clone(), |p| p.link.clone());
    let device = serde_json::to_string(&device.display().to_string()).expect("a string");
    let config_path = dir.path().join("simgate.toml");
    std::fs::write(
        &config_path,
        format!(
            "{LOAD_LIMITS}\n[[modem]]\nid = \"modem0\"\ndevice = {device}\ndelivery_reports = false\n\n[inbound]\nenabled = true\n"
        ),
    )
    .expect("write the config");
    let mut cmd = Command::new(bin());
    cmd.arg("--json")
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg("127.0.0.1:0");
    let (mut daemon, banner) =
        ChildGuard::spawn(cmd, "simgate serve", &dir.path().join("daemon.stderr"));
    let banner: Value = serde_json::from_str(banner.trim()).expect("the banner is JSON");
    let token_file = banner["token_file"]
        .as_str()
        .expect("banner has token_file");
    let api = Api {
        base: format!("http://{}", banner["listen"].as_str().expect("listen")),
        auth: format!(
            "Bearer {}",
            std::fs::read_to_string(token_file)
                .expect("read the API token")
                .trim()
        ),
    };
    let agent = agent();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        daemon.assert_alive();
        if let Ok((200, body)) = api.get(&agent, "/v1/modems")
            && body["modems"][0]["state"] == "ready"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the modem is not ready after 60 s"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let mut ctl = Client::connect(ctl_path.to_str().expect("a UTF-8 path"))
        .expect("connect to the simulator's control socket");
    let mut from_answer = Vec::with_capacity(samples);
    let mut from_request = Vec::with_capacity(samples);
    // The first texts pay for lazily prepared statements and cold caches: not timed.
    const WARM_UP: usize = 5;
    for i in 0..samples + WARM_UP {
        let from = format!("+1555980{i:06}");
        let request =
            json!({"op": "deliver", "from": from, "text": format!("Inbound benchmark text {i}")});
        let asked = Instant::now();
        let answer = ctl
            .ok(&request)
            .unwrap_or_else(|e| panic!("inbound run: deliver {i}: {e}"));
        let answered = Instant::now();
        let want = if routed { "cmt" } else { "cmti" };
        assert_eq!(answer["parts"][0]["routed"], want, "{answer}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, body)) = api.get(&agent, "/v1/inbound?limit=1")
                && body["inbound"][0]["from"] == from.as_str()
            {
                break;
            }
            if Instant::now() > deadline {
                daemon.assert_alive();
                panic!("inbound text {i} not listed within 30 s");
            }
            thread::sleep(Duration::from_micros(200));
        }
        let seen = Instant::now();
        if i >= WARM_UP {
            from_answer.push(seen - answered);
            from_request.push(seen - asked);
        }
        // The next text must find the modem idle: a stored one is deleted after its commit,
        // so after its row became visible.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !routed
            && !ctl.ok(&json!({"op": "stored"})).expect("stored")["messages"]
                .as_array()
                .is_some_and(Vec::is_empty)
        {
            assert!(Instant::now() < deadline, "text {i} never left the SIM");
            thread::sleep(Duration::from_micros(500));
        }
    }
    daemon.assert_alive();
    from_answer.sort_unstable();
    from_request.sort_unstable();
    let result = InboundResult {
        route,
        samples,
        p50: ms(percentile(&from_answer, 50.0)),
        p99: ms(percentile(&from_answer, 99.0)),
        req_p50: ms(percentile(&from_request, 50.0)),
        req_p99: ms(percentile(&from_request, 99.0)),
    };
    println!(
        "inbound   {:<5} → stored, listed by GET /v1/inbound: p50 {:>6.2} ms  p99 {:>6.2} ms  ({} texts; from the deliver request: p50 {:.2} ms, p99 {:.2} ms)  [no target]",
        result.route, result.p50, result.p99, result.samples, result.req_p50, result.req_p99
    );
    // The daemon first, while its modem is still there.
    drop(daemon);
    drop(proxy);
    drop(sim);
    result
}

// ---------------------------------------------------------------------------------------------

/// How long the scratch file system takes to make a small write durable (write + fdatasync),
/// p50 and p99 in ms: the floor under every durable enqueue, measured where the data dirs live.
fn fsync_probe(scratch: &Path) -> (f64, f64) {
    use std::io::Write;
    let dir = tempfile::Builder::new()
        .prefix("simgate-bench-fsync-")
        .tempdir_in(scratch)
        .expect("create a scratch directory");
    let mut file = File::create(dir.path().join("probe")).expect("create the probe file");
    let block = [0x5a_u8; 4096];
    let mut times: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            file.write_all(&block).expect("write the probe file");
            file.sync_data().expect("fdatasync the probe file");
            t.elapsed()
        })
        .collect();
    times.sort_unstable();
    (ms(percentile(&times, 50.0)), ms(percentile(&times, 99.0)))
}

/// `/proc/loadavg`'s 1-minute figure: the machine is shared, and a load above the core count
/// while the benchmark runs means the figures carry other work's noise.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

fn main() {
    // `cargo test --all-targets` also runs this binary (without `--bench`): a multi-minute
    // load run has no place in a test pass.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("daemon benchmark: not run outside `cargo bench --bench daemon`");
        return;
    }
    let sizes = Sizes::from_env();
    let scratch = std::env::var_os("SIMGATE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&scratch).expect("create the scratch directory");
    let started = Instant::now();
    let today = OffsetDateTime::now_utc().date();
    println!("simgate daemon benchmark, {today}, {}", machine());
    println!("binary {}; scratch under {}", bin(), scratch.display());
    println!("load average before the run: {}", loadavg());
    let (fsync_p50, fsync_p99) = fsync_probe(&scratch);
    println!(
        "disk      4 KiB write + fdatasync in the scratch dir: p50 {fsync_p50:.2} ms, p99 {fsync_p99:.2} ms (the floor of a durable commit)"
    );
    println!();

    let enqueue: Vec<EnqueueResult> = [1, 16, 64]
        .into_iter()
        .zip(1..)
        .filter(|_| runs("enqueue"))
        .map(|(threads, scenario)| bench_enqueue(&scratch, &sizes, threads, scenario))
        .collect();
    let latency = runs("latency").then(|| bench_post_to_sim(&scratch, &sizes));
    let drains: Vec<DrainResult> = [
        ("drain", 1, 0.0),
        ("drain", 4, 0.0),
        ("busy", 1, FAST_SEND_DELAY),
        ("busy", 1, SLOW_SEND_DELAY),
        ("drain", 4, SLOW_SEND_DELAY),
    ]
    .into_iter()
    .zip(30..)
    .filter(|((name, _, _), _)| runs(name))
    .map(|((_, modems, delay), scenario)| bench_drain(&scratch, &sizes, modems, delay, scenario))
    .collect();
    let verify = runs("verify").then(|| bench_verify(&scratch, &sizes));
    let idle: Vec<IdleResult> = [
        Modems::External {
            count: 1,
            send_delay: 0.0,
        },
        Modems::Builtin,
    ]
    .into_iter()
    .filter(|_| runs("idle"))
    .map(|modems| bench_idle(&scratch, &sizes, modems))
    .collect();
    let inbound: Vec<InboundResult> = [true, false]
        .into_iter()
        .filter(|_| runs("inbound"))
        .map(|routed| bench_inbound(&scratch, routed))
        .collect();
    if !inbound.is_empty() {
        println!(
            "          (the simulator's `deliver` answer → the row in the API, polled every 0.2 ms; +CMT passes the tests' routing proxy, +CMTI adds the AT+CMGR round trip)"
        );
    }

    let speedup = |delay: f64| {
        let rate = |m| {
            drains
                .iter()
                .find(|d| d.modems == m && d.send_delay == delay)
                .map_or(0.0, |d| d.rate)
        };
        rate(4) / rate(1)
    };
    let slow_speedup = speedup(SLOW_SEND_DELAY);
    // Both drains at 0.5 s ran (not left out by SIMGATE_BENCH_ONLY).
    let have_speedup = slow_speedup.is_finite() && slow_speedup > 0.0;
    if have_speedup {
        println!(
            "drain     4 modems vs 1 at delay {SLOW_SEND_DELAY} s: {slow_speedup:.2}x [target >= {TARGET_FOUR_MODEM_SPEEDUP}x: {}]; at delay 0: {:.2}x",
            met(slow_speedup >= TARGET_FOUR_MODEM_SPEEDUP),
            speedup(0.0)
        );
    }
    let (peak_rss, peak_where) = enqueue
        .iter()
        .map(|e| (e.peak_rss, format!("enqueue at concurrency {}", e.threads)))
        .chain(drains.iter().map(|d| {
            (
                d.peak_rss,
                format!("drain, {} modem(s), delay {} s", d.modems, d.send_delay),
            )
        }))
        .chain(verify.iter().map(|v| (v.peak_rss, "verify".to_owned())))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or((0.0, "no loaded scenario".to_owned()));
    println!(
        "memory    peak RSS (VmHWM) {peak_rss:.1} MiB in {peak_where} [target < {TARGET_LOADED_RSS_MIB} MiB: {}]",
        met(peak_rss < TARGET_LOADED_RSS_MIB)
    );
    // The disk is shared too: probe it again, so a change in the floor during the run shows.
    let (fsync_end_p50, fsync_end_p99) = fsync_probe(&scratch);
    println!("disk      again at the end: p50 {fsync_end_p50:.2} ms, p99 {fsync_end_p99:.2} ms");
    println!(
        "total run time {:.0?}; load average at the end {} (it includes this benchmark's own load)",
        started.elapsed(),
        loadavg()
    );

    // The table for README.md's `## Performance`.
    println!();
    println!("| Measure | Result | Target | Met |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| Disk: 4 KiB write + `fdatasync` (the floor of a durable commit), before / after the run | p50 {fsync_p50:.2} / {fsync_end_p50:.2} ms, p99 {fsync_p99:.2} / {fsync_end_p99:.2} ms | — | — |"
    );
    for e in &enqueue {
        let (target, ok) = if e.threads == 1 {
            (
                format!("p99 < {TARGET_ENQUEUE_P99_MS} ms (one client: rate = 1/latency)"),
                e.p99 < TARGET_ENQUEUE_P99_MS,
            )
        } else {
            (
                format!("≥ {TARGET_ENQUEUE_PER_S:.0}/s at p99 < {TARGET_ENQUEUE_P99_MS} ms"),
                e.rate >= TARGET_ENQUEUE_PER_S && e.p99 < TARGET_ENQUEUE_P99_MS,
            )
        };
        println!(
            "| Durable `POST /v1/otp`, {} client(s) | {:.0}/s, p50 {:.2} ms, p99 {:.2} ms{} | {target} | {} |",
            e.threads,
            e.rate,
            e.p50,
            e.p99,
            if e.failed > 0 {
                format!(", {} failed", e.failed)
            } else {
                String::new()
            },
            met(ok)
        );
        println!(
            "| … where the time goes ({} clients): writes per group commit; wait for the writer; synced COMMIT (fsync) | {:.1} per group, {:.2} fsyncs per OTP; wait {:.2} ms; COMMIT {:.2} ms | — | — |",
            e.threads,
            e.store.group_size(),
            e.store.synced_batches / sizes.requests as f64,
            e.store.wait_ms(),
            e.store.sync_ms()
        );
    }
    if let Some(latency) = &latency {
        println!(
            "| `POST /v1/otp` → simulator log, idle modem (includes the `> ` prompt round trip: an upper bound of POST→`AT+CMGS`) | p50 {:.2} ms, p99 {:.2} ms | p99 < {TARGET_POST_TO_CMGS_P99_MS} ms | {} |",
            latency.p50,
            latency.p99,
            met(latency.p99 < TARGET_POST_TO_CMGS_P99_MS)
        );
    }
    for d in &drains {
        let short = if d.drained < d.texts {
            format!(" (only {} of {} drained)", d.drained, d.texts)
        } else {
            String::new()
        };
        match d.ceiling() {
            Some(ceiling) => {
                println!(
                    "| Drain, {} modem(s), send delay {} s | {:.2} texts/s = {:.1} % of {ceiling:.0}/s{short} | ≥ {:.0} % | {} |",
                    d.modems,
                    d.send_delay,
                    d.rate,
                    100.0 * d.rate / ceiling,
                    TARGET_UTILISATION * 100.0,
                    met(d.rate / ceiling >= TARGET_UTILISATION)
                );
                if let Some(target) = busy_target(d.send_delay).filter(|_| d.modems == 1) {
                    println!(
                        "| One modem busy under a backlog, send delay {} s (delay / median gap between texts) | {:.2} %, idle {:.2} ms between texts | ≥ {:.1} % | {} |",
                        d.send_delay,
                        100.0 * d.busy_share(),
                        d.gap_p50 - d.send_delay * 1000.0,
                        target * 100.0,
                        met(d.busy_share() >= target)
                    );
                }
            }
            None => println!(
                "| Drain, {} modem(s), no send delay | {:.1} texts/s{short} | ≥ {TARGET_DRAIN_NO_DELAY_PER_S:.0} texts/s | {} |",
                d.modems,
                d.rate,
                met(d.rate >= TARGET_DRAIN_NO_DELAY_PER_S)
            ),
        }
    }
    if have_speedup {
        println!(
            "| 4 modems vs 1, send delay {SLOW_SEND_DELAY} s | {slow_speedup:.2}× (no delay: {:.2}×) | ≥ {TARGET_FOUR_MODEM_SPEEDUP}× | {} |",
            speedup(0.0),
            met(slow_speedup >= TARGET_FOUR_MODEM_SPEEDUP)
        );
    }
    if let Some(verify) = &verify {
        println!(
            "| `POST /v1/otp/{{id}}/verify`, {LOAD_THREADS} clients | {:.0}/s, p50 {:.2} ms, p99 {:.2} ms | — | — |",
            verify.rate, verify.p50, verify.p99
        );
    }
    println!(
        "| Peak RSS under load (VmHWM; {peak_where}) | {peak_rss:.1} MiB | < {TARGET_LOADED_RSS_MIB:.0} MiB | {} |",
        met(peak_rss < TARGET_LOADED_RSS_MIB)
    );
    for idle in &idle {
        println!(
            "| Idle RSS (fresh `{}`) | {:.2} MiB | < {TARGET_IDLE_RSS_MIB:.0} MiB | {} |",
            idle.shape,
            idle.rss,
            met(idle.rss < TARGET_IDLE_RSS_MIB)
        );
        println!(
            "| Idle CPU over {:.0} s (`{}`) | {:.2} % | < {:.0} % | {} |",
            idle.secs,
            idle.shape,
            idle.cpu_share * 100.0,
            TARGET_IDLE_CPU * 100.0,
            met(idle.cpu_share < TARGET_IDLE_CPU)
        );
    }
    for i in &inbound {
        println!(
            "| Inbound `{}` → stored and listed by `GET /v1/inbound` (single-part texts, one at a time) | p50 {:.2} ms, p99 {:.2} ms | — | — |",
            i.route, i.p50, i.p99
        );
    }
}
