//! Identity-server adapters: routes that speak the fixed format an identity server sends, so
//! it needs no code of its own to send its login codes through simgate.
//!
//! - `POST /hooks/supabase/send-sms`: Supabase Auth's Send SMS Hook ([`supabase`]), `[supabase]`.
//! - `POST /hooks/zitadel/sms`: Zitadel's HTTP SMS provider ([`zitadel`]), `[zitadel]`.
//!
//! Each route exists only when its table is enabled, and is authenticated by the sender's own
//! signature scheme ([`signature`]) instead of a bearer token: a request that is unsigned,
//! wrongly signed, older or newer than five minutes, or seen before is answered 401 and sends
//! nothing. Retries are told apart from replays: a replay repeats the signed request; a retry is
//! signed again (a new `webhook-id`, a new Zitadel timestamp) but carries the same request, and
//! is answered with the first answer without a second text (the service's de-duplication).
//!
//! **Invariant:** like the rest of `http`, it calls [`crate::service`] for every use case and
//! never the store; it never logs a code, a key or a body.

pub mod signature;
mod supabase;
mod zitadel;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::AppState;
use super::problem::Problem;
use crate::config::Config;
use crate::model::Millis;
use signature::Refusal;

/// Where the Supabase hook is served.
pub const SUPABASE_PATH: &str = "/hooks/supabase/send-sms";
/// Where the Zitadel HTTP SMS provider is served.
pub const ZITADEL_PATH: &str = "/hooks/zitadel/sms";

/// The adapters' keys and settings, loaded at start.
#[derive(Default)]
pub struct Hooks {
    /// `[supabase]`; `None` when off.
    supabase: Option<SupabaseHook>,
    /// `[zitadel]`; `None` when off.
    zitadel: Option<ZitadelHook>,
    /// Signed requests already accepted, so a replay is refused.
    seen: Seen,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("supabase", &self.supabase.is_some())
            .field("zitadel", &self.zitadel.is_some())
            .finish_non_exhaustive()
    }
}

/// `[supabase]`, with its keys.
struct SupabaseHook {
    /// HMAC keys of the Standard Webhooks signature (several during a rotation).
    keys: Vec<Vec<u8>>,
    /// The code's lifetime in Supabase.
    otp_ttl: Duration,
}

/// `[zitadel]`, with its key.
struct ZitadelHook {
    /// The HMAC key of `ZITADEL-Signature`.
    key: Vec<u8>,
    /// How long a text may wait to be sent: Zitadel does not say how long its codes live, so
    /// `otp.ttl_seconds`, the lifetime simgate gives its own codes.
    lifetime: Duration,
}

impl Hooks {
    /// Loads the keys of the enabled adapters (`Config::check_startup` has read them already,
    /// so an error here means a file changed in between).
    pub fn new(c: &Config) -> Result<Hooks, String> {
        let supabase = match &c.supabase {
            None => None,
            Some(s) => Some(SupabaseHook {
                keys: s
                    .secrets()
                    .map_err(|e| format!("supabase.secret_file: {e}"))?,
                otp_ttl: s.otp_ttl,
            }),
        };
        let zitadel = match &c.zitadel {
            None => None,
            Some(z) => Some(ZitadelHook {
                key: z
                    .signing_key()
                    .map_err(|e| format!("zitadel.signing_key_file: {e}"))?,
                lifetime: c.otp.ttl,
            }),
        };
        Ok(Hooks {
            supabase,
            zitadel,
            seen: Seen::default(),
        })
    }

    /// Whether any adapter is on.
    pub fn any(&self) -> bool {
        self.supabase.is_some() || self.zitadel.is_some()
    }
}

/// The adapters' routes, when any is enabled; merged into the main router.
pub(super) fn routes(state: &AppState) -> Option<Router<AppState>> {
    let h = state.hooks.as_ref().filter(|h| h.any())?;
    let mut r = Router::new();
    if h.supabase.is_some() {
        r = r.route(SUPABASE_PATH, post(supabase::send_sms).fallback(post_only));
    }
    if h.zitadel.is_some() {
        r = r.route(ZITADEL_PATH, post(zitadel::sms).fallback(post_only));
    }
    Some(r)
}

/// 405 for anything but `POST` on a hook route.
async fn post_only(req: axum::extract::Request) -> Response {
    let mut resp = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "The method is not allowed on this route",
        format!(
            "{} is not allowed on {}; the sender POSTs here",
            super::problem::printable(req.method().as_str()),
            super::problem::printable(req.uri().path())
        ),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    resp
}

