//! Programmable Messaging: create, fetch and list messages (`/2010-04-01/Accounts/{AC}/…`).

use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::error::{Api, TwilioError, code, from_service};
use super::form::{Params, encode};
use super::{AppState, TwilioApi, api, body_params, id_of, json, one, rfc2822, sid_of};
use crate::model::{Message, MessageId, MessageOrigin, MessageStatus};
use crate::service::{Answer, ListMessages, SendText};

/// Twilio's longest `ValidityPeriod` in seconds.
const MAX_VALIDITY: u64 = 36_000;
/// Twilio's limit on a `StatusCallback` URL (error 21609).
const MAX_CALLBACK_URL: usize = 4000;
/// Twilio's default and largest `PageSize`.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;

fn repeated(name: &str) -> TwilioError {
    TwilioError::bad(
        code::INVALID_PARAMETER,
        format!("{name} was given more than once"),
    )
}

/// Twilio's status of a message: a text the network accepted whose delivery failed is
/// `undelivered`; one never sent (failed, or expired in the queue) is `failed`.
pub(super) fn status(m: &Message) -> &'static str {
    match m.status {
        MessageStatus::Queued => "queued",
        MessageStatus::Sending => "sending",
        MessageStatus::Sent => "sent",
        MessageStatus::Delivered => "delivered",
        MessageStatus::Failed if m.sent_at.is_some() => "undelivered",
        MessageStatus::Failed | MessageStatus::Expired => "failed",
        MessageStatus::Canceled => "canceled",
    }
}

pub(super) fn error_code(m: &Message) -> Value {
    match m.status {
        MessageStatus::Expired => json!(code::QUEUE_OVERFLOW),
        MessageStatus::Failed => json!(code::UNKNOWN_ERROR),
        _ => Value::Null,
    }
}

/// The `From` a message was created with, when the Twilio route created it.
async fn stored_sender(state: &AppState, id: &str) -> Result<Option<String>, TwilioError> {
    Ok(state
        .service
        .message_origin(id)
        .await
        .map_err(|e| from_service(e, Api::Messaging))?
        .and_then(|o| o.sender))
}

fn render(t: &TwilioApi, m: &Message, from: Option<&str>) -> Value {
    let sid = sid_of("SM", &m.id);
    let uri = format!("/2010-04-01/Accounts/{}/Messages/{sid}.json", t.account_sid);
    let updated = [Some(m.created_at), m.sent_at, m.delivered_at]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(m.created_at);
    // A message created elsewhere (simgate's own API) has no `From`; with one configured
    // sender it is known anyway.
    let from = from.or(match t.from.as_slice() {
        [only] => Some(only.as_str()),
        _ => None,
    });
    json!({
        "sid": sid,
        "account_sid": t.account_sid,
        "to": m.to,
        "from": from,
        "body": m.log_text,
        "status": status(m),
        "num_segments": m.parts.to_string(),
        "num_media": "0",
        "direction": "outbound-api",
        "date_created": rfc2822(m.created_at),
        "date_updated": rfc2822(updated),
        "date_sent": m.sent_at.map(rfc2822),
        "error_code": error_code(m),
        "error_message": m.error,
        "price": null,
        "price_unit": null,
        "messaging_service_sid": null,
        "api_version": "2010-04-01",
        "uri": uri,
        "subresource_uris": {
            "media": format!("/2010-04-01/Accounts/{}/Messages/{sid}/Media.json", t.account_sid),
        },
    })
}

