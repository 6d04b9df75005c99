//! Verify v2: start, check, fetch and cancel verifications, mapped onto simgate's OTPs.
//!
//! Twilio's semantics: a wrong code answers 200 `pending`; a verification that has ended
//! (approved, expired, out of attempts, canceled) is gone, so checking or fetching it is a 404
//! 20404 — while simgate's own `GET /v1/otp/{id}` keeps the final state.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::error::{Api, TwilioError, from_service};
use super::{AppState, TwilioApi, api, body_params, id_of, iso8601, json, one, sid_of};
use crate::model::{OtpId, OtpStatus};
use crate::service::{CreateOtp, OtpView};

fn repeated(name: &str) -> TwilioError {
    TwilioError::invalid_parameter(name, "given more than once")
}

fn render(t: &TwilioApi, service: &str, o: &OtpView, status: OtpStatus, valid: bool) -> Value {
    let sid = sid_of("VE", &o.id);
    let sent = o
        .message
        .as_ref()
        .map(|m| m.created_at)
        .unwrap_or(o.created_at);
    json!({
        "sid": sid,
        "service_sid": service,
        "account_sid": t.account_sid,
        "to": o.to,
        "channel": "sms",
        "status": status.as_str(),
        "valid": valid,
        "lookup": {},
        "amount": null,
        "payee": null,
        "send_code_attempts": [{
            "attempt_sid": o.message.as_ref().map(|m| sid_of("VL", &m.id)),
            "channel": "sms",
            "time": iso8601(sent),
        }],
        "date_created": iso8601(o.created_at),
        "date_updated": iso8601(sent),
        "sna": null,
        "url": format!("https://verify.twilio.com/v2/Services/{service}/Verifications/{sid}"),
    })
}

fn otp_id(sid: &str) -> Result<String, TwilioError> {
    id_of::<OtpId>("VE", sid).ok_or_else(|| {
        TwilioError::not_found(format!("Verification {}", crate::service::shorten(sid)))
    })
}

pub(super) async fn create(
    State(state): State<AppState>,
    Path(service): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, TwilioError> {
    let t = api(&state)?.clone();
    t.check_service(&service)?;
    let p = body_params(body)?;
    let to = one(&p, "To", repeated)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| TwilioError::invalid_parameter("To", "is required"))?;
    match one(&p, "Channel", repeated)? {
        Some("sms") => {}
        _ => {
            return Err(TwilioError::invalid_parameter(
                "Channel",
                "simgate sends sms only",
            ));
        }
    }
    if let Some(l) = one(&p, "Locale", repeated)?
        && (l.is_empty()
            || l.len() > 16
            || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return Err(TwilioError::invalid_parameter(
            "Locale",
            "is not a locale tag",
        ));
    }
    let code_length = match one(&p, "CodeLength", repeated)? {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .map_err(|_| TwilioError::invalid_parameter("CodeLength", "is not a number"))?,
        ),
    };
    let template = match one(&p, "CustomFriendlyName", repeated)? {
        None => None,
        Some(name) => {
            if name.is_empty() || name.chars().count() > 30 || name.contains(['{', '}']) {
                return Err(TwilioError::invalid_parameter(
                    "CustomFriendlyName",
                    "must be 1 to 30 characters without braces",
                ));
            }
            Some(format!("{name}: {}", t.otp_template))
        }
    };
    let created = state
        .service
        .create_otp(
            CreateOtp {
                to: to.to_owned(),
                code_length,
                template,
                ..CreateOtp::default()
            },
            None,
            |_| String::new(),
        )
        .await
        .map_err(|e| from_service(e, Api::Verify))?;
    let crate::service::Answer::New(c) = created else {
        return Err(TwilioError::not_found("(replayed verification)"));
    };
    state.metrics.record_parts_accepted("otp", c.parts);
    let o = state
        .service
        .get_otp(&c.id)
        .await
        .map_err(|e| from_service(e, Api::Verify))?;
    Ok(json(
        StatusCode::CREATED,
        &render(&t, &service, &o, OtpStatus::Pending, false),
    ))
}

pub(super) async fn check(
    State(state): State<AppState>,
    Path(service): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, TwilioError> {
    let t = api(&state)?.clone();
    t.check_service(&service)?;
    let p = body_params(body)?;
    let code = one(&p, "Code", repeated)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| TwilioError::invalid_parameter("Code", "is required"))?;
    let by_sid = one(&p, "VerificationSid", repeated)?;
    let to = one(&p, "To", repeated)?;
    let (id, v) = match (by_sid, to) {
        (Some(sid), _) => {
            let id = otp_id(sid)?;
            let v = state
                .service
                .verify(&id, code)
                .await
                .map_err(|e| from_service(e, Api::Verify))?;
            (id, v)
        }
        (None, Some(to)) => state
            .service
            .verify_by_number(to, code)
            .await
            .map_err(|e| from_service(e, Api::Verify))?,
        (None, None) => {
            return Err(TwilioError::invalid_parameter(
                "VerificationSid",
                "give To or VerificationSid",
            ));
        }
    };
    let o = state
        .service
        .get_otp(&id)
        .await
        .map_err(|e| from_service(e, Api::Verify))?;
    let mut body = render(&t, &service, &o, v.status, v.verified);
    body["sid"] = json!(sid_of("VE", &id));
    Ok(json(StatusCode::OK, &body))
}

pub(super) async fn fetch(
    State(state): State<AppState>,
    Path((service, sid)): Path<(String, String)>,
) -> Result<Response, TwilioError> {
    let t = api(&state)?.clone();
    t.check_service(&service)?;
    let id = otp_id(&sid)?;
    let o = state
        .service
        .get_otp(&id)
        .await
        .map_err(|e| from_service(e, Api::Verify))?;
    if o.status != OtpStatus::Pending {
        return Err(TwilioError::not_found(format!(
            "Verification {sid} (it is {}; ended verifications are removed, as on Twilio)",
            o.status.as_str()
        )));
    }
    Ok(json(
        StatusCode::OK,
        &render(&t, &service, &o, o.status, false),
    ))
}

pub(super) async fn update(
    State(state): State<AppState>,
    Path((service, sid)): Path<(String, String)>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, TwilioError> {
    let t = api(&state)?.clone();
    t.check_service(&service)?;
    let p = body_params(body)?;
    if one(&p, "Status", repeated)? != Some("canceled") {
        return Err(TwilioError::invalid_parameter(
            "Status",
            "only canceled is supported (simgate draws its own codes)",
        ));
    }
    let id = otp_id(&sid)?;
    let st = state
        .service
        .cancel(&id)
        .await
        .map_err(|e| from_service(e, Api::Verify))?;
    let o = state
        .service
        .get_otp(&id)
        .await
        .map_err(|e| from_service(e, Api::Verify))?;
    Ok(json(StatusCode::OK, &render(&t, &service, &o, st, false)))
}
