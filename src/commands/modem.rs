//! `simgate modem` (being built; see ARCHITECTURE.md).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ModemArgs {}

pub fn run(_args: ModemArgs, _json: bool) -> ExitCode {
    eprintln!("simgate modem: not built yet");
    ExitCode::FAILURE
}
