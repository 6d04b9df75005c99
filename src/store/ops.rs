//! Write operations. Each function runs on the writer thread inside its own SAVEPOINT of a group
//! transaction, so it either applies entirely or not at all, and it sees every earlier operation
//! of the same batch. The single writer also makes each one atomic with respect to the others:
//! two verifies of the same OTP can never interleave.

use rusqlite::{Connection, OptionalExtension, params};

use super::read::{message_status, otp_status};
use super::{
    AddTextOutcome, Body, Claimed, CreateOtpOutcome, CreateOutcome, DAY_MS, Idempotency,
    MessageKind, MessageStatus, Millis, NewMessage, NewOtp, NewOtpText, OnPending, OtpStatus,
    OtpWording, PruneStats, REPORT_WINDOW_MS, ReportEffect, ReportOutcome, ResendOutcome,
    StatusReport, StoreError, UnknownOutcomePolicy, UnknownOutcomeRule, VerifyResult,
};
use crate::model::MessageOrigin;

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

/// The stored answer for a repeated key, or a conflict. Keys live one day.
fn check_idempotency(
    c: &Connection,
    idem: Option<&Idempotency>,
    now: Millis,
) -> Result<Option<CreateOutcome>, StoreError> {
    let Some(idem) = idem else { return Ok(None) };
    let row: Option<(Vec<u8>, String)> = c
        .prepare_cached(
            "SELECT request_hash, response FROM idempotency
             WHERE scope = ?1 AND key = ?2 AND created_at > ?3",
        )?
        .query_row(params![idem.scope, idem.key, now - DAY_MS], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(row.map(|(hash, response)| {
        if hash == idem.request_hash {
            CreateOutcome::Replay(response)
        } else {
            CreateOutcome::IdempotencyConflict
        }
    }))
}

fn save_idempotency(
    c: &Connection,
    idem: Option<&Idempotency>,
    now: Millis,
) -> Result<(), StoreError> {
    if let Some(idem) = idem {
        // REPLACE: a key older than its day may be reused for a new request.
        c.prepare_cached(
            "INSERT OR REPLACE INTO idempotency (scope, key, request_hash, response, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            idem.scope,
            idem.key,
            idem.request_hash,
            idem.response,
            now
        ])?;
    }
    Ok(())
}

