//! One file per CLI subcommand: its clap arguments and its `run` function.
//! `main.rs` only parses and dispatches; each `run` builds its own runtime if it needs one.

pub mod client;
pub mod config;
pub mod doctor;
pub mod modem;
pub mod pdu;
pub mod serve;
pub mod sim;
