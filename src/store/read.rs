//! Queries that only read. They run on pooled read connections, and the write operations reuse
//! the row mappers here so a row is decoded in exactly one place.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    Message, MessageEvent, MessageFilter, MessageKind, MessageStatus, Millis, Otp, OtpStatus,
    OtpWording, StoreError,
};

pub(crate) fn message_status(s: &str) -> Result<MessageStatus, StoreError> {
    MessageStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("message status {s:?}")))
}

pub(crate) fn otp_status(s: &str) -> Result<OtpStatus, StoreError> {
    OtpStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("otp status {s:?}")))
}

pub(crate) const MESSAGE_COLUMNS: &str = "id, otp_id, to_number, kind, log_text, parts, status, \
     attempts, error, created_at, sent_at, delivered_at, deadline, next_attempt_at, modem_id";

/// Raw column values; statuses are checked after the row callback so a bad value is a typed error.
type RawMessage = (Message, String, String);

fn raw_message(r: &Row<'_>) -> rusqlite::Result<RawMessage> {
    Ok((
        Message {
            id: r.get(0)?,
            otp_id: r.get(1)?,
            to: r.get(2)?,
            kind: MessageKind::Text,
            log_text: r.get(4)?,
            parts: r.get(5)?,
            status: MessageStatus::Queued,
            attempts: r.get(7)?,
            error: r.get(8)?,
            created_at: r.get(9)?,
            sent_at: r.get(10)?,
            delivered_at: r.get(11)?,
            deadline: r.get(12)?,
            next_attempt_at: r.get(13)?,
            modem_id: r.get(14)?,
        },
        r.get(3)?,
        r.get(6)?,
    ))
}

fn finish_message((mut m, kind, status): RawMessage) -> Result<Message, StoreError> {
    m.kind = MessageKind::parse(&kind)
        .ok_or_else(|| StoreError::Corrupt(format!("message kind {kind:?}")))?;
    m.status = message_status(&status)?;
    Ok(m)
}

pub(crate) fn get_message(c: &Connection, id: &str) -> Result<Option<Message>, StoreError> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?1");
    c.prepare_cached(&sql)?
        .query_row(params![id], raw_message)
        .optional()?
        .map(finish_message)
        .transpose()
}

/// The message at row `seq` (the write operations know rows by `seq`).
pub(crate) fn message_by_seq(c: &Connection, seq: i64) -> Result<Message, StoreError> {
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE seq = ?1");
    finish_message(
        c.prepare_cached(&sql)?
            .query_row(params![seq], raw_message)?,
    )
}

pub(crate) fn message_events(c: &Connection, id: &str) -> Result<Vec<MessageEvent>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT e.at, e.status, e.detail FROM message_events e
         JOIN messages m ON m.seq = e.message_seq WHERE m.id = ?1 ORDER BY e.id",
    )?;
    let rows = stmt.query_map(params![id], |r| {
        Ok((r.get::<_, Millis>(0)?, r.get::<_, String>(1)?, r.get(2)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (at, status, detail) = row?;
        out.push(MessageEvent {
            at,
            status: message_status(&status)?,
            detail,
        });
    }
    Ok(out)
}

pub(crate) fn list_messages(c: &Connection, f: &MessageFilter) -> Result<Vec<Message>, StoreError> {
    let limit = f.limit.clamp(1, 1000);
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages
         WHERE (?1 IS NULL OR to_number = ?1)
           AND (?2 IS NULL OR status = ?2)
           AND (?3 IS NULL OR created_at < ?3)
         ORDER BY created_at DESC, seq DESC LIMIT ?4"
    ))?;
    let rows = stmt.query_map(
        params![f.to, f.status.map(|s| s.as_str()), f.before, limit],
        raw_message,
    )?;
    rows.map(|r| finish_message(r?)).collect()
}

