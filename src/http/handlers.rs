//! One handler per route of [`super::ROUTES`], the bearer-token middleware, and the mapping of
//! service errors to problems.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::dto::{
    CanceledJson, CreateOtpBody, ListQuery, MessageJson, MessagesJson, OtpCreatedJson, OtpJson,
    SendTextBody, TextQueuedJson, VerifyBody, VerifyByNumberBody, VerifyJson,
};
use super::extract::{ApiJson, ApiQuery, IdPath};
use super::problem::{Problem, printable};
use super::{AppState, TokenId, allowed_methods};
use crate::model::OtpStatus;
use crate::service::{
    Answer, IdempotencyKey, ListMessages, MAX_LIST_LIMIT, SendText, ServiceError,
};

/// Maps a service error to its problem, counting rate-limit rejections in the metrics.
pub(super) fn service_problem(e: ServiceError, state: Option<&AppState>) -> Problem {
    match e {
        ServiceError::Validation { field, detail } => {
            Problem::invalid_field(field, format!("{field}: {detail}"))
        }
        ServiceError::NotAllowed { detail } => Problem::new(
            StatusCode::FORBIDDEN,
            "number-not-allowed",
            "The number is not allowed",
            detail,
        )
        .with_extension("field", json!("to")),
        ServiceError::MalformedId { detail } => Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-id",
            "The id is malformed",
            detail,
        ),
        ServiceError::NotFound { what, id } => Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            format!("{what} {id} does not exist (or was removed by retention)"),
        ),
        e @ ServiceError::NoPendingOtp { .. } => Problem::new(
            StatusCode::NOT_FOUND,
            "no-pending-otp",
            "No pending OTP",
            e.to_string(),
        ),
        ServiceError::Conflict(detail) => Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            "The request conflicts with the resource's state",
            detail,
        ),
        ServiceError::OtpEnded {
            id,
            status,
            attempts_remaining,
        } => {
            let (code, slug, title, detail) = match status {
                OtpStatus::Approved => (
                    StatusCode::CONFLICT,
                    "otp-already-approved",
                    "The OTP is already approved",
                    format!(
                        "OTP {id} was already approved; a code verifies once, and this attempt \
                         was not counted"
                    ),
                ),
                OtpStatus::Expired => (
                    StatusCode::GONE,
                    "otp-expired",
                    "The OTP has expired",
                    format!(
                        "OTP {id} has expired; none of its codes verifies any more: send a new \
                         OTP"
                    ),
                ),
                OtpStatus::Canceled => (
                    StatusCode::CONFLICT,
                    "otp-canceled",
                    "The OTP was canceled",
                    format!("OTP {id} was canceled; none of its codes verifies: send a new OTP"),
                ),
                OtpStatus::MaxAttemptsReached => (
                    StatusCode::CONFLICT,
                    "otp-attempts-exhausted",
                    "The OTP has no attempts left",
                    format!(
                        "OTP {id} ended after too many wrong codes (otp.max_attempts); even \
                         the right code no longer verifies: send a new OTP"
                    ),
                ),
                OtpStatus::Pending => (
                    StatusCode::CONFLICT,
                    "conflict",
                    "The request conflicts with the resource's state",
                    format!("OTP {id} is pending"),
                ),
            };
            Problem::new(code, slug, title, detail)
                .with_extension("id", json!(id))
                .with_extension("otp_status", json!(status.as_str()))
                .with_extension("verified", json!(false))
                .with_extension("attempts_remaining", json!(attempts_remaining))
        }
        ServiceError::IdempotencyMismatch => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency-Key reused with a different request",
            "this Idempotency-Key was already used with a different request; a retry must send \
             the same body, and a new request needs a new key",
        )
        .with_extension("field", json!("Idempotency-Key")),
        ServiceError::RateLimited {
            name,
            limit,
            retry_after,
        } => {
            if let Some(s) = state {
                s.metrics.record_rate_limited(name.as_str());
            }
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Rate limit reached",
                format!("{limit}; retry in {retry_after} s"),
            )
            .with_extension("limit", json!(name.as_str()))
            .with_retry_after(retry_after)
        }
        ServiceError::QueueFull { retry_after } => {
            if let Some(s) = state {
                s.metrics
                    .record_rate_limited(crate::limits::LimitName::QueueFull.as_str());
            }
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue-full",
                "The send queue is full",
                format!(
                    "the queue holds limits.queue_max messages already; retry in {retry_after} s"
                ),
            )
            .with_retry_after(retry_after)
        }
        ServiceError::Unavailable(detail) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        )
        .with_retry_after(5),
        ServiceError::Internal(detail) => {
            tracing::error!(error = %detail, "request failed");
            Problem::internal()
        }
    }
}

