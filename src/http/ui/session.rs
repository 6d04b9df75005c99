//! Signed-in browsers: random session ids in an `HttpOnly`, `SameSite=Strict` cookie, kept in
//! memory with an absolute expiry, each with its own CSRF token for the page's forms.
//!
//! Sessions live only in this process: a restart signs everyone out, which is the price of
//! keeping no session secret on disk. The map is keyed by SHA-256 of the id, so neither a
//! lookup's timing nor a memory dump of the keys gives a usable cookie away.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::http::TokenId;

/// The cookie's name. Not `__Host-`: that prefix needs `Secure`, which a plain-HTTP loopback
/// page cannot set.
pub const COOKIE: &str = "simgate_session";

/// Most sessions kept at once; signing in past it forgets the oldest, so a script that signs
/// in in a loop cannot grow the daemon's memory.
pub const MAX_SESSIONS: usize = 64;

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The API token it signed in with, by id (the token itself is not kept).
    pub token: TokenId,
    /// The value every form of this session must carry back.
    pub csrf: String,
    /// When it was made.
    pub created: Instant,
    /// When it stops being accepted.
    pub expires: Instant,
}

/// Every live session.
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

fn key(id: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(id.as_bytes()));
    out
}

impl Sessions {
    /// No sessions yet; each new one lasts `ttl`.
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts a session for `token` at `now` and returns its id (the cookie's value).
    pub fn create(&self, token: TokenId, now: Instant) -> String {
        let id = random_hex();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| s.expires > now);
        while map.len() >= MAX_SESSIONS {
            let Some(oldest) = map.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k) else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(
            key(&id),
            Session {
                token,
                csrf: random_hex(),
                created: now,
                expires: now + self.ttl,
            },
        );
        id
    }

    /// The live session with this id; an expired one is forgotten on the way.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let k = key(id);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&k) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Ends a session (sign-out).
    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key(id));
    }

    /// Live sessions (for tests and the log).
    pub fn len(&self, now: Instant) -> usize {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.values().filter(|s| s.expires > now).count()
    }

    /// Whether no session is live.
    pub fn is_empty(&self, now: Instant) -> bool {
        self.len(now) == 0
    }
}

/// Whether a form's CSRF value is the session's, in constant time.
pub fn csrf_matches(session: &Session, presented: &str) -> bool {
    let a = Sha256::digest(session.csrf.as_bytes());
    let b = Sha256::digest(presented.as_bytes());
    bool::from(a.ct_eq(&b))
}

/// The session cookie's value in a request, if any.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((name, v)) = pair.trim().split_once('=')
                && name == COOKIE
                && !v.is_empty()
            {
                return Some(v.to_owned());
            }
        }
    }
    None
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(id: &str, ttl: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` that deletes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether a state-changing request comes from this site: browsers send `Origin` on every
/// form POST, and `Sec-Fetch-Site` where they support it. A request with neither (not a
/// browser) is let through to the CSRF token check; one naming another site is refused.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let (Ok(origin), Some(host)) = (
        origin.to_str(),
        headers.get(header::HOST).and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    // `Origin: null` (sandboxed frames, some redirects) names no site at all: refused.
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    rest.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn tid() -> TokenId {
        TokenId("0123456789abcdef".into())
    }

    #[test]
    fn sessions_expire_and_end() {
        let s = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let id = s.create(tid(), t0);
        assert_eq!(id.len(), 64);
        assert!(s.get(&id, t0 + Duration::from_secs(59)).is_some());
        assert!(s.get(&id, t0 + Duration::from_secs(60)).is_none());
        let id = s.create(tid(), t0);
        assert!(s.get("nope", t0).is_none());
        s.remove(&id);
        assert!(s.get(&id, t0).is_none());
    }

    #[test]
    fn the_oldest_session_makes_room() {
        let s = Sessions::new(Duration::from_secs(600));
        let t0 = Instant::now();
        let first = s.create(tid(), t0);
        for i in 1..=MAX_SESSIONS {
            s.create(tid(), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(s.len(t0), MAX_SESSIONS);
        assert!(s.get(&first, t0).is_none());
    }

    #[test]
    fn csrf_is_per_session() {
        let s = Sessions::new(Duration::from_secs(60));
        let now = Instant::now();
        let a = s.get(&s.create(tid(), now), now).unwrap();
        let b = s.get(&s.create(tid(), now), now).unwrap();
        assert!(csrf_matches(&a, &a.csrf));
        assert!(!csrf_matches(&a, &b.csrf));
        assert!(!csrf_matches(&a, ""));
    }

    #[test]
    fn cookie_round_trip() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; simgate_session=abc; b=2"),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some("abc"));
        let c = set_cookie("abc", Duration::from_secs(60), false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"));
        assert!(set_cookie("abc", Duration::from_secs(60), true).ends_with("; Secure"));
    }

    #[test]
    fn cross_site_posts_are_told_apart() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        assert!(same_origin(&h(&[
            ("host", "127.0.0.1:8787"),
            ("origin", "http://127.0.0.1:8787")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:8787"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:8787"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "x"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(same_origin(&h(&[("host", "x")])));
    }
}
