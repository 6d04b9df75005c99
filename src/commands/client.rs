//! `simgate send`, `simgate otp`, `simgate log`: thin clients of a running daemon's HTTP API.
//!
//! They find the daemon and its token the way `serve` placed them: `--url`/`--token` first, then
//! the environment (`SIMGATE_URL`, `SIMGATE_TOKEN`), then the config file (`api.listen`, `api.tokens`,
//! `store.data_dir`), then the token file `<data_dir>/api-token` that `serve` creates when no token
//! is configured (also looked for in `./simgate-data`, where `serve --simulate` puts it).
//! Blocking HTTP (ureq) is enough for one request per run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use crate::commands::serve::SIMULATE_DATA_DIR;
use crate::config::DEFAULT_CONFIG_PATH;

/// How to reach the daemon; shared by every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnArgs {
    /// Base URL of the daemon, e.g. http://127.0.0.1:8787 (default: $SIMGATE_URL, else the
    /// config's api.listen).
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// API token (default: $SIMGATE_TOKEN, the config's api.tokens, or <data dir>/api-token).
    /// Prefer the environment: other local users can read command lines with `ps`.
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// Config file (default: /etc/simgate/simgate.toml when it exists).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Data directory holding api-token (default: the config's store.data_dir, or ./simgate-data).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
}

/// `simgate send`: queue a plain text message.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Recipient in E.164 form, e.g. +15551234567.
    #[arg(long)]
    pub to: String,
    /// The text to send (long texts are split into concatenated parts).
    #[arg(long)]
    pub text: String,
    /// Makes a retried command safe: the daemon answers a repeated key with the first answer.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// How to reach the daemon.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `simgate otp`: send or verify a one-time password.
#[derive(Debug, clap::Args)]
pub struct OtpArgs {
    /// `send` or `verify`.
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
}

/// `simgate otp send`.
#[derive(Debug, clap::Args)]
pub struct OtpSendArgs {
    /// Recipient in E.164 form, e.g. +15551234567.
    #[arg(long)]
    pub to: String,
    /// Lifetime of the code in seconds (default: the daemon's otp.ttl_seconds).
    #[arg(long)]
    pub ttl: Option<u32>,
    /// Number of digits (default: the daemon's otp.length).
    #[arg(long)]
    pub length: Option<u32>,
    /// Adds the origin-bound line `@<origin> #<code>` so browsers can autofill (WebOTP).
    #[arg(long)]
    pub origin: Option<String>,
    /// Message template; must contain {code}, may contain {minutes}.
    #[arg(long)]
    pub template: Option<String>,
    /// Makes a retried command safe: the daemon answers a repeated key with the first answer.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// `simgate otp verify`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "to"])))]
pub struct OtpVerifyArgs {
    /// The OTP id printed by `otp send` (otp_…).
    #[arg(long)]
    pub id: Option<String>,
    /// Check the newest pending code sent to this number instead.
    #[arg(long)]
    pub to: Option<String>,
    /// The code the user typed.
    #[arg(long)]
    pub code: String,
}

/// `simgate log`: the delivery log, newest first.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Only messages to this number.
    #[arg(long)]
    pub to: Option<String>,
    /// Only messages in this status (queued, sending, sent, delivered, failed, expired, canceled).
    #[arg(long)]
    pub status: Option<String>,
    /// At most this many messages.
    #[arg(long)]
    pub limit: Option<u32>,
    /// Only messages older than this message id (for paging).
    #[arg(long)]
    pub before: Option<String>,
    /// How to reach the daemon.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Runs `simgate send`.
pub fn run_send(args: SendArgs, json: bool) -> ExitCode {
    let client = match Client::resolve(&args.conn) {
        Ok(c) => c,
        Err(e) => return fail(&e),
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
        let mut out = format!(
            "queued {} ({} part{})",
            s(v, "id"),
            v["parts"],
            if v["parts"] == 1 { "" } else { "s" }
        );
        push_warnings(&mut out, v);
        out
    })
}

