//! Write operations. Each function runs on the writer thread inside its own SAVEPOINT of a group
//! transaction, so it either applies entirely or not at all, and it sees every earlier operation
//! of the same batch. The single writer also makes each one atomic with respect to the others:
//! two verifies of the same OTP can never interleave.
//!
//! One file per family: `enqueue` (admission checks and queued texts), `otps` (create, resend,
//! verify, cancel, expiry), `queue` (the dispatcher's claim and outcomes), `reports` (status
//! reports and recipient matching), `idempotency` and `retention`. This file keeps the row
//! helpers every family shares and re-exports the operations, so `store` calls `ops::…`.

mod enqueue;
mod idempotency;
mod otps;
mod queue;
mod reports;
mod retention;

pub(crate) use self::enqueue::{enqueue_relayed_otp_text, enqueue_text};
pub(crate) use self::otps::{
    add_otp_text, cancel_otp, create_otp, create_otp_worded, expire_due_otps, next_otp_expiry,
    record_verify, resend_otp,
};
pub(crate) use self::queue::{
    claim_next, expire_overdue, finish, mark_not_taken, mark_retry, mark_sent,
    mark_unknown_outcome, next_concat_reference, record_partial_send, recover_interrupted,
};
pub(crate) use self::reports::{record_status_report, same_recipient};
pub(crate) use self::retention::{mask_sql, prune};

use rusqlite::{Connection, OptionalExtension, params};

use super::read::message_status;
use super::{MessageStatus, Millis, StoreError};

/// Appends one row to a message's status history.
fn event(
    c: &Connection,
    seq: i64,
    at: Millis,
    status: MessageStatus,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO message_events (message_seq, at, status, detail) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![seq, at, status.as_str(), detail])?;
    Ok(())
}

/// Row number and status of a message, or `Corrupt` if the id is unknown: the dispatcher only
/// updates messages it claimed, so a missing one is a broken invariant, not a user error.
fn message_row(c: &Connection, id: &str) -> Result<(i64, MessageStatus), StoreError> {
    let row: Option<(i64, String)> = c
        .prepare_cached("SELECT seq, status FROM messages WHERE id = ?1")?
        .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (seq, status) = row.ok_or_else(|| StoreError::Corrupt(format!("no message {id:?}")))?;
    Ok((seq, message_status(&status)?))
}

/// Moves a message to a final status, wiping its sealed body.
fn finish_seq(
    c: &Connection,
    seq: i64,
    status: MessageStatus,
    reason: Option<&str>,
    now: Millis,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE messages SET status = ?2, error = COALESCE(?3, error), sealed_body = NULL,
             updated_at = ?4
         WHERE seq = ?1",
    )?
    .execute(params![seq, status.as_str(), reason, now])?;
    event(c, seq, now, status, reason)?;
    super::events::message_changed(c, seq, now)
}