/// Most signed requests remembered; beyond it the oldest are forgotten early (a replay of one
/// of those is still de-duplicated by the service, so it sends nothing).
const SEEN_MAX: usize = 100_000;

/// Replay keys of accepted requests, each kept until its timestamp leaves the tolerance window
/// (after that the timestamp check refuses the replay by itself).
#[derive(Default)]
struct Seen {
    /// The keys, behind one lock.
    inner: Mutex<SeenKeys>,
}

/// What [`Seen`] guards.
#[derive(Default)]
struct SeenKeys {
    /// `(scope, replay key)` → forget after (unix ms).
    until: HashMap<(&'static str, String), Millis>,
    /// The same keys in insertion order, for pruning the oldest first.
    order: VecDeque<(Millis, &'static str, String)>,
}

impl Seen {
    /// Records a request; `false` if it was seen before (a replay).
    fn first_time(&self, scope: &'static str, key: &str, timestamp: i64, now: Millis) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let SeenKeys { until: map, order } = &mut *g;
        while let Some((until, _, _)) = order.front() {
            if *until > now && order.len() < SEEN_MAX {
                break;
            }
            if let Some((_, s, k)) = order.pop_front() {
                map.remove(&(s, k));
            }
        }
        let id = (scope, key.to_owned());
        if map.contains_key(&id) {
            return false;
        }
        let until = (timestamp + signature::TOLERANCE_SECS + 1).saturating_mul(1000);
        map.insert(id, until);
        order.push_back((until, scope, key.to_owned()));
        true
    }
}

/// The header's value as text, if any.
fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// 401 for a request whose signature does not hold; `scheme` names it in the challenge.
fn refused(r: &Refusal, scheme: &'static str, challenge: &'static str) -> Response {
    let p = Problem::new(
        StatusCode::UNAUTHORIZED,
        "bad-signature",
        "The request's signature does not hold",
        r.detail(scheme),
    );
    let mut resp = p.into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    resp
}

/// The 401 for a replay of `v`, or `None` when it is the first time it is seen.
fn replay_refusal(
    state: &AppState,
    scope: &'static str,
    v: &signature::Verified,
    scheme: &'static str,
    challenge: &'static str,
) -> Option<Response> {
    let Some(h) = state.hooks.as_ref() else {
        return Some(Problem::internal().into_response());
    };
    let now = state.service.now();
    (!h.seen.first_time(scope, &v.replay_key, v.timestamp, now))
        .then(|| refused(&Refusal::Replayed, scheme, challenge))
}

/// Unix seconds of the service's clock.
fn now_secs(state: &AppState) -> i64 {
    state.service.now().div_euclid(1000)
}

/// The problem axum's body rejection stands for (a body over `api.max_body_bytes`).
/// A body that is not the hook's shape: 400 naming what is missing.
fn malformed(detail: impl Into<String>) -> Response {
    Problem::bad_request(detail).into_response()
}

fn body_refused(e: axum::extract::rejection::BytesRejection) -> Response {
    Problem::new(
        e.status(),
        "bad-body",
        "The request body was refused",
        e.body_text(),
    )
    .into_response()
}

/// Adds `+` to a number given as E.164 digits without it (Supabase stores phones that way).
fn e164(phone: &str) -> String {
    let p: String = phone.chars().filter(|c| !c.is_whitespace()).collect();
    if p.starts_with('+') {
        p
    } else {
        format!("+{p}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_are_seen_within_the_window_only() {
        let s = Seen::default();
        let t = 1_700_000_000;
        let now = t * 1000;
        assert!(s.first_time("a", "id1", t, now));
        assert!(!s.first_time("a", "id1", t, now + 1000));
        assert!(s.first_time("b", "id1", t, now), "scopes are apart");
        assert!(s.first_time("a", "id2", t, now));
        // Once the timestamp is out of the window the entry goes (the time check refuses it).
        let later = (t + signature::TOLERANCE_SECS + 2) * 1000;
        assert!(s.first_time("a", "id1", t, later));
    }

    #[test]
    fn phones_get_their_plus() {
        assert_eq!(e164("15551234567"), "+15551234567");
        assert_eq!(e164("+1 555 123 4567"), "+15551234567");
    }
}
