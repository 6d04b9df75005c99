//! `simgate send`, `simgate otp`, `simgate log`: thin clients of a running daemon's HTTP API, and
//! the connection, token and error handling that `simgate status` shares with them.
//!
//! They find the daemon and its token the way `serve` placed them: `--url`/`--token` first, then
//! the environment (`SIMGATE_URL`, `SIMGATE_TOKEN`), then the config file (`api.listen`,
//! `api.tokens`, `store.data_dir`), then the token file `<data_dir>/api-token` that `serve` creates
//! when no token is configured, and `./simgate-data/api-token`, where `serve --simulate` puts it.
//! Without an explicit token every one of those that exists is a candidate: a token the daemon
//! refuses (401: the request was not processed) makes the client try the next, so a stale
//! `/var/lib/simgate/api-token` cannot hide the token of the `serve --simulate` that answers.
//!
//! Errors leave as one line `simgate: …` on stderr, or with `--json` as one JSON object
//! `{"error": {"kind", "status", "title", "detail", "exit_code"}}` on stderr; the exit status
//! says what kind of failure it was ([`Exit`]). Blocking HTTP (ureq) is enough for a few requests
//! per run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::commands::serve::SIMULATE_DATA_DIR;
use crate::config::DEFAULT_CONFIG_PATH;

/// The exit statuses of the client commands, for `--help`.
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success
  1  any other error (an invalid request, a server error, a bad config file)
  2  wrong command-line usage
  3  the code was not accepted (otp verify: wrong, expired, used up or canceled)
  4  authentication: no token found or readable, or the daemon refused it (401)
  5  not found (404): no such OTP or message
  6  rate limited (429): try again after the time the message names
  7  unavailable (503): the queue is full, or (status) no modem is ready
  8  daemon unreachable: nothing answers at the address, or it is not simgate";

/// What a client command's exit status says; see [`EXIT_STATUS_HELP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0.
    Success,
    /// 1: everything not named below.
    Failure,
    /// 3: `otp verify` got a normal answer that the code is not good.
    NotVerified,
    /// 4: no usable token, or 401.
    Auth,
    /// 5: 404.
    NotFound,
    /// 6: 429.
    RateLimited,
    /// 7: 503.
    Unavailable,
    /// 8: no connection, a timeout, or an answer that is not simgate's.
    Unreachable,
}

