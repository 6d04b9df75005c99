//! `[twilio]`: the Twilio-compatible API (`src/http/twilio/`), off unless `enabled = true`.
//!
//! The auth token is a secret: it comes inline or from a file (mode 0600, read by `serve` at
//! start through [`TwilioSettings::auth_token`]), and `Debug` never shows it.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use serde::Deserialize;

/// `[twilio]` as written.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTwilio {
    /// `twilio.enabled`: serve the Twilio routes at all.
    pub enabled: bool,
    /// `twilio.account_sid`: the `AC…` SID apps put in their URLs and Basic credentials.
    pub account_sid: String,
    /// `twilio.auth_token`: the Basic password; empty when `auth_token_file` is used.
    pub auth_token: String,
    /// `twilio.auth_token_file`: a file (mode 0600) holding the auth token.
    pub auth_token_file: PathBuf,
    /// `twilio.verify_service_sid`: the `VA…` SID of the one Verify service; empty: no Verify.
    pub verify_service_sid: String,
    /// `twilio.from`: the `From` values a message may name; empty: any.
    pub from: Vec<String>,
    /// `twilio.status_callback_http_hosts`: hosts besides loopback a `StatusCallback` may name
    /// with plain `http://`.
    pub status_callback_http_hosts: Vec<String>,
}

impl fmt::Debug for RawTwilio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawTwilio")
            .field("enabled", &self.enabled)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"[hidden]")
            .field("auth_token_file", &self.auth_token_file)
            .field("verify_service_sid", &self.verify_service_sid)
            .field("from", &self.from)
            .field(
                "status_callback_http_hosts",
                &self.status_callback_http_hosts,
            )
            .finish()
    }
}

/// Where the auth token comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Written in the config file.
    Inline(String),
    /// Read from this file at start.
    File(PathBuf),
}

/// `[twilio]`, validated; present in [`super::Config`] only when enabled.
#[derive(Clone, PartialEq, Eq)]
pub struct TwilioSettings {
    /// `AC` and 32 hex digits.
    pub account_sid: String,
    /// The auth token's source.
    pub token: TokenSource,
    /// `VA` and 32 hex digits; `None`: the Verify routes answer 404.
    pub verify_service_sid: Option<String>,
    /// Allowed `From` values; empty: any.
    pub from: Vec<String>,
    /// Hosts besides loopback a `StatusCallback` may name with plain `http://`.
    pub status_callback_http_hosts: Vec<String>,
}

impl fmt::Debug for TwilioSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = match &self.token {
            TokenSource::Inline(_) => "inline [hidden]".to_owned(),
            TokenSource::File(p) => format!("file {}", p.display()),
        };
        f.debug_struct("TwilioSettings")
            .field("account_sid", &self.account_sid)
            .field("token", &token)
            .field("verify_service_sid", &self.verify_service_sid)
            .field("from", &self.from)
            .field(
                "status_callback_http_hosts",
                &self.status_callback_http_hosts,
            )
            .finish()
    }
}

/// Whether `s` is `prefix` and 32 hex digits, the shape of every Twilio SID.
pub fn is_sid(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Shortest auth token accepted: Twilio's own are 32 hex digits, and a short one is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

fn check_token(t: &str) -> Result<(), String> {
    if t.len() < MIN_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "must be at least {MIN_TOKEN_LEN} visible ASCII characters (Twilio's are 32 hex digits)"
        ));
    }
    Ok(())
}

