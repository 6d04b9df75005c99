//! The PostgreSQL column of the benchmark: `simgate serve` nodes with `[store] backend =
//! "postgres"` on one throwaway PostgreSQL server with durable commits (`fsync`,
//! `synchronous_commit` and `full_page_writes` on), driven over loopback HTTP and measured from
//! the outside only (the HTTP API, the simulators' JSON-lines logs, `/proc` and, for the
//! failover, the shared database itself).
//!
//! It prints, each beside its target (docs: ../shared/BENCHMARKS.md, last lines):
//!
//! - **enqueue**: durable `POST /v1/otp` per second and p50/p99 latency at 1, 16 and 64
//!   concurrent clients, on one node and on two (each request goes to node `i % nodes`, so
//!   every client spreads its requests evenly over the nodes). The per-number and per-prefix
//!   limits are off and every request has its own number: this measures the store, not the
//!   limiter. As benches/daemon.rs does, each node runs `serve --simulate`, whose built-in
//!   modem (no send delay) sends while the queue fills, the production shape; one more run
//!   (two nodes, 16 clients) has no modem that could send, to show what the sends cost.
//!   Each run starts on an empty queue after an untimed warm-up (every pooled connection has
//!   prepared its statements). Under each run: where the CPU went (the daemons, PostgreSQL,
//!   the client threads, the whole machine with other tenants), the WAL written per OTP, and
//!   what PostgreSQL's backends were doing, sampled from `pg_stat_activity` ([`WaitSampler`]);
//! - **pickup**: `POST /v1/otp` → the simulator's log line on an idle modem of one node, one
//!   OTP at a time; and the cross-node pickup: posted to a node whose modem is absent, sent by
//!   the other node, woken by `NOTIFY`;
//! - **drain**: texts per second through two nodes × two modems against one node × one modem,
//!   the simulators at a fixed send delay (see [`DRAIN_SEND_DELAY`]);
//! - **failover**: two nodes under a steady trickle of texts; one is SIGKILLed while it has a
//!   send claimed, and the time from the kill until every message it held (read from the
//!   database right after the kill) is final is set against the lease (5 s) plus one send.
//!
//! A markdown table for README.md closes the output.
//!
//! Run with `cargo bench --bench cluster` (needs the PostgreSQL server binaries: Debian's
//! `postgresql` package, or `SIMGATE_PG_BIN`). Sizes come from environment variables (see
//! [`Sizes::from_env`]); `SIMGATE_BENCH_ONLY=enqueue,pickup,drain,failover` picks scenarios.
//! Every scenario gets fresh nodes on a fresh database of the one server; every child process
//! sits behind a [`ChildGuard`], so a panic leaves no daemon or simulator running.
//!
//! The client threads, both daemons, their simulators and PostgreSQL share the machine's cores:
//! the figures are what the whole machine does, a lower bound for a real cluster.

#[path = "../tests/support/pg.rs"]
mod pg;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The binary under test: the one `cargo bench` built (release profile), or
/// `SIMGATE_BENCH_BIN`.
fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("SIMGATE_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_simgate").into())
    })
}

/// Whether scenario `name` runs: all of them, or those listed in `SIMGATE_BENCH_ONLY`
/// (comma-separated: enqueue, pickup, drain, failover).
fn runs(name: &str) -> bool {
    match std::env::var("SIMGATE_BENCH_ONLY") {
        Ok(list) => list.split(',').any(|s| s.trim() == name),
        Err(_) => true,
    }
}

/// BENCHMARKS.md's PostgreSQL targets.
const TARGET_ENQUEUE_PER_S: f64 = 2000.0;
const TARGET_ENQUEUE_P99_MS: f64 = 20.0;
/// The concurrency and node count the enqueue target is stated for.
const TARGET_ENQUEUE_CLIENTS: usize = 16;
const TARGET_ENQUEUE_NODES: usize = 2;
const TARGET_PICKUP_P99_MS: f64 = 20.0;
const TARGET_SPEEDUP: f64 = 3.8;

/// The simulators' send delay in the drain runs. The target compares modem parallelism (four
/// modems over two nodes against one), so the modems must be the bottleneck: at 0.1 s per text
/// four modems take 40 texts/s, a small fraction of what the nodes and PostgreSQL manage on two
/// cores (hundreds of texts/s), yet short enough that a ten-second run moves 100 and 400
/// texts. A shorter delay would let the shared CPU, not the modems, decide the ratio.
const DRAIN_SEND_DELAY: f64 = 0.1;

/// The failover runs: the shortest lease the config allows, and the same send delay, so at any
/// moment a busy node has a send on the wire.
const LEASE_SECS: u64 = 5;
const FAILOVER_SEND_DELAY: f64 = 0.1;

/// Client threads pushing the drain backlogs.
const LOAD_THREADS: usize = 16;

/// The API token every node accepts (`[api] tokens`).
const TOKEN: &str = "cluster-bench-token-0123456789abcdef";

/// How big each scenario is.
struct Sizes {
    /// OTPs per enqueue run (`SIMGATE_BENCH_REQUESTS`, default 2000).
    requests: usize,
    /// Sequential OTPs of each pickup run (`SIMGATE_BENCH_LATENCY_SAMPLES`, default 200).
    pickup_samples: usize,
    /// Seconds each drain run would take at full modem utilisation (`SIMGATE_BENCH_DRAIN_SECS`,
    /// default 10); the text count follows from the modems' ceiling.
    drain_secs: f64,
    /// Node kills (`SIMGATE_BENCH_FAILOVER_ROUNDS`, default 3).
    failover_rounds: usize,
    /// Texts per second of the failover trickle, over both nodes (`SIMGATE_BENCH_TRICKLE`,
    /// default 8: below one modem's 10/s, so the survivor alone keeps up).
    trickle_per_s: f64,
    /// Each node's `[store] pool_size` (`SIMGATE_BENCH_POOL_SIZE`, default 16, the daemon's).
    pool_size: usize,
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
            pickup_samples: var("SIMGATE_BENCH_LATENCY_SAMPLES", 200),
            drain_secs: var("SIMGATE_BENCH_DRAIN_SECS", 10.0),
            failover_rounds: var("SIMGATE_BENCH_FAILOVER_ROUNDS", 3),
            trickle_per_s: var("SIMGATE_BENCH_TRICKLE", 8.0),
            pool_size: var("SIMGATE_BENCH_POOL_SIZE", 16),
        };
        // The numbers are built from a 6-digit sequence (see `number`).
        for (name, n) in [
            ("SIMGATE_BENCH_REQUESTS", sizes.requests),
            ("SIMGATE_BENCH_LATENCY_SAMPLES", sizes.pickup_samples),
        ] {
            assert!(
                (1..1_000_000).contains(&n),
                "{name} must be 1..=999999, got {n}"
            );
        }
        assert!(
            sizes.drain_secs > 0.0 && sizes.trickle_per_s > 0.0,
            "SIMGATE_BENCH_DRAIN_SECS and SIMGATE_BENCH_TRICKLE must be positive"
        );
        assert!(
            (2..=256).contains(&sizes.pool_size),
            "SIMGATE_BENCH_POOL_SIZE must be 2..=256 (the config's range)"
        );
        sizes
    }
}

