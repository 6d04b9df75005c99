//! `simgate serve` (being built; see ARCHITECTURE.md).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

pub fn run(_args: ServeArgs, _json: bool) -> ExitCode {
    eprintln!("simgate serve: not built yet");
    ExitCode::FAILURE
}