impl RawTwilio {
    /// `(key, reason)` of the first bad value; `Ok(None)` when the table is off.
    pub fn validate(self) -> Result<Option<TwilioSettings>, (&'static str, String)> {
        if !self.enabled {
            return Ok(None);
        }
        if !is_sid("AC", &self.account_sid) {
            return Err((
                "twilio.account_sid",
                "must be AC followed by 32 hex digits (the account SID your app already uses)"
                    .into(),
            ));
        }
        let token = match (
            self.auth_token.is_empty(),
            self.auth_token_file.as_os_str().is_empty(),
        ) {
            (false, true) => {
                check_token(&self.auth_token).map_err(|r| ("twilio.auth_token", r))?;
                TokenSource::Inline(self.auth_token)
            }
            (true, false) => TokenSource::File(self.auth_token_file),
            (true, true) => {
                return Err((
                    "twilio.auth_token_file",
                    "twilio is enabled without a token: set auth_token_file (a file of mode \
                     0600) or auth_token"
                        .into(),
                ));
            }
            (false, false) => {
                return Err((
                    "twilio.auth_token",
                    "give auth_token or auth_token_file, not both".into(),
                ));
            }
        };
        let verify_service_sid = match self.verify_service_sid.as_str() {
            "" => None,
            s if is_sid("VA", s) => Some(s.to_owned()),
            _ => {
                return Err((
                    "twilio.verify_service_sid",
                    "must be VA followed by 32 hex digits, or empty to leave Verify off".into(),
                ));
            }
        };
        for f in &self.from {
            if f.trim().is_empty() || f.trim() != f {
                return Err((
                    "twilio.from",
                    format!("{f:?} is empty or has surrounding spaces"),
                ));
            }
        }
        Ok(Some(TwilioSettings {
            account_sid: self.account_sid,
            token,
            verify_service_sid,
            from: self.from,
            status_callback_http_hosts: self.status_callback_http_hosts,
        }))
    }
}

impl TwilioSettings {
    /// The auth token: inline, or read from its file, which must be the owner's alone.
    pub fn auth_token(&self) -> Result<String, String> {
        let path = match &self.token {
            TokenSource::Inline(t) => return Ok(t.clone()),
            TokenSource::File(p) => p,
        };
        let fail = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let mut file = File::open(path).map_err(fail)?;
        let mode = file.metadata().map_err(fail)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} can be read by group or others, and serve refuses it: run chmod 600 {}",
                path.display(),
                path.display()
            ));
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(fail)?;
        let token = text.trim().to_owned();
        check_token(&token).map_err(|r| format!("the token in {}: {r}", path.display()))?;
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AC: &str = "AC0123456789abcdef0123456789abcdef";

    fn raw() -> RawTwilio {
        RawTwilio {
            enabled: true,
            account_sid: AC.into(),
            auth_token: "0123456789abcdef0123456789abcdef".into(),
            ..RawTwilio::default()
        }
    }

    #[test]
    fn off_unless_enabled() {
        assert_eq!(RawTwilio::default().validate(), Ok(None));
        assert!(raw().validate().unwrap().is_some());
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: Vec<(RawTwilio, &str)> = vec![
            (
                RawTwilio {
                    account_sid: "AC123".into(),
                    ..raw()
                },
                "twilio.account_sid",
            ),
            (
                RawTwilio {
                    auth_token: "short".into(),
                    ..raw()
                },
                "twilio.auth_token",
            ),
            (
                RawTwilio {
                    auth_token: String::new(),
                    ..raw()
                },
                "twilio.auth_token_file",
            ),
            (
                RawTwilio {
                    auth_token_file: "/x".into(),
                    ..raw()
                },
                "twilio.auth_token",
            ),
            (
                RawTwilio {
                    verify_service_sid: "VAnope".into(),
                    ..raw()
                },
                "twilio.verify_service_sid",
            ),
            (
                RawTwilio {
                    from: vec![" +1555".into()],
                    ..raw()
                },
                "twilio.from",
            ),
        ];
        for (r, key) in cases {
            assert_eq!(r.validate().unwrap_err().0, key);
        }
    }

    #[test]
    fn token_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        std::fs::write(&p, "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = RawTwilio {
            auth_token: String::new(),
            auth_token_file: p.clone(),
            ..raw()
        }
        .validate()
        .unwrap()
        .unwrap();
        assert!(s.auth_token().unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(s.auth_token().unwrap(), "0123456789abcdef0123456789abcdef");
        assert!(format!("{s:?}").contains("file "));
    }
}