/// `Some(retry_after_ms)` if `to` already got `cap` OTP texts in the last 24 h.
fn daily_cap_hit(
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

fn queue_full(c: &Connection, queue_max: u64) -> Result<bool, StoreError> {
    if queue_max == 0 {
        return Ok(false);
    }
    Ok(super::read::queue_depth(c)? >= queue_max)
}

fn insert_message(
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
        msg.to,
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
    super::events::message_changed(c, seq, msg.created_at)?;
    Ok(seq)
}

/// Cancels the still-queued texts of one OTP; texts already handed to a modem run their course.
fn cancel_queued_texts(
    c: &Connection,
    otp_id: &str,
    now: Millis,
    why: &str,
) -> Result<(), StoreError> {
    let seqs: Vec<i64> = c
        .prepare_cached("SELECT seq FROM messages WHERE otp_id = ?1 AND status = 'queued'")?
        .query_map(params![otp_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for seq in seqs {
        finish_seq(c, seq, MessageStatus::Canceled, Some(why), now)?;
    }
    Ok(())
}

fn set_otp_status(
    c: &Connection,
    otp_id: &str,
    status: OtpStatus,
    now: Millis,
) -> Result<bool, StoreError> {
    // `WHERE status = 'pending'` makes every transition out of pending happen at most once.
    let n = c
        .prepare_cached(
            "UPDATE otps SET status = ?2, updated_at = ?3 WHERE id = ?1 AND status = 'pending'",
        )?
        .execute(params![otp_id, status.as_str(), now])?;
    if n == 1 {
        super::events::otp_changed(c, otp_id, now)?;
    }
    Ok(n == 1)
}

pub(crate) fn create_otp(
    c: &Connection,
    otp: &NewOtp,
    msg: &NewMessage,
    idem: Option<&Idempotency>,
    daily_cap: u32,
    queue_max: u64,
) -> Result<CreateOutcome, StoreError> {
    let now = msg.created_at;
    if let Some(seen) = check_idempotency(c, idem, now)? {
        return Ok(seen);
    }
    if let Some(retry_after_ms) = daily_cap_hit(c, &otp.to, daily_cap, now)? {
        return Ok(CreateOutcome::DailyLimit { retry_after_ms });
    }
    if queue_full(c, queue_max)? {
        return Ok(CreateOutcome::QueueFull);
    }
    // A new OTP replaces the number's pending one (SPEC: "a new OTP for a number cancels that
    // number's pending one"), including its texts that have not left yet.
    let pending: Vec<String> = c
        .prepare_cached("SELECT id FROM otps WHERE to_number = ?1 AND status = 'pending'")?
        .query_map(params![otp.to], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for old in pending {
        set_otp_status(c, &old, OtpStatus::Canceled, now)?;
        cancel_queued_texts(c, &old, now, "replaced by a newer OTP")?;
    }
    c.prepare_cached(
        "INSERT INTO otps (id, to_number, status, attempts, max_attempts, expires_at, created_at,
             updated_at)
         VALUES (?1, ?2, 'pending', 0, ?3, ?4, ?5, ?5)",
    )?
    .execute(params![
        otp.id,
        otp.to,
        otp.max_attempts,
        otp.expires_at,
        otp.created_at
    ])?;
    insert_code(c, &otp.id, &otp.code_hmac, &msg.id, now)?;
    insert_message(c, msg, Some(&otp.id))?;
    save_idempotency(c, idem, now)?;
    Ok(CreateOutcome::Created)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn create_otp_worded(
    c: &Connection,
    otp: &NewOtp,
    msg: &NewMessage,
    wording: &OtpWording,
    on_pending: OnPending,
    idem: Option<&Idempotency>,
    daily_cap: u32,
    queue_max: u64,
) -> Result<CreateOtpOutcome, StoreError> {
    if on_pending == OnPending::Keep {
        if let Some(seen) = check_idempotency(c, idem, msg.created_at)? {
            return Ok(CreateOtpOutcome::Done(seen));
        }
        let pending: Option<String> = c
            .prepare_cached(
                "SELECT id FROM otps WHERE to_number = ?1 AND status = 'pending' AND expires_at > ?2
                 ORDER BY created_at DESC, rowid DESC LIMIT 1",
            )?
            .query_row(params![otp.to, msg.created_at], |r| r.get(0))
            .optional()?;
        if let Some(otp_id) = pending {
            return Ok(CreateOtpOutcome::PendingExists { otp_id });
        }
    }
    let outcome = create_otp(c, otp, msg, idem, daily_cap, queue_max)?;
    if outcome == CreateOutcome::Created {
        let offsets: Vec<String> = wording.code_offsets.iter().map(|o| o.to_string()).collect();
        c.prepare_cached(
            "INSERT INTO otp_wordings (otp_id, code_length, code_offsets) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![otp.id, wording.code_length, offsets.join(",")])?;
    }
    Ok(CreateOtpOutcome::Done(outcome))
}

pub(crate) fn add_otp_text(c: &Connection, t: &NewOtpText) -> Result<AddTextOutcome, StoreError> {
    let now = t.msg.created_at;
    if let Some(seen) = check_idempotency(c, t.idem.as_ref(), now)? {
        return Ok(match seen {
            CreateOutcome::Replay(r) => AddTextOutcome::Replay(r),
            _ => AddTextOutcome::IdempotencyConflict,
        });
    }
    let Some((status, _, _, expires_at)) = otp_row(c, &t.otp_id)? else {
        return Ok(AddTextOutcome::NotFound);
    };
    let status = settle_expiry(c, &t.otp_id, status, expires_at, now)?;
    if status != OtpStatus::Pending {
        return Ok(AddTextOutcome::NotPending(status));
    }
    if t.max_texts > 0 {
        let texts: u32 = c
            .prepare_cached("SELECT COUNT(*) FROM otp_codes WHERE otp_id = ?1")?
            .query_row(params![t.otp_id], |r| r.get(0))?;
        if texts >= t.max_texts {
            return Ok(AddTextOutcome::TextCap { texts });
        }
    }
    if let Some(retry_after_ms) = daily_cap_hit(c, &t.msg.to, t.daily_cap, now)? {
        return Ok(AddTextOutcome::DailyLimit { retry_after_ms });
    }
    if queue_full(c, t.queue_max)? {
        return Ok(AddTextOutcome::QueueFull);
    }
    insert_code(c, &t.otp_id, &t.code_hmac, &t.msg.id, now)?;
    insert_message(c, &t.msg, Some(&t.otp_id))?;
    save_idempotency(c, t.idem.as_ref(), now)?;
    Ok(AddTextOutcome::Added)
}

fn insert_code(
    c: &Connection,
    otp_id: &str,
    hmac: &[u8],
    message_id: &str,
    now: Millis,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "INSERT INTO otp_codes (otp_id, code_hmac, message_id, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![otp_id, hmac, message_id, now])?;
    Ok(())
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
    if let Some(retry_after_ms) = daily_cap_hit(c, &msg.to, daily_cap, now)? {
        return Ok(CreateOutcome::DailyLimit { retry_after_ms });
    }
    if queue_full(c, queue_max)? {
        return Ok(CreateOutcome::QueueFull);
    }
    insert_message(c, msg, None)?;
    save_idempotency(c, idem, now)?;
    Ok(CreateOutcome::Created)
}

/// Status, attempts, max attempts and expiry of an OTP.
fn otp_row(c: &Connection, id: &str) -> Result<Option<(OtpStatus, u32, u32, Millis)>, StoreError> {
    let row: Option<(String, u32, u32, Millis)> = c
        .prepare_cached(
            "SELECT status, attempts, max_attempts, expires_at FROM otps WHERE id = ?1",
        )?
        .query_row(params![id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    row.map(|(s, a, m, e)| Ok((otp_status(&s)?, a, m, e)))
        .transpose()
}

/// Moves a pending OTP past its expiry to `expired`; returns the status it has now.
fn settle_expiry(
    c: &Connection,
    id: &str,
    status: OtpStatus,
    expires_at: Millis,
    now: Millis,
) -> Result<OtpStatus, StoreError> {
    if status == OtpStatus::Pending && now >= expires_at {
        set_otp_status(c, id, OtpStatus::Expired, now)?;
        return Ok(OtpStatus::Expired);
    }
    Ok(status)
}

pub(crate) fn resend_otp(
    c: &Connection,
    otp_id: &str,
    code_hmac: &[u8],
    msg: &NewMessage,
    daily_cap: u32,
    queue_max: u64,
) -> Result<ResendOutcome, StoreError> {
    let now = msg.created_at;
    let Some((status, _, _, expires_at)) = otp_row(c, otp_id)? else {
        return Ok(ResendOutcome::NotFound);
    };
    let status = settle_expiry(c, otp_id, status, expires_at, now)?;
    if status != OtpStatus::Pending {
        return Ok(ResendOutcome::NotPending(status));
    }
    if let Some(retry_after_ms) = daily_cap_hit(c, &msg.to, daily_cap, now)? {
        return Ok(ResendOutcome::DailyLimit { retry_after_ms });
    }
    if queue_full(c, queue_max)? {
        return Ok(ResendOutcome::QueueFull);
    }
    insert_code(c, otp_id, code_hmac, &msg.id, now)?;
    insert_message(c, msg, Some(otp_id))?;
    Ok(ResendOutcome::Created)
}

pub(crate) fn record_verify(
    c: &Connection,
    otp_id: &str,
    matched: bool,
    now: Millis,
) -> Result<Option<VerifyResult>, StoreError> {
    let Some((status, attempts, max_attempts, expires_at)) = otp_row(c, otp_id)? else {
        return Ok(None);
    };
    let status = settle_expiry(c, otp_id, status, expires_at, now)?;
    let remaining = |used: u32| max_attempts.saturating_sub(used);
    if status != OtpStatus::Pending {
        return Ok(Some(VerifyResult {
            status,
            verified: false,
            attempts_remaining: remaining(attempts),
        }));
    }
    if matched {
        let verified = set_otp_status(c, otp_id, OtpStatus::Approved, now)?;
        // A resent text still waiting would only deliver a code nobody needs any more.
        cancel_queued_texts(c, otp_id, now, "OTP approved")?;
        return Ok(Some(VerifyResult {
            status: OtpStatus::Approved,
            verified,
            attempts_remaining: remaining(attempts),
        }));
    }
    let used = attempts + 1;
    c.prepare_cached("UPDATE otps SET attempts = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![otp_id, used, now])?;
    let status = if used >= max_attempts {
        set_otp_status(c, otp_id, OtpStatus::MaxAttemptsReached, now)?;
        cancel_queued_texts(c, otp_id, now, "OTP attempts exhausted")?;
        OtpStatus::MaxAttemptsReached
    } else {
        OtpStatus::Pending
    };
    Ok(Some(VerifyResult {
        status,
        verified: false,
        attempts_remaining: remaining(used),
    }))
}

pub(crate) fn cancel_otp(
    c: &Connection,
    otp_id: &str,
    now: Millis,
) -> Result<Option<OtpStatus>, StoreError> {
    let Some((status, _, _, expires_at)) = otp_row(c, otp_id)? else {
        return Ok(None);
    };
    let status = settle_expiry(c, otp_id, status, expires_at, now)?;
    if status != OtpStatus::Pending {
        return Ok(Some(status));
    }
    set_otp_status(c, otp_id, OtpStatus::Canceled, now)?;
    cancel_queued_texts(c, otp_id, now, "OTP canceled")?;
    Ok(Some(OtpStatus::Canceled))
}

/// Expires every queued message whose deadline has passed; returns how many.
pub(crate) fn expire_overdue(c: &Connection, now: Millis) -> Result<u64, StoreError> {
    let seqs: Vec<i64> = c
        .prepare_cached("SELECT seq FROM messages WHERE status = 'queued' AND deadline <= ?1")?
        .query_map(params![now], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for &seq in &seqs {
        finish_seq(c, seq, MessageStatus::Expired, Some("deadline passed"), now)?;
    }
    Ok(seqs.len() as u64)
}

/// Moves pending OTPs whose TTL has ended to `expired` (each with its `otp.expired` event), at
/// most `limit` of them; returns how many.
pub(crate) fn expire_due_otps(c: &Connection, now: Millis, limit: u32) -> Result<u64, StoreError> {
    let ids: Vec<String> = c
        .prepare_cached(
            "SELECT id FROM otps INDEXED BY otps_pending
             WHERE status = 'pending' AND expires_at <= ?1 LIMIT ?2",
        )?
        .query_map(params![now, limit], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &ids {
        set_otp_status(c, id, OtpStatus::Expired, now)?;
    }
    Ok(ids.len() as u64)
}

/// When the next pending OTP's TTL ends.
pub(crate) fn next_otp_expiry(c: &Connection) -> Result<Option<Millis>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT MIN(expires_at) FROM otps INDEXED BY otps_pending WHERE status = 'pending'",
    )?
    .query_row([], |r| r.get(0))?)
}

/// Oldest first means walking the queue in `seq` order; left to itself the planner prefers the
/// `next_attempt_at` index and sorts the whole backlog on every claim, hence `INDEXED BY`.
pub(crate) fn claim_next(c: &Connection, now: Millis) -> Result<Option<Claimed>, StoreError> {
    expire_overdue(c, now)?;
    type Row = (
        i64,
        String,
        String,
        String,
        Option<String>,
        Option<Vec<u8>>,
        Millis,
        u32,
        u32,
        Millis,
        (u32, u32),
    );
    let row: Option<Row> = c
        .prepare_cached(
            "SELECT seq, id, to_number, kind, body, sealed_body, deadline, attempts, parts,
                 created_at, unknown_outcomes, partial_sends
             FROM messages INDEXED BY messages_queue
             WHERE status = 'queued' AND next_attempt_at <= ?1
             ORDER BY seq LIMIT 1",
        )?
        .query_row(params![now], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                (r.get(10)?, r.get(11)?),
            ))
        })
        .optional()?;
    let Some((seq, id, to, kind, body, sealed, deadline, attempts, parts, created_at, counters)) =
        row
    else {
        return Ok(None);
    };
    let (unknown_outcomes, partial_sends) = counters;
    let kind =
        MessageKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("kind {kind:?}")))?;
    let body = match (sealed, body) {
        (Some(s), _) => Body::Sealed(s),
        (None, Some(b)) => Body::Clear(b),
        (None, None) => return Err(StoreError::Corrupt(format!("message {id:?} has no body"))),
    };
    c.prepare_cached(
        "UPDATE messages SET status = 'sending', attempts = attempts + 1, updated_at = ?2
         WHERE seq = ?1",
    )?
    .execute(params![seq, now])?;
    event(c, seq, now, MessageStatus::Sending, None)?;
    Ok(Some(Claimed {
        id,
        to,
        kind,
        body,
        deadline,
        attempts: attempts + 1,
        parts,
        created_at,
        unknown_outcomes,
        partial_sends,
    }))
}

pub(crate) fn mark_sent(
    c: &Connection,
    id: &str,
    modem_id: &str,
    mrs: &[u8],
    now: Millis,
) -> Result<(), StoreError> {
    let (seq, _) = message_row(c, id)?;
    let to: String = c
        .prepare_cached("SELECT to_number FROM messages WHERE seq = ?1")?
        .query_row(params![seq], |r| r.get(0))?;
    // The body is no longer needed once the network has it: wipe the sealed code at once.
    c.prepare_cached(
        "UPDATE messages SET status = 'sent', sent_at = ?2, modem_id = ?3, error = NULL,
             sealed_body = NULL, updated_at = ?2, parts = ?4
         WHERE seq = ?1",
    )?
    // The encoder's part count is the truth; the caller's estimate at enqueue may differ.
    .execute(params![seq, now, modem_id, mrs.len() as i64])?;
    insert_parts(c, seq, modem_id, mrs, &to, now)?;
    let refs: Vec<String> = mrs.iter().map(|m| m.to_string()).collect();
    let detail = format!("modem {modem_id}, TP-MR {}", refs.join(","));
    event(c, seq, now, MessageStatus::Sent, Some(&detail))?;
    super::events::message_changed(c, seq, now)
}

pub(crate) fn mark_retry(
    c: &Connection,
    id: &str,
    reason: &str,
    next_attempt_at: Millis,
    now: Millis,
) -> Result<(), StoreError> {
    let (seq, _) = message_row(c, id)?;
    c.prepare_cached(
        "UPDATE messages SET status = 'queued', error = ?2, next_attempt_at = ?3, updated_at = ?4
         WHERE seq = ?1",
    )?
    .execute(params![seq, reason, next_attempt_at, now])?;
    event(
        c,
        seq,
        now,
        MessageStatus::Queued,
        Some(&format!("retry: {reason}")),
    )
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

pub(crate) fn finish(
    c: &Connection,
    id: &str,
    status: MessageStatus,
    reason: Option<&str>,
    now: Millis,
) -> Result<(), StoreError> {
    let (seq, _) = message_row(c, id)?;
    finish_seq(c, seq, status, reason, now)
}

fn unknown_outcome_seq(
    c: &Connection,
    seq: i64,
    reason: &str,
    rule: &UnknownOutcomeRule,
    now: Millis,
) -> Result<MessageStatus, StoreError> {
    let note = format!("outcome unknown: {reason}");
    event(c, seq, now, MessageStatus::Sending, Some(&note))?;
    let (unknown, attempts): (u32, u32) = c
        .prepare_cached(
            "UPDATE messages SET unknown_outcomes = unknown_outcomes + 1 WHERE seq = ?1
             RETURNING unknown_outcomes, attempts",
        )?
        .query_row(params![seq], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let give_up = match rule.policy {
        UnknownOutcomePolicy::Fail => Some(note.clone()),
        UnknownOutcomePolicy::Resend if unknown >= rule.max_unknown => Some(format!(
            "{note} (outcome unknown {unknown} times: not resent again, each may have reached \
             the phone)"
        )),
        UnknownOutcomePolicy::Resend if rule.max_attempts > 0 && attempts >= rule.max_attempts => {
            Some(format!("gave up after {attempts} attempts; last: {note}"))
        }
        UnknownOutcomePolicy::Resend => None,
    };
    if let Some(why) = give_up {
        finish_seq(c, seq, MessageStatus::Failed, Some(&why), now)?;
        return Ok(MessageStatus::Failed);
    }
    // Resending at once would hand the same text to a modem that just failed to answer for
    // it, ahead of every other queued message; the backoff lets those pass.
    let delay = rule.resend_delay_ms(unknown);
    c.prepare_cached(
        "UPDATE messages SET status = 'queued', error = ?2, next_attempt_at = ?3, updated_at = ?4
         WHERE seq = ?1",
    )?
    .execute(params![seq, note, now + delay, now])?;
    let detail = format!("resend after unknown outcome {unknown} in {delay} ms");
    event(c, seq, now, MessageStatus::Queued, Some(&detail))?;
    Ok(MessageStatus::Queued)
}

pub(crate) fn mark_unknown_outcome(
    c: &Connection,
    id: &str,
    reason: &str,
    rule: &UnknownOutcomeRule,
    now: Millis,
) -> Result<MessageStatus, StoreError> {
    let (seq, _) = message_row(c, id)?;
    unknown_outcome_seq(c, seq, reason, rule, now)
}

pub(crate) fn mark_not_taken(
    c: &Connection,
    id: &str,
    reason: &str,
    now: Millis,
) -> Result<(), StoreError> {
    let (seq, _) = message_row(c, id)?;
    c.prepare_cached(
        "UPDATE messages SET status = 'queued', error = ?2, next_attempt_at = ?3, updated_at = ?3,
             attempts = MAX(attempts - 1, 0)
         WHERE seq = ?1",
    )?
    .execute(params![seq, reason, now])?;
    event(
        c,
        seq,
        now,
        MessageStatus::Queued,
        Some(&format!("retry: {reason}")),
    )
}

pub(crate) fn record_partial_send(
    c: &Connection,
    id: &str,
    modem_id: &str,
    accepted: &[u8],
    now: Millis,
) -> Result<u32, StoreError> {
    let (seq, _) = message_row(c, id)?;
    let (to, count): (String, u32) = c
        .prepare_cached(
            "UPDATE messages SET partial_sends = partial_sends + 1 WHERE seq = ?1
             RETURNING to_number, partial_sends",
        )?
        .query_row(params![seq], |r| Ok((r.get(0)?, r.get(1)?)))?;
    insert_parts(c, seq, modem_id, accepted, &to, now)?;
    let refs: Vec<String> = accepted.iter().map(|m| m.to_string()).collect();
    let detail = format!(
        "partial send #{count}: modem {modem_id} accepted part(s) 1..={} (TP-MR {})",
        accepted.len(),
        refs.join(",")
    );
    event(c, seq, now, MessageStatus::Sending, Some(&detail))?;
    Ok(count)
}

/// Records the parts a modem accepted. A resend replaces the rows of an earlier partial send
/// (same part numbers), so a status report matches the newest TP-MR of each part.
fn insert_parts(
    c: &Connection,
    seq: i64,
    modem_id: &str,
    mrs: &[u8],
    to: &str,
    now: Millis,
) -> Result<(), StoreError> {
    let mut insert = c.prepare_cached(
        "INSERT OR REPLACE INTO message_parts
             (message_seq, part_no, modem_id, mr, recipient, status, sent_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'sent', ?6)",
    )?;
    for (part_no, mr) in mrs.iter().enumerate() {
        insert.execute(params![seq, part_no as i64, modem_id, mr, to, now])?;
    }
    Ok(())
}

pub(crate) fn recover_interrupted(
    c: &Connection,
    rule: &UnknownOutcomeRule,
    now: Millis,
) -> Result<u64, StoreError> {
    let seqs: Vec<i64> = c
        .prepare_cached("SELECT seq FROM messages WHERE status = 'sending' ORDER BY seq")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for &seq in &seqs {
        unknown_outcome_seq(c, seq, "interrupted by a restart while sending", rule, now)?;
    }
    Ok(seqs.len() as u64)
}

/// A reported TP-RA (TS 23.040 §9.1.2.5) in the one form the store compares: the driver shows
/// an international number (TON 001) with a leading `+`, anything else as its bare digits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ReportedNumber {
    /// Country code and subscriber number, as E.164 digits without the `+`: from `+…`, or
    /// from the `00` international prefix some networks put into a TON-unknown address.
    International(String),
    /// A national number with its trunk prefix `0` removed: the national significant number,
    /// which ends the E.164 number after a 1–3 digit country code (ITU-T E.164 §6.2).
    National(String),
    /// Anything else (alphanumeric, empty, odd digits): matches nothing.
    Unusable,
}

/// The single normalisation of a reported recipient; see [`ReportedNumber`].
fn normalise_reported(reported: &str) -> ReportedNumber {
    let digits_only = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    if let Some(d) = reported.strip_prefix('+') {
        return if digits_only(d) {
            ReportedNumber::International(d.to_owned())
        } else {
            ReportedNumber::Unusable
        };
    }
    if !digits_only(reported) {
        return ReportedNumber::Unusable;
    }
    if let Some(d) = reported.strip_prefix("00") {
        ReportedNumber::International(d.to_owned())
    } else if let Some(d) = reported.strip_prefix('0') {
        ReportedNumber::National(d.to_owned())
    } else {
        // TON unknown without any prefix: networks put the international number here.
        ReportedNumber::International(reported.to_owned())
    }
}

/// Whether a reported TP-RA names `sent` (E.164 with `+`, as the store keeps it): the whole
/// number must be equal, never just its tail (a report for `+5112345678` is not one for
/// `+4915112345678`). A national-format report matches when its national significant number
/// is exactly what follows the country code in `sent`.
fn same_recipient(reported: &str, sent: &str) -> bool {
    let Some(sent) = sent.strip_prefix('+') else {
        return false;
    };
    match normalise_reported(reported) {
        ReportedNumber::International(d) => d == sent,
        ReportedNumber::National(nsn) => {
            sent.len() == country_code_len(sent) + nsn.len() && sent.ends_with(nsn.as_str())
        }
        ReportedNumber::Unusable => false,
    }
}

/// The length of the country code that starts the E.164 digits `e164`. Country codes form a
/// prefix code (ITU-T E.164 §6.2.1), so the first digits decide: zones 1 and 7 are one-digit
/// codes, the two-digit codes are listed, and every other code is three digits long.
fn country_code_len(e164: &str) -> usize {
    const TWO_DIGIT: [&str; 44] = [
        "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46",
        "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63",
        "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
    ];
    if e164.starts_with(['1', '7']) {
        1
    } else if TWO_DIGIT.iter().any(|cc| e164.starts_with(cc)) {
        2
    } else {
        3
    }
}

/// How long after a message's deadline its status report may still come: the validity period
/// we send (the remaining lifetime, TS 23.040 §9.2.3.12) is rounded up to the relative format's
/// steps (up to 30 minutes below a day) and the SMSC reports after it gives up.
const REPORT_AFTER_DEADLINE_MS: Millis = 60 * 60 * 1000;

pub(crate) fn record_status_report(
    c: &Connection,
    report: &StatusReport,
) -> Result<Option<ReportEffect>, StoreError> {
    // Same modem (TP-MR is per modem), same TP-MR, and a plausible time: not before the send,
    // not after the SMSC must have given up on the message (and never beyond the window).
    let candidates: Vec<(i64, i64, String)> = c
        .prepare_cached(
            "SELECT p.message_seq, p.part_no, p.recipient
             FROM message_parts p JOIN messages m ON m.seq = p.message_seq
             WHERE p.modem_id = ?1 AND p.mr = ?2 AND p.sent_at >= ?3 AND p.sent_at <= ?4
               AND ?4 <= MAX(m.deadline, p.sent_at) + ?5
             ORDER BY p.sent_at DESC, p.message_seq DESC",
        )?
        .query_map(
            params![
                report.modem_id,
                report.message_reference,
                report.at - REPORT_WINDOW_MS,
                report.at,
                REPORT_AFTER_DEADLINE_MS
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?
        .collect::<Result<_, _>>()?;
    let Some((seq, part_no, _)) = candidates
        .into_iter()
        .find(|(_, _, to)| same_recipient(&report.recipient, to))
    else {
        return Ok(None);
    };
    let (id, status, parts): (String, String, i64) = c
        .prepare_cached("SELECT id, status, parts FROM messages WHERE seq = ?1")?
        .query_row(params![seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let mut status = message_status(&status)?;
    let at = report.at;
    let part_label = format!("part {} of {parts}", part_no + 1);
    match &report.outcome {
        ReportOutcome::Pending(why) => {
            let detail = format!("{part_label}: still trying ({why})");
            event(c, seq, at, status, Some(&detail))?;
        }
        ReportOutcome::Delivered => {
            update_part(c, seq, part_no, "delivered", None, at)?;
            let undelivered: i64 = c
                .prepare_cached(
                    "SELECT COUNT(*) FROM message_parts
                     WHERE message_seq = ?1 AND status <> 'delivered'",
                )?
                .query_row(params![seq], |r| r.get(0))?;
            if undelivered <= 0 && status == MessageStatus::Sent {
                c.prepare_cached(
                    "UPDATE messages SET status = 'delivered', delivered_at = ?2, updated_at = ?2
                     WHERE seq = ?1",
                )?
                .execute(params![seq, at])?;
                status = MessageStatus::Delivered;
                event(c, seq, at, status, None)?;
                super::events::message_changed(c, seq, at)?;
            } else {
                let detail = format!("{part_label} delivered");
                event(c, seq, at, status, Some(&detail))?;
            }
        }
        ReportOutcome::Failed(why) => {
            update_part(c, seq, part_no, "failed", Some(why), at)?;
            let reason = format!("{part_label} not delivered: {why}");
            if status == MessageStatus::Sent || status == MessageStatus::Delivered {
                finish_seq(c, seq, MessageStatus::Failed, Some(&reason), at)?;
                status = MessageStatus::Failed;
            } else {
                event(c, seq, at, status, Some(&reason))?;
            }
        }
    }
    Ok(Some(ReportEffect {
        message_id: id,
        status,
    }))
}

fn update_part(
    c: &Connection,
    seq: i64,
    part_no: i64,
    status: &str,
    detail: Option<&str>,
    at: Millis,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE message_parts SET status = ?3, detail = ?4, reported_at = ?5
         WHERE message_seq = ?1 AND part_no = ?2",
    )?
    .execute(params![seq, part_no, status, detail, at])?;
    Ok(())
}

pub(crate) fn next_concat_reference(c: &Connection) -> Result<u8, StoreError> {
    let v: i64 = c
        .prepare_cached(
            "UPDATE counters SET value = (value + 1) % 256 WHERE name = 'concat_ref'
             RETURNING value",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(v as u8)
}

/// SQL expression masking a phone number column: keeps the `+`, the first two digits (country
/// code, enough for statistics) and the last two (enough for a human to tell rows apart).
pub(crate) fn mask_sql(col: &str) -> String {
    format!("substr({col}, 1, 3) || '*****' || substr({col}, -2)")
}

/// How long outbox events are kept at most (see [`prune`]).
const EVENTS_KEPT_MS: Millis = 7 * DAY_MS;

pub(crate) fn prune(
    c: &Connection,
    now: Millis,
    retention_ms: Option<Millis>,
    mask_after_ms: Option<Millis>,
) -> Result<PruneStats, StoreError> {
    let (mut messages_deleted, mut otps_deleted) = (0, 0);
    if let Some(retention) = retention_ms {
        let cutoff = now - retention;
        // Only messages no longer in flight; parts and history go with them (ON DELETE CASCADE).
        messages_deleted = c.execute(
            "DELETE FROM messages WHERE created_at < ?1 AND status NOT IN ('queued', 'sending')",
            params![cutoff],
        )? as u64;
        otps_deleted = c.execute(
            "DELETE FROM otps WHERE created_at < ?1 AND (status <> 'pending' OR expires_at < ?2)",
            params![cutoff, now],
        )? as u64;
    }
    let mut numbers_masked = 0;
    if let Some(mask_after) = mask_after_ms {
        let mask_cutoff = now - mask_after;
        // `instr(..., '*') = 0` skips rows masked by an earlier run; rows still in flight keep
        // their number because the modem still needs it.
        let messages = format!(
            "UPDATE messages SET to_number = {} WHERE created_at < ?1
               AND instr(to_number, '*') = 0 AND status NOT IN ('queued', 'sending')",
            mask_sql("to_number")
        );
        numbers_masked += c.execute(&messages, params![mask_cutoff])? as u64;
        let otps = format!(
            "UPDATE otps SET to_number = {} WHERE created_at < ?1
               AND instr(to_number, '*') = 0 AND (status <> 'pending' OR expires_at < ?2)",
            mask_sql("to_number")
        );
        numbers_masked += c.execute(&otps, params![mask_cutoff, now])? as u64;
        let parts = format!(
            "UPDATE message_parts SET recipient = {} WHERE sent_at < ?1
               AND instr(recipient, '*') = 0",
            mask_sql("recipient")
        );
        numbers_masked += c.execute(&parts, params![mask_cutoff])? as u64;
    }
    let idempotency_deleted = c.execute(
        "DELETE FROM idempotency WHERE created_at <= ?1",
        params![now - DAY_MS],
    )? as u64;
    // The outbox is for delivery and catch-up, not a second log: its rows carry recipients, so
    // they go no later than the numbers are masked or the messages deleted, and at most after a
    // week (well past the default one-day retry period of an endpoint). Events an endpoint has
    // not yet had stay whatever their age (`events::prune_events`).
    let events_kept_ms = [retention_ms, mask_after_ms, Some(EVENTS_KEPT_MS)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(EVENTS_KEPT_MS);
    let events_deleted = super::events::prune_events(c, now - events_kept_ms)?;
    Ok(PruneStats {
        messages_deleted,
        otps_deleted,
        numbers_masked,
        idempotency_deleted,
        events_deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::same_recipient;

    #[test]
    fn recipients_match_across_formats() {
        for (reported, sent, expect) in [
            ("+4915112345678", "+4915112345678", true),
            ("4915112345678", "+4915112345678", true),
            ("015112345678", "+4915112345678", true),
            ("004915112345678", "+4915112345678", true),
            ("+4915112345679", "+4915112345678", false),
            ("5678", "+4915112345678", false),
            ("", "+4915112345678", false),
            // A tail of the number is another number (issue 17.8).
            ("+5112345678", "+4915112345678", false),
            ("5112345678", "+4915112345678", false),
            ("0015112345678", "+4915112345678", false),
            ("+4915112345678", "+494915112345678", false),
            // National format: the rest must be a 1-3 digit country code.
            ("012345678", "+4915112345678", false),
            ("05112345678", "+4915112345678", false),
            ("0612345678", "+31612345678", true),
            ("012345678", "+31612345678", false),
            ("06123456789", "+31612345678", false),
            ("912345678", "+351912345678", false),
            ("351912345678", "+351912345678", true),
            ("+49151ABC", "+4915112345678", false),
            ("+4915112345678", "4915112345678", false),
        ] {
            assert_eq!(
                same_recipient(reported, sent),
                expect,
                "{reported} vs {sent}"
            );
        }
    }
}
