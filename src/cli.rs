//! The command line (clap types only; opens nothing).

use clap::{Parser, Subcommand};
use simgate::commands;

/// Send one-time passwords by SMS straight from a SIM card.
#[derive(Debug, Parser)]
#[command(name = "simgate", version, about)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
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
    /// Send or verify a one-time password through a running daemon.
    Otp(commands::client::OtpArgs),
    /// Show the delivery log of a running daemon.
    Log(commands::client::LogArgs),
}
