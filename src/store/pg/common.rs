//! What every family of PostgreSQL operations shares: transactions of either durability, the
//! message row mapper, a message's status history, the final-status helper, the per-number
//! lock, and the outbox's one way in ([`record`]).
//!
//! Functions take `&impl GenericClient` so the same helper runs inside a transaction or on a
//! pooled connection for a read.

use deadpool_postgres::GenericClient;
use serde_json::{Value, json};
use tokio_postgres::Row;

use super::Postgres;
use crate::model::{EVENT_TYPES, Message, MessageKind, MessageStatus, Millis, OtpStatus};
use crate::store::StoreError;

/// A transaction on a pooled connection.
pub(super) type Tx<'a> = deadpool_postgres::Transaction<'a>;

impl Postgres {
    /// A transaction whose COMMIT answers an API client: synced per the server's
    /// `synchronous_commit` (on by default), so a `202` means durable.
    pub(super) async fn begin_client<'a>(
        &self,
        client: &'a mut deadpool_postgres::Object,
    ) -> Result<Tx<'a>, StoreError> {
        Ok(client.transaction().await?)
    }

    /// A transaction of the dispatcher's bookkeeping: committed without waiting for the WAL
    /// flush, as SQLite's `Balanced` does, and for the same reason (store/mod.rs): a lost one
    /// rolls a message back to `queued` or `sending`, which recovery handles.
    pub(super) async fn begin_bookkeeping<'a>(
        &self,
        client: &'a mut deadpool_postgres::Object,
    ) -> Result<Tx<'a>, StoreError> {
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL synchronous_commit TO OFF")
            .await?;
        Ok(tx)
    }
}

pub(super) fn message_status(s: &str) -> Result<MessageStatus, StoreError> {
    MessageStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("message status {s:?}")))
}

pub(super) fn otp_status(s: &str) -> Result<OtpStatus, StoreError> {
    OtpStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("otp status {s:?}")))
}

/// An unsigned count or size from a `BIGINT` column.
pub(super) fn count(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

pub(super) const MESSAGE_COLUMNS: &str = "id, otp_id, to_number, kind, log_text, parts, status, \
     attempts, error, created_at, sent_at, delivered_at, deadline, next_attempt_at, modem_id";

/// A row of [`MESSAGE_COLUMNS`], in that order.
pub(super) fn message(r: &Row) -> Result<Message, StoreError> {
    let kind: String = r.try_get(3)?;
    let status: String = r.try_get(6)?;
    Ok(Message {
        id: r.try_get(0)?,
        otp_id: r.try_get(1)?,
        to: r.try_get(2)?,
        kind: MessageKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("message kind {kind:?}")))?,
        log_text: r.try_get(4)?,
        parts: count(r.try_get(5)?),
        status: message_status(&status)?,
        attempts: count(r.try_get(7)?),
        error: r.try_get(8)?,
        created_at: r.try_get(9)?,
        sent_at: r.try_get(10)?,
        delivered_at: r.try_get(11)?,
        deadline: r.try_get(12)?,
        next_attempt_at: r.try_get(13)?,
        modem_id: r.try_get(14)?,
    })
}

/// The message at row `seq` (operations know rows by `seq`).
pub(super) async fn message_by_seq(
    c: &impl GenericClient,
    seq: i64,
) -> Result<Message, StoreError> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE seq = $1");
    let stmt = c.prepare_cached(&sql).await?;
    message(&c.query_one(&stmt, &[&seq]).await?)
}

/// Appends one row to a message's status history.
pub(super) async fn event(
    c: &impl GenericClient,
    seq: i64,
    at: Millis,
    status: MessageStatus,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    let stmt = c
        .prepare_cached(
            "INSERT INTO message_events (message_seq, at, status, detail) VALUES ($1, $2, $3, $4)",
        )
        .await?;
    c.execute(&stmt, &[&seq, &at, &status.as_str(), &detail])
        .await?;
    Ok(())
}

/// Moves a message to a final status, wiping its sealed body and ending any lease.
pub(super) async fn finish_seq(
    c: &impl GenericClient,
    seq: i64,
    status: MessageStatus,
    reason: Option<&str>,
    now: Millis,
) -> Result<(), StoreError> {
    let stmt = c
        .prepare_cached(
            "UPDATE messages SET status = $2, error = COALESCE($3, error), sealed_body = NULL,
                 updated_at = $4, lease_until = NULL
             WHERE seq = $1",
        )
        .await?;
    c.execute(&stmt, &[&seq, &status.as_str(), &reason, &now])
        .await?;
    event(c, seq, now, status, reason).await?;
    message_changed(c, seq, now).await
}

/// Serialises, until the transaction ends, every transaction that counts or changes what a
/// phone number is owed (its pending OTP, its texts in the daily window), on every node, while
/// different numbers never wait for each other. Advisory keys are 64-bit; a collision between
/// two numbers only makes them wait for each other.
pub(super) async fn lock_number(c: &impl GenericClient, number: &str) -> Result<(), StoreError> {
    let stmt = c
        .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended('number:' || $1, 0))")
        .await?;
    c.execute(&stmt, &[&number]).await?;
    Ok(())
}

/// Appends one event in the caller's transaction. `data` must be a JSON object without
/// secrets: it is delivered to every subscribed endpoint as is. Its `seq` is assigned later, by
/// the sequencer (`events.rs`), once it has committed; the other nodes hear of it from the
/// notifier (`Postgres::committed`), after the commit.
pub(super) async fn record(
    c: &impl GenericClient,
    kind: &str,
    subject: &str,
    at: Millis,
    data: &Value,
) -> Result<(), StoreError> {
    debug_assert!(EVENT_TYPES.contains(&kind), "unknown event type {kind}");
    let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
    let stmt = c
        .prepare_cached(
            "INSERT INTO events (id, type, subject, at, data) VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    c.execute(&stmt, &[&id, &kind, &subject, &at, &data.to_string()])
        .await?;
    Ok(())
}

/// Records `message.<status>` for the message at row `seq`, from the row as it is now. The
/// same payload as SQLite's (`store/events.rs`).
pub(super) async fn message_changed(
    c: &impl GenericClient,
    seq: i64,
    at: Millis,
) -> Result<(), StoreError> {
    let m = message_by_seq(c, seq).await?;
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
    record(c, &format!("message.{status}"), &m.id, at, &data).await
}

/// Records `otp.<status>` for an OTP that just left `pending`. No code, no text.
pub(super) async fn otp_changed(
    c: &impl GenericClient,
    otp_id: &str,
    at: Millis,
) -> Result<(), StoreError> {
    let stmt = c
        .prepare_cached(
            "SELECT to_number, status, attempts, max_attempts, expires_at FROM otps WHERE id = $1",
        )
        .await?;
    let r = c.query_one(&stmt, &[&otp_id]).await?;
    let (to, status, attempts, max_attempts, expires_at): (String, String, i64, i64, Millis) = (
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        r.try_get(3)?,
        r.try_get(4)?,
    );
    let data = json!({
        "otp_id": otp_id,
        "to": to,
        "status": status,
        "attempts": attempts,
        "max_attempts": max_attempts,
        "expires_at_ms": expires_at,
    });
    record(c, &format!("otp.{status}"), otp_id, at, &data).await
}