/// Appends the answer's `warnings` (multi-part texts and the like), one per line.
fn push_warnings(out: &mut String, v: &Value) {
    for w in v["warnings"].as_array().into_iter().flatten() {
        out.push_str(&format!("\nwarning: {}", w.as_str().unwrap_or("")));
    }
}

/// Runs `simgate otp send` / `simgate otp verify`.
pub fn run_otp(args: OtpArgs, json: bool) -> ExitCode {
    let client = match Client::resolve(&args.conn) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    match args.command {
        OtpCommand::Send(a) => {
            let mut body = serde_json::Map::new();
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
            finish(res, json, |v| {
                let mut out = format!(
                    "queued OTP {} for {} (message {}), expires at {}",
                    s(v, "id"),
                    s(v, "to"),
                    s(v, "message_id"),
                    s(v, "expires_at")
                );
                push_warnings(&mut out, v);
                out
            })
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
                            "not verified: {} is {} ({} attempts remaining)",
                            s(&v, "id"),
                            s(&v, "status"),
                            v["attempts_remaining"]
                        );
                    }
                    // A wrong code is a normal answer of the API but a failure for a script.
                    if verified {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => fail(&e),
            }
        }
    }
}

/// Runs `simgate log`.
pub fn run_log(args: LogArgs, json: bool) -> ExitCode {
    let client = match Client::resolve(&args.conn) {
        Ok(c) => c,
        Err(e) => return fail(&e),
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
    finish(res, json, |v| {
        let msgs = v["messages"].as_array().cloned().unwrap_or_default();
        if msgs.is_empty() {
            return "no messages".to_owned();
        }
        let mut out = format!(
            "{:<30} {:<16} {:<10} {:>5} {:<25} {}",
            "ID", "TO", "STATUS", "PARTS", "CREATED", "ERROR"
        );
        for m in &msgs {
            out.push_str(&format!(
                "\n{:<30} {:<16} {:<10} {:>5} {:<25} {}",
                s(m, "id"),
                s(m, "to"),
                s(m, "status"),
                m["parts"],
                s(m, "created_at"),
                s(m, "error")
            ));
        }
        out
    })
}

/// A string member for human output ("" when absent or null).
fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn finish(res: Result<Value, String>, json: bool, human: impl Fn(&Value) -> String) -> ExitCode {
    match res {
        Ok(v) => {
            if json {
                println!("{v}");
            } else {
                println!("{}", human(&v));
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("simgate: {msg}");
    ExitCode::from(1)
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
    /// `api.listen`, the daemon's address.
    pub listen: Option<String>,
    /// `api.tokens`; the first one is used.
    pub tokens: Vec<String>,
    /// `store.data_dir`, where `api-token` lives when no token is configured.
    pub data_dir: Option<PathBuf>,
}

/// A resolved daemon address and token (no `Debug`: it holds the token).
struct Client {
    /// Base URL without a trailing slash.
    base: String,
    /// The bearer token.
    token: String,
}

impl Client {
    fn resolve(conn: &ConnArgs) -> Result<Client, String> {
        let hints = load_hints(conn.config.as_deref())?;
        let env_url = std::env::var("SIMGATE_URL").ok().filter(|u| !u.is_empty());
        let base = match (conn.url.clone(), env_url) {
            (Some(u), _) | (None, Some(u)) => u.trim_end_matches('/').to_owned(),
            (None, None) => url_from_listen(hints.listen.as_deref().unwrap_or("127.0.0.1:8787")),
        };
        let env_token = std::env::var("SIMGATE_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        let token = match (&conn.token, env_token) {
            (Some(t), _) => t.clone(),
            (None, Some(t)) => t,
            (None, None) => token_from_files(conn.data_dir.as_deref(), &hints)?,
        };
        Ok(Client { base, token })
    }

    /// Sends one request and returns the JSON answer, or a message for the user (the problem's
    /// detail for an API error).
    fn request(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Value, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            // The daemon is on loopback; an HTTP_PROXY from the environment must not intercept.
            .proxy(None)
            .build()
            .into();
        let url = format!("{}{}", self.base, path);
        let auth = format!("Bearer {}", self.token);
        let result = match (method, body) {
            ("POST", Some(b)) => {
                let mut req = agent.post(&url).header("Authorization", &auth);
                if let Some(k) = idempotency_key {
                    req = req.header("Idempotency-Key", k);
                }
                req.send_json(b)
            }
            ("DELETE", _) => agent.delete(&url).header("Authorization", &auth).call(),
            _ => {
                let mut req = agent.get(&url).header("Authorization", &auth);
                for (k, v) in query {
                    req = req.query(*k, v);
                }
                req.call()
            }
        };
        let mut resp = result.map_err(|e| match e {
            ureq::Error::ConnectionFailed | ureq::Error::Io(_) | ureq::Error::HostNotFound => {
                format!(
                    "cannot reach the simgate daemon at {} ({e}); is `simgate serve` running? \
                     (set the address with --url or api.listen in the config)",
                    self.base
                )
            }
            ureq::Error::Timeout(_) => {
                format!("the daemon at {} did not answer in time", self.base)
            }
            other => format!("request to {} failed: {other}", self.base),
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("reading the answer from {} failed: {e}", self.base))?;
        let value: Value = serde_json::from_str(&text).map_err(|_| {
            format!(
                "{} answered {status} with a body that is not JSON; is it a simgate daemon?",
                self.base
            )
        })?;
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            let detail = value["detail"]
                .as_str()
                .or(value["title"].as_str())
                .unwrap_or("no detail given");
            let mut msg = format!("{status}: {detail}");
            if status == 401 {
                msg.push_str(
                    " (give the token with --token, SIMGATE_TOKEN or --data-dir of the daemon)",
                );
            }
            Err(msg)
        }
    }
}

/// `http://` URL for a listen address; an unspecified bind address is reached on loopback.
fn url_from_listen(listen: &str) -> String {
    let addr = listen
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "[::1]:");
    format!("http://{addr}")
}

fn token_from_files(data_dir: Option<&Path>, hints: &ConfigHints) -> Result<String, String> {
    if data_dir.is_none()
        && let Some(t) = hints.tokens.iter().find(|t| !t.is_empty())
    {
        return Ok(t.clone());
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    match data_dir {
        Some(d) => candidates.push(d.join("api-token")),
        None => {
            if let Some(d) = &hints.data_dir {
                candidates.push(d.join("api-token"));
            }
            candidates.push(PathBuf::from(SIMULATE_DATA_DIR).join("api-token"));
        }
    }
    let mut denied = None;
    for path in &candidates {
        match std::fs::read_to_string(path) {
            Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
            Ok(_) => {}
            // Keep looking (a simulated daemon's token may be next), but if nothing is found,
            // this is the likeliest explanation.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && denied.is_none() => {
                denied = Some(path.clone());
            }
            Err(_) => {}
        }
    }
    if let Some(path) = denied {
        return Err(format!(
            "cannot read the API token {}: permission denied (run as the daemon's user or give \
             --token)",
            path.display()
        ));
    }
    let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(format!(
        "no API token: give --token or SIMGATE_TOKEN, or point --data-dir at the daemon's data \
         directory (looked in {})",
        tried.join(", ")
    ))
}

fn load_hints(path: Option<&Path>) -> Result<ConfigHints, String> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let config = if !explicit && !path.exists() {
        crate::config::Config::default()
    } else {
        crate::config::Config::load(&path).map_err(|e| e.to_string())?
    };
    Ok(ConfigHints {
        listen: Some(config.api.listen.to_string()),
        tokens: config.api.tokens.clone(),
        data_dir: Some(config.store.data_dir.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn token_file_in_explicit_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api-token"), "tok123\n").unwrap();
        let hints = ConfigHints {
            tokens: vec!["configured".into()],
            ..Default::default()
        };
        // An explicit --data-dir wins over configured tokens: the user pointed at that daemon.
        assert_eq!(
            token_from_files(Some(dir.path()), &hints).unwrap(),
            "tok123"
        );
        assert_eq!(token_from_files(None, &hints).unwrap(), "configured");
        let empty = tempfile::tempdir().unwrap();
        let err = token_from_files(Some(empty.path()), &ConfigHints::default()).unwrap_err();
        assert!(err.contains("--token"), "{err}");
    }
}
