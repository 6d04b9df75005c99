//! A real, throwaway PostgreSQL server for integration tests.
//!
//! [`shared`] starts one server per test binary, the first time a test asks for it; tests isolate
//! themselves by database ([`PgCluster::create_database`]), not by server, because `initdb` costs
//! hundreds of milliseconds and a database tens. [`PgCluster::start`] starts a private server
//! for tests that need their own settings (benchmarks measuring durable commits) or that stop it.
//!
//! The server listens on a Unix socket in its own temporary directory only, so clusters of
//! concurrent test binaries never meet. Its binaries are found in `$SIMGATE_PG_BIN`, then in the
//! newest `/usr/lib/postgresql/<N>/bin` (Debian's `postgresql` package puts them there, off
//! PATH), then on PATH. When none are installed, [`shared`] returns `None` and says why once; a
//! test then skips. When they are installed but the server does not come up, it panics: a broken
//! install must fail the suite, not skip it.
//!
//! PostgreSQL refuses to run as root, and the suite runs as root locally and in CI: then
//! `initdb` and `postgres` run as nobody:nogroup (65534), who owns the cluster directory.
//!
//! No server outlives its test binary: a [`PgCluster`] stops its server when dropped; the shared
//! one lives in a static, which is never dropped, so an `atexit` hook stops it. If the binary is
//! killed outright, the kernel signals the servers (`PR_SET_PDEATHSIG`), though their
//! directories stay behind.
//!
//! Include with `#[path = "support/pg.rs"] mod pg;`.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// How long a fresh server may take to accept connections: generous, because the machine running
/// the suite may be busy compiling.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a fast shutdown may take before the server is killed outright.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The superuser `initdb` creates; trust authentication, so no password anywhere.
pub const USER: &str = "simgate";

/// With `listen_addresses` empty the port only names the socket file (`.s.PGSQL.<port>`) in the
/// cluster's own directory, so every cluster can use the same one.
const DEFAULT_PORT: u16 = 5432;

/// PostgreSQL refuses to run as root; as root, the server runs as nobody:nogroup instead.
const UNPRIVILEGED_ID: u32 = 65534;

/// Tuned for fast tests: nothing waits for the disk. `PgCluster::start`'s settings override them.
const DEFAULT_SETTINGS: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("max_connections", "300"),
    ("shared_buffers", "64MB"),
];

/// `sockaddr_un.sun_path` holds 108 bytes; leave room for `/.s.PGSQL.<port>` and its `.lock`.
const MAX_SOCKET_DIR_LEN: usize = 80;

/// Why a test skips: printed by [`shared`], and by tests that start their own cluster.
pub const NOT_FOUND: &str = "PostgreSQL server binaries not found (install Debian's postgresql \
                             package, or set SIMGATE_PG_BIN)";

/// A PostgreSQL server started by this process. Dropping it stops the server and removes its
/// directory.
pub struct PgCluster {
    socket_dir: PathBuf,
    port: u16,
    pid: u32,
    log: PathBuf,
    /// `None` once stopped, so `stop`, `Drop` and the exit hook are idempotent.
    running: Mutex<Option<Running>>,
}

struct Running {
    child: Child,
    dir: tempfile::TempDir,
}

impl PgCluster {
    /// Runs `initdb` in a fresh temporary directory and starts a server there, with
    /// [`DEFAULT_SETTINGS`] overridden or extended by `settings` (each becomes `-c key=value`;
    /// `port` also changes the port clients connect to). Returns once the server accepts
    /// connections.
    pub fn start(settings: &[(&str, &str)]) -> Result<PgCluster, String> {
        let bin = find_bin_dir()?.ok_or_else(|| NOT_FOUND.to_string())?;
        let mut merged: Vec<(String, String)> = DEFAULT_SETTINGS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (key, value) in settings {
            match merged.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
                Some(slot) => slot.1 = value.to_string(),
                None => merged.push((key.to_string(), value.to_string())),
            }
        }
        let port = match merged.iter().find(|(k, _)| k.eq_ignore_ascii_case("port")) {
            Some((_, p)) => p.parse().map_err(|_| format!("bad port setting {p:?}"))?,
            None => DEFAULT_PORT,
        };
        merged.retain(|(k, _)| !k.eq_ignore_ascii_case("port"));

