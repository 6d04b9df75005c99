//! Inbound texts (schema v5): every SMS-DELIVER part a modem received is a row of its own, and
//! the parts of one message become one `inbound_messages` row when the last one arrives.
//!
//! Parts are rows so that a restart in the middle of a concatenated text (TS 23.040
//! §9.2.3.24.1, 8-bit reference; §9.2.3.24.8, 16-bit reference) loses nothing: the driver deletes
//! a part from the SIM only after its row committed, and the missing parts may arrive after the
//! restart. A part redelivered by the network (its `+CNMA` came too late) or read again from the
//! SIM (the daemon died between the commit and `AT+CMGD`) is the same modem, sender, TP-SCTS and
//! content as a row already there; a unique index turns it into a no-op. Parts that stay alone
//! longer than the reassembly timeout become one message marked incomplete, naming the parts
//! that never came.
//!
//! A part's `text` is TEXT, except for a UCS-2 part holding half a surrogate pair (a sender
//! split one character between two parts): its UTF-16 units are kept as a BLOB (big-endian),
//! and the message's text is decoded from the joined units of all its parts, so the pair is
//! whole again. A half whose other part never came becomes U+FFFD.
//!
//! [`commit_message`] is the one place an inbound message row is written.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Millis, Sqlite, StoreError};
use crate::model::{InboundId, InboundText, PublicId};

/// `concat_ref` of a part that is a whole message: NULLs are distinct in a SQLite unique index,
/// so a real value is needed for the de-duplication index to see single parts.
const SINGLE: i64 = -1;

/// One received SMS-DELIVER, as the driver decoded it.
#[derive(Clone, PartialEq, Eq)]
pub struct InboundPart {
    /// The receiving modem: concatenation references are only unique per sender and SIM.
    pub modem_id: String,
    /// TP-OA as text: `+` and digits, national digits, or an alphanumeric name.
    pub sender: String,
    /// TP-SCTS (TS 23.040 §9.2.3.11) in RFC 3339 with the SMSC's offset: part of the identity
    /// of a redelivered PDU, and what the API shows.
    pub sc_timestamp: String,
    /// The concatenation element of the UDH: (reference, total, this part's number from 1);
    /// `None` for a text in one PDU.
    pub concat: Option<(u16, u8, u8)>,
    /// The decoded text of this part.
    pub text: String,
    /// The part's UTF-16 units, when it holds half a surrogate pair (`text` then shows U+FFFD
    /// for it): what is stored instead of `text`.
    pub units: Option<Vec<u16>>,
    /// When the part arrived.
    pub received_at: Millis,
}

impl std::fmt::Debug for InboundPart {
    // The text of a received SMS may be anything (someone's OTP, too): never in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundPart")
            .field("modem_id", &self.modem_id)
            .field("concat", &self.concat)
            .field("chars", &self.text.chars().count())
            .finish_non_exhaustive()
    }
}

impl InboundPart {
    /// The `text` column's value: TEXT, or the UTF-16BE units as a BLOB.
    fn text_value(&self) -> rusqlite::types::Value {
        match &self.units {
            Some(units) => {
                rusqlite::types::Value::Blob(units.iter().flat_map(|u| u.to_be_bytes()).collect())
            }
            None => rusqlite::types::Value::Text(self.text.clone()),
        }
    }
}

/// Appends a part's `text` column to `units`: a TEXT as its UTF-16, a BLOB as the units it is.
fn push_units(units: &mut Vec<u16>, v: rusqlite::types::ValueRef<'_>) -> Result<(), StoreError> {
    match v {
        rusqlite::types::ValueRef::Text(t) => {
            units.extend(String::from_utf8_lossy(t).encode_utf16())
        }
        rusqlite::types::ValueRef::Blob(b) => {
            units.extend(b.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]])))
        }
        _ => return Err(StoreError::Corrupt("an inbound part without text".into())),
    }
    Ok(())
}

/// What recording a part did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundOutcome {
    /// The part made a message whole (or was one): here it is.
    Stored(InboundText),
    /// Stored; the message still waits for other parts.
    Waiting {
        /// Parts of this message stored so far.
        received: u32,
        /// Parts it announced.
        total: u32,
    },
    /// The same part was stored before (redelivery or a second read): nothing was written.
    Duplicate,
}

