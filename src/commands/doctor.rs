//! `simgate doctor` (being built).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {}

pub fn run(_args: DoctorArgs, _json: bool) -> ExitCode {
    eprintln!("simgate doctor: not built yet");
    ExitCode::FAILURE
}
