//! The command line (clap types only; opens nothing).

use clap::{Parser, Subcommand};

/// Send one-time passwords by SMS straight from a SIM card.
#[derive(Debug, Parser)]
#[command(name = "simgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {}