impl Exit {
    /// The numeric status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::NotVerified => 3,
            Exit::Auth => 4,
            Exit::NotFound => 5,
            Exit::RateLimited => 6,
            Exit::Unavailable => 7,
            Exit::Unreachable => 8,
        }
    }

    /// The exit status for an HTTP error status.
    fn for_http(status: u16) -> Exit {
        match status {
            401 => Exit::Auth,
            404 => Exit::NotFound,
            429 => Exit::RateLimited,
            503 => Exit::Unavailable,
            _ => Exit::Failure,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// A failed client command: an API problem (RFC 9457) or a failure before any answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientError {
    /// The problem type's slug (`not-found`, `rate-limited`, …) for API errors; for local ones
    /// `unreachable`, `timeout`, `not-simgate`, `no-token`, `token-unreadable`, `config`.
    pub kind: String,
    /// The HTTP status, when the daemon answered.
    pub status: Option<u16>,
    /// A short summary, the same for every error of one kind.
    pub title: String,
    /// What went wrong this time and what to do about it.
    pub detail: String,
    /// The exit status this error ends the command with.
    pub exit: Exit,
    /// `Retry-After` of a 429 or 503, in seconds.
    pub retry_after: Option<u64>,
}

impl ClientError {
    fn local(kind: &str, title: &str, detail: String, exit: Exit) -> ClientError {
        ClientError {
            kind: kind.to_owned(),
            status: None,
            title: title.to_owned(),
            detail,
            exit,
            retry_after: None,
        }
    }

    fn unreachable(base: &str, e: &ureq::Error) -> ClientError {
        match e {
            ureq::Error::Timeout(_) => ClientError::local(
                "timeout",
                "The daemon did not answer in time",
                format!("the daemon at {base} did not answer in time"),
                Exit::Unreachable,
            ),
            _ => ClientError::local(
                "unreachable",
                "The daemon cannot be reached",
                format!(
                    "cannot reach the simgate daemon at {base} ({e}); is `simgate serve` \
                     running? (set the address with --url or api.listen in the config)"
                ),
                Exit::Unreachable,
            ),
        }
    }

    fn not_simgate(base: &str, status: u16) -> ClientError {
        ClientError::local(
            "not-simgate",
            "The answer is not simgate's",
            format!(
                "{base} answered {status} with a body that is not JSON; is it a simgate daemon?"
            ),
            Exit::Unreachable,
        )
    }

    /// The error for a non-2xx answer whose body is a problem (or at least JSON).
    fn from_problem(status: u16, body: &Value, retry_after: Option<u64>) -> ClientError {
        let kind = body["type"]
            .as_str()
            .and_then(|t| t.rsplit('/').next())
            .filter(|k| !k.is_empty())
            .map_or_else(|| format!("http-{status}"), str::to_owned);
        let title = body["title"].as_str().unwrap_or("Error").to_owned();
        let detail = body["detail"]
            .as_str()
            .map_or_else(|| title.clone(), str::to_owned);
        ClientError {
            kind,
            status: Some(status),
            title,
            detail,
            exit: Exit::for_http(status),
            retry_after,
        }
    }

    /// The `--json` form.
    pub fn to_json(&self) -> Value {
        let mut e = Map::new();
        e.insert("kind".into(), json!(self.kind));
        e.insert("status".into(), json!(self.status));
        e.insert("title".into(), json!(self.title));
        e.insert("detail".into(), json!(self.detail));
        e.insert("exit_code".into(), json!(self.exit.code()));
        if let Some(s) = self.retry_after {
            e.insert("retry_after".into(), json!(s));
        }
        json!({ "error": e })
    }

    /// The text form (without the `simgate: ` prefix).
    pub fn to_text(&self) -> String {
        let mut out = match self.status {
            Some(s) => format!("{s}: {}", self.detail),
            None => self.detail.clone(),
        };
        // The daemon's details usually say when to retry already; say it only when they do not.
        if let Some(s) = self.retry_after
            && !self.detail.contains("retry")
        {
            out.push_str(&format!(" (retry in {s} s)"));
        }
        out
    }

    /// Prints the error on stderr and returns its exit status.
    pub fn report(&self, json: bool) -> ExitCode {
        if json {
            eprintln!("{}", self.to_json());
        } else {
            eprintln!("simgate: {}", self.to_text());
        }
        self.exit.into()
    }
}

/// How to reach the daemon; shared by every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnArgs {
    /// Base URL of the daemon (default: $SIMGATE_URL, else http:// and the config's api.listen).
    #[arg(long, global = true, value_name = "URL", help_heading = "Daemon")]
    pub url: Option<String>,
    /// API token (default: $SIMGATE_TOKEN, the config's api.tokens, <data dir>/api-token, then
    /// ./simgate-data/api-token). Prefer the environment: other local users can read command
    /// lines with `ps`.
    #[arg(long, global = true, value_name = "TOKEN", help_heading = "Daemon")]
    pub token: Option<String>,
    /// Config file (default: /etc/simgate/simgate.toml when it exists).
    #[arg(long, global = true, value_name = "FILE", help_heading = "Daemon")]
    pub config: Option<PathBuf>,
    /// Data directory holding the daemon's api-token (default: the config's store.data_dir,
    /// then ./simgate-data).
    #[arg(long, global = true, value_name = "DIR", help_heading = "Daemon")]
    pub data_dir: Option<PathBuf>,
}

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