/// A distinct destination per (scenario, sequence): a new OTP for a number supersedes that
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

fn unix_ms_now() -> i64 {
    (unix_ns_now() / 1_000_000) as i64
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
// Child processes (as benches/daemon.rs)

/// A child process that is stopped when the guard goes away, on success and on panic alike.
struct ChildGuard {
    child: Child,
    name: String,
    /// Its stderr, for the reader of a failure message.
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

    /// Panics (naming the log) if the process has exited.
    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); its stderr: {}",
                self.name,
                self.log.display()
            );
        }
    }

    /// SIGKILL and reap: a node dying without a word.
    fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, so the daemon can finish its sends in flight; SIGKILL after 10 s.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
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
        self.sigkill();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// /proc

/// The fields of `/proc/PID/stat` from field 3 on (field n at index n - 3); `None` if the
/// process is gone.
fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(per_second > 0, "sysconf(_SC_CLK_TCK) failed");
    per_second as f64
}

/// Sum of the fields at `indexes` (see [`proc_stat`]), in seconds.
fn ticks(fields: &[String], indexes: &[usize]) -> f64 {
    indexes
        .iter()
        .map(|&i| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0) as f64
        })
        .sum::<f64>()
        / clock_ticks()
}

/// utime + stime of a process, in seconds (0 if it is gone).
fn cpu_seconds(pid: u32) -> f64 {
    proc_stat(pid).map_or(0.0, |f| ticks(&f, &[11, 12]))
}

/// The CPU time of a process tree one level deep, in seconds: the process itself, its children
/// it reaped (cutime + cstime) and its live children. For the postmaster, that is the whole
/// server: every backend, the WAL writer, the checkpointer.
fn tree_cpu_seconds(root: u32) -> f64 {
    let mut total = proc_stat(root).map_or(0.0, |f| ticks(&f, &[11, 12, 13, 14]));
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(fields) = proc_stat(pid)
            && fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(root)
        {
            total += ticks(&fields, &[11, 12]);
        }
    }
    total
}

/// Busy and total CPU seconds of the whole machine (`/proc/stat`'s `cpu` line: user, nice,
/// system, irq, softirq and steal are busy; idle and iowait are not), every process counted,
/// those of other tenants of a shared machine included.
fn machine_cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0.0, 0.0);
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    let total = busy + at(3) + at(4);
    (busy / clock_ticks(), total / clock_ticks())
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// One blocking client per thread, keeping its connections alive across requests.
fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    )
}

/// Where one node's API is.
#[derive(Clone)]
struct Api {
    /// `http://127.0.0.1:PORT`.
    base: String,
}