fn otp_from(
    c: &Connection,
    row: Option<(String, String, String, u32, u32, Millis, Millis)>,
) -> Result<Option<Otp>, StoreError> {
    let Some((id, to, status, attempts, max_attempts, expires_at, created_at)) = row else {
        return Ok(None);
    };
    let mut stmt = c.prepare_cached(
        "SELECT code_hmac, message_id FROM otp_codes WHERE otp_id = ?1 ORDER BY rowid",
    )?;
    let mut code_hmacs = Vec::new();
    let mut message_ids = Vec::new();
    let rows = stmt.query_map(params![id], |r| {
        Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (h, m) = row?;
        code_hmacs.push(h);
        message_ids.push(m);
    }
    Ok(Some(Otp {
        status: otp_status(&status)?,
        id,
        to,
        code_hmacs,
        attempts,
        max_attempts,
        expires_at,
        created_at,
        message_ids,
    }))
}

const OTP_COLUMNS: &str = "id, to_number, status, attempts, max_attempts, expires_at, created_at";

type RawOtp = (String, String, String, u32, u32, Millis, Millis);

fn raw_otp(r: &Row<'_>) -> rusqlite::Result<RawOtp> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

pub(crate) fn get_otp(c: &Connection, id: &str) -> Result<Option<Otp>, StoreError> {
    let row = c
        .prepare_cached(&format!("SELECT {OTP_COLUMNS} FROM otps WHERE id = ?1"))?
        .query_row(params![id], raw_otp)
        .optional()?;
    otp_from(c, row)
}

pub(crate) fn newest_pending_otp(
    c: &Connection,
    to: &str,
    now: Millis,
) -> Result<Option<Otp>, StoreError> {
    let row = c
        .prepare_cached(&format!(
            "SELECT {OTP_COLUMNS} FROM otps
             WHERE to_number = ?1 AND status = 'pending' AND expires_at > ?2
             ORDER BY created_at DESC, rowid DESC LIMIT 1"
        ))?
        .query_row(params![to, now], raw_otp)
        .optional()?;
    otp_from(c, row)
}

pub(crate) fn queue_depth(c: &Connection) -> Result<u64, StoreError> {
    Ok(
        c.prepare_cached("SELECT value FROM counters WHERE name = 'queued'")?
            .query_row([], |r| r.get::<_, i64>(0))?
            .max(0) as u64,
    )
}

pub(crate) fn status_counts(c: &Connection) -> Result<Vec<(MessageStatus, u64)>, StoreError> {
    let mut stmt = c.prepare_cached("SELECT status, COUNT(*) FROM messages GROUP BY status")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut counts: Vec<(MessageStatus, u64)> =
        MessageStatus::ALL.iter().map(|s| (*s, 0)).collect();
    for row in rows {
        let (status, n) = row?;
        let status = message_status(&status)?;
        if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
            slot.1 = n.max(0) as u64;
        }
    }
    Ok(counts)
}

pub(crate) fn next_due(c: &Connection) -> Result<Option<Millis>, StoreError> {
    Ok(c.prepare_cached(
        // Two subqueries so each MIN walks its own partial index instead of the whole queue.
        "SELECT MIN(
            (SELECT MIN(next_attempt_at) FROM messages WHERE status = 'queued'),
            (SELECT MIN(deadline) FROM messages WHERE status = 'queued'))",
    )?
    .query_row([], |r| r.get(0))?)
}

pub(crate) fn next_expiry(c: &Connection) -> Result<Option<Millis>, StoreError> {
    Ok(
        c.prepare_cached("SELECT MIN(deadline) FROM messages WHERE status = 'queued'")?
            .query_row([], |r| r.get(0))?,
    )
}

pub(crate) fn otp_wording(c: &Connection, otp_id: &str) -> Result<Option<OtpWording>, StoreError> {
    let row: Option<(u32, String)> = c
        .prepare_cached("SELECT code_length, code_offsets FROM otp_wordings WHERE otp_id = ?1")?
        .query_row(params![otp_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(code_length, offsets)| {
        let code_offsets = offsets
            .split(',')
            .filter(|o| !o.is_empty())
            .map(|o| {
                o.parse()
                    .map_err(|_| StoreError::Corrupt(format!("code offset {o:?}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(OtpWording {
            code_length,
            code_offsets,
        })
    })
    .transpose()
}

/// What the client said about message `id` beyond recipient and body, if anything.
pub(crate) fn message_origin(
    c: &Connection,
    id: &str,
) -> Result<Option<crate::model::MessageOrigin>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT o.sender, o.status_callback FROM message_origins o
             JOIN messages m ON m.seq = o.message_seq WHERE m.id = ?1",
    )?
    .query_row(params![id], |r| {
        Ok(crate::model::MessageOrigin {
            sender: r.get(0)?,
            status_callback: r.get(1)?,
        })
    })
    .optional()?)
}
