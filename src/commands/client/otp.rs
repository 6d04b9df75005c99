//! `simgate otp send|verify|resend|cancel|show` and the wording of their answers.

use std::process::ExitCode;

use serde_json::{Map, Value, json};

use super::output::path_segment;
use super::{Client, ConnArgs, EXIT_STATUS_HELP, Exit, finish, s};

/// `simgate otp`: send, verify, resend, cancel or show a one-time password.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS_HELP)]
pub struct OtpArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: OtpCommand,
    /// How to reach the daemon.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// The `simgate otp` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum OtpCommand {
    /// Send a fresh code to a number.
    Send(OtpSendArgs),
    /// Check a code, by OTP id or by number.
    Verify(OtpVerifyArgs),
    /// Send one more text with a fresh code for a pending OTP (earlier codes stay valid).
    Resend(OtpIdArgs),
    /// Cancel a pending OTP: none of its codes verifies any more.
    Cancel(OtpIdArgs),
    /// Show an OTP's status, attempts left, expiry and newest text.
    Show(OtpIdArgs),
}

/// `simgate otp send`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS_HELP)]
pub struct OtpSendArgs {
    /// Recipient in E.164 form, e.g. +15551234567.
    #[arg(long, value_name = "NUMBER")]
    pub to: String,
    /// Lifetime of the code in seconds (default: the daemon's otp.ttl_seconds).
    #[arg(long, value_name = "SECS")]
    pub ttl: Option<u32>,
    /// Number of digits (default: the daemon's otp.length).
    #[arg(long, value_name = "N")]
    pub length: Option<u32>,
    /// Adds the origin-bound line `@<HOST> #<code>` so browsers can autofill (WebOTP).
    #[arg(long, value_name = "HOST")]
    pub origin: Option<String>,
    /// Message template; must contain {code}, may contain {minutes}.
    #[arg(long, value_name = "TEMPLATE")]
    pub template: Option<String>,
    /// Makes a retried command safe: the daemon answers a repeated key with the first answer.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

/// `simgate otp verify`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS_HELP)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "to"])))]
pub struct OtpVerifyArgs {
    /// The OTP id printed by `otp send` (otp_…).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Check the newest pending code sent to this number instead.
    #[arg(long, value_name = "NUMBER")]
    pub to: Option<String>,
    /// The code the user typed.
    #[arg(long, value_name = "CODE")]
    pub code: String,
}

/// `simgate otp resend|cancel|show`.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS_HELP)]
pub struct OtpIdArgs {
    /// The OTP id printed by `otp send` (otp_…).
    #[arg(long, value_name = "ID")]
    pub id: String,
}

/// Runs `simgate otp …`.
pub fn run_otp(args: OtpArgs, json: bool) -> ExitCode {
    let client = match Client::resolve(&args.conn) {
        Ok(c) => c,
        Err(e) => return e.report(json),
    };
    match args.command {
        OtpCommand::Send(a) => {
            let mut body = Map::new();
            body.insert("to".into(), json!(a.to));
            if let Some(t) = a.ttl {
                body.insert("ttl_seconds".into(), json!(t));
            }
            if let Some(l) = a.length {
                body.insert("code_length".into(), json!(l));
            }
            if let Some(o) = a.origin {
                body.insert("origin".into(), json!(o));
            }
            if let Some(t) = a.template {
                body.insert("template".into(), json!(t));
            }
            let res = client.request(
                "POST",
                "/v1/otp",
                &[],
                Some(&Value::Object(body)),
                a.idempotency_key.as_deref(),
            );
            finish(res, json, otp_queued_text)
        }
        OtpCommand::Resend(a) => {
            let path = format!("/v1/otp/{}/resend", path_segment(&a.id));
            let res = client.request("POST", &path, &[], None, None);
            finish(res, json, otp_queued_text)
        }
        OtpCommand::Cancel(a) => {
            let path = format!("/v1/otp/{}", path_segment(&a.id));
            let res = client.request("DELETE", &path, &[], None, None);
            finish(res, json, |v| format!("{}: {}", s(v, "id"), s(v, "status")))
        }
        OtpCommand::Show(a) => {
            let path = format!("/v1/otp/{}", path_segment(&a.id));
            let res = client.request("GET", &path, &[], None, None);
            finish(res, json, otp_show_text)
        }
        OtpCommand::Verify(a) => {
            let res = match (&a.id, &a.to) {
                (Some(id), _) => client.request(
                    "POST",
                    &format!("/v1/otp/{}/verify", path_segment(id)),
                    &[],
                    Some(&json!({"code": a.code})),
                    None,
                ),
                (None, Some(to)) => client.request(
                    "POST",
                    "/v1/otp/verify",
                    &[],
                    Some(&json!({"to": to, "code": a.code})),
                    None,
                ),
                (None, None) => unreachable!("clap requires --id or --to"),
            };
            match res {
                Ok(v) => {
                    let verified = v["verified"] == true;
                    if json {
                        println!("{v}");
                    } else if verified {
                        println!("approved: {}", s(&v, "id"));
                    } else {
                        println!(
                            "not verified: {} is {} ({} remaining)",
                            s(&v, "id"),
                            s(&v, "status"),
                            attempts_remaining(&v)
                        );
                    }
                    // A wrong code is a normal answer of the API but a failure for a script.
                    if verified {
                        Exit::Success.into()
                    } else {
                        Exit::NotVerified.into()
                    }
                }
                // An OTP that has ended (approved, canceled, exhausted: 409; expired: 410)
                // accepts no code: for a script that is the same outcome as a wrong code.
                Err(mut e) if matches!(e.status, Some(409 | 410)) => {
                    e.exit = Exit::NotVerified;
                    e.report(json)
                }
                Err(e) => e.report(json),
            }
        }
    }
}

/// "1 attempt" / "3 attempts": the wording users see after a wrong code.
fn attempts_remaining(v: &Value) -> String {
    match v["attempts_remaining"].as_u64() {
        Some(n) => crate::otp::count_noun(n, "attempt"),
        None => "unknown attempts".to_owned(),
    }
}

/// The text of a `202` for `POST /v1/otp` or `POST /v1/otp/{id}/resend`.
fn otp_queued_text(v: &Value) -> String {
    format!(
        "queued OTP {} for {} (message {}), expires at {}",
        s(v, "id"),
        s(v, "to"),
        s(v, "message_id"),
        s(v, "expires_at")
    )
}

/// The text of `GET /v1/otp/{id}`.
fn otp_show_text(v: &Value) -> String {
    let mut out = format!(
        "{} to {}: {}, {} remaining, expires at {}",
        s(v, "id"),
        s(v, "to"),
        s(v, "status"),
        attempts_remaining(v),
        s(v, "expires_at")
    );
    let texts = v["texts"].as_u64().unwrap_or(0);
    let m = &v["message"];
    if m.is_object() {
        out.push_str(&format!(
            "\n{} text{}; newest: {} {}",
            texts,
            if texts == 1 { "" } else { "s" },
            s(m, "id"),
            s(m, "status")
        ));
        for (label, key) in [("sent", "sent_at"), ("delivered", "delivered_at")] {
            if let Some(t) = m[key].as_str() {
                out.push_str(&format!(", {label} at {t}"));
            }
        }
        if let Some(e) = m["error"].as_str() {
            out.push_str(&format!(" ({e})"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_attempt_is_singular() {
        let one = serde_json::json!({"attempts_remaining": 1});
        let many = serde_json::json!({"attempts_remaining": 4});
        assert_eq!(attempts_remaining(&one), "1 attempt");
        assert_eq!(attempts_remaining(&many), "4 attempts");
    }
}
