//! `simgate send`: queue a plain text message.

use std::process::ExitCode;

use serde_json::json;

use super::{Client, ConnArgs, EXIT_STATUS_HELP, finish, s};

/// `simgate send`: queue a plain text message.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS_HELP)]
pub struct SendArgs {
    /// Recipient in E.164 form, e.g. +15551234567.
    #[arg(long, value_name = "NUMBER")]
    pub to: String,
    /// The text to send (long texts are split into concatenated parts).
    #[arg(long, value_name = "TEXT")]
    pub text: String,
    /// Makes a retried command safe: the daemon answers a repeated key with the first answer.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// How to reach the daemon.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Runs `simgate send`.
pub fn run_send(args: SendArgs, json: bool) -> ExitCode {
    let client = match Client::resolve(&args.conn) {
        Ok(c) => c,
        Err(e) => return e.report(json),
    };
    let body = json!({"to": args.to, "text": args.text});
    let res = client.request(
        "POST",
        "/v1/messages",
        &[],
        Some(&body),
        args.idempotency_key.as_deref(),
    );
    finish(res, json, |v| {
        format!(
            "queued {} ({} part{})",
            s(v, "id"),
            v["parts"],
            if v["parts"] == 1 { "" } else { "s" }
        )
    })
}