        // SAFETY: geteuid has no preconditions and cannot fail.
        let as_root = unsafe { libc::geteuid() } == 0;
        let dir = make_cluster_dir(as_root)?;
        let root = dir.path().to_path_buf();
        let data = root.join("data");
        let log = root.join("postgres.log");
        let initdb_log = root.join("initdb.log");

        let mut initdb = server_command(&bin.join("initdb"), &root, as_root);
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-A", "trust", "-E", "UTF8", "--locale=C"])
            // Durability of the template files is irrelevant to a throwaway cluster, and the
            // syncs make initdb several times slower.
            .arg("--no-sync")
            .stdin(Stdio::null())
            .stdout(open_log(&initdb_log)?)
            .stderr(open_log(&initdb_log)?);
        let status = initdb
            .status()
            .map_err(|e| format!("run {}: {e}", bin.join("initdb").display()))?;
        if !status.success() {
            return Err(failure(
                dir,
                &initdb_log,
                &format!("initdb exited with {status}"),
            ));
        }

        let mut postgres = server_command(&bin.join("postgres"), &root, as_root);
        postgres
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&root)
            .arg("-p")
            .arg(port.to_string())
            .args(["-c", "listen_addresses="]);
        for (key, value) in &merged {
            postgres.arg("-c").arg(format!("{key}={value}"));
        }
        postgres
            .stdin(Stdio::null())
            .stdout(open_log(&log)?)
            .stderr(open_log(&log)?);
        die_with_this_process(&mut postgres);
        let child = match spawn_from_long_lived_thread(postgres) {
            Ok(child) => child,
            Err(e) => return Err(failure(dir, &log, &format!("spawn postgres: {e}"))),
        };
        let cluster = PgCluster {
            socket_dir: root,
            port,
            pid: child.id(),
            log: log.clone(),
            running: Mutex::new(Some(Running { child, dir })),
        };
        if let Err(why) = cluster.wait_ready() {
            let running = cluster.take_running();
            return Err(match running {
                Some(mut running) => {
                    stop_child(&mut running.child);
                    failure(running.dir, &log, &why)
                }
                None => why,
            });
        }
        Ok(cluster)
    }

    /// Creates a fresh, uniquely named database and returns its connection string.
    pub fn create_database(&self) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t_{}_{}",
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::process::id()
        );
        let admin = self.url("postgres");
        let sql = format!("CREATE DATABASE \"{name}\"");
        let result = on_fresh_runtime(|| async move {
            let client = connect(&admin).await?;
            client.batch_execute(&sql).await.map_err(|e| e.to_string())
        });
        if let Err(e) = result {
            panic!(
                "create database {name}: {e} (server log: {})",
                self.log.display()
            );
        }
        self.url(&name)
    }

    /// A libpq-style connection string for `dbname` that `tokio_postgres::Config` parses.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            quote(&self.socket_dir.to_string_lossy()),
            self.port,
            USER,
            quote(dbname)
        )
    }

    /// The directory holding the server's socket (also its data directory's parent).
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's log (its stderr), for a failing test to print.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops the server (fast shutdown: sessions are cut, no waiting for clients), waits for
    /// it to exit, and removes its directory. Idempotent.
    pub fn stop(&self) {
        if let Some(mut running) = self.take_running() {
            stop_child(&mut running.child);
            drop(running.dir);
        }
    }

    fn take_running(&self) -> Option<Running> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    fn wait_ready(&self) -> Result<(), String> {
        let url = self.url("postgres");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            {
                let mut guard = self
                    .running
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let running = guard.as_mut().ok_or("the server was stopped")?;
                match running.child.try_wait() {
                    Ok(Some(status)) => return Err(format!("postgres exited with {status}")),
                    Ok(None) => {}
                    Err(e) => return Err(format!("wait for postgres: {e}")),
                }
            }
            // Until the postmaster creates its socket a connect only says "No such file".
            let last = if self
                .socket_dir
                .join(format!(".s.PGSQL.{}", self.port))
                .exists()
            {
                let url = url.clone();
                match on_fresh_runtime(|| async move { connect(&url).await.map(drop) }) {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                }
            } else {
                "no socket yet".to_string()
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "postgres did not accept connections within {START_TIMEOUT:?}: {last}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The cluster shared by every test of this binary, started on first use with the default
/// settings; `None` (after saying why, once, on stderr) when PostgreSQL is not installed.
/// Panics when it is installed but the server does not start.
pub fn shared() -> Option<&'static PgCluster> {
    static SHARED: OnceLock<Result<Option<PgCluster>, String>> = OnceLock::new();
    static EXIT_HOOK: OnceLock<Result<(), String>> = OnceLock::new();

    // Statics are never dropped: only an exit hook stops the server before the process goes.
    extern "C" fn stop_shared() {
        let _ = std::panic::catch_unwind(|| {
            if let Some(Ok(Some(cluster))) = SHARED.get() {
                cluster.stop();
            }
        });
    }

    let shared = SHARED.get_or_init(|| {
        match find_bin_dir() {
            Ok(Some(_)) => {}
            Ok(None) => {
                eprintln!("skipping: {NOT_FOUND}");
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let hooked = EXIT_HOOK.get_or_init(|| {
            // SAFETY: registers a function with no preconditions; it only touches statics,
            // which outlive every exit handler.
            if unsafe { libc::atexit(stop_shared) } == 0 {
                Ok(())
            } else {
                Err("atexit refused the hook that stops the shared server".to_string())
            }
        });
        hooked.clone()?;
        PgCluster::start(&[]).map(Some)
    });
    match shared {
        Ok(cluster) => cluster.as_ref(),
        Err(why) => panic!("the shared PostgreSQL server did not start: {why}"),
    }
}

/// [`shared`] under the name a test reads as what it does: `let Some(pg) = skip_without_pg()
/// else { return };`.
pub fn skip_without_pg() -> Option<&'static PgCluster> {
    shared()
}

/// Whether the server binaries are installed: what decides between running and skipping a test
/// that starts its own cluster. Panics if `$SIMGATE_PG_BIN` is set but wrong.
pub fn pg_available() -> bool {
    match find_bin_dir() {
        Ok(found) => found.is_some(),
        Err(e) => panic!("{e}"),
    }
}

/// The directory holding `initdb` and `postgres`. `Ok(None)` when PostgreSQL is not installed;
/// an error when `$SIMGATE_PG_BIN` names a directory without them, since a wrong explicit
/// setting must not turn into a silent skip.
pub fn find_bin_dir() -> Result<Option<PathBuf>, String> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("SIMGATE_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_server(&dir) {
            Ok(Some(dir))
        } else {
            Err(format!(
                "SIMGATE_PG_BIN={} holds no initdb and postgres",
                dir.display()
            ))
        };
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            // "15", or "9.6" before PostgreSQL 10: compared as numbers, so 15 beats 9.6.
            let version = name
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(Some(bin));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    Ok(std::env::split_paths(&path).find(|dir| has_server(dir)))
}

/// A temporary directory the server's user owns and can reach. It holds the data directory, the
/// socket and the logs.
fn make_cluster_dir(as_root: bool) -> Result<tempfile::TempDir, String> {
    // TMPDIR may sit under a directory nobody cannot traverse (/root/...), or be too long for a
    // socket path; /tmp is the fallback that is neither on any sane machine.
    let candidates = [std::env::temp_dir(), PathBuf::from("/tmp")];
    let mut refused = Vec::new();
    for parent in &candidates {
        if parent.as_os_str().len() + "/simgate-pg-XXXXXX".len() > MAX_SOCKET_DIR_LEN {
            refused.push(format!("{}: too long for a socket path", parent.display()));
            continue;
        }
        if as_root {
            if let Some(blocked) = parent
                .ancestors()
                .find(|dir| !traversable_by_unprivileged(dir))
            {
                refused.push(format!(
                    "{}: uid {UNPRIVILEGED_ID} cannot traverse {}",
                    parent.display(),
                    blocked.display()
                ));
                continue;
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("simgate-pg-")
            .tempdir_in(parent)
            .map_err(|e| format!("create a directory in {}: {e}", parent.display()))?;
        if as_root {
            chown(dir.path(), Some(UNPRIVILEGED_ID), Some(UNPRIVILEGED_ID))
                .map_err(|e| format!("chown {}: {e}", dir.path().display()))?;
        }
        return Ok(dir);
    }
    Err(format!(
        "no directory for the cluster: {}",
        refused.join("; ")
    ))
}

/// Mode bits only (no ACLs): enough for the directories a temporary directory lives under.
fn traversable_by_unprivileged(dir: &Path) -> bool {
    let Ok(meta) = fs::metadata(dir) else {
        return false;
    };
    let mode = meta.mode();
    mode & 0o001 != 0
        || (meta.uid() == UNPRIVILEGED_ID && mode & 0o100 != 0)
        || (meta.gid() == UNPRIVILEGED_ID && mode & 0o010 != 0)
}

/// `program`, run in `cwd` (the test's own working directory may be closed to nobody), as
/// nobody:nogroup when we are root. std drops the supplementary groups when it changes uid.
fn server_command(program: &Path, cwd: &Path, as_root: bool) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(cwd);
    // Messages in English whatever the machine's locale, so failures read the same everywhere.
    cmd.env("LC_ALL", "C");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    if as_root {
        cmd.uid(UNPRIVILEGED_ID).gid(UNPRIVILEGED_ID);
    }
    cmd
}

/// Makes the postmaster shut down (immediately: SIGQUIT) if this process dies without running
/// its exit hook (SIGKILL, abort). Its temporary directory is then left behind.
///
/// The kernel sends the signal when the *thread* that forked the child exits, not the process;
/// hence every server is spawned from one thread that lives as long as the process. The setting
/// survives exec but not a uid change, and std changes the uid before running this hook.
fn die_with_this_process(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe, as required between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent died between fork and prctl: no signal will come.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::other("the test process exited"));
            }
            Ok(())
        });
    }
}

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

