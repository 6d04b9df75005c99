//! `simgate sim` (being built; see ARCHITECTURE.md).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SimArgs {}

pub fn run(_args: SimArgs, _json: bool) -> ExitCode {
    eprintln!("simgate sim: not built yet");
    ExitCode::FAILURE
}
