//! The dispatcher's side of the queue: claim the oldest due message, then record what became
//! of it (sent, retry, final, unknown outcome, not taken, partial send), recovery after a crash
//! and the concatenation reference. Separate because only the dispatcher calls these.

use rusqlite::{Connection, OptionalExtension, params};

use super::{event, finish_seq, message_row};
use crate::store::{
    Body, Claimed, MessageKind, MessageStatus, Millis, StoreError, UnknownOutcomePolicy,
    UnknownOutcomeRule,
};

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
    // Written from a Msisdn and never masked while queued: a failure here is a corrupt row.
    let to = crate::model::Msisdn::parse(&to)
        .map_err(|e| StoreError::Corrupt(format!("recipient of {id}: {e}")))?;
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
    crate::store::events::message_changed(c, seq, now)
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

pub(crate) fn next_concat_reference(c: &Connection) -> Result<u8, StoreError> {
    let v: i64 = c
        .prepare_cached(
            "UPDATE counters SET value = (value + 1) % 256 WHERE name = 'concat_ref'
             RETURNING value",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(v as u8)
}