/// The result of [`Store::record_inbound_part`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRecord {
    /// What became of the part.
    pub outcome: InboundOutcome,
    /// Messages given up on as incomplete to make room for this part: a sender reusing a
    /// concatenation reference while an earlier message of that reference is still open.
    pub closed: Vec<InboundText>,
}

/// Filter of the inbound log (newest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundFilter {
    /// Only this sender (exactly as stored).
    pub from: Option<String>,
    /// Only texts stored at or after this instant.
    pub since: Option<Millis>,
    /// Only texts stored before this one (its id): exact cursor paging.
    pub before: Option<String>,
    /// At most this many (1..=1000).
    pub limit: u32,
}

/// Counts removed or changed by [`Store::prune_inbound`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboundPruneStats {
    /// Inbound messages deleted (their parts with them).
    pub deleted: u64,
    /// Sender numbers masked.
    pub masked: u64,
}

impl Sqlite {
    /// Records one received part and, when it completes its message, the message, in one
    /// transaction. The commit is synced: the caller deletes the part from the SIM next, after
    /// which this row is the only copy.
    pub async fn record_inbound_part(
        &self,
        part: InboundPart,
    ) -> Result<InboundRecord, StoreError> {
        self.client_write(move |c| record_part(c, &part)).await
    }

    /// Turns the parts of every message that has waited longer than `timeout_ms` for its other
    /// parts into one incomplete message each; returns them.
    pub async fn expire_inbound(
        &self,
        now: Millis,
        timeout_ms: Millis,
    ) -> Result<Vec<InboundText>, StoreError> {
        self.client_write(move |c| expire(c, now, timeout_ms)).await
    }

    /// One inbound text by id.
    pub async fn get_inbound(&self, id: &str) -> Result<Option<InboundText>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM inbound_messages WHERE id = ?1"
            ))?;
            Ok(stmt.query_row(params![id], row).optional()?)
        })
        .await
    }

    /// The inbound log, newest first.
    pub async fn list_inbound(&self, f: InboundFilter) -> Result<Vec<InboundText>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM inbound_messages
                 WHERE (?1 IS NULL OR sender = ?1)
                   AND (?2 IS NULL OR received_at >= ?2)
                   AND (?3 IS NULL OR seq < (SELECT seq FROM inbound_messages WHERE id = ?3))
                 ORDER BY seq DESC LIMIT ?4"
            ))?;
            let rows = stmt.query_map(
                params![f.from, f.since, f.before, f.limit.clamp(1, 1000)],
                row,
            )?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Retention for inbound texts, with the rules of [`Store::prune`]: messages stored before
    /// `now - retention_ms` are deleted with their parts, sender numbers of rows older than
    /// `now - mask_after_ms` are masked. Parts still waiting for their message are left to the
    /// reassembly timeout.
    pub async fn prune_inbound(
        &self,
        now: Millis,
        retention_ms: Option<Millis>,
        mask_after_ms: Option<Millis>,
    ) -> Result<InboundPruneStats, StoreError> {
        self.write(move |c| prune(c, now, retention_ms, mask_after_ms))
            .await
    }
}

const COLUMNS: &str =
    "id, modem_id, sender, text, sc_timestamp, received_at, parts, complete, missing";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InboundText> {
    let missing: String = r.get(8)?;
    Ok(InboundText {
        id: r.get(0)?,
        modem_id: r.get(1)?,
        from: r.get(2)?,
        text: r.get(3)?,
        sc_timestamp: r.get(4)?,
        received_at: r.get(5)?,
        parts: r.get(6)?,
        complete: r.get(7)?,
        missing: missing.split(',').filter_map(|n| n.parse().ok()).collect(),
    })
}

/// The parts of one message: what identifies a concatenated message's parts among all others.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    modem_id: String,
    sender: String,
    reference: i64,
    total: u32,
}

