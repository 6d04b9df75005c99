//! Supabase Auth's Send SMS Hook (`GOTRUE_HOOK_SEND_SMS_*`).
//!
//! Supabase Auth (`internal/hooks/hookshttp`) POSTs `{"metadata": {"uuid", "time", "name",
//! "ip_address"}, "user": {…, "phone"}, "sms": {"otp", "phone", "sms_type"}}`, signed with
//! Standard Webhooks. On a timeout or a network error it sends the same body again, signed anew
//! under a new `webhook-id`; `metadata.uuid` stays, so it is the de-duplication key.
//!
//! Answers, as Supabase reads them: 200 with a JSON body on success. Supabase reads a body only
//! on 200/202 with `application/json`, and then turns `{"error": {"http_code", "message"}}`
//! into the error its own client gets, so a refusal of a valid request (a number outside the
//! allowed prefixes, a rate limit, a full queue) is answered that way: the app's user sees
//! "too many codes … retry in 40 s" instead of Supabase's generic hook failure. A 429 would
//! also make Supabase retry at once, three times, against the same limit. What Supabase cannot
//! be trusted for (bad signature: 401) or cannot have sent (a malformed body: 400) is
//! problem+json with the real status; Supabase reports those as a hook failure.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::super::AppState;
use super::super::handlers::service_problem;
use super::super::problem::Problem;
use super::{
    body_refused, e164, header_str, malformed, now_secs, refused, replay_refusal, signature,
};
use crate::service::{Answer, CodeRelayed, IdempotencyKey, RelayCode};

const SCHEME: &str = "Standard Webhooks";
const CHALLENGE: &str = "StandardWebhooks";

/// The fields of the hook's body simgate uses; the rest (the whole user object) is ignored.
#[derive(Deserialize)]
struct SendSms {
    /// Who asked, and the request's id across retries.
    metadata: Option<Metadata>,
    /// The user; `phone` is the fallback recipient.
    user: Option<User>,
    /// The code and the number to send it to.
    sms: Option<Sms>,
}

#[derive(Deserialize)]
struct Metadata {
    /// The same on every retry of one request.
    uuid: Option<String>,
}

#[derive(Deserialize)]
struct User {
    /// E.164, usually without `+`.
    phone: Option<String>,
}

#[derive(Deserialize)]
struct Sms {
    /// The code Supabase drew and will verify.
    otp: Option<String>,
    /// Where to send it (a new number for a phone change, the factor's for MFA).
    phone: Option<String>,
}

fn answer(c: &CodeRelayed) -> String {
    json!({"message_id": c.message_id, "status": c.status.as_str(), "parts": c.parts}).to_string()
}

fn json_ok(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A refusal in the shape Supabase Auth passes on to its client.
fn supabase_error(p: &Problem) -> Response {
    let mut message = p.detail.clone();
    if let Some(s) = p.retry_after {
        message.push_str(&format!(" (retry after {s} s)"));
    }
    json_ok(json!({"error": {"http_code": p.status.as_u16(), "message": message}}).to_string())
}

pub(super) async fn send_sms(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let Some(hook) = state.hooks.as_ref().and_then(|h| h.supabase.as_ref()) else {
        return Problem::no_route("POST", super::SUPABASE_PATH).into_response();
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return body_refused(e),
    };
    let verified = match signature::standard_webhooks(
        &hook.keys,
        header_str(&headers, "webhook-id"),
        header_str(&headers, "webhook-timestamp"),
        header_str(&headers, "webhook-signature"),
        &body,
        now_secs(&state),
    ) {
        Ok(v) => v,
        Err(r) => return refused(&r, SCHEME, CHALLENGE),
    };
    if let Some(r) = replay_refusal(&state, "supabase", &verified, SCHEME, CHALLENGE) {
        return r;
    }
    let req: SendSms = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return malformed(format!(
                "the body is not the Send SMS Hook's JSON (line {}, column {})",
                e.line(),
                e.column()
            ));
        }
    };
    let Some(uuid) = req.metadata.and_then(|m| m.uuid).filter(|u| !u.is_empty()) else {
        return malformed("metadata.uuid is missing: simgate needs it to send a retried hook once");
    };
    let sms = req.sms.unwrap_or(Sms {
        otp: None,
        phone: None,
    });
    let Some(code) = sms.otp.filter(|c| !c.is_empty()) else {
        return malformed("sms.otp is missing: there is no code to send");
    };
    let to = sms.phone.filter(|p| !p.trim().is_empty()).or_else(|| {
        req.user
            .and_then(|u| u.phone)
            .filter(|p| !p.trim().is_empty())
    });
    let Some(to) = to else {
        return malformed("neither sms.phone nor user.phone names a number");
    };
    let relay = RelayCode {
        to: e164(&to),
        code,
        text: None,
        lifetime: hook.otp_ttl,
        dedupe: IdempotencyKey {
            scope: "hook:supabase".into(),
            key: uuid,
        },
    };
    match state.service.relay_code(relay, answer).await {
        Ok(Answer::New(c)) => {
            state.metrics.record_parts_accepted("otp", c.parts);
            json_ok(answer(&c))
        }
        Ok(Answer::Replay(stored)) => json_ok(stored),
        Err(e) => supabase_error(&service_problem(e, Some(&state))),
    }
}
