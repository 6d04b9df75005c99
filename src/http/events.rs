//! `GET /v1/events`: the event outbox, oldest first, for clients that catch up (replay) without
//! webhooks. Each event is the exact JSON object a webhook delivery carries as its body.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::extract::ApiQuery;
use super::handlers::service_problem;
use super::problem::Problem;
use crate::service::ListEvents;
use crate::webhook::sign::envelope;

/// `GET /v1/events` query parameters; all strings so the service can name a bad one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events with a greater `seq`.
    #[serde(default)]
    pub after: Option<String>,
    /// Page size.
    #[serde(default)]
    pub limit: Option<String>,
    /// Comma-separated event types.
    #[serde(default)]
    pub types: Option<String>,
    /// Long poll: seconds to wait for the first event.
    #[serde(default)]
    pub wait_seconds: Option<String>,
}

pub(super) async fn list_events(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Response, Problem> {
    let page = state
        .service
        .list_events(ListEvents {
            after: q.after,
            limit: q.limit,
            types: q.types,
            wait_seconds: q.wait_seconds,
        })
        .await
        .map_err(|e| service_problem(e, Some(&state)))?;
    // The envelopes are embedded as the webhook bodies are built, byte for byte.
    let events: Vec<String> = page.events.iter().map(envelope).collect();
    let body = format!(
        "{{\"events\":[{}],\"next_after\":{},\"latest_seq\":{}}}",
        events.join(","),
        page.next_after,
        page.latest_seq
    );
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
