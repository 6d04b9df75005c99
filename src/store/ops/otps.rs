//! OTP operations: create (with its first text), add a text, resend, verify, cancel and
//! expiry. Separate from the queue because they change `otps` rows and only queue texts
//! through `enqueue`.

use rusqlite::{Connection, OptionalExtension, params};

use super::enqueue::{daily_cap_hit, insert_message, queue_full};
use super::finish_seq;
use super::idempotency::{check_idempotency, save_idempotency};
use crate::store::read::otp_status;
use crate::store::{
    AddTextOutcome, CreateOtpOutcome, CreateOutcome, Idempotency, MessageStatus, Millis,
    NewMessage, NewOtp, NewOtpText, OnPending, OtpStatus, OtpWording, ResendOutcome, StoreError,
    VerifyResult,
};

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
        crate::store::events::otp_changed(c, otp_id, now)?;
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
    if let Some(retry_after_ms) = daily_cap_hit(c, otp.to.as_str(), daily_cap, now)? {
        return Ok(CreateOutcome::DailyLimit { retry_after_ms });
    }
    if queue_full(c, queue_max)? {
        return Ok(CreateOutcome::QueueFull);
    }
    // A new OTP replaces the number's pending one (SPEC: "a new OTP for a number cancels that
    // number's pending one"), including its texts that have not left yet.
    let pending: Vec<String> = c
        .prepare_cached("SELECT id FROM otps WHERE to_number = ?1 AND status = 'pending'")?
        .query_map(params![otp.to.as_str()], |r| r.get(0))?
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
        otp.to.as_str(),
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
            .query_row(params![otp.to.as_str(), msg.created_at], |r| r.get(0))
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
    if let Some(retry_after_ms) = daily_cap_hit(c, t.msg.to.as_str(), t.daily_cap, now)? {
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
    if let Some(retry_after_ms) = daily_cap_hit(c, msg.to.as_str(), daily_cap, now)? {
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
