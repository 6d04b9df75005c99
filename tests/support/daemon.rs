//! A real `simgate serve --simulate` child process for end-to-end tests: loopback HTTP, a real
//! SQLite file, the built-in simulated modem on a real pty, and SIGKILL for crash tests.
//!
//! Include it with `#[path = "support/daemon.rs"] mod daemon;`.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "pg.rs"]
pub mod pg;

/// Whether this test binary runs its daemons on PostgreSQL: binaries named `pg_*` include an
/// existing scenario file (`#[path = "e2e_otp.rs"] mod scenarios;`) so the very same
/// scenarios run against a real PostgreSQL server instead of SQLite. The name decides, since
/// one `cargo test` runs both binaries and nothing else tells them apart at run time.
pub fn postgres_mode() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().starts_with("pg_"))
        })
        .unwrap_or(false)
}

/// In [`postgres_mode`], the database of a data directory: created at its first daemon and
/// kept for every restart on that directory, as a node's database would be.
fn postgres_url(data_dir: &Path) -> String {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static URLS: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    let Some(cluster) = pg::shared() else {
        // Every test of a pg_* binary needs the server: skip them all, saying why, as the
        // tests that need gammu or python-gsmmodem do. `.ci/run` installs the server.
        eprintln!(
            "skipping every test of this binary (it runs its scenarios on PostgreSQL): {}",
            pg::NOT_FOUND
        );
        std::process::exit(0);
    };
    URLS.get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(data_dir.to_path_buf())
        .or_insert_with(|| cluster.create_database())
        .clone()
}

/// `config` with `[store]` pointed at the data directory's PostgreSQL database, as node
/// `node-<n>` (stable per directory, so a restart is the same node recovering its sends).
pub fn with_postgres_store(data_dir: &Path, config: Option<&str>) -> String {
    let mut table: toml::Table = toml::from_str(config.unwrap_or("")).expect("test config is TOML");
    let store = table
        .entry("store")
        .or_insert_with(|| toml::Value::Table(Default::default()))
        .as_table_mut()
        .expect("[store] is a table");
    let digest = data_dir
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    store.insert("backend".into(), "postgres".into());
    store.insert("url".into(), postgres_url(data_dir).into());
    store.insert(
        "node_id".into(),
        format!("node-{:08x}", digest as u32).into(),
    );
    toml::to_string(&table).expect("serialise test config")
}

/// How long the daemon may take to print its banner (the machine may be busy compiling).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running daemon.
pub struct Daemon {
    /// Its data directory (database, keys, token, simulator log).
    pub data_dir: PathBuf,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// The bearer token it created.
    pub token: String,
    /// The child; `None` once stopped.
    child: Option<Child>,
    /// Where its stderr goes (the daemon's log), for assertions and for failure messages.
    pub stderr_path: PathBuf,
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// `Retry-After`, if any.
    pub retry_after: Option<String>,
    /// Parsed body (`Value::Null` when empty or not JSON).
    pub body: Value,
}

impl Daemon {
    /// Starts `simgate serve --simulate` on an ephemeral loopback port with `data_dir`;
    /// `config` (TOML text), when given, is written next to it and passed with `--config`.
    pub fn start(data_dir: &Path, config: Option<&str>) -> Daemon {
        Self::start_with(data_dir, config, &[])
    }

    /// As [`Daemon::start`] with extra environment.
    pub fn start_with(data_dir: &Path, config: Option<&str>, env: &[(&str, &str)]) -> Daemon {
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| *k == "RUST_LOG") {
            env.push(("RUST_LOG", "simgate=debug,info"));
        }
        let (child, listen, stderr_path) = spawn_serve(data_dir, &["--simulate"], config, &env);
        let token = std::fs::read_to_string(data_dir.join("api-token"))
            .expect("api-token")
            .trim()
            .to_owned();
        Daemon {
            data_dir: data_dir.to_path_buf(),
            base: format!("http://{listen}"),
            token,
            child: Some(child),
            stderr_path,
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `POST` a JSON body with the token.
    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.request(
            "POST",
            path,
            Some(body.to_string()),
            &[("Authorization", &self.bearer())],
        )
    }

    /// `GET` with the token.
    pub fn get(&self, path: &str) -> Answer {
        self.request("GET", path, None, &[("Authorization", &self.bearer())])
    }

    /// `DELETE` with the token.
    pub fn delete(&self, path: &str) -> Answer {
        self.request("DELETE", path, None, &[("Authorization", &self.bearer())])
    }

