//! Reaching the daemon: the address and the candidate tokens (flag, environment, config, token
//! files), and the blocking HTTP requests that try each token in turn. Separate because it is
//! the one part that does network and file I/O.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::commands::serve::SIMULATE_DATA_DIR;
use crate::config::DEFAULT_CONFIG_PATH;

use super::{ClientError, ConnArgs, Exit};

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
    fn listen_to_url() {
        assert_eq!(url_from_listen("127.0.0.1:8787"), "http://127.0.0.1:8787");
        assert_eq!(url_from_listen("0.0.0.0:9000"), "http://127.0.0.1:9000");
        assert_eq!(url_from_listen("[::]:9000"), "http://[::1]:9000");
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
}
