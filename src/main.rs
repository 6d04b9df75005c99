//! Thin entry point: parse arguments, run the subcommand, map its result to an exit code.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {}
}
