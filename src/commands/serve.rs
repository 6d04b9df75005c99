//! `simgate serve`: load and validate the config, apply the command-line overrides, run the
//! daemon until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::daemon::{self, Started};

/// Where `serve --simulate` keeps its data unless told otherwise: the current directory, so a
/// first run needs no root and leaves everything in one visible place.
pub const SIMULATE_DATA_DIR: &str = "./simgate-data";

/// Run the daemon: HTTP API, durable queue, dispatcher and modem drivers.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Config file (TOML). Default: /etc/simgate/simgate.toml when it exists, else built-in
    /// defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serial device of a modem (repeatable); replaces the config's [[modem]] tables.
    #[arg(long, value_name = "PATH")]
    pub device: Vec<PathBuf>,
    /// Data directory (database, keys, API token); overrides `store.data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address the API listens on; overrides `api.listen`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Use a built-in simulated modem instead of real hardware (nothing reaches a phone; texts
    /// are appended to <data dir>/sim-sent.jsonl). Data dir default: ./simgate-data.
    #[arg(long)]
    pub simulate: bool,
}

pub fn run(args: ServeArgs, json: bool) -> ExitCode {
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("simgate serve: {e}");
            return ExitCode::from(2);
        }
    };
    super::init_tracing(&config.log.level);
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("simgate serve: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The handlers are installed before the daemon starts, so a SIGTERM that follows the banner
    // at once (systemd, a test, a user's script) is a clean shutdown and not the default action,
    // which would kill the process with its lock file and simulator link left behind.
    let shutdown = {
        let _runtime = runtime.enter();
        shutdown_signal()
    };
    let result = runtime.block_on(daemon::run(
        config,
        args.simulate,
        |started| print_banner(started, json),
        shutdown,
    ));
    // A webhook POST in flight runs on a blocking thread the daemon has stopped waiting for;
    // dropping the runtime would wait for it (up to its timeout), so the wait is bounded here.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("simgate serve: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The config file (explicit, default path, or none) with the command line applied on top.
fn load_config(args: &ServeArgs) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            Config::load(Path::new(DEFAULT_CONFIG_PATH)).map_err(|e| e.to_string())?
        }
        None => Config::default(),
    };
    if let Some(dir) = &args.data_dir {
        config.store.data_dir = dir.clone();
    } else if args.simulate && config.store.data_dir == Config::default().store.data_dir {
        config.store.data_dir = PathBuf::from(SIMULATE_DATA_DIR);
    }
    if let Some(listen) = args.listen {
        config.api.listen = listen;
    }
    if !args.device.is_empty() {
        config.set_devices(&args.device);
    }
    // The checks `config check` and `doctor` run too (one function), on the modems that will
    // really be opened; `--simulate` opens none of them.
    if !args.simulate {
        let origin = match &args.config {
            Some(p) => p.display().to_string(),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => DEFAULT_CONFIG_PATH.to_string(),
            None => "<defaults>".to_string(),
        };
        let env = std::env::var(crate::config::PIN_ENV).ok();
        config
            .check_startup(&origin, env.as_deref())
            .map_err(|e| e.to_string())?;
    }
    Ok(config)
}

/// Installs the SIGINT and SIGTERM handlers now (inside the runtime's context) and returns a
/// future that resolves on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        match (int, term) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            (Ok(mut int), Err(e)) => {
                tracing::error!(error = %e, "cannot watch SIGTERM; stop simgate with SIGINT");
                int.recv().await;
            }
            (Err(e), Ok(mut term)) => {
                tracing::error!(error = %e, "cannot watch SIGINT; stop simgate with SIGTERM");
                term.recv().await;
            }
            (Err(e), Err(_)) => {
                tracing::error!(error = %e, "cannot watch SIGINT or SIGTERM; stop simgate with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
        tracing::info!("shutting down: finishing sends in flight");
    }
}

/// The first thing a new user reads: where the API is, where the token is, and a request to
/// paste.
fn print_banner(s: &Started, json: bool) {
    if json {
        let value = serde_json::json!({
            "listen": s.listen.to_string(),
            "token_file": s.token_file.as_ref().map(|p| p.display().to_string()),
            "data_dir": s.data_dir.display().to_string(),
            "simulator": s.simulator.as_ref().map(|(link, log)| serde_json::json!({
                "link": link.display().to_string(),
                "log": log.display().to_string(),
            })),
        });
        println!("{value}");
        return;
    }
    let url = format!("http://{}", s.listen);
    println!("simgate is listening on {url}");
    let token = match &s.token_file {
        Some(path) => {
            println!("API token: {}", path.display());
            format!("$(cat {})", path.display())
        }
        None => {
            println!("API token: one of api.tokens in the config file");
            "$SIMGATE_TOKEN".to_owned()
        }
    };
    if let Some((link, log)) = &s.simulator {
        println!(
            "SIMULATED MODEM at {}: nothing reaches a phone; texts are appended to {}",
            link.display(),
            log.display()
        );
    }
    println!("Send a code:");
    println!(
        "  curl -s -H \"Authorization: Bearer {token}\" -H 'Content-Type: application/json' \\\n       -d '{{\"to\": \"+15551234567\"}}' {url}/v1/otp"
    );
}
