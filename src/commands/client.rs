//! `simgate send`, `simgate otp`, `simgate log`: thin clients of a running daemon (being built).

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SendArgs {}
#[derive(Debug, clap::Args)]
pub struct OtpArgs {}
#[derive(Debug, clap::Args)]
pub struct LogArgs {}

pub fn run_send(_args: SendArgs, _json: bool) -> ExitCode {
    eprintln!("simgate send: not built yet");
    ExitCode::FAILURE
}
pub fn run_otp(_args: OtpArgs, _json: bool) -> ExitCode {
    eprintln!("simgate otp: not built yet");
    ExitCode::FAILURE
}
pub fn run_log(_args: LogArgs, _json: bool) -> ExitCode {
    eprintln!("simgate log: not built yet");
    ExitCode::FAILURE
}
