//! `GET /v1/inbound` and `GET /v1/inbound/{id}`: the texts the modems received, with their JSON.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::dto::rfc3339;
use super::extract::{ApiQuery, IdPath};
use super::handlers::service_problem;
use super::problem::Problem;
use crate::model::InboundText;
use crate::service::{DEFAULT_LIST_LIMIT, ListInbound, MAX_LIST_LIMIT};

/// `GET /v1/inbound` query parameters; all strings so the service can name a bad one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundQuery {
    /// Only this sender.
    #[serde(default)]
    pub from: Option<String>,
    /// Only texts stored at or after this instant.
    #[serde(default)]
    pub since: Option<String>,
    /// Page size.
    #[serde(default)]
    pub limit: Option<String>,
    /// Older than this inbound id (the previous page's `next_before`).
    #[serde(default)]
    pub before: Option<String>,
}

/// One inbound text as the API shows it.
#[derive(Debug, Serialize)]
pub struct InboundJson {
    /// `in_…`.
    pub id: String,
    /// The sender: E.164 number, national digits or an alphanumeric name.
    pub from: String,
    /// The text; for an incomplete message, the parts that came, in order.
    pub text: String,
    /// The modem that received it.
    pub modem: String,
    /// When the SMSC received it (TP-SCTS), with the SMSC's own UTC offset.
    pub sc_timestamp: String,
    /// When simgate stored it.
    pub received_at: String,
    /// Parts the message announced.
    pub parts: u32,
    /// Whether every part arrived.
    pub complete: bool,
    /// Numbers of the parts that never arrived.
    pub missing_parts: Vec<u32>,
}

impl From<&InboundText> for InboundJson {
    fn from(m: &InboundText) -> Self {
        InboundJson {
            id: m.id.clone(),
            from: m.from.clone(),
            text: m.text.clone(),
            modem: m.modem_id.clone(),
            sc_timestamp: m.sc_timestamp.clone(),
            received_at: rfc3339(m.received_at),
            parts: m.parts,
            complete: m.complete,
            missing_parts: m.missing.clone(),
        }
    }
}

/// Answer of `GET /v1/inbound`.
#[derive(Debug, Serialize)]
pub struct InboundListJson {
    /// Newest first.
    pub inbound: Vec<InboundJson>,
    /// Pass as `before` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

pub(super) async fn get_inbound(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> Result<Json<InboundJson>, Problem> {
    let m = state
        .service
        .get_inbound(&id)
        .await
        .map_err(|e| service_problem(e, Some(&state)))?;
    Ok(Json(InboundJson::from(&m)))
}

pub(super) async fn list_inbound(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<InboundQuery>,
) -> Result<Json<InboundListJson>, Problem> {
    // `+` in a query string means a space (HTML forms), so `?from=+1555…` arrives as " 1555…";
    // a leading space before digits can only be that mistake, so read it as the `+` meant.
    let from = q.from.map(|t| match t.strip_prefix(' ') {
        Some(rest) if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) => {
            format!("+{rest}")
        }
        _ => t,
    });
    let requested = q
        .limit
        .as_deref()
        .and_then(|l| l.parse::<u32>().ok())
        .unwrap_or(DEFAULT_LIST_LIMIT)
        .min(MAX_LIST_LIMIT);
    let rows = state
        .service
        .list_inbound(ListInbound {
            from,
            since: q.since,
            limit: q.limit,
            before: q.before,
        })
        .await
        .map_err(|e| service_problem(e, Some(&state)))?;
    let next_before = if rows.len() as u32 >= requested {
        rows.last().map(|m| m.id.clone())
    } else {
        None
    };
    Ok(Json(InboundListJson {
        inbound: rows.iter().map(InboundJson::from).collect(),
        next_before,
    }))
}