/// `simgate log`: the delivery log, newest first.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_STATUS_HELP)]
pub struct LogArgs {
    /// Only messages to this number.
    #[arg(long, value_name = "NUMBER")]
    pub to: Option<String>,
    /// Only messages in this status (queued, sending, sent, delivered, failed, expired, canceled).
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// At most this many messages (default: the daemon's page size).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Only messages older than this message id or RFC 3339 time; the `next page` line of the
    /// previous page (`next_before` in JSON) gives the id.
    #[arg(long, value_name = "ID")]
    pub before: Option<String>,
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

/// Runs `simgate log`.
pub fn run_log(args: LogArgs, json: bool) -> ExitCode {
    let client = match Client::resolve(&args.conn) {
        Ok(c) => c,
        Err(e) => return e.report(json),
    };
    let mut query = Vec::new();
    if let Some(to) = &args.to {
        query.push(("to", to.clone()));
    }
    if let Some(st) = &args.status {
        query.push(("status", st.clone()));
    }
    if let Some(l) = args.limit {
        query.push(("limit", l.to_string()));
    }
    if let Some(b) = &args.before {
        query.push(("before", b.clone()));
    }
    let res = client.request("GET", "/v1/messages", &query, None, None);
    finish(res, json, log_text)
}

/// The delivery log as a table sized to its contents, then the cursor of the next page.
fn log_text(v: &Value) -> String {
    let msgs = v["messages"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut out = if msgs.is_empty() {
        "no messages".to_owned()
    } else {
        let header = ["ID", "TO", "STATUS", "PARTS", "CREATED", "ERROR"].map(str::to_owned);
        let mut rows = vec![header];
        for m in msgs {
            rows.push([
                s(m, "id").to_owned(),
                s(m, "to").to_owned(),
                s(m, "status").to_owned(),
                m["parts"].to_string(),
                s(m, "created_at").to_owned(),
                s(m, "error").to_owned(),
            ]);
        }
        table(&rows, &[false, false, false, true, false, false])
    };
    if let Some(next) = v["next_before"].as_str() {
        out.push_str(&format!("\nnext page: --before {next}"));
    }
    out
}

/// Left-aligned columns (right-aligned where `right` says) two spaces apart, each as wide as its
/// widest cell; no trailing blanks.
pub(crate) fn table<const N: usize>(rows: &[[String; N]], right: &[bool; N]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut lines = Vec::with_capacity(rows.len());
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if right[i] {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
        lines.push(line.trim_end().to_owned());
    }
    lines.join("\n")
}

/// A string member for human output ("" when absent or null).
pub(crate) fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

/// Prints an answer (JSON as received, or `human`'s text with each of its `warnings` on stderr)
/// or reports the error.
pub(crate) fn finish(
    res: Result<Value, ClientError>,
    json: bool,
    human: impl Fn(&Value) -> String,
) -> ExitCode {
    match res {
        Ok(v) => {
            if json {
                println!("{v}");
            } else {
                println!("{}", human(&v));
                for w in warnings(&v) {
                    eprintln!("warning: {w}");
                }
            }
            Exit::Success.into()
        }
        Err(e) => e.report(json),
    }
}

/// The answer's `warnings` (no modem ready, a multi-part text, …); none when absent.
fn warnings(v: &Value) -> Vec<String> {
    v["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| match w.as_str() {
            Some(s) => s.to_owned(),
            None => w.to_string(),
        })
        .collect()
}

/// Percent-encodes an id for use as one path segment; ids are ASCII letters, digits and `_`, but a
/// user may paste anything.
fn path_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What the client commands read from a config file.
#[derive(Debug, Clone, PartialEq, Default)]
struct ConfigHints {
    /// The file they came from; `None` for the built-in defaults.
    pub file: Option<PathBuf>,
    /// `api.listen`, the daemon's address.
    pub listen: Option<String>,
    /// `api.tokens`; the first one is used.
    pub tokens: Vec<String>,
    /// `store.data_dir`, where `api-token` lives when no token is configured.
    pub data_dir: Option<PathBuf>,
}

/// A token to try and where it came from (no `Debug`: it holds the token).
struct TokenCandidate {
    /// The bearer token.
    token: String,
    /// For messages: `--token`, `$SIMGATE_TOKEN`, `api.tokens in FILE` or the token file's path.
    source: String,
}

/// Every token worth trying, in order, and the token files that exist but could not be read.
struct TokenCandidates {
    /// Tried in order until the daemon accepts one.
    candidates: Vec<TokenCandidate>,
    /// Token files that exist but are unreadable (permission denied): named when all else fails.
    unreadable: Vec<PathBuf>,
    /// Every token file looked at, for the "no token" message.
    looked_in: Vec<PathBuf>,
}

/// A resolved daemon address and its candidate tokens (no `Debug`: it holds tokens).
pub(crate) struct Client {
    /// Base URL without a trailing slash.
    pub base: String,
    /// Tokens to try; empty when none was found (then `no_token` says why).
    tokens: Vec<TokenCandidate>,
    /// Why there is no token, for requests that need one.
    no_token: Option<ClientError>,
    /// Token files that could not be read, for the message of a 401.
    unreadable: Vec<PathBuf>,
}

/// One raw HTTP answer.
pub(crate) struct Answer {
    /// Status code.
    pub status: u16,
    /// `Retry-After` in seconds.
    pub retry_after: Option<u64>,
    /// The body as text.
    pub body: String,
}

impl Client {
    /// Finds the daemon and at least one token; an error when no token can be found.
    pub(crate) fn resolve(conn: &ConnArgs) -> Result<Client, ClientError> {
        let client = Client::resolve_lenient(conn)?;
        match &client.no_token {
            Some(e) => Err(e.clone()),
            None => Ok(client),
        }
    }