/// Writes one inbound message row; returns its `seq`.
///
/// The one place an inbound message is committed: whatever must happen in the same transaction
/// as a new inbound text (the `inbound.received` event of the outbox) belongs here.
pub(crate) fn commit_message(c: &Connection, m: &InboundText) -> Result<i64, StoreError> {
    let missing: Vec<String> = m.missing.iter().map(u32::to_string).collect();
    c.prepare_cached(
        "INSERT INTO inbound_messages
             (id, modem_id, sender, text, sc_timestamp, received_at, parts, complete, missing)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        m.id,
        m.modem_id,
        m.from,
        m.text,
        m.sc_timestamp,
        m.received_at,
        m.parts,
        m.complete,
        missing.join(","),
    ])?;
    let seq = c.last_insert_rowid();
    // The event carries the text: a webhook receiver is usually an app elsewhere that cannot
    // reach the loopback API to fetch it. It is a phone's text, not an OTP of ours; the outbox
    // row goes with the retention rules (at most a week), like the inbound row's number.
    super::events::record(
        c,
        "inbound.received",
        &m.id,
        m.received_at,
        &serde_json::json!({
            "id": m.id,
            "from": m.from,
            "text": m.text,
            "modem": m.modem_id,
            "parts": m.parts,
            "complete": m.complete,
            "missing_parts": m.missing,
            "sc_timestamp": m.sc_timestamp,
        }),
    )?;
    Ok(seq)
}

pub(crate) fn record_part(c: &Connection, p: &InboundPart) -> Result<InboundRecord, StoreError> {
    // A malformed concatenation element (part 0, or beyond the total) cannot be placed in a
    // message; the part is kept as a text of its own rather than dropped.
    let (reference, total, seq) = match p.concat {
        Some((r, t, s)) if t > 1 && (1..=t).contains(&s) => (i64::from(r), u32::from(t), s),
        _ => (SINGLE, 1, 1),
    };
    let group = Group {
        modem_id: p.modem_id.clone(),
        sender: p.sender.clone(),
        reference,
        total,
    };
    let seen: Option<i64> = c
        .prepare_cached(
            "SELECT seq FROM inbound_parts
             WHERE modem_id = ?1 AND sender = ?2 AND sc_timestamp = ?3 AND concat_ref = ?4
               AND concat_total = ?5 AND concat_seq = ?6 AND text = ?7",
        )?
        .query_row(
            params![
                p.modem_id,
                p.sender,
                p.sc_timestamp,
                reference,
                total,
                seq,
                p.text_value()
            ],
            |r| r.get(0),
        )
        .optional()?;
    if seen.is_some() {
        return Ok(InboundRecord {
            outcome: InboundOutcome::Duplicate,
            closed: Vec::new(),
        });
    }
    let mut closed = Vec::new();
    if reference != SINGLE {
        // The same part number of an open message, with other content: the sender reused the
        // reference (it has only 256 values for 8-bit references), so the open message will
        // never be completed by these parts.
        let clash: Option<i64> = c
            .prepare_cached(
                "SELECT seq FROM inbound_parts
                 WHERE message_seq IS NULL AND modem_id = ?1 AND sender = ?2 AND concat_ref = ?3
                   AND concat_total = ?4 AND concat_seq = ?5",
            )?
            .query_row(params![p.modem_id, p.sender, reference, total, seq], |r| {
                r.get(0)
            })
            .optional()?;
        if clash.is_some() {
            closed.push(close_group(c, &group, p.received_at, false)?);
        }
    }
    c.prepare_cached(
        "INSERT INTO inbound_parts
             (modem_id, sender, sc_timestamp, concat_ref, concat_total, concat_seq, text,
              received_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        p.modem_id,
        p.sender,
        p.sc_timestamp,
        reference,
        total,
        seq,
        p.text_value(),
        p.received_at
    ])?;
    let received: u32 = c
        .prepare_cached(
            "SELECT COUNT(*) FROM inbound_parts
             WHERE message_seq IS NULL AND modem_id = ?1 AND sender = ?2 AND concat_ref = ?3
               AND concat_total = ?4",
        )?
        .query_row(params![p.modem_id, p.sender, reference, total], |r| {
            r.get(0)
        })?;
    let outcome = if received >= total {
        InboundOutcome::Stored(close_group(c, &group, p.received_at, true)?)
    } else {
        InboundOutcome::Waiting { received, total }
    };
    Ok(InboundRecord { outcome, closed })
}

