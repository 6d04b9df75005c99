//! `[[webhook]]` tables: the raw TOML form and the validated [`WebhookSettings`].
//!
//! Validation happens at config load, so `serve`, `config check` and `doctor` refuse the same
//! files: a URL that is neither `https://` nor `http://` to loopback (or to a host the table
//! allows explicitly), an unknown event type, a secret that is not `whsec_<base64>` of 24–64
//! bytes. A `secret_file` is read when the daemon starts ([`WebhookSettings::secrets`]), like a
//! modem's `pin_file`, so a secret never has to sit in the config file.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::ConfigError;
use crate::model::EVENT_TYPES;

/// `secret` as written: one secret, or several while a rotation is under way.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSecret {
    /// `secret = "whsec_..."`.
    One(String),
    /// `secret = ["whsec_new...", "whsec_old..."]`: every delivery is signed with each.
    Many(Vec<String>),
}

impl fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawSecret(<redacted>)")
    }
}

/// One `[[webhook]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWebhook {
    /// `webhook[i].url`.
    pub url: String,
    /// `webhook[i].secret`.
    pub secret: Option<RawSecret>,
    /// `webhook[i].secret_file`: one `whsec_` secret per line.
    pub secret_file: Option<PathBuf>,
    /// `webhook[i].events`; empty means every event type.
    pub events: Vec<String>,
    /// `webhook[i].timeout_seconds`.
    pub timeout_seconds: u64,
    /// `webhook[i].retry_period_seconds`: how long an event is retried before it is dead.
    pub retry_period_seconds: u64,
    /// `webhook[i].allow_http_hosts`: hosts (besides loopback) plain `http://` may go to.
    pub allow_http_hosts: Vec<String>,
}

impl Default for RawWebhook {
    fn default() -> Self {
        RawWebhook {
            url: String::new(),
            secret: None,
            secret_file: None,
            events: Vec::new(),
            timeout_seconds: 10,
            retry_period_seconds: 24 * 60 * 60,
            allow_http_hosts: Vec::new(),
        }
    }
}

/// Where an endpoint's signing secrets come from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// From the config file, already checked.
    Inline(Vec<String>),
    /// From a file read at start.
    File(PathBuf),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Inline(s) => write!(f, "Inline({} secret(s))", s.len()),
            SecretSource::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

/// A validated `[[webhook]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Where events are POSTed.
    pub url: String,
    /// The signing secrets' source.
    pub secret: SecretSource,
    /// Event types sent; empty means all.
    pub events: Vec<String>,
    /// One attempt's limit (connect, send, answer).
    pub timeout: Duration,
    /// How long an undelivered event is retried before it is marked dead.
    pub retry_period: Duration,
}

/// A decoded signing key (the bytes after `whsec_`); never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(pub(crate) Vec<u8>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// Parses `whsec_<base64>` (Standard Webhooks: 24 to 64 random bytes). The error never echoes
/// the secret.
pub fn parse_secret(text: &str) -> Result<SigningKey, String> {
    let Some(b64) = text.trim().strip_prefix("whsec_") else {
        return Err(
            "a secret must start with whsec_ followed by base64 of 24 to 64 random bytes \
             (e.g. from: echo whsec_$(head -c 32 /dev/urandom | base64))"
                .into(),
        );
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "the part after whsec_ is not valid base64".to_string())?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(format!(
            "the secret holds {} bytes; Standard Webhooks secrets are 24 to 64 bytes",
            bytes.len()
        ));
    }
    Ok(SigningKey(bytes))
}

impl WebhookSettings {
    /// The signing keys, reading `secret_file` if that is the source. The error names the
    /// file and what is wrong, never its contents.
    pub fn secrets(&self) -> Result<Vec<SigningKey>, String> {
        match &self.secret {
            SecretSource::Inline(s) => s.iter().map(|t| parse_secret(t)).collect(),
            SecretSource::File(path) => {
                use std::io::Read;
                use std::os::unix::fs::MetadataExt;
                let read_err = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
                let mut file = std::fs::File::open(path).map_err(read_err)?;
                // The rule of pin_file and the key file: a secret others can read is refused.
                if file.metadata().map_err(read_err)?.mode() & 0o077 != 0 {
                    return Err(format!(
                        "{} can be read by group or others, and serve refuses it: make it the \
                         service user's alone with sudo chown simgate:simgate {} && sudo chmod \
                         600 {}",
                        path.display(),
                        path.display(),
                        path.display()
                    ));
                }
                let mut text = String::new();
                file.read_to_string(&mut text).map_err(read_err)?;
                let keys: Vec<SigningKey> = text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .enumerate()
                    .map(|(i, l)| {
                        parse_secret(l)
                            .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))
                    })
                    .collect::<Result<_, _>>()?;
                if keys.is_empty() {
                    return Err(format!("{} holds no secret", path.display()));
                }
                Ok(keys)
            }
        }
    }

    /// Whether `kind` passes the `events` filter.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == kind)
    }

    /// A digest of everything that defines the endpoint: a 410 disables it until this changes.
    /// The secrets enter only through SHA-256, and the digest stays in the local database.
    pub fn fingerprint(&self, keys: &[SigningKey]) -> String {
        let mut h = Sha256::new();
        for part in [self.url.as_bytes(), self.events.join(",").as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.update(self.timeout.as_millis().to_be_bytes());
        h.update(self.retry_period.as_millis().to_be_bytes());
        for k in keys {
            h.update((k.0.len() as u64).to_be_bytes());
            h.update(&k.0);
        }
        hex::encode(h.finalize())
    }

    /// The URL as logs and metrics show it: without user info, query or fragment, which may
    /// hold credentials.
    pub fn label(&self) -> String {
        label(&self.url)
    }
}

