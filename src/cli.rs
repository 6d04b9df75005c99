//! The command line (clap types only; opens nothing).

use clap::{Parser, Subcommand};
use simgate::commands;

/// Send one-time passwords by SMS straight from a SIM card.
#[derive(Debug, Parser)]
#[command(name = "simgate", version, about)]
pub struct Cli {
    /// Print machine-readable JSON instead of text; the daemon's clients print errors as one JSON
    /// object on stderr.
    // After each command's own options, so every `--help` lists them in the same order.
    #[arg(long, global = true, display_order = 900)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Encode or decode SMS PDUs (3GPP TS 23.040).
    Pdu(commands::pdu::PduArgs),
    /// Run a simulated modem on a pseudo-terminal.
    Sim(commands::sim::SimArgs),
    /// Talk to a modem directly.
    Modem(commands::modem::ModemArgs),
    /// Diagnose serial ports, ModemManager, permissions, SIM and network, with fixes.
    Doctor(commands::doctor::DoctorArgs),
    /// Check a config file.
    Config(commands::config::ConfigArgs),
    /// Run the daemon.
    Serve(commands::serve::ServeArgs),
    /// Send a text through a running daemon.
    Send(commands::client::SendArgs),
    /// Send, verify, resend, cancel or show a one-time password through a running daemon.
    Otp(commands::client::OtpArgs),
    /// Show the delivery log of a running daemon.
    Log(commands::client::LogArgs),
    /// Show the texts a running daemon received.
    Inbox(commands::inbox::InboxArgs),
    /// Show a running daemon at a glance: readiness, queue, sends and modems.
    Status(commands::status::StatusArgs),
    /// Print a shell completion script.
    Completions(commands::completions::CompletionsArgs),
    /// Write the man pages into a directory (for packaging).
    #[command(hide = true)]
    Man(commands::completions::ManArgs),
}