/// Converts a service error, with metrics.
fn fail(state: &AppState) -> impl Fn(ServiceError) -> Problem + '_ {
    move |e| service_problem(e, Some(state))
}

/// Requires a valid bearer token, applies `limits.requests_per_token`, and puts the token's id
/// into the request for idempotency scoping.
pub(super) async fn require_token(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let header = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(v) => match v.to_str() {
            Ok(s) => Some(s.to_owned()),
            Err(_) => {
                return Problem::unauthorized("the Authorization header is not valid ASCII")
                    .into_response();
            }
        },
    };
    let id = match state.tokens.authorize(header.as_deref()) {
        Ok(id) => id,
        Err(p) => return p.into_response(),
    };
    // `authorize` accepted it, so the header is `Bearer <token>`.
    let token = header
        .as_deref()
        .and_then(|h| h.trim().split_once(' '))
        .map(|(_, t)| t.trim())
        .unwrap_or("");
    if let Err(e) = state.service.check_token_rate(token) {
        return service_problem(e, Some(&state)).into_response();
    }
    req.extensions_mut().insert(id);
    next.run(req).await
}

fn token_id(req_ext: Option<&TokenId>) -> String {
    req_ext.map(|t| t.0.clone()).unwrap_or_default()
}

fn idempotency(headers: &HeaderMap, scope: String) -> Result<Option<IdempotencyKey>, Problem> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(k) => Ok(Some(IdempotencyKey {
                scope,
                key: k.to_owned(),
            })),
            Err(_) => Err(Problem::invalid_field(
                "Idempotency-Key",
                "Idempotency-Key: must be visible ASCII, e.g. a UUID",
            )),
        },
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".to_owned())
}