fn spawn_from_long_lived_thread(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, incoming) = mpsc::channel::<SpawnJob>();
        // The sender lives in a static, so this loop, and the thread, end only with the process.
        std::thread::Builder::new()
            .name("pg-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in incoming {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the thread that spawns PostgreSQL servers");
        Mutex::new(jobs)
    });
    let (reply, result) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((cmd, reply))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    result
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL, each after [`STOP_TIMEOUT`];
/// always reaps the child.
fn stop_child(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGQUIT,
    ] {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        let _ = nix::sys::signal::kill(pid, signal);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("postgres {pid} ignored {signal} for {STOP_TIMEOUT:?}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Keeps the cluster directory, so the log named in the error can still be read.
fn failure(dir: tempfile::TempDir, log: &Path, why: &str) -> String {
    let kept = dir.keep();
    let tail = fs::read_to_string(log)
        .map(|text| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        })
        .unwrap_or_default();
    format!(
        "{why}; log: {} (directory kept: {})\n{tail}",
        log.display(),
        kept.display()
    )
}

fn open_log(path: &Path) -> Result<File, String> {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))
}

/// Bounded, so a server that accepts the socket but never answers fails the start instead of
/// hanging the suite.
async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let connecting = tokio_postgres::connect(url, tokio_postgres::NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(client)
}

/// Runs `f` to completion on a new runtime in a new thread: the harness is synchronous, and is
/// called from inside `#[tokio::test]`s, where blocking on a second runtime would panic.
fn on_fresh_runtime<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = T>,
    T: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build a tokio runtime")
                    .block_on(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A connection-string value in single quotes, as libpq and tokio-postgres read them.
fn quote(value: &str) -> String {
    let mut quoted = String::from("'");
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('\'');
    quoted
}
