//! Thin entry point: parse arguments, run the subcommand, map its result to an exit code.

mod cli;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command};
use simgate::commands;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    match cli.command {
        Command::Pdu(args) => commands::pdu::run(args, json),
        Command::Sim(args) => commands::sim::run(args, json),
        Command::Modem(args) => commands::modem::run(args, json),
        Command::Doctor(args) => commands::doctor::run(args, json),
        Command::Config(args) => commands::config::run(args, json),
        Command::Serve(args) => commands::serve::run(args, json),
        Command::Send(args) => commands::client::run_send(args, json),
        Command::Otp(args) => commands::client::run_otp(args, json),
        Command::Log(args) => commands::client::run_log(args, json),
        Command::Inbox(args) => commands::inbox::run(args, json),
        Command::Status(args) => commands::status::run(args, json),
        Command::Completions(args) => commands::completions::run_completions(args, Cli::command()),
        Command::Man(args) => commands::completions::run_man(args, Cli::command(), json),
    }
}