/// See [`WebhookSettings::label`].
pub fn label(url: &str) -> String {
    // A name that is not a URL (an internal consumer of the outbox) is shown as it is.
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{host}{path}")
}

/// Scheme and host of a URL, checked for the shape `ureq` accepts.
fn scheme_and_host(url: &str) -> Result<(String, String), String> {
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| "the URL needs a scheme (https://...)".to_string())?
        .to_ascii_lowercase();
    let host = uri
        .host()
        .ok_or_else(|| "the URL needs a host".to_string())?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("the URL must not carry user:password@; authenticate by the signature".into());
    }
    Ok((scheme, host))
}

/// Checks that `url` may receive events: `https://`, or `http://` to loopback or to a host in
/// `allow_http_hosts`, with no credentials in it. The reason says how to fix it, naming
/// `allow_key`, the config key that lists the hosts.
pub fn check_url(url: &str, allow_http_hosts: &[String], allow_key: &str) -> Result<(), String> {
    let (scheme, host) = scheme_and_host(url)?;
    match scheme.as_str() {
        "https" => Ok(()),
        "http"
            if is_loopback_host(&host)
                || allow_http_hosts
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(&host)) =>
        {
            Ok(())
        }
        "http" => Err(format!(
            "plain http:// to {host} would send events and signatures unencrypted; use \
             https://, or list {host:?} in {allow_key} if the network is trusted"
        )),
        other => Err(format!("scheme {other}:// is not supported; use https://")),
    }
}

