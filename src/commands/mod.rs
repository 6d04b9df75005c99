//! One file per CLI subcommand: its clap arguments and its `run` function.
//! `main.rs` only parses and dispatches; each `run` builds its own runtime if it needs one.

pub mod client;
pub mod completions;
pub mod config;
pub mod doctor;
pub mod inbox;
pub mod modem;
pub mod pdu;
pub mod serve;
pub mod sim;
pub mod status;

/// Logs to stderr: `RUST_LOG` if set, else `default_filter` (a level or `EnvFilter` directives).
/// Colour codes only for a person at a terminal; journald and log files get plain text.
pub fn init_tracing(default_filter: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