/// Makes the open parts of `g` one message (complete or not, as the parts say) and links them
/// to it.
fn close_group(
    c: &Connection,
    g: &Group,
    now: Millis,
    expect_complete: bool,
) -> Result<InboundText, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT concat_seq, text, sc_timestamp FROM inbound_parts
         WHERE message_seq IS NULL AND modem_id = ?1 AND sender = ?2 AND concat_ref = ?3
           AND concat_total = ?4
         ORDER BY concat_seq, seq",
    )?;
    let mut present: Vec<u32> = Vec::new();
    let mut units: Vec<u16> = Vec::new();
    let mut first_scts: Option<String> = None;
    let mut rows = stmt.query(params![g.modem_id, g.sender, g.reference, g.total])?;
    while let Some(r) = rows.next()? {
        present.push(r.get(0)?);
        push_units(&mut units, r.get_ref(1)?)?;
        if first_scts.is_none() {
            first_scts = Some(r.get(2)?);
        }
    }
    drop(rows);
    let Some(sc_timestamp) = first_scts else {
        return Err(StoreError::Corrupt(
            "an inbound message without parts".into(),
        ));
    };
    let missing: Vec<u32> = (1..=g.total).filter(|n| !present.contains(n)).collect();
    debug_assert!(!expect_complete || missing.is_empty());
    // Joined as UTF-16, so that a surrogate pair split between two parts is one character again.
    let text = String::from_utf16_lossy(&units);
    let message = InboundText {
        id: InboundId::random().into_string(),
        modem_id: g.modem_id.clone(),
        from: g.sender.clone(),
        text,
        sc_timestamp,
        received_at: now,
        parts: g.total,
        complete: missing.is_empty(),
        missing,
    };
    let seq = commit_message(c, &message)?;
    c.prepare_cached(
        "UPDATE inbound_parts SET message_seq = ?5
         WHERE message_seq IS NULL AND modem_id = ?1 AND sender = ?2 AND concat_ref = ?3
           AND concat_total = ?4",
    )?
    .execute(params![g.modem_id, g.sender, g.reference, g.total, seq])?;
    Ok(message)
}

pub(crate) fn expire(
    c: &Connection,
    now: Millis,
    timeout_ms: Millis,
) -> Result<Vec<InboundText>, StoreError> {
    let groups = c
        .prepare_cached(
            "SELECT modem_id, sender, concat_ref, concat_total FROM inbound_parts
             WHERE message_seq IS NULL
             GROUP BY modem_id, sender, concat_ref, concat_total
             HAVING MIN(received_at) <= ?1",
        )?
        .query_map(params![now - timeout_ms], |r| {
            Ok(Group {
                modem_id: r.get(0)?,
                sender: r.get(1)?,
                reference: r.get(2)?,
                total: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    groups
        .iter()
        .map(|g| close_group(c, g, now, false))
        .collect()
}

/// Milliseconds until the oldest open message reaches `timeout_ms`, if any is open.
pub(crate) fn next_expiry(
    c: &Connection,
    timeout_ms: Millis,
) -> Result<Option<Millis>, StoreError> {
    Ok(c.query_row(
        "SELECT MIN(received_at) FROM inbound_parts WHERE message_seq IS NULL",
        [],
        |r| r.get::<_, Option<Millis>>(0),
    )?
    .map(|oldest| oldest + timeout_ms))
}

impl Sqlite {
    /// When the oldest incomplete message will have waited `timeout_ms`, if any waits.
    pub async fn next_inbound_expiry(
        &self,
        timeout_ms: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        self.read(move |c| next_expiry(c, timeout_ms)).await
    }
}

fn prune(
    c: &Connection,
    now: Millis,
    retention_ms: Option<Millis>,
    mask_after_ms: Option<Millis>,
) -> Result<InboundPruneStats, StoreError> {
    let mut stats = InboundPruneStats::default();
    if let Some(retention) = retention_ms {
        stats.deleted = c.execute(
            "DELETE FROM inbound_messages WHERE received_at < ?1",
            params![now - retention],
        )? as u64;
    }
    if let Some(mask_after) = mask_after_ms {
        let cutoff = now - mask_after;
        // Only numbers: an alphanumeric sender (a bank, a carrier) names no person. Masking the
        // parts too means a redelivery this old is no longer recognised, which retention makes
        // moot anyway.
        let mask = super::ops::mask_sql("sender");
        stats.masked = c.execute(
            &format!(
                "UPDATE inbound_messages SET sender = {mask}
                 WHERE received_at < ?1 AND sender LIKE '+%' AND instr(sender, '*') = 0"
            ),
            params![cutoff],
        )? as u64;
        c.execute(
            &format!(
                "UPDATE inbound_parts SET sender = {mask}
                 WHERE received_at < ?1 AND message_seq IS NOT NULL AND sender LIKE '+%'
                   AND instr(sender, '*') = 0"
            ),
            params![cutoff],
        )?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests;
