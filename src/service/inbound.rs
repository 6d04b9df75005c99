//! Reading the inbound log: one received text, or a filtered page, newest first.
//!
//! **Invariant:** paging by id is exact: the store orders by insertion and the cursor is a row,
//! so no text is skipped or repeated however many share a millisecond.

use crate::model::{InboundId, InboundText, Msisdn};
use crate::store::InboundFilter;

use super::errors::in_range;
use super::log::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
use super::{Service, ServiceError, invalid, parse_id, shorten, store_err};

/// Filter of the inbound log, as the client gave it (validated by [`Service::list_inbound`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListInbound {
    /// Only this sender: an E.164 number, or the name or national digits the SMSC showed.
    pub from: Option<String>,
    /// Only texts stored at or after this RFC 3339 instant.
    pub since: Option<String>,
    /// At most this many (default [`DEFAULT_LIST_LIMIT`], at most [`MAX_LIST_LIMIT`]).
    pub limit: Option<String>,
    /// Only texts stored before this one (an `in_…` id).
    pub before: Option<String>,
}

/// Longest sender a filter may name: TP-OA holds at most 20 digits or 11 characters.
const MAX_SENDER: usize = 20;

impl Service {
    /// One inbound text.
    pub async fn get_inbound(&self, id: &str) -> Result<InboundText, ServiceError> {
        parse_id::<InboundId>(id)?;
        self.store
            .get_inbound(id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ServiceError::NotFound {
                what: "inbound text",
                id: id.to_owned(),
            })
    }

    /// The inbound log, newest first.
    pub async fn list_inbound(&self, q: ListInbound) -> Result<Vec<InboundText>, ServiceError> {
        let from = match q.from.as_deref() {
            None => None,
            // A number is compared in its one E.164 form; anything else (an alphanumeric
            // sender, national digits) exactly as the SMSC sent it.
            Some(f) if f.starts_with('+') => Some(
                Msisdn::parse(f)
                    .map_err(|d| invalid("from", d))?
                    .as_str()
                    .to_owned(),
            ),
            Some(f) if f.is_empty() || f.chars().count() > MAX_SENDER => {
                return Err(invalid(
                    "from",
                    format!(
                        "{:?} is not a sender: give an E.164 number such as +15551234567 or a \
                         sender name of 1 to {MAX_SENDER} characters",
                        shorten(f)
                    ),
                ));
            }
            Some(f) => Some(f.to_owned()),
        };
        let since = match q.since.as_deref() {
            None => None,
            Some(s) => {
                let t =
                    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                        .map_err(|_| {
                            invalid(
                                "since",
                                format!(
                                    "{:?} is not an RFC 3339 time such as 2026-01-31T12:00:00Z",
                                    shorten(s)
                                ),
                            )
                        })?;
                Some(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
            }
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
        if let Some(b) = &q.before {
            parse_id::<InboundId>(b)
                .map_err(|_| invalid("before", "is not an inbound text id (in_…)"))?;
            if self
                .store
                .get_inbound(b)
                .await
                .map_err(store_err)?
                .is_none()
            {
                return Err(invalid(
                    "before",
                    format!("inbound text {b} does not exist"),
                ));
            }
        }
        self.store
            .list_inbound(InboundFilter {
                from,
                since,
                before: q.before,
                limit,
            })
            .await
            .map_err(store_err)
    }
}