pub(super) async fn create(
    State(state): State<AppState>,
    Path(account): Path<String>,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, TwilioError> {
    let t = api(&state)?.clone();
    t.check_account(&account)?;
    let p = body_params(body)?;
    let to = one(&p, "To", repeated)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            TwilioError::bad(
                code::TO_REQUIRED,
                "'To' phone number is required to send a Message (send the request as \
                 application/x-www-form-urlencoded)",
            )
        })?;
    let from = match one(&p, "From", repeated)?.filter(|s| !s.is_empty()) {
        Some(f) => f,
        None => {
            return Err(TwilioError::bad(
                code::FROM_REQUIRED,
                "A 'From' parameter is required to send a message (simgate has no \
                 Messaging Services: MessagingServiceSid is not supported)",
            ));
        }
    };
    if !t.from.is_empty() && !t.from.iter().any(|f| f == from) {
        return Err(TwilioError::bad(
            code::FROM_NOT_VALID,
            format!(
                "The 'From' {:?} is not one of twilio.from",
                crate::service::shorten(from)
            ),
        ));
    }
    if p.has("MediaUrl") {
        return Err(TwilioError::bad(
            code::INVALID_MEDIA,
            "simgate sends SMS text only: MediaUrl (MMS) is not supported",
        ));
    }
    let text = one(&p, "Body", repeated)?.unwrap_or("");
    if text.trim().is_empty() {
        return Err(TwilioError::bad(
            code::BODY_REQUIRED,
            "Message body is required",
        ));
    }
    let valid_for = match one(&p, "ValidityPeriod", repeated)? {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(s) if (1..=MAX_VALIDITY).contains(&s) => Some(Duration::from_secs(s)),
            _ => {
                return Err(TwilioError::bad(
                    code::INVALID_PARAMETER,
                    format!("ValidityPeriod must be 1 to {MAX_VALIDITY} seconds"),
                ));
            }
        },
    };
    let status_callback = match one(&p, "StatusCallback", repeated)? {
        None | Some("") => None,
        Some(cb) if cb.len() > MAX_CALLBACK_URL => {
            return Err(TwilioError::bad(
                code::INVALID_STATUS_CALLBACK,
                format!("StatusCallback is longer than {MAX_CALLBACK_URL} characters"),
            ));
        }
        Some(cb) => {
            crate::webhook::config::check_url(
                cb,
                &t.status_callback_http_hosts,
                "twilio.status_callback_http_hosts",
            )
            .map_err(|why| {
                TwilioError::bad(
                    code::INVALID_STATUS_CALLBACK,
                    format!("StatusCallback is not usable: {why}"),
                )
            })?;
            Some(cb.to_owned())
        }
    };
    let answer = state
        .service
        .send_text(
            SendText {
                to: to.to_owned(),
                text: text.to_owned(),
                valid_for,
                origin: Some(MessageOrigin {
                    sender: Some(from.to_owned()),
                    status_callback,
                }),
            },
            None,
            |_| String::new(),
        )
        .await
        .map_err(|e| from_service(e, Api::Messaging))?;
    let Answer::New(q) = answer else {
        return Err(from_service(
            crate::service::ServiceError::Internal("a send without a key was a replay".into()),
            Api::Messaging,
        ));
    };
    state.metrics.record_parts_accepted("text", q.parts);
    let m = state
        .service
        .get_message(&q.id)
        .await
        .map_err(|e| from_service(e, Api::Messaging))?;
    Ok(json(StatusCode::CREATED, &render(&t, &m, Some(from))))
}

pub(super) async fn fetch(
    State(state): State<AppState>,
    Path((account, sid)): Path<(String, String)>,
) -> Result<Response, TwilioError> {
    let t = api(&state)?.clone();
    t.check_account(&account)?;
    let not_found = || TwilioError::not_found(format!("Message {}", crate::service::shorten(&sid)));
    let bare = sid.strip_suffix(".json").ok_or_else(not_found)?;
    let id = id_of::<MessageId>("SM", bare).ok_or_else(not_found)?;
    let m = state
        .service
        .get_message(&id)
        .await
        .map_err(|e| from_service(e, Api::Messaging))?;
    let sender = stored_sender(&state, &m.id).await?;
    Ok(json(StatusCode::OK, &render(&t, &m, sender.as_deref())))
}

/// Twilio's paging: `PageSize` records per page, `Page` the page's number (informational), and
/// `PageToken` our cursor: the SID of the last message of the previous page.
pub(super) async fn list(
    State(state): State<AppState>,
    Path(account): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, TwilioError> {
    let t = api(&state)?.clone();
    t.check_account(&account)?;
    let q = Params::parse(query.as_deref().unwrap_or("").as_bytes());
    let size = match one(&q, "PageSize", repeated)? {
        None => DEFAULT_PAGE,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(TwilioError::bad(
                    code::INVALID_PARAMETER,
                    format!("PageSize must be 1 to {MAX_PAGE}"),
                ));
            }
        },
    };
    let page: u64 = one(&q, "Page", repeated)?
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let before = match one(&q, "PageToken", repeated)? {
        None => None,
        Some(tok) => Some(
            tok.strip_prefix("PA")
                .and_then(|s| id_of::<MessageId>("SM", s))
                .ok_or_else(|| {
                    TwilioError::bad(code::INVALID_PARAMETER, "PageToken is not one of ours")
                })?,
        ),
    };
    let to = one(&q, "To", repeated)?.map(str::to_owned);
    let msgs = state
        .service
        .list_messages(ListMessages {
            to: to.clone(),
            status: None,
            limit: Some(size.to_string()),
            before,
        })
        .await
        .map_err(|e| from_service(e, Api::Messaging))?;
    let base = format!("/2010-04-01/Accounts/{}/Messages.json", t.account_sid);
    let filter = to
        .as_deref()
        .map(|v| format!("&To={}", encode(v)))
        .unwrap_or_default();
    let this = format!("{base}?PageSize={size}&Page={page}{filter}");
    let next = (msgs.len() as u32 >= size)
        .then(|| msgs.last())
        .flatten()
        .map(|last| {
            format!(
                "{base}?PageSize={size}&Page={}&PageToken=PA{}{filter}",
                page + 1,
                sid_of("SM", &last.id)
            )
        });
    let start = page * u64::from(size);
    let mut records: Vec<Value> = Vec::with_capacity(msgs.len());
    for m in &msgs {
        let sender = stored_sender(&state, &m.id).await?;
        records.push(render(&t, m, sender.as_deref()));
    }
    let end = (start + records.len() as u64).saturating_sub(1);
    Ok(json(
        StatusCode::OK,
        &json!({
            "messages": records,
            "first_page_uri": format!("{base}?PageSize={size}&Page=0{filter}"),
            "next_page_uri": next,
            "previous_page_uri": null,
            "page": page,
            "page_size": size,
            "start": start,
            "end": end,
            "uri": this,
        }),
    ))
}
