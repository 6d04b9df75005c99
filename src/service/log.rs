//! Reading the delivery log: one message, or a filtered page, newest first.
//!
//! **Invariant:** paging by message id is exact (no message skipped or repeated), even when
//! several messages share a millisecond.

use crate::model::{Message, MessageId, MessageStatus, Millis, Msisdn, PublicId};
use crate::store::MessageFilter;

use super::errors::in_range;
use super::{Service, ServiceError, invalid, parse_id, shorten, store_err};

/// Filter of the delivery log, as the client gave it (validated by [`Service::list_messages`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListMessages {
    /// Only this recipient.
    pub to: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// At most this many (default [`DEFAULT_LIST_LIMIT`], at most [`MAX_LIST_LIMIT`]).
    pub limit: Option<String>,
    /// Only messages older than this message id or RFC 3339 instant.
    pub before: Option<String>,
}

/// Default page size of the delivery log.
pub const DEFAULT_LIST_LIMIT: u32 = 50;

/// Largest page of the delivery log (the store's own cap).
pub const MAX_LIST_LIMIT: u32 = 1000;

impl Service {
    /// One message of the delivery log.
    pub async fn get_message(&self, id: &str) -> Result<Message, ServiceError> {
        parse_id::<MessageId>(id)?;
        self.store
            .get_message(id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ServiceError::NotFound {
                what: "message",
                id: id.to_owned(),
            })
    }

    /// What the client said about message `id` beyond recipient and body, if anything.
    pub async fn message_origin(
        &self,
        id: &str,
    ) -> Result<Option<crate::model::MessageOrigin>, ServiceError> {
        parse_id::<MessageId>(id)?;
        self.store.message_origin(id).await.map_err(store_err)
    }

    /// The delivery log, newest first.
    pub async fn list_messages(&self, q: ListMessages) -> Result<Vec<Message>, ServiceError> {
        let to = match &q.to {
            None => None,
            Some(t) => Some(
                Msisdn::parse(t)
                    .map_err(|d| invalid("to", d))?
                    .as_str()
                    .to_owned(),
            ),
        };
        let status = match &q.status {
            None => None,
            Some(s) => Some(MessageStatus::parse(s).ok_or_else(|| {
                let all: Vec<&str> = MessageStatus::ALL.iter().map(|s| s.as_str()).collect();
                invalid(
                    "status",
                    format!(
                        "{:?} is not a message status; use one of {}",
                        shorten(s),
                        all.join(", ")
                    ),
                )
            })?),
        };
        let limit = match &q.limit {
            None => DEFAULT_LIST_LIMIT,
            Some(l) => match l.parse::<i64>() {
                Ok(n) => in_range("limit", n, 1, MAX_LIST_LIMIT as u64, "")? as u32,
                Err(_) => {
                    return Err(invalid(
                        "limit",
                        format!(
                            "{:?} is not a whole number (1 to {MAX_LIST_LIMIT})",
                            shorten(l)
                        ),
                    ));
                }
            },
        };
        // A message id as cursor: (its instant, its id), so paging is exact even when several
        // messages share a millisecond. A time as cursor: strictly older.
        let (before, cursor) = match &q.before {
            None => (None, None),
            Some(b) if b.starts_with(MessageId::PREFIX) => {
                parse_id::<MessageId>(b).map_err(|_| {
                    invalid(
                        "before",
                        "is neither a message id (msg_…) nor an RFC 3339 time",
                    )
                })?;
                let m = self
                    .store
                    .get_message(b)
                    .await
                    .map_err(store_err)?
                    .ok_or_else(|| invalid("before", format!("message {b} does not exist")))?;
                (Some(m.created_at), Some(b.clone()))
            }
            Some(b) => {
                let t = time::OffsetDateTime::parse(
                    b,
                    &time::format_description::well_known::Rfc3339,
                )
                .map_err(|_| {
                    invalid(
                        "before",
                        format!(
                            "{:?} is neither a message id (msg_…) nor an RFC 3339 time such \
                                 as 2026-01-31T12:00:00Z",
                            shorten(b)
                        ),
                    )
                })?;
                let ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
                (Some(ms), None)
            }
        };
        let filter = |before: Option<Millis>, limit: u32| MessageFilter {
            to: to.clone(),
            status,
            before,
            limit,
        };
        let (Some(at), Some(cursor)) = (before, cursor) else {
            return self
                .store
                .list_messages(filter(before, limit))
                .await
                .map_err(store_err);
        };
        // The store orders by (created_at, insertion) descending and filters by instant only, so
        // ask for everything up to and including the cursor's instant and drop what precedes the
        // cursor in that order, widening the window until a full page follows the cursor.
        let mut fetch = limit.saturating_add(64).min(MAX_LIST_LIMIT);
        loop {
            let rows = self
                .store
                .list_messages(filter(Some(at.saturating_add(1)), fetch))
                .await
                .map_err(store_err)?;
            let exhausted = (rows.len() as u32) < fetch || fetch == MAX_LIST_LIMIT;
            match rows.iter().position(|m| m.id == cursor) {
                Some(i) if exhausted || rows.len() - i > limit as usize => {
                    return Ok(rows.into_iter().skip(i + 1).take(limit as usize).collect());
                }
                // The cursor left the filtered set (e.g. its status changed): everything of its
                // instant is treated as seen.
                None if exhausted => {
                    return Ok(rows
                        .into_iter()
                        .filter(|m| m.created_at < at)
                        .take(limit as usize)
                        .collect());
                }
                _ => fetch = fetch.saturating_mul(4).min(MAX_LIST_LIMIT),
            }
        }
    }
}