/// Whether `host` is loopback: `localhost` or an address in 127.0.0.0/8 or `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks the `[[webhook]]` tables.
pub fn validate(raw: Vec<RawWebhook>, origin: &str) -> Result<Vec<WebhookSettings>, ConfigError> {
    let err = |key: String, reason: String| ConfigError {
        origin: origin.to_string(),
        key: Some(key),
        position: None,
        reason,
    };
    let mut out: Vec<WebhookSettings> = Vec::new();
    for (i, w) in raw.into_iter().enumerate() {
        let k = |name: &str| format!("webhook[{i}].{name}");
        if w.url.is_empty() {
            return Err(err(k("url"), "missing: where to POST events".into()));
        }
        check_url(&w.url, &w.allow_http_hosts, &k("allow_http_hosts"))
            .map_err(|r| err(k("url"), r))?;
        if out.iter().any(|o| o.url == w.url) {
            return Err(err(
                k("url"),
                "the same URL is configured twice; merge the tables (one may list several \
                 events)"
                    .into(),
            ));
        }
        let secret = match (w.secret, w.secret_file) {
            (Some(_), Some(_)) => {
                return Err(err(
                    k("secret_file"),
                    "give secret or secret_file, not both".into(),
                ));
            }
            (None, None) => {
                return Err(err(
                    k("secret"),
                    "missing: a whsec_ signing secret (or secret_file) is required, so \
                     receivers can verify each event"
                        .into(),
                ));
            }
            (Some(s), None) => {
                let list = match s {
                    RawSecret::One(s) => vec![s],
                    RawSecret::Many(v) => v,
                };
                if list.is_empty() {
                    return Err(err(k("secret"), "the list of secrets is empty".into()));
                }
                for (j, s) in list.iter().enumerate() {
                    parse_secret(s).map_err(|r| err(format!("webhook[{i}].secret[{j}]"), r))?;
                }
                SecretSource::Inline(list)
            }
            (None, Some(path)) => SecretSource::File(path),
        };
        for (j, e) in w.events.iter().enumerate() {
            if !EVENT_TYPES.contains(&e.as_str()) {
                return Err(err(
                    format!("webhook[{i}].events[{j}]"),
                    format!(
                        "unknown event type {e:?}; known: {}",
                        EVENT_TYPES.join(", ")
                    ),
                ));
            }
        }
        if !(1..=300).contains(&w.timeout_seconds) {
            return Err(err(
                k("timeout_seconds"),
                format!("{} is out of range (1..=300)", w.timeout_seconds),
            ));
        }
        if !(1..=30 * 24 * 60 * 60).contains(&w.retry_period_seconds) {
            return Err(err(
                k("retry_period_seconds"),
                format!(
                    "{} is out of range (1..=2592000, 30 days)",
                    w.retry_period_seconds
                ),
            ));
        }
        out.push(WebhookSettings {
            url: w.url,
            secret,
            events: w.events,
            timeout: Duration::from_secs(w.timeout_seconds),
            retry_period: Duration::from_secs(w.retry_period_seconds),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn one(f: impl FnOnce(&mut RawWebhook)) -> Result<Vec<WebhookSettings>, ConfigError> {
        let mut w = RawWebhook {
            url: "https://example.com/hook".into(),
            secret: Some(RawSecret::One(S.into())),
            ..RawWebhook::default()
        };
        f(&mut w);
        validate(vec![w], "t.toml")
    }

    fn reason(r: Result<Vec<WebhookSettings>, ConfigError>) -> (String, String) {
        let e = r.unwrap_err();
        (e.key.unwrap(), e.reason)
    }

    #[test]
    fn urls_secrets_events_and_ranges() {
        assert_eq!(one(|_| {}).unwrap()[0].events, Vec::<String>::new());
        one(|w| w.url = "http://127.0.0.1:9/x".into()).unwrap();
        one(|w| w.url = "http://[::1]:9/x".into()).unwrap();
        one(|w| w.url = "http://localhost/x".into()).unwrap();
        let (key, why) = reason(one(|w| w.url = "http://hooks.lan/x".into()));
        assert_eq!(key, "webhook[0].url");
        assert!(why.contains("allow_http_hosts"), "{why}");
        one(|w| {
            w.url = "http://hooks.lan/x".into();
            w.allow_http_hosts = vec!["HOOKS.lan".into()];
        })
        .unwrap();
        assert!(reason(one(|w| w.url = "ftp://x/".into())).1.contains("ftp"));
        assert!(
            reason(one(|w| w.url = "https://u:p@x/".into()))
                .1
                .contains("user")
        );
        let (key, why) = reason(one(|w| w.secret = Some(RawSecret::One("hunter2".into()))));
        assert_eq!(key, "webhook[0].secret[0]");
        assert!(why.contains("whsec_") && !why.contains("hunter2"));
        assert!(
            reason(one(|w| w.secret = Some(RawSecret::One("whsec_AAAA".into()))))
                .1
                .contains("24 to 64")
        );
        assert_eq!(reason(one(|w| w.secret = None)).0, "webhook[0].secret");
        let (key, why) = reason(one(|w| {
            w.events = vec!["otp.approved".into(), "otp.x".into()]
        }));
        assert_eq!(key, "webhook[0].events[1]");
        assert!(why.contains("otp.x"));
        assert_eq!(
            reason(one(|w| w.timeout_seconds = 0)).0,
            "webhook[0].timeout_seconds"
        );
        let w = one(|w| w.secret = Some(RawSecret::Many(vec![S.into(), S.into()]))).unwrap();
        assert_eq!(w[0].secrets().unwrap().len(), 2);
        assert!(format!("{w:?}").find("MfKQ").is_none());
    }

    #[test]
    fn secret_file_fingerprint_and_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, format!("{S}\n\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = one(|w| {
            w.secret = None;
            w.secret_file = Some(path.clone());
        })
        .unwrap()
        .remove(0);
        let e = open.secrets().unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let w = one(|w| {
            w.secret = None;
            w.secret_file = Some(path.clone());
        })
        .unwrap()
        .remove(0);
        let keys = w.secrets().unwrap();
        assert_eq!(keys.len(), 1);
        let mut other = w.clone();
        other.events = vec!["otp.approved".into()];
        assert_ne!(w.fingerprint(&keys), other.fingerprint(&keys));
        assert_eq!(w.fingerprint(&keys), w.clone().fingerprint(&keys));
        std::fs::write(&path, "nope\n").unwrap();
        let e = w.secrets().unwrap_err();
        assert!(e.contains("line 1") && !e.contains("nope"), "{e}");
        assert_eq!(
            label("https://u:p@h.example:8443/a/b?token=x#f"),
            "https://h.example:8443/a/b"
        );
    }
}
