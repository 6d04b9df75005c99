//! Zitadel's HTTP SMS provider (`AddSMSProviderHTTP`, `internal/notification/channels/webhook`).
//!
//! Zitadel POSTs `{"contextInfo": {"recipientPhoneNumber", "eventType", "provider"},
//! "templateData": {"text", …}, "args": {"code", …}}` (`internal/notification/types`), signed
//! with `ZITADEL-Signature` when the provider has a signing key, and reads only the status: any
//! 2xx is sent, anything else is retried by its notification worker. The text is Zitadel's own
//! (customised in Zitadel's message texts) and is sent as it is, with `args.code` masked in the
//! delivery log; a text without the code is refused rather than logged in clear.
//!
//! A retry is signed anew (a new `t=`) over the same body, so the body's keyed digest is the
//! de-duplication key; a new code is a new body.

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

const SCHEME: &str = "ZITADEL-Signature";
const CHALLENGE: &str = "ZitadelSignature";

/// The fields of Zitadel's body simgate uses.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    /// Why and to whom.
    context_info: Option<ContextInfo>,
    /// The rendered texts.
    template_data: Option<TemplateData>,
    /// The values the text was rendered from.
    args: Option<Args>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContextInfo {
    /// E.164 with `+`.
    recipient_phone_number: Option<String>,
}

#[derive(Deserialize)]
struct TemplateData {
    /// The SMS text, code included.
    text: Option<String>,
}

#[derive(Deserialize)]
struct Args {
    /// The code in the text.
    code: Option<String>,
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

pub(super) async fn sms(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let Some(hook) = state.hooks.as_ref().and_then(|h| h.zitadel.as_ref()) else {
        return Problem::no_route("POST", super::ZITADEL_PATH).into_response();
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => return body_refused(e),
    };
    let verified = match signature::zitadel(
        &hook.key,
        header_str(&headers, "zitadel-signature"),
        &body,
        now_secs(&state),
    ) {
        Ok(v) => v,
        Err(r) => return refused(&r, SCHEME, CHALLENGE),
    };
    if let Some(r) = replay_refusal(&state, "zitadel", &verified, SCHEME, CHALLENGE) {
        return r;
    }
    let n: Notification = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => {
            return malformed(format!(
                "the body is not Zitadel's notification JSON (line {}, column {})",
                e.line(),
                e.column()
            ));
        }
    };
    let Some(to) = n
        .context_info
        .and_then(|c| c.recipient_phone_number)
        .filter(|p| !p.trim().is_empty())
    else {
        return malformed("contextInfo.recipientPhoneNumber is missing");
    };
    let Some(text) = n
        .template_data
        .and_then(|t| t.text)
        .filter(|t| !t.trim().is_empty())
    else {
        return malformed("templateData.text is missing: there is no text to send");
    };
    let Some(code) = n.args.and_then(|a| a.code).filter(|c| !c.is_empty()) else {
        return malformed(
            "args.code is missing: simgate relays texts that carry a code, and masks it in \
             the delivery log",
        );
    };
    let relay = RelayCode {
        to: e164(&to),
        code,
        text: Some(text),
        lifetime: hook.lifetime,
        dedupe: IdempotencyKey {
            scope: "hook:zitadel".into(),
            key: signature::body_digest(&hook.key, &body),
        },
    };
    match state.service.relay_code(relay, answer).await {
        Ok(Answer::New(c)) => {
            state.metrics.record_parts_accepted("otp", c.parts);
            json_ok(answer(&c))
        }
        Ok(Answer::Replay(stored)) => json_ok(stored),
        Err(e) => service_problem(e, Some(&state)).into_response(),
    }
}