    /// Finds the daemon; a missing token is kept as `no_token` for routes that need one, so
    /// `status` can still read the routes that need none.
    pub(crate) fn resolve_lenient(conn: &ConnArgs) -> Result<Client, ClientError> {
        let hints = load_hints(conn.config.as_deref())?;
        let env_url = std::env::var("SIMGATE_URL").ok().filter(|u| !u.is_empty());
        let base = match (conn.url.clone(), env_url) {
            (Some(u), _) | (None, Some(u)) => u.trim_end_matches('/').to_owned(),
            (None, None) => url_from_listen(hints.listen.as_deref().unwrap_or("127.0.0.1:8787")),
        };
        let env_token = std::env::var("SIMGATE_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        let found = token_candidates(
            conn.token.as_deref(),
            env_token.as_deref(),
            conn.data_dir.as_deref(),
            &hints,
        );
        let no_token = found.candidates.is_empty().then(|| no_token_error(&found));
        Ok(Client {
            base,
            tokens: found.candidates,
            no_token,
            unreadable: found.unreadable,
        })
    }

    /// Sends one authenticated request and returns the JSON answer. A 401 moves on to the next
    /// candidate token: the daemon refused the request before doing anything, so it is safe to
    /// repeat.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, ClientError> {
        if let Some(e) = &self.no_token {
            return Err(e.clone());
        }
        let mut refused: Vec<&str> = Vec::new();
        for candidate in &self.tokens {
            let answer = self.send(
                method,
                path,
                query,
                body,
                idempotency_key,
                Some(&candidate.token),
            )?;
            if answer.status == 401 {
                refused.push(&candidate.source);
                if refused.len() < self.tokens.len() {
                    continue;
                }
            }
            return self.interpret(answer, &refused);
        }
        unreachable!("the loop returns on the last candidate")
    }

    /// Turns an answer into its JSON or a [`ClientError`]; `refused` names the token sources a
    /// 401 refused.
    fn interpret(&self, answer: Answer, refused: &[&str]) -> Result<Value, ClientError> {
        let value: Value = serde_json::from_str(&answer.body)
            .map_err(|_| ClientError::not_simgate(&self.base, answer.status))?;
        if (200..300).contains(&answer.status) {
            return Ok(value);
        }
        let mut err = ClientError::from_problem(answer.status, &value, answer.retry_after);
        if answer.status == 401 {
            err.detail.push_str(&format!(
                "; the daemon refused the token from {}",
                refused.join(", then from ")
            ));
            for path in &self.unreadable {
                err.detail.push_str(&format!(
                    "; {} exists but cannot be read (permission denied)",
                    path.display()
                ));
            }
            err.detail.push_str(
                " (give the daemon's token with --token or SIMGATE_TOKEN, or its data directory \
                 with --data-dir)",
            );
        }
        Err(err)
    }