impl Api {
    fn post(&self, agent: &ureq::Agent, path: &str, body: &Value) -> Result<(u16, Value), String> {
        let mut resp = agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {TOKEN}"))
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
            .header("Authorization", format!("Bearer {TOKEN}"))
            .call()
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_json::<Value>().unwrap_or(Value::Null);
        Ok((status, body))
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
    failed: usize,
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
// The simulators' logs

/// One line of a simulator's log (docs/SPEC.md "The simulator's log").
struct SimLine {
    /// `at`, nanoseconds since the Unix epoch: when the last part reached the simulator.
    at_ns: i128,
    to: String,
    /// The decoded text (an OTP's holds its code: never printed).
    text: String,
}

/// Follows a simulator log as it grows; a line counts once its newline is there.
struct LogTail {
    path: PathBuf,
    file: Option<File>,
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

/// Polls `tails` until `want` lines arrived in all or `timeout` passed; lines with the index of
/// their log.
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
// The database, read directly

/// A connection to a scenario's database, for what the API does not say (who holds a claim,
/// until when) and for the WAL position.
struct Db {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Db {
    fn connect(url: &str) -> Db {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build a tokio runtime");
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
            tokio::spawn(conn);
            client
        });
        Db { rt, client }
    }

    fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<tokio_postgres::Row> {
        self.rt
            .block_on(self.client.query(sql, params))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The server's WAL insert position, bytes.
    fn wal_lsn(&self) -> f64 {
        self.query(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8",
            &[],
        )[0]
        .get(0)
    }

    fn setting(&self, name: &str) -> String {
        self.query("SELECT current_setting($1)", &[&name])[0].get(0)
    }
}

/// What a database's client backends are doing, sampled from `pg_stat_activity` every 10 ms
/// on a connection of its own until [`WaitSampler::finish`]: where an enqueue's time goes on
/// the server's side (a lock, the WAL flush, the CPU, or waiting for the daemon's next
/// statement inside a transaction). Idle pool connections are not counted. One query per
/// 10 ms costs the server a few percent of a core.
struct WaitSampler {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<(std::collections::HashMap<String, usize>, usize)>,
}

impl WaitSampler {
    fn start(url: &str) -> WaitSampler {
        let url = url.to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            thread::spawn(move || {
                let db = Db::connect(&url);
                let mut tally: std::collections::HashMap<String, usize> = Default::default();
                let mut samples = 0;
                while !stop.load(Ordering::Relaxed) {
                    let rows = db.query(
                        "SELECT state, wait_event_type, wait_event FROM pg_stat_activity
                         WHERE datname = current_database() AND backend_type = 'client backend'
                           AND pid <> pg_backend_pid() AND state <> 'idle'",
                        &[],
                    );
                    for row in rows {
                        let state: Option<String> = row.get(0);
                        let kind: Option<String> = row.get(1);
                        let event: Option<String> = row.get(2);
                        let key = match (state.as_deref(), kind, event) {
                            (Some("active"), None, _) => "CPU".to_owned(),
                            (Some("active"), Some(k), e) => {
                                format!("{k}:{}", e.unwrap_or_default())
                            }
                            (Some("idle in transaction"), ..) => {
                                "in a transaction, waiting for the daemon".to_owned()
                            }
                            (s, ..) => s.unwrap_or("?").to_owned(),
                        };
                        *tally.entry(key).or_default() += 1;
                    }
                    samples += 1;
                    thread::sleep(Duration::from_millis(10));
                }
                (tally, samples)
            })
        };
        WaitSampler { stop, handle }
    }

    /// The mean number of busy backends and the commonest states with their shares, e.g.
    /// "4.1 busy backends: Lock:object 52 %, IO:WALSync 20 %, …".
    fn finish(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let (tally, samples) = self.handle.join().expect("the wait sampler panicked");
        let seen: usize = tally.values().sum();
        if seen == 0 {
            return format!("no busy backend in {samples} samples");
        }
        let mut states: Vec<(String, usize)> = tally.into_iter().collect();
        states.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let shares: Vec<String> = states
            .iter()
            .take(5)
            .map(|(k, n)| format!("{k} {:.0} %", 100.0 * *n as f64 / seen as f64))
            .collect();
        format!(
            "{:.1} busy backends on average: {}",
            seen as f64 / samples.max(1) as f64,
            shares.join(", ")
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes

/// `[limits]` that let the clients push the nodes as hard as they go: the per-number, per-prefix
/// and per-token limits off, a queue deep enough for every backlog here. This benchmarks the
/// store, not the limiter.
const LOAD_LIMITS: &str = r#"[limits]
otp_per_number = "off"
otp_per_number_per_day = 0
verify_per_number = "off"
otp_per_prefix = "off"
requests_per_token = "off"
queue_max = 1000000
"#;

/// A device no modem answers on: a node with it takes no claims.
const NO_MODEM: &str = "/dev/simgate-bench-no-such-modem";

/// Which modems a node drives.
#[derive(Clone, Copy, PartialEq)]
enum Modems {
    /// `serve --simulate`: the built-in simulator, no send delay.
    Builtin,
    /// `count` external `simgate sim` processes with this send delay.
    External { count: usize, send_delay: f64 },
    /// One `[[modem]]` on [`NO_MODEM`]: the node never has a ready modem.
    Absent,
}

impl Modems {
    /// Modems that must be `ready` before the node is measured.
    fn ready_wanted(self) -> usize {
        match self {
            Modems::Builtin => 1,
            Modems::External { count, .. } => count,
            Modems::Absent => 0,
        }
    }
}

/// One `simgate serve` node with its simulators. Field order is drop order: the daemon stops
/// first, its modems still there to finish sends in flight.
struct Node {
    daemon: Option<ChildGuard>,
    sims: Vec<ChildGuard>,
    /// `node_id`.
    id: String,
    modems: Modems,
    /// The simulators' logs, one per modem.
    sim_logs: Vec<PathBuf>,
    data_dir: PathBuf,
    config_path: PathBuf,
    /// Where this node's logs go.
    dir: PathBuf,
    api: Api,
    /// Daemon starts so far (each gets its own stderr file).
    starts: usize,
}

impl Node {
    /// Writes the config and starts the simulators; the daemon is started by [`Node::start`].
    fn new(dir: &Path, id: &str, url: &str, modems: Modems, pool_size: usize) -> Node {
        let url = serde_json::to_string(url).expect("a string serializes");
        let mut config = format!(
            "[api]\ntokens = [\"{TOKEN}\"]\n\n[store]\nbackend = \"postgres\"\nurl = {url}\n\
             node_id = \"{id}\"\nlease_seconds = {LEASE_SECS}\npool_size = {pool_size}\n\n\
             {LOAD_LIMITS}"
        );
        let mut sims = Vec::new();
        let mut sim_logs = Vec::new();
        let modem_table = |k: usize, device: &Path| {
            // JSON string escaping is valid TOML basic-string escaping.
            let device =
                serde_json::to_string(&device.display().to_string()).expect("a string serializes");
            format!(
                "\n[[modem]]\nid = \"modem{k}\"\ndevice = {device}\nsends_per_minute = 0\ndelivery_reports = false\n"
            )
        };
        match modems {
            Modems::Builtin => {}
            Modems::Absent => config.push_str(&modem_table(0, Path::new(NO_MODEM))),
            Modems::External { count, send_delay } => {
                for k in 0..count {
                    let link = dir.join(format!("{id}-sim{k}"));
                    let log = dir.join(format!("{id}-sim{k}.jsonl"));
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
                        &format!("simulator {k} of {id}"),
                        &dir.join(format!("{id}-sim{k}.stderr")),
                    );
                    assert!(link.exists(), "simulator {k} printed but made no link");
                    sims.push(guard);
                    sim_logs.push(log);
                    config.push_str(&modem_table(k, &link));
                }
            }
        }
        let config_path = dir.join(format!("{id}.toml"));
        std::fs::write(&config_path, config).expect("write the config");
        Node {
            daemon: None,
            sims,
            id: id.to_owned(),
            modems,
            sim_logs,
            data_dir: dir.join(format!("{id}-data")),
            config_path,
            dir: dir.to_path_buf(),
            api: Api {
                base: String::new(),
            },
            starts: 0,
        }
    }

    /// Starts the daemon and returns once its API listens (the banner).
    fn start(&mut self) {
        let log = self.dir.join(format!("{}.{}.stderr", self.id, self.starts));
        self.starts += 1;
        let mut cmd = Command::new(bin());
        cmd.arg("--json")
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0");
        if self.modems == Modems::Builtin {
            cmd.arg("--simulate");
        }
        let (daemon, banner) =
            ChildGuard::spawn(cmd, &format!("simgate serve ({})", self.id), &log);
        let banner: Value = serde_json::from_str(banner.trim())
            .unwrap_or_else(|e| panic!("the daemon's banner {banner:?} is not JSON: {e}"));
        self.api.base = format!(
            "http://{}",
            banner["listen"].as_str().expect("banner has listen")
        );
        if self.modems == Modems::Builtin && self.sim_logs.is_empty() {
            let log = banner["simulator"]["log"]
                .as_str()
                .expect("banner names the simulator log under --simulate");
            self.sim_logs.push(PathBuf::from(log));
        }
        self.daemon = Some(daemon);
    }

    /// Waits until this node's modems are `ready` in its `GET /v1/modems`.
    fn wait_ready(&mut self) {
        let want = self.modems.ready_wanted();
        if want == 0 {
            return;
        }
        let agent = agent();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.assert_alive();
            if let Ok((200, body)) = self.api.get(&agent, "/v1/modems") {
                let ready = body["modems"].as_array().map_or(0, |m| {
                    m.iter()
                        .filter(|m| m["state"] == "ready")
                        .filter(|m| m["node"].is_null() || m["node"] == self.id.as_str())
                        .count()
                });
                if ready >= want {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{}'s modems not ready after 60 s; its stderr: {}",
                self.id,
                self.daemon
                    .as_ref()
                    .map_or(PathBuf::new(), |d| d.log.clone())
                    .display()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn assert_alive(&mut self) {
        if let Some(d) = self.daemon.as_mut() {
            d.assert_alive();
        }
        for sim in &mut self.sims {
            sim.assert_alive();
        }
    }

    fn pid(&self) -> u32 {
        self.daemon.as_ref().map_or(0, ChildGuard::pid)
    }

    /// SIGKILL; returns the moment the signal went.
    fn kill(&mut self) -> Instant {
        let mut daemon = self.daemon.take().expect("the node is running");
        let at = Instant::now();
        daemon.sigkill();
        at
    }
}

/// Nodes on one fresh database of the benchmark's PostgreSQL server.
struct Cluster {
    nodes: Vec<Node>,
    url: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts one node per entry of `modems` (`node-a`, `node-b`, …). Every node gets the first
    /// node's `otp-keys` (mode 0600) before it starts, as a cluster must (each verifies codes
    /// the others drew); all accept [`TOKEN`]. Returns once every node's modems are ready.
    fn start(
        scratch: &Path,
        server: &pg::PgCluster,
        modems: &[Modems],
        pool_size: usize,
    ) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("simgate-bench-cluster-")
            .tempdir_in(scratch)
            .expect("create a scratch directory");
        let url = server.create_database();
        let mut nodes: Vec<Node> = Vec::new();
        for (i, &m) in modems.iter().enumerate() {
            let id = format!("node-{}", (b'a' + i as u8) as char);
            let mut node = Node::new(dir.path(), &id, &url, m, pool_size);
            if let Some(first) = nodes.first() {
                std::fs::create_dir_all(&node.data_dir).expect("create a data dir");
                copy_private(
                    &first.data_dir.join("otp-keys"),
                    &node.data_dir.join("otp-keys"),
                );
            }
            node.start();
            nodes.push(node);
        }
        for node in &mut nodes {
            node.wait_ready();
        }
        Cluster {
            nodes,
            url,
            _dir: dir,
        }
    }

    fn apis(&self) -> Vec<Api> {
        self.nodes.iter().map(|n| n.api.clone()).collect()
    }

    /// utime + stime of every node's daemon, seconds.
    fn daemon_cpu(&self) -> f64 {
        self.nodes.iter().map(|n| cpu_seconds(n.pid())).sum()
    }

    fn assert_alive(&mut self) {
        for n in &mut self.nodes {
            n.assert_alive();
        }
    }

    /// One tail per simulator log, in node order.
    fn tails(&self) -> Vec<LogTail> {
        self.nodes
            .iter()
            .flat_map(|n| n.sim_logs.iter().cloned().map(LogTail::new))
            .collect()
    }
}

fn copy_private(from: &Path, to: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = std::fs::read(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    std::io::Write::write_all(&mut f, &bytes).expect("write the key file");
}

// ---------------------------------------------------------------------------------------------
// Enqueue

/// Durable `POST /v1/otp` from `clients` threads over `nodes` nodes.
struct EnqueueResult {
    nodes: usize,
    clients: usize,
    /// Whether the nodes' built-in modems sent while the queue filled.
    sending: bool,
    rate: f64,
    p50: f64,
    p99: f64,
    failed: usize,
    /// Cores busy over the run's wall time: the daemons, PostgreSQL, this process's clients.
    daemon_cores: f64,
    pg_cores: f64,
    client_cores: f64,
    /// WAL written per accepted OTP (the sends' bookkeeping included), bytes.
    wal_per_otp: f64,
    /// OTPs the modems sent during the run.
    sent_during: usize,
    /// Cores busy on the whole machine, other tenants included.
    machine_cores: f64,
    /// What the backends did ([`WaitSampler::finish`]).
    waits: String,
}

impl EnqueueResult {
    fn is_target_row(&self) -> bool {
        self.nodes == TARGET_ENQUEUE_NODES && self.clients == TARGET_ENQUEUE_CLIENTS
    }

    fn meets_target(&self) -> bool {
        self.rate >= TARGET_ENQUEUE_PER_S && self.p99 < TARGET_ENQUEUE_P99_MS && self.failed == 0
    }

    fn shape(&self) -> String {
        format!(
            "{} node{}, {:>2} client{}",
            self.nodes,
            if self.nodes == 1 { "" } else { "s" },
            self.clients,
            if self.clients == 1 { "" } else { "s" }
        )
    }
}

fn bench_enqueue(
    scratch: &Path,
    server: &pg::PgCluster,
    sizes: &Sizes,
    nodes: usize,
    clients: usize,
    sending: bool,
    scenario: u32,
) -> EnqueueResult {
    let modems = if sending {
        Modems::Builtin
    } else {
        Modems::Absent
    };
    let mut cluster = Cluster::start(scratch, server, &vec![modems; nodes], sizes.pool_size);
    let apis = cluster.apis();
    let db = Db::connect(&cluster.url);
    // Untimed: each pooled connection prepares its statements on first use, which a
    // long-running node did long ago.
    let warm_up = (clients * 4).max(50);
    let warm = run_load(clients, warm_up, &|agent, i| {
        apis[i % nodes]
            .create_otp(agent, &number(scenario + 50, i))
            .map(drop)
    });
    warm.report_failures("enqueue warm-up");
    // The run starts on an empty queue: what the warm-up queued is sent first.
    let mut tails = cluster.tails();
    if sending {
        let want = warm_up - warm.failed;
        let got = collect_lines(&mut tails, want, Duration::from_secs(60)).len();
        assert_eq!(
            got, want,
            "the warm-up's OTPs were not all sent within 60 s"
        );
    }
    let wal0 = db.wal_lsn();
    let daemon0 = cluster.daemon_cpu();
    let pg0 = tree_cpu_seconds(server.pid());
    let self0 = cpu_seconds(std::process::id());
    let (machine0, _) = machine_cpu_seconds();
    let sampler = WaitSampler::start(&cluster.url);
    let load = run_load(clients, sizes.requests, &|agent, i| {
        apis[i % nodes]
            .create_otp(agent, &number(scenario, i))
            .map(drop)
    });
    let wall = load.wall.as_secs_f64();
    let waits = sampler.finish();
    let machine_cores = (machine_cpu_seconds().0 - machine0) / wall;
    let daemon_cores = (cluster.daemon_cpu() - daemon0) / wall;
    let pg_cores = (tree_cpu_seconds(server.pid()) - pg0) / wall;
    let client_cores = (cpu_seconds(std::process::id()) - self0) / wall;
    let wal = db.wal_lsn() - wal0;
    let sent_during = tails.iter_mut().map(|t| t.poll().len()).sum();
    load.report_failures(&format!("enqueue, {nodes} node(s), {clients} client(s)"));
    cluster.assert_alive();
    let result = EnqueueResult {
        nodes,
        clients,
        sending,
        rate: load.rate(),
        p50: load.p(50.0),
        p99: load.p(99.0),
        failed: load.failed,
        daemon_cores,
        pg_cores,
        client_cores,
        wal_per_otp: wal / (sizes.requests - load.failed).max(1) as f64,
        sent_during,
        machine_cores,
        waits,
    };
    let target = if result.is_target_row() {
        format!(
            "[target >= {TARGET_ENQUEUE_PER_S:.0}/s at p99 < {TARGET_ENQUEUE_P99_MS} ms: {}]",
            met(result.meets_target())
        )
    } else {
        format!(
            "[the target is for {TARGET_ENQUEUE_CLIENTS} clients on {TARGET_ENQUEUE_NODES} nodes]"
        )
    };
    println!(
        "enqueue   {}{}: {:>6.0} OTP/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} requests, {} failed)  {target}",
        result.shape(),
        if sending { "" } else { ", no modem" },
        result.rate,
        result.p50,
        result.p99,
        sizes.requests,
        result.failed
    );
    println!(
        "          cores busy: daemons {:.2}, PostgreSQL {:.2}, client threads {:.2}, whole machine {:.2} of {} (other tenants included); WAL {:.0} bytes per OTP; {} OTPs sent by the modems meanwhile; load average {}",
        result.daemon_cores,
        result.pg_cores,
        result.client_cores,
        result.machine_cores,
        thread::available_parallelism().map_or(0, |n| n.get()),
        result.wal_per_otp,
        result.sent_during,
        loadavg()
    );
    println!(
        "          PostgreSQL backends (sampled every 10 ms): {}",
        result.waits
    );
    result
}

// ---------------------------------------------------------------------------------------------
// Pickup

/// `POST /v1/otp` → a simulator's log line, one OTP at a time on an idle modem.
struct PickupResult {
    samples: usize,
    p50: f64,
    p99: f64,
    /// The `202` alone.
    http_p50: f64,
    http_p99: f64,
}

/// `post_to`'s API takes each OTP; the simulator log `sim_log` must show it. One OTP at a
/// time, 20 ms apart so each finds the modem idle.
fn pickup_samples(
    cluster: &mut Cluster,
    post_to: usize,
    samples: usize,
    scenario: u32,
) -> PickupResult {
    let api = cluster.nodes[post_to].api.clone();
    let mut tails = cluster.tails();
    let agent = agent();
    let mut to_sim = Vec::with_capacity(samples);
    let mut http = Vec::with_capacity(samples);
    // The first OTPs pay for lazily prepared statements and cold caches: not timed.
    const WARM_UP: usize = 5;
    for i in 0..samples + WARM_UP {
        let to = number(scenario, i);
        let t0 = unix_ns_now();
        let sent = Instant::now();
        api.create_otp(&agent, &to)
            .unwrap_or_else(|e| panic!("pickup run: {e}"));
        let answered = sent.elapsed();
        let deadline = Instant::now() + Duration::from_secs(30);
        let line = 'found: loop {
            for t in &mut tails {
                if let Some(line) = t.poll().into_iter().find(|l| l.to == to) {
                    break 'found line;
                }
            }
            if Instant::now() > deadline {
                cluster.assert_alive();
                panic!("OTP {i} did not reach a simulator within 30 s");
            }
            thread::sleep(Duration::from_micros(500));
        };
        if i >= WARM_UP {
            http.push(answered);
            to_sim.push(Duration::from_nanos((line.at_ns - t0).max(0) as u64));
        }
        // Let the driver read `+CMGS:` and the dispatcher record the send: the next OTP must
        // find the modem idle.
        thread::sleep(Duration::from_millis(20));
    }
    cluster.assert_alive();
    to_sim.sort_unstable();
    http.sort_unstable();
    PickupResult {
        samples,
        p50: ms(percentile(&to_sim, 50.0)),
        p99: ms(percentile(&to_sim, 99.0)),
        http_p50: ms(percentile(&http, 50.0)),
        http_p99: ms(percentile(&http, 99.0)),
    }
}

/// One node with its built-in simulator.
fn bench_pickup(scratch: &Path, server: &pg::PgCluster, sizes: &Sizes) -> PickupResult {
    let mut cluster = Cluster::start(scratch, server, &[Modems::Builtin], sizes.pool_size);
    let result = pickup_samples(&mut cluster, 0, sizes.pickup_samples, 20);
    println!(
        "pickup    one node, idle modem: p50 {:>6.2} ms  p99 {:>6.2} ms  ({} OTPs; the 202 itself: p50 {:.2} ms, p99 {:.2} ms)  [target p99 < {TARGET_PICKUP_P99_MS} ms: {}]",
        result.p50,
        result.p99,
        result.samples,
        result.http_p50,
        result.http_p99,
        met(result.p99 < TARGET_PICKUP_P99_MS)
    );
    result
}

/// Posted to node-a, whose modem is absent; sent by node-b's built-in simulator, woken by the
/// `NOTIFY` of node-a's commit.
fn bench_cross_pickup(scratch: &Path, server: &pg::PgCluster, sizes: &Sizes) -> PickupResult {
    let mut cluster = Cluster::start(
        scratch,
        server,
        &[Modems::Absent, Modems::Builtin],
        sizes.pool_size,
    );
    let result = pickup_samples(&mut cluster, 0, sizes.pickup_samples, 21);
    println!(
        "pickup    cross-node (posted to a node without a modem, sent by the other): p50 {:>6.2} ms  p99 {:>6.2} ms  ({} OTPs; the 202: p50 {:.2} ms, p99 {:.2} ms)  [no target]",
        result.p50, result.p99, result.samples, result.http_p50, result.http_p99
    );
    result
}

// ---------------------------------------------------------------------------------------------
// Drain

/// A backlog drained by `nodes` nodes × `modems` simulators at [`DRAIN_SEND_DELAY`].
struct DrainResult {
    nodes: usize,
    /// Modems per node.
    modems: usize,
    texts: usize,
    drained: usize,
    /// Texts per second from the first POST to the last log line.
    rate: f64,
    per_modem: Vec<usize>,
    /// Median time between consecutive texts on one modem, ms.
    gap_p50: f64,
}

impl DrainResult {
    fn total_modems(&self) -> usize {
        self.nodes * self.modems
    }

    fn ceiling(&self) -> f64 {
        self.total_modems() as f64 / DRAIN_SEND_DELAY
    }
}

fn bench_drain(
    scratch: &Path,
    server: &pg::PgCluster,
    sizes: &Sizes,
    nodes: usize,
    modems: usize,
    scenario: u32,
) -> DrainResult {
    let total_modems = nodes * modems;
    let texts = ((total_modems as f64 / DRAIN_SEND_DELAY) * sizes.drain_secs).ceil() as usize;
    let spec = Modems::External {
        count: modems,
        send_delay: DRAIN_SEND_DELAY,
    };
    let mut cluster = Cluster::start(scratch, server, &vec![spec; nodes], sizes.pool_size);
    let mut tails = cluster.tails();
    let apis = cluster.apis();
    // The clock starts before the first POST: the backlog is built while the modems already
    // send, as in production.
    let start_ns = unix_ns_now();
    let load = run_load(LOAD_THREADS, texts, &|agent, i| {
        apis[i % nodes]
            .create_otp(agent, &number(scenario, i))
            .map(drop)
    });
    load.report_failures(&format!(
        "drain backlog ({nodes} node(s) × {modems} modem(s))"
    ));
    let expected = texts - load.failed;
    let ideal = texts as f64 * DRAIN_SEND_DELAY / total_modems as f64;
    let timeout = Duration::from_secs_f64(ideal * 3.0 + 20.0);
    let lines = collect_lines(&mut tails, expected, timeout);
    cluster.assert_alive();
    let mut per_modem = vec![0; total_modems];
    let mut at_by_modem = vec![Vec::new(); total_modems];
    let mut last_ns = start_ns;
    for (k, line) in &lines {
        per_modem[*k] += 1;
        last_ns = last_ns.max(line.at_ns);
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
        nodes,
        modems,
        texts,
        drained: lines.len(),
        rate: if secs > 0.0 {
            lines.len() as f64 / secs
        } else {
            0.0
        },
        per_modem,
        gap_p50: percentile(&gaps, 50.0) as f64 / 1e6,
    };
    let incomplete = if result.drained < texts {
        format!(
            " — only {} of {texts} arrived within {timeout:.0?}",
            result.drained
        )
    } else {
        String::new()
    };
    println!(
        "drain     {nodes} node(s) × {modems} modem(s), delay {DRAIN_SEND_DELAY} s: {:>6.2} texts/s = {:.1} % of the modems' {:.0}/s  ({texts} texts, per modem {:?}; one modem's gap between texts p50 {:.1} ms){incomplete}",
        result.rate,
        100.0 * result.rate / result.ceiling(),
        result.ceiling(),
        result.per_modem,
        result.gap_p50
    );
    result
}

// ---------------------------------------------------------------------------------------------
// Failover

/// One node death.
struct Round {
    /// The node killed.
    victim: String,
    /// Messages it held (`sending` under its id) right after the kill.
    held: usize,
    /// The latest `lease_until` among them, after the kill, seconds.
    lease_left: f64,
    /// From the SIGKILL until all of them were final, seconds.
    takeover: f64,
    /// What became of them: (status, node) of each.
    outcomes: Vec<(String, Option<String>)>,
}

struct FailoverResult {
    rounds: Vec<Round>,
    /// Texts the trickle had accepted (`202`).
    accepted: usize,
    /// Accepted texts no simulator logged within 60 s of the trickle's end.
    missing: usize,
    /// Texts logged more than once (each may be a send in flight at a kill, resent).
    duplicates: usize,
    /// Trickle requests that failed (in flight to the node as it died).
    refused: usize,
}

/// The failover target: the lease plus one send.
fn failover_target_s() -> f64 {
    LEASE_SECS as f64 + FAILOVER_SEND_DELAY
}

fn bench_failover(scratch: &Path, server: &pg::PgCluster, sizes: &Sizes) -> FailoverResult {
    let spec = Modems::External {
        count: 1,
        send_delay: FAILOVER_SEND_DELAY,
    };
    let mut cluster = Cluster::start(scratch, server, &[spec, spec], sizes.pool_size);
    let db = Db::connect(&cluster.url);
    let bases: Arc<Mutex<Vec<Api>>> = Arc::new(Mutex::new(cluster.apis()));
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let interval = Duration::from_secs_f64(1.0 / sizes.trickle_per_s);
    // The trickle: one text every `interval`, alternating over the nodes in `bases`.
    let trickle = {
        let (bases, accepted, refused, stop) = (
            bases.clone(),
            accepted.clone(),
            refused.clone(),
            stop.clone(),
        );
        thread::spawn(move || {
            let agent = agent();
            let mut next = Instant::now();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let api = {
                    let b = bases.lock().expect("no panic holding the bases");
                    b[n % b.len()].clone()
                };
                let text = format!("failover trickle {n}");
                let body = json!({ "to": number(60, n), "text": text });
                match api.post(&agent, "/v1/messages", &body) {
                    Ok((202, _)) => accepted.lock().expect("no panic").push(text),
                    _ => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
                next += interval;
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        })
    };
    println!(
        "failover  (two nodes × one modem at {FAILOVER_SEND_DELAY} s per text, lease {LEASE_SECS} s renewed every third of it; a survivor looks when the earliest lease of another node runs out)"
    );
    let mut rounds = Vec::new();
    let mut attempts = 0;
    while rounds.len() < sizes.failover_rounds {
        attempts += 1;
        assert!(
            attempts <= sizes.failover_rounds * 4,
            "failover: too many kills found the victim holding nothing"
        );
        let victim = rounds.len() % 2;
        let survivor = 1 - victim;
        // Both nodes take the trickle for a while.
        *bases.lock().expect("no panic") = cluster.apis();
        thread::sleep(Duration::from_secs(2));
        cluster.assert_alive();
        let victim_id = cluster.nodes[victim].id.clone();
        // Kill while the victim has a claim: poll the database for one.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n: i64 = db.query(
                "SELECT count(*) FROM messages WHERE status = 'sending' AND node_id = $1",
                &[&victim_id],
            )[0]
            .get(0);
            if n > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "failover: {victim_id} never held a claim in 30 s of trickle"
            );
            thread::sleep(Duration::from_millis(1));
        }
        // Only the survivor takes new requests from here on.
        *bases.lock().expect("no panic") = vec![cluster.nodes[survivor].api.clone()];
        let killed_at = cluster.nodes[victim].kill();
        let killed_ms = unix_ms_now();
        let held: Vec<(String, Option<i64>)> = db
            .query(
                "SELECT id, lease_until FROM messages WHERE status = 'sending' AND node_id = $1",
                &[&victim_id],
            )
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if held.is_empty() {
            println!(
                "failover  {victim_id}'s claim finished between the look and the kill; killing again"
            );
            cluster.nodes[victim].start();
            cluster.nodes[victim].wait_ready();
            continue;
        }
        let ids: Vec<String> = held.iter().map(|(id, _)| id.clone()).collect();
        let lease_left = held
            .iter()
            .filter_map(|(_, l)| *l)
            .max()
            .map_or(0.0, |l| (l - killed_ms) as f64 / 1000.0);
        let deadline = killed_at + Duration::from_secs(LEASE_SECS + 60);
        loop {
            let open: i64 = db.query(
                "SELECT count(*) FROM messages
                 WHERE id = ANY($1) AND status IN ('queued', 'sending')",
                &[&ids],
            )[0]
            .get(0);
            if open == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "failover: what {victim_id} held is not final {:?} after the kill",
                killed_at.elapsed()
            );
            thread::sleep(Duration::from_millis(5));
        }
        let takeover = killed_at.elapsed().as_secs_f64();
        let outcomes = db
            .query(
                "SELECT status, node_id FROM messages WHERE id = ANY($1) ORDER BY seq",
                &[&ids],
            )
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let round = Round {
            victim: victim_id,
            held: held.len(),
            lease_left,
            takeover,
            outcomes,
        };
        println!(
            "failover  round {}: SIGKILL {} holding {} claimed message(s), lease left {:.2} s; all final after {:.2} s, {:.2} s after the lease ran out (became {:?})  [target <= lease {LEASE_SECS} s + one send {FAILOVER_SEND_DELAY} s = {:.1} s: {}]",
            rounds.len() + 1,
            round.victim,
            round.held,
            round.lease_left,
            round.takeover,
            round.takeover - round.lease_left,
            round.outcomes,
            failover_target_s(),
            met(round.takeover <= failover_target_s())
        );
        rounds.push(round);
        cluster.nodes[victim].start();
        cluster.nodes[victim].wait_ready();
    }
    *bases.lock().expect("no panic") = cluster.apis();
    stop.store(true, Ordering::Relaxed);
    trickle.join().expect("the trickle thread panicked");
    cluster.assert_alive();

    // Every accepted text reaches a phone; a send in flight at a kill may arrive twice.
    let accepted = accepted.lock().expect("no panic").clone();
    let mut tails = cluster.tails();
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for t in &mut tails {
            for line in t.poll() {
                *seen.entry(line.text).or_default() += 1;
            }
        }
        if accepted.iter().all(|t| seen.contains_key(t)) || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let missing = accepted.iter().filter(|t| !seen.contains_key(*t)).count();
    let duplicates = seen.values().map(|n| n - 1).sum();
    let result = FailoverResult {
        rounds,
        accepted: accepted.len(),
        missing,
        duplicates,
        refused: refused.load(Ordering::Relaxed),
    };
    println!(
        "failover  trickle of {:.0} texts/s: {} accepted, {} never reached a simulator, {} delivered twice, {} requests failed (in flight to a dying node)",
        sizes.trickle_per_s, result.accepted, result.missing, result.duplicates, result.refused
    );
    result
}

// ---------------------------------------------------------------------------------------------

/// How long the file system under the PostgreSQL data directory takes to make a small write
/// durable (write + fdatasync), p50 and p99 in ms: the floor under every durable commit.
fn fsync_probe(dir: &Path) -> (f64, f64) {
    use std::io::Write;
    let dir = tempfile::Builder::new()
        .prefix("simgate-bench-fsync-")
        .tempdir_in(dir)
        .expect("create a probe directory");
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
/// means the figures carry other work's noise.
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
    // `cargo test --all-targets` also runs this binary (without `--bench`).
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("cluster benchmark: not run outside `cargo bench --bench cluster`");
        return;
    }
    if !pg::pg_available() {
        eprintln!("cluster benchmark: skipped: {}", pg::NOT_FOUND);
        return;
    }
    let sizes = Sizes::from_env();
    let scratch = std::env::var_os("SIMGATE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&scratch).expect("create the scratch directory");
    let started = Instant::now();
    let today = OffsetDateTime::now_utc().date();
    // Durable commits: the test harness's defaults turn all three off.
    let server = pg::PgCluster::start(&[
        ("fsync", "on"),
        ("synchronous_commit", "on"),
        ("full_page_writes", "on"),
    ])
    .unwrap_or_else(|e| panic!("start PostgreSQL: {e}"));
    let (version, settings) = {
        let db = Db::connect(&server.url("postgres"));
        let settings: Vec<String> = [
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "wal_sync_method",
            "shared_buffers",
        ]
        .iter()
        .map(|s| format!("{s}={}", db.setting(s)))
        .collect();
        let version = db.setting("server_version");
        (version, settings.join(", "))
    };
    println!(
        "simgate cluster benchmark (PostgreSQL store), {today}, {}",
        machine()
    );
    println!("binary {}; scratch under {}", bin(), scratch.display());
    println!(
        "PostgreSQL {version} on a Unix socket in {} ({settings}); each node's pool_size {}, lease_seconds {LEASE_SECS}",
        server.socket_dir().display(),
        sizes.pool_size
    );
    println!("load average before the run: {}", loadavg());
    let (fsync_p50, fsync_p99) = fsync_probe(server.socket_dir());
    println!(
        "disk      4 KiB write + fdatasync beside the PostgreSQL data directory: p50 {fsync_p50:.2} ms, p99 {fsync_p99:.2} ms (the floor of a durable commit)"
    );
    println!();

    let mut enqueue_runs: Vec<(usize, usize, bool)> = [1, 2]
        .into_iter()
        .flat_map(|nodes| [1, 16, 64].map(|clients| (nodes, clients, true)))
        .collect();
    enqueue_runs.push((TARGET_ENQUEUE_NODES, TARGET_ENQUEUE_CLIENTS, false));
    let enqueue: Vec<EnqueueResult> = enqueue_runs
        .into_iter()
        .zip(1..)
        .filter(|_| runs("enqueue"))
        .map(|((nodes, clients, sending), scenario)| {
            bench_enqueue(&scratch, &server, &sizes, nodes, clients, sending, scenario)
        })
        .collect();
    if !enqueue.is_empty() {
        println!(
            "          (each node runs `serve --simulate`, whose built-in modem sends while the queue fills, as benches/daemon.rs's enqueue; \"no modem\": the nodes' one modem is absent, so nothing is sent)"
        );
    }
    let pickup = runs("pickup").then(|| bench_pickup(&scratch, &server, &sizes));
    let cross = runs("pickup").then(|| bench_cross_pickup(&scratch, &server, &sizes));
    if pickup.is_some() {
        println!(
            "          (client clock just before the POST → the simulator log's `at`; includes the `> ` prompt round trip and the PDU)"
        );
    }
    let drains: Vec<DrainResult> = [(1, 1), (2, 2)]
        .into_iter()
        .zip(30..)
        .filter(|_| runs("drain"))
        .map(|((nodes, modems), scenario)| {
            bench_drain(&scratch, &server, &sizes, nodes, modems, scenario)
        })
        .collect();
    let speedup = match drains.as_slice() {
        [one, four] if one.rate > 0.0 => Some(four.rate / one.rate),
        _ => None,
    };
    if let Some(speedup) = speedup {
        println!(
            "drain     2 nodes × 2 modems vs 1 × 1 at delay {DRAIN_SEND_DELAY} s: {speedup:.2}x [target >= {TARGET_SPEEDUP}x: {}]",
            met(speedup >= TARGET_SPEEDUP)
        );
    }
    let failover = runs("failover").then(|| bench_failover(&scratch, &server, &sizes));
    let (fsync_end_p50, fsync_end_p99) = fsync_probe(server.socket_dir());
    println!("disk      again at the end: p50 {fsync_end_p50:.2} ms, p99 {fsync_end_p99:.2} ms");
    println!(
        "total run time {:.0?}; load average at the end {} (it includes this benchmark's own load)",
        started.elapsed(),
        loadavg()
    );

    // The table for README.md.
    println!();
    println!("| Measure (PostgreSQL {version}, durable commits) | Result | Target | Met |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| Disk: 4 KiB write + `fdatasync` (the floor of a durable commit), before / after the run | p50 {fsync_p50:.2} / {fsync_end_p50:.2} ms, p99 {fsync_p99:.2} / {fsync_end_p99:.2} ms | — | — |"
    );
    for e in &enqueue {
        let (target, ok) = if e.is_target_row() {
            (
                format!("≥ {TARGET_ENQUEUE_PER_S:.0}/s at p99 < {TARGET_ENQUEUE_P99_MS} ms"),
                met(e.meets_target()),
            )
        } else {
            ("—".to_owned(), "—")
        };
        println!(
            "| Durable `POST /v1/otp`, {}{} | {:.0}/s, p50 {:.2} ms, p99 {:.2} ms{}; cores: daemons {:.2}, PostgreSQL {:.2}, clients {:.2} | {target} | {ok} |",
            e.shape(),
            if e.sending {
                ", modems sending"
            } else {
                ", no modem"
            },
            e.rate,
            e.p50,
            e.p99,
            if e.failed > 0 {
                format!(", {} failed", e.failed)
            } else {
                String::new()
            },
            e.daemon_cores,
            e.pg_cores,
            e.client_cores
        );
        println!(
            "| … where the time goes ({}): cores busy on the whole machine; PostgreSQL backends | {:.2} cores; {} | — | — |",
            e.shape(),
            e.machine_cores,
            e.waits
        );
    }
    if let Some(p) = &pickup {
        println!(
            "| `POST /v1/otp` → simulator log, idle modem, one node | p50 {:.2} ms, p99 {:.2} ms | p99 < {TARGET_PICKUP_P99_MS} ms | {} |",
            p.p50,
            p.p99,
            met(p.p99 < TARGET_PICKUP_P99_MS)
        );
    }
    if let Some(p) = &cross {
        println!(
            "| … posted to a node without a modem, sent by the other (`NOTIFY`) | p50 {:.2} ms, p99 {:.2} ms | — | — |",
            p.p50, p.p99
        );
    }
    for d in &drains {
        let short = if d.drained < d.texts {
            format!(" (only {} of {} drained)", d.drained, d.texts)
        } else {
            String::new()
        };
        println!(
            "| Drain, {} node(s) × {} modem(s), send delay {DRAIN_SEND_DELAY} s | {:.2} texts/s = {:.1} % of {:.0}/s{short} | — | — |",
            d.nodes,
            d.modems,
            d.rate,
            100.0 * d.rate / d.ceiling(),
            d.ceiling()
        );
    }
    if let Some(speedup) = speedup {
        println!(
            "| 2 nodes × 2 modems vs 1 × 1, send delay {DRAIN_SEND_DELAY} s | {speedup:.2}× | ≥ {TARGET_SPEEDUP}× | {} |",
            met(speedup >= TARGET_SPEEDUP)
        );
    }
    if let Some(f) = &failover {
        for (i, r) in f.rounds.iter().enumerate() {
            println!(
                "| Failover {}: SIGKILL of a node holding {} claim(s) (lease left {:.2} s) → all final on the survivor | {:.2} s ({:.2} s after the lease ran out) | ≤ lease {LEASE_SECS} s + one send {FAILOVER_SEND_DELAY} s | {} |",
                i + 1,
                r.held,
                r.lease_left,
                r.takeover,
                r.takeover - r.lease_left,
                met(r.takeover <= failover_target_s())
            );
        }
        println!(
            "| Failover trickle: texts accepted / never sent / sent twice | {} / {} / {} | — | — |",
            f.accepted, f.missing, f.duplicates
        );
    }
}
