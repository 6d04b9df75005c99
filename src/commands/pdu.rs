//! `simgate pdu` (being built; see ARCHITECTURE.md).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct PduArgs {}

pub fn run(_args: PduArgs, _json: bool) -> ExitCode {
    eprintln!("simgate pdu: not built yet");
    ExitCode::FAILURE
}