    /// One HTTP request without a token, as the daemon's `/healthz`, `/readyz` and `/metrics`
    /// take it.
    pub(crate) fn get_public(&self, path: &str) -> Result<Answer, ClientError> {
        self.send("GET", path, &[], None, None, None)
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        idempotency_key: Option<&str>,
        token: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            // The daemon is on loopback; an HTTP_PROXY from the environment must not intercept.
            .proxy(None)
            .build()
            .into();
        let url = format!("{}{}", self.base, path);
        let auth = token.map(|t| format!("Bearer {t}"));
        let result = match method {
            "POST" => {
                let mut req = agent.post(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                if let Some(k) = idempotency_key {
                    req = req.header("Idempotency-Key", k);
                }
                match body {
                    Some(b) => req.send_json(b),
                    None => req.send_empty(),
                }
            }
            "DELETE" => {
                let mut req = agent.delete(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
            _ => {
                let mut req = agent.get(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                for (k, v) in query {
                    req = req.query(*k, v);
                }
                req.call()
            }
        };
        let mut resp = result.map_err(|e| ClientError::unreachable(&self.base, &e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| ClientError::unreachable(&self.base, &e))?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

/// `http://` URL for a listen address; an unspecified bind address is reached on loopback.
fn url_from_listen(listen: &str) -> String {
    let addr = listen
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "[::1]:");
    format!("http://{addr}")
}

/// The tokens to try, in order: an explicit `--token` or `$SIMGATE_TOKEN` alone; an explicit
/// `--data-dir`'s token file alone; else the config's first token, its data dir's token file,
/// and `./simgate-data/api-token`, each once.
fn token_candidates(
    flag: Option<&str>,
    env: Option<&str>,
    data_dir: Option<&Path>,
    hints: &ConfigHints,
) -> TokenCandidates {
    let mut found = TokenCandidates {
        candidates: Vec::new(),
        unreadable: Vec::new(),
        looked_in: Vec::new(),
    };
    if let Some(t) = flag {
        found.candidates.push(TokenCandidate {
            token: t.to_owned(),
            source: "--token".into(),
        });
        return found;
    }
    if let Some(t) = env {
        found.candidates.push(TokenCandidate {
            token: t.to_owned(),
            source: "$SIMGATE_TOKEN".into(),
        });
        return found;
    }
    let mut files: Vec<PathBuf> = Vec::new();
    match data_dir {
        Some(d) => files.push(d.join("api-token")),
        None => {
            if let Some(t) = hints.tokens.iter().find(|t| !t.is_empty()) {
                let file = hints
                    .file
                    .as_ref()
                    .map_or_else(|| "the config".to_owned(), |f| f.display().to_string());
                found.candidates.push(TokenCandidate {
                    token: t.clone(),
                    source: format!("api.tokens in {file}"),
                });
            }
            if let Some(d) = &hints.data_dir {
                files.push(d.join("api-token"));
            }
            files.push(PathBuf::from(SIMULATE_DATA_DIR).join("api-token"));
        }
    }
    for path in files {
        if found.looked_in.contains(&path) {
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(t) => {
                let t = t.trim();
                if !t.is_empty() && !found.candidates.iter().any(|c| c.token == t) {
                    found.candidates.push(TokenCandidate {
                        token: t.to_owned(),
                        source: path.display().to_string(),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                found.unreadable.push(path.clone());
            }
            Err(_) => {}
        }
        found.looked_in.push(path);
    }
    found
}

/// Why no token was found: an unreadable token file is the likeliest explanation.
fn no_token_error(found: &TokenCandidates) -> ClientError {
    if let Some(path) = found.unreadable.first() {
        return ClientError::local(
            "token-unreadable",
            "The API token cannot be read",
            format!(
                "cannot read the API token {}: permission denied (run as the daemon's user or \
                 give --token)",
                path.display()
            ),
            Exit::Auth,
        );
    }
    let tried: Vec<String> = found
        .looked_in
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    ClientError::local(
        "no-token",
        "No API token",
        format!(
            "no API token: give --token or SIMGATE_TOKEN, or point --data-dir at the daemon's \
             data directory (looked in {})",
            tried.join(", ")
        ),
        Exit::Auth,
    )
}

fn load_hints(path: Option<&Path>) -> Result<ConfigHints, ClientError> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let (config, file) = if !explicit && !path.exists() {
        (crate::config::Config::default(), None)
    } else {
        let config = crate::config::Config::load(&path).map_err(|e| {
            ClientError::local(
                "config",
                "The config file is invalid",
                e.to_string(),
                Exit::Failure,
            )
        })?;
        (config, Some(path))
    };
    Ok(ConfigHints {
        file,
        listen: Some(config.api.listen.to_string()),
        tokens: config.api.tokens.clone(),
        data_dir: Some(config.store.data_dir.clone()),
    })
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

    #[test]
    fn listen_to_url() {
        assert_eq!(url_from_listen("127.0.0.1:8787"), "http://127.0.0.1:8787");
        assert_eq!(url_from_listen("0.0.0.0:9000"), "http://127.0.0.1:9000");
        assert_eq!(url_from_listen("[::]:9000"), "http://[::1]:9000");
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("otp_ABC123"), "otp_ABC123");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }

    fn tokens_of(found: &TokenCandidates) -> Vec<(&str, &str)> {
        found
            .candidates
            .iter()
            .map(|c| (c.token.as_str(), c.source.as_str()))
            .collect()
    }

    #[test]
    fn token_candidates_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api-token"), "tok123\n").unwrap();
        let hints = ConfigHints {
            tokens: vec!["configured".into()],
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let file = dir.path().join("api-token").display().to_string();
        // An explicit --data-dir is the only candidate: the user pointed at that daemon.
        let found = token_candidates(None, None, Some(dir.path()), &hints);
        assert_eq!(tokens_of(&found), [("tok123", file.as_str())]);
        // Without it: the configured token, then the data dir's file.
        let found = token_candidates(None, None, None, &hints);
        assert_eq!(
            tokens_of(&found),
            [
                ("configured", "api.tokens in the config"),
                ("tok123", file.as_str())
            ]
        );
        // An explicit token or the environment is the only candidate.
        let found = token_candidates(Some("flag"), Some("env"), None, &hints);
        assert_eq!(tokens_of(&found), [("flag", "--token")]);
        let found = token_candidates(None, Some("env"), Some(dir.path()), &hints);
        assert_eq!(tokens_of(&found), [("env", "$SIMGATE_TOKEN")]);
        let empty = tempfile::tempdir().unwrap();
        let found = token_candidates(None, None, Some(empty.path()), &ConfigHints::default());
        let err = no_token_error(&found);
        assert_eq!(err.exit, Exit::Auth);
        assert!(err.detail.contains("--token"), "{}", err.detail);
    }

    #[test]
    fn problems_become_errors_with_their_exit_status() {
        let body = json!({
            "type": "https://simgate.dev/problems/rate-limited",
            "title": "Rate limit reached",
            "status": 429,
            "detail": "3 codes per 10 minutes",
        });
        let e = ClientError::from_problem(429, &body, Some(42));
        assert_eq!(e.exit, Exit::RateLimited);
        assert_eq!(
            e.to_json(),
            json!({"error": {"kind": "rate-limited", "status": 429, "title": "Rate limit reached",
                "detail": "3 codes per 10 minutes", "exit_code": 6, "retry_after": 42}})
        );
        assert_eq!(e.to_text(), "429: 3 codes per 10 minutes (retry in 42 s)");
        for (status, exit) in [
            (401, Exit::Auth),
            (404, Exit::NotFound),
            (503, Exit::Unavailable),
            (422, Exit::Failure),
            (500, Exit::Failure),
        ] {
            assert_eq!(
                ClientError::from_problem(status, &json!({}), None).exit,
                exit
            );
        }
        let codes: Vec<u8> = [
            Exit::Success,
            Exit::Failure,
            Exit::NotVerified,
            Exit::Auth,
            Exit::NotFound,
            Exit::RateLimited,
            Exit::Unavailable,
            Exit::Unreachable,
        ]
        .map(Exit::code)
        .to_vec();
        for c in &codes {
            assert!(
                EXIT_STATUS_HELP.contains(&format!("\n  {c}  ")),
                "exit status {c} is not in the help"
            );
        }
    }

    #[test]
    fn log_table_fits_its_ids_and_shows_the_cursor() {
        let id = "msg_0123456789abcdef0123456789abcdef";
        let v = json!({
            "messages": [
                {"id": id, "to": "+15551230001", "status": "sent", "parts": 1,
                 "created_at": "2026-12-03T08:00:00.120Z", "error": null},
                {"id": "msg_ffffffffffffffffffffffffffffffff", "to": "+15551230002",
                 "status": "failed", "parts": 12, "created_at": "2026-12-03T07:59:59.000Z",
                 "error": "+CMS ERROR 1"},
            ],
            "next_before": "msg_ffffffffffffffffffffffffffffffff",
        });
        let text = log_text(&v);
        let lines: Vec<&str> = text.lines().collect();
        // Every column starts at the same place in every row, after the whole id.
        let to_col = lines[0].find("TO").unwrap();
        assert!(to_col > id.len(), "{text}");
        assert_eq!(lines[1].find("+15551230001"), Some(to_col), "{text}");
        assert_eq!(lines[2].find("+15551230002"), Some(to_col), "{text}");
        let created = lines[0].find("CREATED").unwrap();
        assert_eq!(lines[1].find("2026-12-03T08"), Some(created), "{text}");
        assert!(lines[2].ends_with("+CMS ERROR 1"), "{text}");
        assert_eq!(
            lines[3],
            "next page: --before msg_ffffffffffffffffffffffffffffffff"
        );
        assert_eq!(log_text(&json!({"messages": []})), "no messages");
    }

    #[test]
    fn warnings_are_read_when_present() {
        assert!(warnings(&json!({"id": "x"})).is_empty());
        assert_eq!(
            warnings(&json!({"warnings": ["no modem is ready", "two parts"]})),
            ["no modem is ready", "two parts"]
        );
    }
}
