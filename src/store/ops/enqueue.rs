//! Admission and queueing of texts: the per-number daily OTP cap, the queue bound, the message
//! row itself, and the plain and relayed-OTP enqueue operations built on them.

use rusqlite::{Connection, params};

use super::event;
use super::idempotency::{check_idempotency, save_idempotency};
use crate::model::MessageOrigin;
use crate::store::{
    Body, CreateOutcome, DAY_MS, Idempotency, MessageStatus, Millis, NewMessage, StoreError,
};

/// `Some(retry_after_ms)` if `to` already got `cap` OTP texts in the last 24 h.
pub(super) fn daily_cap_hit(
    c: &Connection,
    to: &str,
    cap: u32,
    now: Millis,
) -> Result<Option<Millis>, StoreError> {
    if cap == 0 {
        return Ok(None);
    }
    let since = now - DAY_MS;
    let count: i64 = c
        .prepare_cached(
            "SELECT COUNT(*) FROM messages
             WHERE to_number = ?1 AND created_at > ?2 AND kind = 'otp'",
        )?
        .query_row(params![to, since], |r| r.get(0))?;
    if count < i64::from(cap) {
        return Ok(None);
    }
    // One more is allowed once enough of the oldest have left the window to bring the count
    // below the cap (more than one if the cap was lowered since).
    let leaving: Millis = c
        .prepare_cached(
            "SELECT created_at FROM messages
             WHERE to_number = ?1 AND created_at > ?2 AND kind = 'otp'
             ORDER BY created_at LIMIT 1 OFFSET ?3",
        )?
        .query_row(params![to, since, count - i64::from(cap)], |r| r.get(0))?;
    Ok(Some((leaving + DAY_MS - now).max(1)))
}

pub(super) fn queue_full(c: &Connection, queue_max: u64) -> Result<bool, StoreError> {
    if queue_max == 0 {
        return Ok(false);
    }
    Ok(crate::store::read::queue_depth(c)? >= queue_max)
}

pub(super) fn insert_message(
    c: &Connection,
    msg: &NewMessage,
    otp_id: Option<&str>,
) -> Result<i64, StoreError> {
    let (body, sealed) = match &msg.body {
        Body::Clear(text) => (Some(text.as_str()), None),
        Body::Sealed(bytes) => (None, Some(bytes.as_slice())),
    };
    c.prepare_cached(
        "INSERT INTO messages (id, otp_id, to_number, kind, log_text, body, sealed_body, parts,
             status, created_at, updated_at, deadline, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued', ?9, ?9, ?10, ?9)",
    )?
    .execute(params![
        msg.id,
        otp_id,
        msg.to.as_str(),
        msg.kind.as_str(),
        msg.log_text,
        body,
        sealed,
        msg.parts,
        msg.created_at,
        msg.deadline
    ])?;
    let seq = c.last_insert_rowid();
    event(c, seq, msg.created_at, MessageStatus::Queued, None)?;
    crate::store::events::message_changed(c, seq, msg.created_at)?;
    Ok(seq)
}

pub(crate) fn enqueue_text(
    c: &Connection,
    msg: &NewMessage,
    idem: Option<&Idempotency>,
    queue_max: u64,
    origin: Option<&MessageOrigin>,
) -> Result<CreateOutcome, StoreError> {
    let now = msg.created_at;
    if let Some(seen) = check_idempotency(c, idem, now)? {
        return Ok(seen);
    }
    if queue_full(c, queue_max)? {
        return Ok(CreateOutcome::QueueFull);
    }
    let seq = insert_message(c, msg, None)?;
    if let Some(o) = origin {
        c.prepare_cached(
            "INSERT INTO message_origins (message_seq, sender, status_callback)
             VALUES (?1, ?2, ?3)",
        )?
        .execute(params![seq, o.sender, o.status_callback])?;
    }
    save_idempotency(c, idem, now)?;
    Ok(CreateOutcome::Created)
}

/// Queues an OTP text whose code was drawn elsewhere (no OTP row): as [`enqueue_text`], and
/// counted against the per-number daily cap like every `kind = 'otp'` message.
pub(crate) fn enqueue_relayed_otp_text(
    c: &Connection,
    msg: &NewMessage,
    idem: Option<&Idempotency>,
    daily_cap: u32,
    queue_max: u64,
) -> Result<CreateOutcome, StoreError> {
    let now = msg.created_at;
    if let Some(seen) = check_idempotency(c, idem, now)? {
        return Ok(seen);
    }
    if let Some(retry_after_ms) = daily_cap_hit(c, msg.to.as_str(), daily_cap, now)? {
        return Ok(CreateOutcome::DailyLimit { retry_after_ms });
    }
    if queue_full(c, queue_max)? {
        return Ok(CreateOutcome::QueueFull);
    }
    insert_message(c, msg, None)?;
    save_idempotency(c, idem, now)?;
    Ok(CreateOutcome::Created)
}