    /// The `Authorization` header value.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Any request; `headers` are sent as given (no token unless included). Panics when the
    /// daemon cannot be reached.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Answer {
        request(&self.base, method, path, body, headers)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    /// The simulator's log lines so far.
    pub fn sim_log(&self) -> Vec<Value> {
        read_jsonl(&self.data_dir.join("sim-sent.jsonl"))
    }

    /// Waits until the simulator's log holds at least `n` lines.
    pub fn wait_sim_log(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.sim_log();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `GET path` answers a body for which `done` holds; returns it.
    pub fn wait_for(&self, path: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let a = self.get(path);
            if done(&a.body) || Instant::now() > deadline {
                return a.body;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `/readyz` answers 200 (the simulated modem is initialised).
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while self.request("GET", "/readyz", None, &[]).status != 200 {
            assert!(
                Instant::now() < deadline,
                "modem never ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a JSON-lines file; a torn last line (a crash mid-write) is skipped.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The code in an OTP text such as "Your code is 123456. It expires in 5 minutes.".
pub fn code_in(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() >= 4)
        .unwrap_or_else(|| panic!("no code in {text:?}"))
        .to_owned()
}

/// One request to `base` (`http://host:port`); `Err` when the daemon cannot be reached, so load
/// and crash tests can tell a refused connection from an answer.
pub fn request(
    base: &str,
    method: &str,
    path: &str,
    body: Option<String>,
    headers: &[(&str, &str)],
) -> Result<Answer, ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("{base}{path}");
    let mut builder = ureq::http::Request::builder().method(method).uri(&url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let mut resp = match body {
        Some(b) => {
            let req = builder
                .header("Content-Type", "application/json")
                .body(b)
                .expect("request");
            agent.run(req)?
        }
        None => agent.run(builder.body(()).expect("request"))?,
    };
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type");
    let retry_after = header("retry-after");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    Ok(Answer {
        status,
        content_type,
        retry_after,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    })
}

/// Starts `simgate --json serve --listen 127.0.0.1:0 --data-dir <data_dir> <args>`, with
/// `config` (TOML text) written to `<data_dir>.toml` and passed with `--config`, and waits for
/// its banner. Returns the child, the address it listens on and the file its stderr (the
/// daemon's log) goes to, `<data_dir>.stderr` (appended to, so restarts keep one log).
/// The first line a child prints (serve's banner), or `None` if none came within `timeout`. Read
/// on a thread so a hung start cannot hang the test past its deadline; the rest is drained so
/// the child never blocks on a full pipe.
pub fn first_line(stdout: std::process::ChildStdout, timeout: Duration) -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    rx.recv_timeout(timeout)
        .ok()
        .filter(|line| !line.trim().is_empty())
}

pub fn spawn_serve(
    data_dir: &Path,
    args: &[&str],
    config: Option<&str>,
    env: &[(&str, &str)],
) -> (Child, SocketAddr, PathBuf) {
    std::fs::create_dir_all(data_dir).expect("create data dir");
    let stderr_path = data_dir.with_extension("stderr");
    let stderr = File::options()
        .create(true)
        .append(true)
        .open(&stderr_path)
        .expect("open stderr capture");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_simgate"));
    cmd.args(["--json", "serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(args);
    let config = if postgres_mode() {
        Some(with_postgres_store(data_dir, config))
    } else {
        config.map(str::to_owned)
    };
    if let Some(text) = config {
        let path = data_dir.with_extension("toml");
        std::fs::write(&path, text).expect("write config");
        cmd.arg("--config").arg(path);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("spawn simgate serve");
    let stdout = child.stdout.take().expect("stdout");
    let line = match first_line(stdout, START_TIMEOUT) {
        Some(line) => line,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "daemon printed no banner; its log:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
    };
    let banner: Value = serde_json::from_str(&line).expect("banner is JSON");
    let listen: SocketAddr = banner["listen"]
        .as_str()
        .expect("banner names the listen address")
        .parse()
        .expect("listen address");
    (child, listen, stderr_path)
}

/// A Python that can `import module`: `$SIMGATE_PYTHON`, else the venv `.ci/run` fills
/// (`/opt/simgate-venv`). `None` when neither can, so the caller skips with a printed reason.
pub fn python_with(module: &str) -> Option<String> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("SIMGATE_PYTHON") {
        candidates.push(p);
    }
    candidates.push("/opt/simgate-venv/bin/python".into());
    candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}
