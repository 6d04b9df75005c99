//! A Twilio-compatible subset, so apps written against Twilio's official SDKs switch to simgate
//! by changing their base URL: Programmable Messaging (`/2010-04-01/Accounts/{AC}/Messages`)
//! and Verify v2 (`/v2/Services/{VA}/Verifications`, `/VerificationCheck`). Off unless
//! `[twilio] enabled = true`; docs/twilio.md lists what is and is not supported.
//!
//! Ids map deterministically so both APIs see the same objects: message `msg_<hex>` is
//! `SM<hex>`, OTP `otp_<hex>` is verification `VE<hex>` (the same 32 hex digits).
//!
//! **Invariant:** like the rest of `http`, it calls [`crate::service`] for every use case and
//! never the store; every answer of these routes, errors included, is Twilio's JSON
//! ([`error`]), never problem+json. It never logs a code or the auth token.

pub mod callback;
pub mod error;
pub mod form;
mod messaging;
mod verify;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::config::TwilioSettings;
use crate::model::{Millis, PublicId};
use error::{TwilioError, code};

/// What the Twilio routes need beyond [`AppState`]: the account they answer for.
pub struct TwilioApi {
    /// `twilio.account_sid`.
    account_sid: String,
    /// The auth token, loaded at start.
    token: String,
    /// `twilio.verify_service_sid`; `None`: Verify is off.
    verify_service_sid: Option<String>,
    /// `twilio.from`; empty: any `From` is accepted.
    from: Vec<String>,
    /// `otp.template`, which `CustomFriendlyName` prefixes.
    otp_template: String,
    /// `twilio.status_callback_http_hosts`.
    status_callback_http_hosts: Vec<String>,
}

impl std::fmt::Debug for TwilioApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioApi")
            .field("account_sid", &self.account_sid)
            .field("verify_service_sid", &self.verify_service_sid)
            .finish_non_exhaustive()
    }
}

impl TwilioApi {
    /// Loads the token (from its file, if so configured).
    pub fn new(s: &TwilioSettings, otp_template: &str) -> Result<TwilioApi, String> {
        Ok(TwilioApi {
            account_sid: s.account_sid.clone(),
            token: s.auth_token()?,
            verify_service_sid: s.verify_service_sid.clone(),
            from: s.from.clone(),
            otp_template: otp_template.to_owned(),
            status_callback_http_hosts: s.status_callback_http_hosts.clone(),
        })
    }

    /// 404 unless the path names our account (Twilio answers 20404 for another account's URL).
    fn check_account(&self, sid: &str) -> Result<(), TwilioError> {
        if sid == self.account_sid {
            Ok(())
        } else {
            Err(TwilioError::not_found(format!(
                "/2010-04-01/Accounts/{}: this daemon serves account {} only",
                crate::service::shorten(sid),
                self.account_sid
            )))
        }
    }

    /// 404 unless the path names our Verify service.
    fn check_service(&self, sid: &str) -> Result<(), TwilioError> {
        match &self.verify_service_sid {
            Some(ours) if ours == sid => Ok(()),
            Some(ours) => Err(TwilioError::not_found(format!(
                "/v2/Services/{}: this daemon serves Verify service {ours} only",
                crate::service::shorten(sid)
            ))),
            None => Err(TwilioError::not_found(
                "/v2/Services: Verify is off (set twilio.verify_service_sid)",
            )),
        }
    }
}

/// The Twilio routes, when `[twilio]` is enabled; merged into the main router.
pub(super) fn routes(state: &AppState) -> Option<Router<AppState>> {
    state.twilio.as_ref()?;
    let authed = Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Messages.json",
            post(messaging::create)
                .get(messaging::list)
                .fallback(method_not_allowed),
        )
        .route(
            "/2010-04-01/Accounts/{account}/Messages/{sid}",
            get(messaging::fetch).fallback(method_not_allowed),
        )
        .route(
            "/v2/Services/{service}/Verifications",
            post(verify::create).fallback(method_not_allowed),
        )
        .route(
            "/v2/Services/{service}/Verifications/{sid}",
            get(verify::fetch)
                .post(verify::update)
                .fallback(method_not_allowed),
        )
        .route(
            "/v2/Services/{service}/VerificationCheck",
            post(verify::check).fallback(method_not_allowed),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Some(
        authed
            .route("/2010-04-01/{*rest}", any(no_route))
            .route("/v2/{*rest}", any(no_route)),
    )
}

/// The Twilio API of the state; the routes exist only when it is set.
fn api(state: &AppState) -> Result<&Arc<TwilioApi>, TwilioError> {
    state
        .twilio
        .as_ref()
        .ok_or_else(|| TwilioError::not_found("(the Twilio API is off)"))
}

async fn no_route(req: Request) -> Response {
    TwilioError::not_found(crate::http::problem::printable(req.uri().path())).into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    TwilioError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        code::METHOD_NOT_ALLOWED,
        format!(
            "Method not allowed: {} on {}",
            crate::http::problem::printable(req.method().as_str()),
            crate::http::problem::printable(req.uri().path())
        ),
    )
    .into_response()
}

