//! Reading the event outbox (`GET /v1/events`): a client that cannot receive webhooks, or that
//! lost some, catches up from the last `seq` it saw.
//!
//! **Invariant:** a page never skips an event still retained: events are read by `seq`, which
//! the store assigns in commit order, so a client that passes each page's `next_after` sees
//! every event once. Events older than the retention rules are gone; `oldest_seq` lets a client
//! notice that it fell behind by more than the outbox keeps.

use std::time::Duration;

use crate::model::{EVENT_TYPES, StoredEvent};

use super::errors::in_range;
use super::{Service, ServiceError, invalid, shorten, store_err};

/// A page's default and largest size.
pub const DEFAULT_EVENT_LIMIT: u32 = 100;
/// See [`DEFAULT_EVENT_LIMIT`].
pub const MAX_EVENT_LIMIT: u32 = 1000;
/// The longest a request may wait for the next event.
pub const MAX_EVENT_WAIT_SECONDS: u64 = 30;

/// `GET /v1/events` parameters as the client gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListEvents {
    /// Only events with a greater `seq` (default 0: from the oldest retained).
    pub after: Option<String>,
    /// At most this many.
    pub limit: Option<String>,
    /// Comma-separated event types; absent means all.
    pub types: Option<String>,
    /// When nothing is there yet, wait up to this many seconds for an event (long poll).
    pub wait_seconds: Option<String>,
}

/// One page of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    /// Oldest first.
    pub events: Vec<StoredEvent>,
    /// Pass as `after` for the next page: the last event read, filtered or not.
    pub next_after: i64,
    /// The highest `seq` assigned so far.
    pub latest_seq: i64,
}

fn whole(field: &'static str, text: &str, lo: u64, hi: u64) -> Result<u64, ServiceError> {
    match text.parse::<i64>() {
        Ok(n) => in_range(field, n, lo, hi, ""),
        Err(_) => Err(invalid(
            field,
            format!("{:?} is not a whole number ({lo} to {hi})", shorten(text)),
        )),
    }
}

impl Service {
    /// Events after `after`, oldest first, waiting up to `wait_seconds` for the first one.
    pub async fn list_events(&self, q: ListEvents) -> Result<EventPage, ServiceError> {
        let after = match &q.after {
            None => 0,
            Some(a) => whole("after", a, 0, i64::MAX as u64)? as i64,
        };
        let limit = match &q.limit {
            None => DEFAULT_EVENT_LIMIT,
            Some(l) => whole("limit", l, 1, u64::from(MAX_EVENT_LIMIT))? as u32,
        };
        let wait = match &q.wait_seconds {
            None => Duration::ZERO,
            Some(w) => Duration::from_secs(whole("wait_seconds", w, 0, MAX_EVENT_WAIT_SECONDS)?),
        };
        let types: Option<Vec<String>> = match q.types.as_deref() {
            None | Some("") => None,
            Some(t) => {
                let list: Vec<String> = t.split(',').map(|s| s.trim().to_owned()).collect();
                if let Some(bad) = list.iter().find(|k| !EVENT_TYPES.contains(&k.as_str())) {
                    return Err(invalid(
                        "types",
                        format!(
                            "unknown event type {:?}; known: {}",
                            shorten(bad),
                            EVENT_TYPES.join(", ")
                        ),
                    ));
                }
                Some(list)
            }
        };
        let deadline = tokio::time::Instant::now() + wait;
        let wake = self.store.outbox_wake();
        let mut after = after;
        loop {
            // Registered before the read: a commit in between still wakes the wait below.
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let read = self
                .store
                .events_after(after, limit)
                .await
                .map_err(store_err)?;
            let latest_seq = self.store.last_event_seq().await.map_err(store_err)?;
            let next_after = read.last().map_or(after, |e| e.seq);
            let full_page = read.len() as u32 == limit;
            let events: Vec<StoredEvent> = match &types {
                None => read,
                Some(t) => read.into_iter().filter(|e| t.contains(&e.kind)).collect(),
            };
            if !events.is_empty() || full_page || tokio::time::Instant::now() >= deadline {
                return Ok(EventPage {
                    events,
                    next_after,
                    latest_seq,
                });
            }
            // Only filtered-out events so far: look further, from past them.
            after = next_after;
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                // One more read happens at the loop's top, then the deadline answers.
                continue;
            }
        }
    }
}

/// One webhook endpoint's delivery health, for the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    /// The URL without user info, query or fragment.
    pub endpoint: String,
    /// Its durable delivery state.
    pub state: crate::model::EndpointState,
    /// Events recorded after its cursor.
    pub backlog: i64,
}

impl Service {
    /// Every configured endpoint's delivery state (empty when no `[[webhook]]` is configured).
    pub async fn webhook_health(&self) -> Result<Vec<EndpointHealth>, ServiceError> {
        let rows = self.store.endpoint_states().await.map_err(store_err)?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let latest = self.store.last_event_seq().await.map_err(store_err)?;
        Ok(rows
            .into_iter()
            .map(|(url, state)| EndpointHealth {
                endpoint: crate::webhook::config::label(&url),
                backlog: (latest - state.cursor).max(0),
                state,
            })
            .collect())
    }
}
