//! `simgate config` (being built).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {}

pub fn run(_args: ConfigArgs, _json: bool) -> ExitCode {
    eprintln!("simgate config: not built yet");
    ExitCode::FAILURE
}
