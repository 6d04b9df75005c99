//! One file per CLI subcommand: its clap arguments and its `run` function.
//! `main.rs` only parses and dispatches.
