//! The exit statuses of the client commands and `ClientError`, the one error they report (an
//! API problem or a local failure), as text or JSON. Shared by every command, `status` too.

use std::process::ExitCode;

use serde_json::{Map, Value, json};

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
    pub(super) fn local(kind: &str, title: &str, detail: String, exit: Exit) -> ClientError {
        ClientError {
            kind: kind.to_owned(),
            status: None,
            title: title.to_owned(),
            detail,
            exit,
            retry_after: None,
        }
    }

    pub(super) fn unreachable(base: &str, e: &ureq::Error) -> ClientError {
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

    pub(super) fn not_simgate(base: &str, status: u16) -> ClientError {
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
    pub(super) fn from_problem(status: u16, body: &Value, retry_after: Option<u64>) -> ClientError {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