/// A JSON answer with a given status.
fn json_answer(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A fresh answer, or the stored one (marked as a replay, byte for byte as the first time).
fn created<T>(answer: Answer<T>, render: impl Fn(&T) -> String) -> Response {
    match answer {
        Answer::New(v) => json_answer(StatusCode::ACCEPTED, render(&v)),
        Answer::Replay(stored) => {
            let mut resp = json_answer(StatusCode::ACCEPTED, stored);
            resp.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            resp
        }
    }
}

/// A modem that is sending is busy, not down: it takes the next message as soon as this one is
/// out, so it counts as ready for `/readyz` and for the no-modem warning.
fn can_send(state: &str) -> bool {
    matches!(state, "ready" | "sending")
}

/// What a client should know about an accepted message that depends on the modems: none is
/// ready, so it waits in the queue (and an OTP may expire there).
fn modem_warnings(state: &AppState) -> Vec<String> {
    let modems = state.modems.snapshot();
    if modems.iter().any(|m| can_send(&m.state)) {
        return Vec::new();
    }
    let why = if modems.is_empty() {
        "no modem is configured".to_owned()
    } else {
        let states: Vec<String> = modems
            .iter()
            .map(|m| format!("{} is {}", m.id, m.state))
            .collect();
        states.join(", ")
    };
    vec![format!(
        "no modem is ready to send ({why}): the message is queued and goes out when a modem \
         is ready (see GET /v1/modems)"
    )]
}

fn otp_answer(c: &crate::service::OtpCreated, modem_warnings: &[String]) -> String {
    let mut j = OtpCreatedJson::from(c);
    j.warnings.extend_from_slice(modem_warnings);
    to_json(&j)
}

pub(super) async fn create_otp(
    State(state): State<AppState>,
    token: Option<axum::Extension<TokenId>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateOtpBody>,
) -> Result<Response, Problem> {
    let idem = idempotency(&headers, token_id(token.as_deref()))?;
    let warnings = modem_warnings(&state);
    let render = |c: &crate::service::OtpCreated| otp_answer(c, &warnings);
    let answer = state
        .service
        .create_otp(body.into(), idem, render)
        .await
        .map_err(fail(&state))?;
    if let Answer::New(c) = &answer {
        state.metrics.record_parts_accepted("otp", c.parts);
    }
    Ok(created(answer, render))
}

pub(super) async fn verify_otp(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<VerifyBody>,
) -> Result<Json<VerifyJson>, Problem> {
    let v = state
        .service
        .verify(&id, &body.code)
        .await
        .map_err(fail(&state))?;
    Ok(Json(VerifyJson::new(id, v)))
}

pub(super) async fn verify_by_number(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<VerifyByNumberBody>,
) -> Result<Json<VerifyJson>, Problem> {
    let (id, v) = state
        .service
        .verify_by_number(&body.to, &body.code)
        .await
        .map_err(fail(&state))?;
    Ok(Json(VerifyJson::new(id, v)))
}

pub(super) async fn get_otp(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> Result<Json<OtpJson>, Problem> {
    let o = state.service.get_otp(&id).await.map_err(fail(&state))?;
    Ok(Json(OtpJson::from(&o)))
}

pub(super) async fn resend_otp(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> Result<Response, Problem> {
    let c = state.service.resend(&id).await.map_err(fail(&state))?;
    state.metrics.record_parts_accepted("otp", c.parts);
    Ok(json_answer(
        StatusCode::ACCEPTED,
        otp_answer(&c, &modem_warnings(&state)),
    ))
}

pub(super) async fn cancel_otp(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> Result<Json<CanceledJson>, Problem> {
    let st = state.service.cancel(&id).await.map_err(fail(&state))?;
    Ok(Json(CanceledJson::new(id, st)))
}

pub(super) async fn send_text(
    State(state): State<AppState>,
    token: Option<axum::Extension<TokenId>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SendTextBody>,
) -> Result<Response, Problem> {
    let idem = idempotency(&headers, token_id(token.as_deref()))?;
    let warnings = modem_warnings(&state);
    let render = |t: &crate::service::TextQueued| {
        let mut j = TextQueuedJson::from(t);
        j.warnings.extend_from_slice(&warnings);
        to_json(&j)
    };
    let answer = state
        .service
        .send_text(
            SendText {
                to: body.to,
                text: body.text,
                valid_for: None,
                origin: None,
            },
            idem,
            render,
        )
        .await
        .map_err(fail(&state))?;
    if let Answer::New(t) = &answer {
        state.metrics.record_parts_accepted("text", t.parts);
    }
    Ok(created(answer, render))
}

pub(super) async fn get_message(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> Result<Json<MessageJson>, Problem> {
    let m = state.service.get_message(&id).await.map_err(fail(&state))?;
    Ok(Json(MessageJson::from(&m)))
}

pub(super) async fn list_messages(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<MessagesJson>, Problem> {
    // `+` in a query string means a space (HTML forms), so `?to=+1555…` arrives as " 1555…";
    // a leading space before digits can only be that mistake, so read it as the `+` meant.
    let to = q.to.map(|t| match t.strip_prefix(' ') {
        Some(rest) if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) => {
            format!("+{rest}")
        }
        _ => t,
    });
    let requested = q
        .limit
        .as_deref()
        .and_then(|l| l.parse::<u32>().ok())
        .unwrap_or(crate::service::DEFAULT_LIST_LIMIT)
        .min(MAX_LIST_LIMIT);
    let msgs = state
        .service
        .list_messages(ListMessages {
            to,
            status: q.status,
            limit: q.limit,
            before: q.before,
        })
        .await
        .map_err(fail(&state))?;
    let next_before = if msgs.len() as u32 >= requested {
        msgs.last().map(|m| m.id.clone())
    } else {
        None
    };
    Ok(Json(MessagesJson {
        messages: msgs.iter().map(MessageJson::from).collect(),
        next_before,
    }))
}

pub(super) async fn modems(State(state): State<AppState>) -> Response {
    Json(json!({ "modems": state.modems.snapshot() })).into_response()
}

pub(super) async fn openapi() -> Response {
    Json(super::openapi::document()).into_response()
}

pub(super) async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

pub(super) async fn readyz(State(state): State<AppState>) -> Result<Response, Problem> {
    // A node that lost the shared database accepts nothing and claims nothing, whatever its
    // modems or the other nodes can do: a load balancer must send clients elsewhere.
    if let Some(pg) = state.service.store().postgres()
        && !pg.connected()
    {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "This node cannot reach the database",
            format!(
                "node {} cannot reach the cluster's PostgreSQL database; it neither accepts nor \
                 claims messages until it answers again (the other nodes take over its claims)",
                pg.node_id()
            ),
        ));
    }
    let modems = state.modems.snapshot();
    // Modem ids are unique per node only: in a cluster each is named `<node>/<id>`.
    let ready: Vec<String> = modems
        .iter()
        .filter(|m| can_send(&m.state))
        .map(|m| match &m.node {
            Some(node) => format!("{node}/{}", m.id),
            None => m.id.clone(),
        })
        .collect();
    if !ready.is_empty() {
        let mut nodes: Vec<&str> = modems
            .iter()
            .filter(|m| can_send(&m.state))
            .filter_map(|m| m.node.as_deref())
            .collect();
        nodes.dedup();
        let mut answer = json!({"status": "ready", "modems_ready": ready});
        if !nodes.is_empty() {
            answer["nodes_ready"] = json!(nodes);
        }
        return Ok(Json(answer).into_response());
    }
    let detail = if modems.is_empty() {
        "no modem is configured or running".to_owned()
    } else {
        let states: Vec<String> = modems
            .iter()
            .map(|m| format!("{} is {}", m.id, m.state))
            .collect();
        format!("no modem is ready: {}", states.join(", "))
    };
    Err(Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not-ready",
        "No modem is ready",
        detail,
    ))
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    // Scrapes are rare (seconds apart); reading the depth here keeps the gauge exact.
    match state.service.store().queue_depth().await {
        Ok(d) => state.metrics.set_queue_depth(d),
        Err(e) => tracing::warn!(error = %e, "queue depth unavailable for /metrics"),
    }
    for m in state.modems.snapshot() {
        state.metrics.set_modem_state(&m.id, &m.state);
    }
    state
        .metrics
        .set_store_writer(&state.service.store().writer_stats());
    state.metrics.set_modem_noise(
        crate::at::engine::urcs_dropped(),
        crate::modem::undecodable_pdus(),
    );
    let mut resp = state.metrics.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

pub(super) async fn no_route(req: Request) -> Response {
    if allowed_methods(req.uri().path()).is_some() {
        return method_not_allowed(req).await;
    }
    Problem::no_route(req.method().as_str(), req.uri().path()).into_response()
}

pub(super) async fn method_not_allowed(req: Request) -> Response {
    let allow = allowed_methods(req.uri().path()).unwrap_or_default();
    let mut resp = method_problem(req.method().as_str(), req.uri().path(), &allow).into_response();
    if let Ok(v) = HeaderValue::from_str(&allow) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}

fn method_problem(method: &str, path: &str, allow: &str) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!(
            "{} is not allowed on {}; use {allow}",
            printable(method),
            printable(path)
        ),
    )
}
