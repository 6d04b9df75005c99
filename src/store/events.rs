//! The event outbox: one row per state change, written in the transaction of the change, and
//! the webhook endpoints' delivery state (cursor, retries, dead events, a 410's disabling).
//!
//! [`record`] is the one way in for code that runs inside a store operation: a change and its
//! event commit together or not at all, so a crash can neither lose an event of a committed
//! change nor report a change that rolled back. `seq` orders events globally in commit order
//! (the single writer commits operations in the order it assigns them).
//!
//! Payloads (`data`) are JSON objects built here from the rows just written. They never carry
//! an OTP code or an OTP's text: OTP events name the OTP and its status only, and message events
//! carry the delivery log's text, where an OTP's code is already masked.

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use super::{Millis, Sqlite, StoreError};

pub use crate::model::{EVENT_TYPES, EndpointState, StoredEvent};

/// Appends one event in the caller's transaction; returns its `seq`. `data` must be a JSON
/// object without secrets: it is delivered to every subscribed endpoint as is.
pub fn record(
    c: &Connection,
    kind: &str,
    subject: &str,
    at: Millis,
    data: &Value,
) -> Result<i64, StoreError> {
    debug_assert!(EVENT_TYPES.contains(&kind), "unknown event type {kind}");
    let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
    c.prepare_cached(
        "INSERT INTO events (id, type, subject, at, data) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![id, kind, subject, at, data.to_string()])?;
    Ok(c.last_insert_rowid())
}

/// Records `message.<status>` for the message at row `seq`, from the row as it is now.
pub(crate) fn message_changed(c: &Connection, seq: i64, at: Millis) -> Result<(), StoreError> {
    let m = super::read::message_by_seq(c, seq)?;
    let status = m.status.as_str();
    let data = json!({
        "message_id": m.id,
        "otp_id": m.otp_id,
        "to": m.to,
        "kind": m.kind.as_str(),
        "status": status,
        "parts": m.parts,
        "attempts": m.attempts,
        // The delivery log's text: an OTP's code is masked in it.
        "text": m.log_text,
        "error": m.error,
        "modem_id": m.modem_id,
    });
    record(c, &format!("message.{status}"), &m.id, at, &data)?;
    Ok(())
}

/// Records `otp.<status>` for an OTP that just left `pending`. No code, no text.
pub(crate) fn otp_changed(c: &Connection, otp_id: &str, at: Millis) -> Result<(), StoreError> {
    let (to, status, attempts, max_attempts, expires_at): (String, String, i64, i64, Millis) = c
        .prepare_cached(
            "SELECT to_number, status, attempts, max_attempts, expires_at FROM otps WHERE id = ?1",
        )?
        .query_row(params![otp_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
    let data = json!({
        "otp_id": otp_id,
        "to": to,
        "status": status,
        "attempts": attempts,
        "max_attempts": max_attempts,
        "expires_at_ms": expires_at,
    });
    record(c, &format!("otp.{status}"), otp_id, at, &data)?;
    Ok(())
}

/// Events with `seq > after`, oldest first, at most `limit`.
pub(crate) fn events_after(
    c: &Connection,
    after: i64,
    limit: u32,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = c
        .prepare_cached(
            "SELECT seq, id, type, subject, at, data FROM events WHERE seq > ?1
             ORDER BY seq LIMIT ?2",
        )?
        .query_map(params![after, limit], |r| {
            Ok(StoredEvent {
                seq: r.get(0)?,
                id: r.get(1)?,
                kind: r.get(2)?,
                subject: r.get(3)?,
                at: r.get(4)?,
                data: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// The highest `seq` ever assigned (0 before the first event), pruned events included.
fn last_seq(c: &Connection) -> Result<i64, StoreError> {
    Ok(
        c.prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'events'")?
            .query_row([], |r| r.get(0))
            .optional()?
            .unwrap_or(0),
    )
}

/// Creates or updates the rows of the configured endpoints (`(url, fingerprint)`): a new
/// endpoint starts after the last event recorded so far (it is not sent the retained history;
/// `GET /v1/events` serves that), a changed config lifts a 410's disabling, and rows of
/// endpoints no longer configured are dropped so they hold back no pruning.
pub(crate) fn register_endpoints(
    c: &Connection,
    endpoints: &[(String, String)],
) -> Result<(), StoreError> {
    let start = last_seq(c)?;
    for (url, fingerprint) in endpoints {
        c.prepare_cached(
            "INSERT INTO webhook_endpoints (url, fingerprint, cursor) VALUES (?1, ?2, ?3)
             ON CONFLICT (url) DO UPDATE SET fingerprint = excluded.fingerprint,
                 disabled_at = CASE WHEN fingerprint = excluded.fingerprint
                     THEN disabled_at END,
                 disabled_reason = CASE WHEN fingerprint = excluded.fingerprint
                     THEN disabled_reason END",
        )?
        .execute(params![url, fingerprint, start])?;
    }
    let keep: Vec<&str> = endpoints.iter().map(|(u, _)| u.as_str()).collect();
    let known: Vec<String> = c
        .prepare_cached("SELECT url FROM webhook_endpoints")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for url in known.iter().filter(|u| !keep.contains(&u.as_str())) {
        c.prepare_cached("DELETE FROM webhook_endpoints WHERE url = ?1")?
            .execute(params![url])?;
    }
    Ok(())
}

fn endpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EndpointState> {
    Ok(EndpointState {
        cursor: r.get(0)?,
        head_seq: r.get(1)?,
        attempts: r.get(2)?,
        first_failure_at: r.get(3)?,
        next_attempt_at: r.get(4)?,
        disabled: r.get(5)?,
        delivered: r.get::<_, i64>(6)? as u64,
        dead: r.get::<_, i64>(7)? as u64,
        last_error: r.get(8)?,
    })
}

const ENDPOINT_COLUMNS: &str = "cursor, head_seq, attempts, first_failure_at, next_attempt_at,
    disabled_reason, delivered, dead, last_error";

fn endpoint_state(c: &Connection, url: &str) -> Result<Option<EndpointState>, StoreError> {
    Ok(c.prepare_cached(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE url = ?1"
    ))?
    .query_row(params![url], endpoint_row)
    .optional()?)
}

/// Every registered endpoint's state, by URL.
fn endpoint_states(c: &Connection) -> Result<Vec<(String, EndpointState)>, StoreError> {
    let rows = c
        .prepare_cached(&format!(
            "SELECT {ENDPOINT_COLUMNS}, url FROM webhook_endpoints ORDER BY url"
        ))?
        .query_map([], |r| Ok((r.get(9)?, endpoint_row(r)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// What became of one delivery attempt, for [`Store::record_attempt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// A 2xx: the cursor moves to the event.
    Delivered,
    /// Failed; try again at `next_attempt_at`.
    Retry {
        /// When.
        next_attempt_at: Millis,
        /// Why it failed (status or transport error), for the row and the log.
        error: String,
    },
    /// The retry period is over: the event is dead for this endpoint and the cursor moves on.
    Dead {
        /// The last failure.
        error: String,
    },
    /// 410 Gone: the endpoint is disabled until its config changes; the cursor stays.
    Gone,
}

fn record_attempt(
    c: &Connection,
    url: &str,
    seq: i64,
    result: &AttemptResult,
    now: Millis,
) -> Result<(), StoreError> {
    match result {
        AttemptResult::Delivered => {
            c.prepare_cached(
                "UPDATE webhook_endpoints SET cursor = MAX(cursor, ?2), head_seq = NULL,
                     attempts = 0, first_failure_at = NULL, next_attempt_at = NULL,
                     last_error = NULL, delivered = delivered + 1
                 WHERE url = ?1",
            )?
            .execute(params![url, seq])?;
        }
        AttemptResult::Retry {
            next_attempt_at,
            error,
        } => {
            c.prepare_cached(
                "UPDATE webhook_endpoints SET
                     attempts = CASE WHEN head_seq IS ?2 THEN attempts + 1 ELSE 1 END,
                     first_failure_at = CASE WHEN head_seq IS ?2 THEN first_failure_at
                         ELSE ?3 END,
                     head_seq = ?2, next_attempt_at = ?4, last_error = ?5
                 WHERE url = ?1",
            )?
            .execute(params![url, seq, now, next_attempt_at, error])?;
        }
        AttemptResult::Dead { error } => {
            let attempts: i64 = c
                .prepare_cached(
                    "SELECT CASE WHEN head_seq IS ?2 THEN attempts + 1 ELSE 1 END
                     FROM webhook_endpoints WHERE url = ?1",
                )?
                .query_row(params![url, seq], |r| r.get(0))?;
            c.prepare_cached(
                "INSERT OR REPLACE INTO webhook_dead (url, event_seq, at, attempts, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![url, seq, now, attempts, error])?;
            c.prepare_cached(
                "UPDATE webhook_endpoints SET cursor = MAX(cursor, ?2), head_seq = NULL,
                     attempts = 0, first_failure_at = NULL, next_attempt_at = NULL,
                     last_error = ?3, dead = dead + 1
                 WHERE url = ?1",
            )?
            .execute(params![url, seq, error])?;
        }
        AttemptResult::Gone => {
            c.prepare_cached(
                "UPDATE webhook_endpoints SET disabled_at = ?2,
                     disabled_reason = ?3, last_error = ?3
                 WHERE url = ?1",
            )?
            .execute(params![
                url,
                now,
                format!("answered 410 Gone to event {seq}")
            ])?;
        }
    }
    Ok(())
}

/// Retention of the outbox: events older than `cutoff` go once every configured endpoint is
/// past them (an undelivered event is kept whatever its age, until it is delivered or dead);
/// dead-letter rows older than `cutoff` go too. Returns the events deleted.
pub(crate) fn prune_events(c: &Connection, cutoff: Millis) -> Result<u64, StoreError> {
    let min_cursor: Option<i64> = c
        .prepare_cached("SELECT MIN(cursor) FROM webhook_endpoints")?
        .query_row([], |r| r.get(0))?;
    let n = c.execute(
        "DELETE FROM events WHERE at < ?1 AND seq <= ?2",
        params![cutoff, min_cursor.unwrap_or(i64::MAX)],
    )? as u64;
    c.execute("DELETE FROM webhook_dead WHERE at < ?1", params![cutoff])?;
    Ok(n)
}

impl Sqlite {
    /// Records a modem's state change (`from` is `None` for the first state seen after start).
    /// Modem state lives in the driver, not in a table, so this write is the change's record.
    pub async fn record_modem_state(
        &self,
        modem_id: &str,
        from: Option<&str>,
        to: &str,
        detail: Option<&str>,
        at: Millis,
    ) -> Result<i64, StoreError> {
        let data = json!({
            "modem_id": modem_id,
            "state": to,
            "previous_state": from,
            "detail": detail,
        });
        let modem_id = modem_id.to_owned();
        self.write(move |c| record(c, "modem.state_changed", &modem_id, at, &data))
            .await
    }

    /// Events after `after`, oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.read(move |c| events_after(c, after, limit)).await
    }

    /// See [`register_endpoints`]: run once at start, before anything records an event.
    pub async fn register_endpoints(
        &self,
        endpoints: Vec<(String, String)>,
    ) -> Result<(), StoreError> {
        self.write(move |c| register_endpoints(c, &endpoints)).await
    }

    /// One endpoint's delivery state; `None` if it is not registered.
    /// One node: its worker always has the turn.
    pub async fn take_endpoint_turn(&self, _url: &str) -> Result<Option<Millis>, StoreError> {
        Ok(None)
    }

    pub async fn endpoint_state(&self, url: &str) -> Result<Option<EndpointState>, StoreError> {
        let url = url.to_owned();
        self.read(move |c| endpoint_state(c, &url)).await
    }

    /// Every registered endpoint's state, by URL (the status page's webhook panel).
    pub async fn endpoint_states(&self) -> Result<Vec<(String, EndpointState)>, StoreError> {
        self.read(endpoint_states).await
    }

    /// The highest event `seq` ever assigned (0 before the first).
    pub async fn last_event_seq(&self) -> Result<i64, StoreError> {
        self.read(last_seq).await
    }

    /// Records one delivery attempt of event `seq` to `url`.
    pub async fn record_attempt(
        &self,
        url: &str,
        seq: i64,
        result: AttemptResult,
        now: Millis,
    ) -> Result<(), StoreError> {
        let url = url.to_owned();
        self.write(move |c| record_attempt(c, &url, seq, &result, now))
            .await
    }

    /// Moves an endpoint's cursor over events its filter skips, so they hold back no pruning.
    pub async fn skip_events(&self, url: &str, up_to: i64) -> Result<(), StoreError> {
        let url = url.to_owned();
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE webhook_endpoints SET cursor = MAX(cursor, ?2)
                 WHERE url = ?1 AND head_seq IS NULL",
            )?
            .execute(params![url, up_to])?;
            Ok(())
        })
        .await
    }

    /// See [`prune_events`].
    pub async fn prune_events(&self, cutoff: Millis) -> Result<u64, StoreError> {
        self.write(move |c| prune_events(c, cutoff)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db"), StoreOptions::default()).unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn the_retention_pass_drops_events_by_the_shortest_rule() {
        use crate::store::DAY_MS;
        let (_d, s) = store();
        let now = 30 * DAY_MS;
        s.record_modem_state("m0", None, "ready", None, now - 8 * DAY_MS)
            .await
            .unwrap();
        s.record_modem_state("m0", None, "ready", None, now - 3 * DAY_MS)
            .await
            .unwrap();
        let fresh = s
            .record_modem_state("m0", None, "ready", None, now - DAY_MS / 2)
            .await
            .unwrap();
        // No retention rule at all: a week.
        assert_eq!(s.prune(now, None, None).await.unwrap().events_deleted, 1);
        // Numbers masked after two days: their events go with them.
        let stats = s
            .prune(now, Some(90 * DAY_MS), Some(2 * DAY_MS))
            .await
            .unwrap();
        assert_eq!(stats.events_deleted, 1);
        let left = s.events_after(0, 10).await.unwrap();
        assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![fresh]);
    }

    #[tokio::test]
    async fn cursor_retry_dead_gone_and_pruning() {
        let (_d, s) = store();
        s.record_modem_state("m0", None, "initializing", None, 1)
            .await
            .unwrap();
        s.register_endpoints(vec![("http://a".into(), "f1".into())])
            .await
            .unwrap();
        // A new endpoint starts after what exists.
        let st = s.endpoint_state("http://a").await.unwrap().unwrap();
        assert_eq!(st.cursor, 1);
        let a = s
            .record_modem_state("m0", Some("initializing"), "ready", None, 2)
            .await
            .unwrap();
        let b = s
            .record_modem_state("m0", Some("ready"), "disconnected", None, 3)
            .await
            .unwrap();
        assert!(b > a && a > 1);
        let evs = s.events_after(1, 10).await.unwrap();
        assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(evs[0].kind, "modem.state_changed");

        let retry = |at| AttemptResult::Retry {
            next_attempt_at: at,
            error: "500".into(),
        };
        s.record_attempt("http://a", a, retry(10), 5).await.unwrap();
        s.record_attempt("http://a", a, retry(20), 10)
            .await
            .unwrap();
        let st = s.endpoint_state("http://a").await.unwrap().unwrap();
        assert_eq!((st.head_seq, st.attempts), (Some(a), 2));
        assert_eq!(st.first_failure_at, Some(5));
        s.record_attempt(
            "http://a",
            a,
            AttemptResult::Dead {
                error: "500".into(),
            },
            30,
        )
        .await
        .unwrap();
        s.record_attempt("http://a", b, AttemptResult::Delivered, 31)
            .await
            .unwrap();
        let st = s.endpoint_state("http://a").await.unwrap().unwrap();
        assert_eq!(
            (st.cursor, st.dead, st.delivered, st.attempts),
            (b, 1, 1, 0)
        );

        s.record_attempt("http://a", b + 1, AttemptResult::Gone, 40)
            .await
            .unwrap();
        let st = s.endpoint_state("http://a").await.unwrap().unwrap();
        assert!(st.disabled.unwrap().contains("410"));
        // Same config: stays disabled; changed config: enabled again, cursor kept.
        s.register_endpoints(vec![("http://a".into(), "f1".into())])
            .await
            .unwrap();
        assert!(
            s.endpoint_state("http://a")
                .await
                .unwrap()
                .unwrap()
                .disabled
                .is_some()
        );
        s.register_endpoints(vec![("http://a".into(), "f2".into())])
            .await
            .unwrap();
        let st = s.endpoint_state("http://a").await.unwrap().unwrap();
        assert_eq!((st.disabled, st.cursor), (None, b));

        // Pruning keeps what an endpoint has not passed.
        let c = s
            .record_modem_state("m0", Some("disconnected"), "ready", None, 4)
            .await
            .unwrap();
        assert_eq!(s.prune_events(1000).await.unwrap(), 3);
        let left = s.events_after(0, 10).await.unwrap();
        assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![c]);
        // Seqs are never reused after pruning.
        s.register_endpoints(vec![]).await.unwrap();
        assert_eq!(s.prune_events(1000).await.unwrap(), 1);
        let d = s
            .record_modem_state("m0", Some("ready"), "disconnected", None, 5)
            .await
            .unwrap();
        assert!(d > c);
    }

    #[tokio::test]
    async fn state_changes_write_their_events_in_order_without_codes() {
        use crate::store::{Body, MessageKind, NewMessage, NewOtp};
        let (_d, s) = store();
        let t0: Millis = 1_800_000_000_000;
        let otp = NewOtp {
            id: "otp_1".into(),
            to: crate::model::Msisdn::parse("+15551234567").unwrap(),
            code_hmac: b"hmac".to_vec(),
            max_attempts: 5,
            expires_at: t0 + 300_000,
            created_at: t0,
        };
        let msg = NewMessage {
            id: "msg_1".into(),
            to: crate::model::Msisdn::parse("+15551234567").unwrap(),
            kind: MessageKind::Otp,
            log_text: "Your code is ******.".into(),
            body: Body::Sealed(vec![1, 2, 3]),
            parts: 1,
            created_at: t0,
            deadline: t0 + 300_000,
        };
        s.create_otp(otp, msg, None, 0, 0).await.unwrap();
        let claimed = s.claim_next(t0 + 1).await.unwrap().unwrap();
        s.mark_sent(&claimed.id, "m0", vec![7], t0 + 2)
            .await
            .unwrap();
        s.record_verify("otp_1", true, t0 + 3).await.unwrap();
        // A second approval changes nothing and records nothing.
        s.record_verify("otp_1", true, t0 + 4).await.unwrap();
        let evs = s.events_after(0, 100).await.unwrap();
        let kinds: Vec<&str> = evs.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["message.queued", "message.sent", "otp.approved"]);
        assert!(evs.windows(2).all(|w| w[0].seq < w[1].seq));
        let sent: Value = serde_json::from_str(&evs[1].data).unwrap();
        assert_eq!(sent["text"], "Your code is ******.");
        assert_eq!(sent["modem_id"], "m0");
        assert_eq!(sent["otp_id"], "otp_1");
        let approved: Value = serde_json::from_str(&evs[2].data).unwrap();
        assert_eq!(approved["status"], "approved");
        assert!(approved.get("text").is_none() && approved.get("code").is_none());
        assert_eq!(evs[2].subject, "otp_1");
    }
}