/// `user:password` of a Basic `Authorization` header.
fn basic_credentials(header: Option<&str>) -> Result<(String, String), &'static str> {
    let h = header.ok_or("no credentials: use HTTP Basic with AccountSid:AuthToken")?;
    let (scheme, b64) = h
        .trim()
        .split_once(' ')
        .ok_or("the Authorization header is malformed")?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err("use HTTP Basic with AccountSid:AuthToken");
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| "the Basic credentials are not base64")?;
    let text = String::from_utf8(raw).map_err(|_| "the Basic credentials are not UTF-8")?;
    let (user, pass) = text
        .split_once(':')
        .ok_or("the Basic credentials have no ':'")?;
    Ok((user.to_owned(), pass.to_owned()))
}

/// Checks `AccountSid:AuthToken` in constant time (both halves, always), then
/// `limits.requests_per_token` keyed by the auth token.
async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Ok(t) = api(&state) else {
        return TwilioError::not_found("(the Twilio API is off)").into_response();
    };
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (user, pass) = match basic_credentials(header) {
        Ok(c) => c,
        Err(why) => return TwilioError::authenticate(why).into_response(),
    };
    let ok =
        user.as_bytes().ct_eq(t.account_sid.as_bytes()) & pass.as_bytes().ct_eq(t.token.as_bytes());
    if !bool::from(ok) {
        return TwilioError::authenticate("the account SID or the auth token is wrong")
            .into_response();
    }
    if let Err(e) = state.service.check_token_rate(&t.token) {
        if let crate::service::ServiceError::RateLimited { name, .. } = &e {
            state.metrics.record_rate_limited(name.as_str());
        }
        return error::from_service(e, error::Api::Messaging).into_response();
    }
    next.run(req).await
}

/// The Twilio SID of a simgate id: `SM`/`VE` and the same 32 hex digits.
fn sid_of(prefix: &str, id: &str) -> String {
    let hex = id.split_once('_').map_or(id, |(_, h)| h);
    format!("{prefix}{hex}")
}

/// The simgate id of a Twilio SID, if it has the shape of one (hex in either case, as Twilio's
/// own pattern allows).
fn id_of<T: PublicId>(sid_prefix: &str, sid: &str) -> Option<String> {
    let hex = sid.strip_prefix(sid_prefix)?.to_ascii_lowercase();
    let id = format!("{}{hex}", T::PREFIX);
    T::parse(&id).map(|_| id)
}

fn offset(ms: Millis) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// RFC 2822 in GMT, as Messaging writes dates (`Thu, 30 Jul 2015 20:12:31 +0000`).
fn rfc2822(ms: Millis) -> String {
    offset(ms - ms.rem_euclid(1000))
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_default()
}

/// ISO 8601 in UTC, as Verify writes dates (`2015-07-30T20:00:00Z`).
fn iso8601(ms: Millis) -> String {
    let t = offset(ms - ms.rem_euclid(1000));
    t.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// A JSON answer with a status.
fn json(status: StatusCode, v: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// The request body as form parameters; an over-long body is refused in Twilio's shape.
fn body_params(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<form::Params, TwilioError> {
    match body {
        Ok(b) => Ok(form::Params::parse(&b)),
        Err(e) => Err(TwilioError::new(
            e.status(),
            code::BODY_TOO_LONG,
            format!("the request body was refused: {}", e.body_text()),
        )),
    }
}

/// The one value of a parameter, refusing repeats.
fn one<'a>(
    p: &'a form::Params,
    name: &str,
    repeated: impl Fn(&str) -> TwilioError,
) -> Result<Option<&'a str>, TwilioError> {
    p.one(name).map_err(|r| repeated(&r.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MessageId, OtpId};

    #[test]
    fn ids_map_both_ways() {
        let m = MessageId::random();
        let sm = sid_of("SM", m.as_str());
        assert!(sm.starts_with("SM") && sm.len() == 34);
        assert_eq!(id_of::<MessageId>("SM", &sm).as_deref(), Some(m.as_str()));
        assert_eq!(
            id_of::<MessageId>("SM", &sm.to_ascii_uppercase()),
            Some(m.as_str().to_owned())
        );
        let o = OtpId::random();
        assert_eq!(
            id_of::<OtpId>("VE", &sid_of("VE", o.as_str())).as_deref(),
            Some(o.as_str())
        );
        assert_eq!(id_of::<MessageId>("SM", "SMnothex"), None);
        assert_eq!(id_of::<MessageId>("VE", &sm), None);
    }

    #[test]
    fn dates_in_twilios_formats() {
        let ms = 1_438_287_151_999; // 2015-07-30T20:12:31.999Z
        assert_eq!(rfc2822(ms), "Thu, 30 Jul 2015 20:12:31 +0000");
        assert_eq!(iso8601(ms), "2015-07-30T20:12:31Z");
    }

    #[test]
    fn basic_credentials_are_parsed() {
        let h = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("AC1:tok:en")
        );
        assert_eq!(
            basic_credentials(Some(&h)),
            Ok(("AC1".into(), "tok:en".into()))
        );
        assert!(basic_credentials(None).is_err());
        assert!(basic_credentials(Some("Bearer x")).is_err());
        assert!(basic_credentials(Some("Basic !!!")).is_err());
    }
}
