//! PostgreSQL: inbound texts, with the behaviour of `store/inbound.rs`: every received part is
//! a row, a redelivered part is a no-op (the unique index `inbound_parts_same`), the parts of
//! one concatenated text become one `inbound_messages` row when the last arrives or, after the
//! reassembly timeout, one incomplete message naming the parts that never came. A part holding
//! half a UTF-16 surrogate pair keeps its units (`units`, big-endian) and the message's text is
//! decoded from the joined units, so the pair is whole again.
//!
//! What a cluster adds:
//!
//! - **Parts are grouped by node too.** Modem ids are unique per node only, and the parts of
//!   one concatenated text always arrive at one modem, so a message's parts are those with the
//!   same (node, modem, sender, reference, total), and a redelivery is the same part at the
//!   same node's modem.
//! - **One transaction at a time per group**, on every node: recording a part and giving a
//!   group up after the timeout both hold a transaction-level advisory lock on the group.
//!   Recording waits for it, so a part delivered twice at once is stored once and a message
//!   is completed once; the expiry only tries it and leaves a group another transaction holds
//!   to the next pass, then checks again that the group is still open and due, so expiry
//!   passes running on several nodes at once commit each incomplete message once.

use deadpool_postgres::GenericClient;
use serde_json::json;
use tokio_postgres::Row;

use super::Postgres;
use super::common::{self, Tx};
use crate::model::{InboundId, InboundText, PublicId};
use crate::store::{
    InboundFilter, InboundOutcome, InboundPart, InboundPruneStats, InboundRecord, Millis,
    StoreError,
};

/// `concat_ref` of a part that is a whole message, as on SQLite: a real value, so the
/// de-duplication index sees single parts.
const SINGLE: i64 = -1;

const COLUMNS: &str =
    "id, modem_id, sender, text, sc_timestamp, received_at, parts, complete, missing";

/// A row of [`COLUMNS`], in that order.
fn row(r: &Row) -> Result<InboundText, StoreError> {
    let missing: String = r.try_get(8)?;
    Ok(InboundText {
        id: r.try_get(0)?,
        modem_id: r.try_get(1)?,
        from: r.try_get(2)?,
        text: r.try_get(3)?,
        sc_timestamp: r.try_get(4)?,
        received_at: r.try_get(5)?,
        parts: common::count(r.try_get(6)?),
        complete: r.try_get(7)?,
        missing: missing.split(',').filter_map(|n| n.parse().ok()).collect(),
    })
}

/// The parts of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    node_id: String,
    modem_id: String,
    sender: String,
    reference: i64,
    total: i64,
}

impl Group {
    /// The group's advisory lock key: a hash of its fields, written unambiguously (a JSON
    /// array). A collision of two groups only makes them wait for each other.
    fn lock_key(&self) -> String {
        format!(
            "inbound:{}",
            json!([
                self.node_id,
                self.modem_id,
                self.sender,
                self.reference,
                self.total
            ])
        )
    }
}

/// Holds the group's lock until the transaction ends, waiting for it if need be.
async fn lock_group(c: &impl GenericClient, g: &Group) -> Result<(), StoreError> {
    let stmt = c
        .prepare_cached("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .await?;
    c.execute(&stmt, &[&g.lock_key()]).await?;
    Ok(())
}

/// Takes the group's lock until the transaction ends if nobody holds it; false if somebody does.
async fn try_lock_group(c: &impl GenericClient, g: &Group) -> Result<bool, StoreError> {
    let stmt = c
        .prepare_cached("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
        .await?;
    Ok(c.query_one(&stmt, &[&g.lock_key()]).await?.try_get(0)?)
}

/// Writes one inbound message row and its `inbound.received` event (the same payload as
/// SQLite's `commit_message`); returns its `seq`. The one place an inbound message is written.
async fn commit_message(c: &impl GenericClient, m: &InboundText) -> Result<i64, StoreError> {
    let missing: Vec<String> = m.missing.iter().map(u32::to_string).collect();
    let stmt = c
        .prepare_cached(
            "INSERT INTO inbound_messages
                 (id, modem_id, sender, text, sc_timestamp, received_at, parts, complete, missing)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             RETURNING seq",
        )
        .await?;
    let seq: i64 = c
        .query_one(
            &stmt,
            &[
                &m.id,
                &m.modem_id,
                &m.from,
                &m.text,
                &m.sc_timestamp,
                &m.received_at,
                &i64::from(m.parts),
                &m.complete,
                &missing.join(","),
            ],
        )
        .await?
        .try_get(0)?;
    // The text travels in the event: a receiver elsewhere usually cannot reach the loopback
    // API to fetch it (store/inbound.rs says why that is acceptable).
    common::record(
        c,
        "inbound.received",
        &m.id,
        m.received_at,
        &json!({
            "id": m.id,
            "from": m.from,
            "text": m.text,
            "modem": m.modem_id,
            "parts": m.parts,
            "complete": m.complete,
            "missing_parts": m.missing,
            "sc_timestamp": m.sc_timestamp,
        }),
    )
    .await?;
    Ok(seq)
}

/// Makes the open parts of `g` one message (complete or not, as the parts say) and links them
/// to it. The caller holds the group's lock.
async fn close_group(
    c: &impl GenericClient,
    g: &Group,
    now: Millis,
    expect_complete: bool,
) -> Result<InboundText, StoreError> {
    let stmt = c
        .prepare_cached(
            "SELECT concat_seq, text, units, sc_timestamp FROM inbound_parts
             WHERE message_seq IS NULL AND node_id = $1 AND modem_id = $2 AND sender = $3
               AND concat_ref = $4 AND concat_total = $5
             ORDER BY concat_seq, seq",
        )
        .await?;
    let rows = c
        .query(
            &stmt,
            &[&g.node_id, &g.modem_id, &g.sender, &g.reference, &g.total],
        )
        .await?;
    let mut present: Vec<i64> = Vec::new();
    let mut units: Vec<u16> = Vec::new();
    for r in &rows {
        present.push(r.try_get(0)?);
        match r.try_get::<_, Option<Vec<u8>>>(2)? {
            Some(be) => units.extend(be.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]]))),
            None => units.extend(r.try_get::<_, &str>(1)?.encode_utf16()),
        }
    }
    let Some(first) = rows.first() else {
        return Err(StoreError::Corrupt(
            "an inbound message without parts".into(),
        ));
    };
    let sc_timestamp: String = first.try_get(3)?;
    let missing: Vec<u32> = (1..=g.total)
        .filter(|n| !present.contains(n))
        .map(common::count)
        .collect();
    debug_assert!(!expect_complete || missing.is_empty());
    // Joined as UTF-16, so that a surrogate pair split between two parts is one character again.
    let message = InboundText {
        id: InboundId::random().into_string(),
        modem_id: g.modem_id.clone(),
        from: g.sender.clone(),
        text: String::from_utf16_lossy(&units),
        sc_timestamp,
        received_at: now,
        parts: common::count(g.total),
        complete: missing.is_empty(),
        missing,
    };
    let seq = commit_message(c, &message).await?;
    let stmt = c
        .prepare_cached(
            "UPDATE inbound_parts SET message_seq = $6
             WHERE message_seq IS NULL AND node_id = $1 AND modem_id = $2 AND sender = $3
               AND concat_ref = $4 AND concat_total = $5",
        )
        .await?;
    c.execute(
        &stmt,
        &[
            &g.node_id,
            &g.modem_id,
            &g.sender,
            &g.reference,
            &g.total,
            &seq,
        ],
    )
    .await?;
    Ok(message)
}

/// Records part `p` received by this node's modem, in the caller's transaction.
async fn record_part(
    tx: &Tx<'_>,
    node_id: &str,
    p: &InboundPart,
) -> Result<InboundRecord, StoreError> {
    // A malformed concatenation element (part 0, or beyond the total) cannot be placed in a
    // message; the part is kept as a text of its own rather than dropped.
    let (reference, total, seq) = match p.concat {
        Some((r, t, s)) if t > 1 && (1..=t).contains(&s) => {
            (i64::from(r), i64::from(t), i64::from(s))
        }
        _ => (SINGLE, 1, 1),
    };
    let group = Group {
        node_id: node_id.to_owned(),
        modem_id: p.modem_id.clone(),
        sender: p.sender.clone(),
        reference,
        total,
    };
    lock_group(tx, &group).await?;
    let units: Option<Vec<u8>> = p
        .units
        .as_ref()
        .map(|u| u.iter().flat_map(|u| u.to_be_bytes()).collect());
    let duplicate = || InboundRecord {
        outcome: InboundOutcome::Duplicate,
        closed: Vec::new(),
    };
    // Asked first, as SQLite does: a redelivered part of an open message would otherwise look
    // like a reused reference below. Under the group's lock, what is not here is not coming.
    let stmt = tx
        .prepare_cached(
            "SELECT 1 FROM inbound_parts
             WHERE node_id = $1 AND modem_id = $2 AND sender = $3 AND sc_timestamp = $4
               AND concat_ref = $5 AND concat_total = $6 AND concat_seq = $7 AND text = $8
               AND coalesce(units, '\\x'::bytea) = coalesce($9::bytea, '\\x'::bytea)",
        )
        .await?;
    let seen = tx
        .query_opt(
            &stmt,
            &[
                &group.node_id,
                &p.modem_id,
                &p.sender,
                &p.sc_timestamp,
                &reference,
                &total,
                &seq,
                &p.text,
                &units,
            ],
        )
        .await?;
    if seen.is_some() {
        return Ok(duplicate());
    }
    let mut closed = Vec::new();
    if reference != SINGLE {
        // The same part number of an open message, with other content: the sender reused the
        // reference, so the open message will never be completed by these parts.
        let stmt = tx
            .prepare_cached(
                "SELECT 1 FROM inbound_parts
                 WHERE message_seq IS NULL AND node_id = $1 AND modem_id = $2 AND sender = $3
                   AND concat_ref = $4 AND concat_total = $5 AND concat_seq = $6",
            )
            .await?;
        let clash = tx
            .query_opt(
                &stmt,
                &[
                    &group.node_id,
                    &p.modem_id,
                    &p.sender,
                    &reference,
                    &total,
                    &seq,
                ],
            )
            .await?;
        if clash.is_some() {
            closed.push(close_group(tx, &group, p.received_at, false).await?);
        }
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO inbound_parts
                 (node_id, modem_id, sender, sc_timestamp, concat_ref, concat_total, concat_seq,
                  text, units, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (node_id, modem_id, sender, sc_timestamp, concat_ref, concat_total,
                          concat_seq, text, coalesce(units, '\\x'::bytea))
             DO NOTHING",
        )
        .await?;
    let inserted = tx
        .execute(
            &stmt,
            &[
                &group.node_id,
                &p.modem_id,
                &p.sender,
                &p.sc_timestamp,
                &reference,
                &total,
                &seq,
                &p.text,
                &units,
                &p.received_at,
            ],
        )
        .await?;
    if inserted == 0 {
        // Unreachable under the group's lock (the check above saw no such row); the index
        // still has the last word.
        return Ok(InboundRecord {
            outcome: InboundOutcome::Duplicate,
            closed,
        });
    }
    let stmt = tx
        .prepare_cached(
            "SELECT COUNT(*) FROM inbound_parts
             WHERE message_seq IS NULL AND node_id = $1 AND modem_id = $2 AND sender = $3
               AND concat_ref = $4 AND concat_total = $5",
        )
        .await?;
    let received: i64 = tx
        .query_one(
            &stmt,
            &[&group.node_id, &p.modem_id, &p.sender, &reference, &total],
        )
        .await?
        .try_get(0)?;
    let outcome = if received >= total {
        InboundOutcome::Stored(close_group(tx, &group, p.received_at, true).await?)
    } else {
        InboundOutcome::Waiting {
            received: common::count(received),
            total: common::count(total),
        }
    };
    Ok(InboundRecord { outcome, closed })
}

/// Gives up on every group that has waited `timeout_ms` and that no other transaction holds,
/// in the caller's transaction.
async fn expire(
    tx: &Tx<'_>,
    now: Millis,
    timeout_ms: Millis,
) -> Result<Vec<InboundText>, StoreError> {
    let cutoff = now - timeout_ms;
    let stmt = tx
        .prepare_cached(
            "SELECT node_id, modem_id, sender, concat_ref, concat_total FROM inbound_parts
             WHERE message_seq IS NULL
             GROUP BY node_id, modem_id, sender, concat_ref, concat_total
             HAVING MIN(received_at) <= $1
             ORDER BY MIN(received_at)",
        )
        .await?;
    let groups = tx
        .query(&stmt, &[&cutoff])
        .await?
        .iter()
        .map(|r| {
            Ok(Group {
                node_id: r.try_get(0)?,
                modem_id: r.try_get(1)?,
                sender: r.try_get(2)?,
                reference: r.try_get(3)?,
                total: r.try_get(4)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let still_due = tx
        .prepare_cached(
            "SELECT MIN(received_at) FROM inbound_parts
             WHERE message_seq IS NULL AND node_id = $1 AND modem_id = $2 AND sender = $3
               AND concat_ref = $4 AND concat_total = $5",
        )
        .await?;
    let mut given_up = Vec::new();
    for g in &groups {
        // Held: another node's pass is closing it, or a part is being recorded; the next pass
        // looks again. Taken: the list above may be older than a commit that closed the group
        // (or a reused reference that opened it anew), so look again now, under the lock.
        if !try_lock_group(tx, g).await? {
            continue;
        }
        let oldest: Option<Millis> = tx
            .query_one(
                &still_due,
                &[&g.node_id, &g.modem_id, &g.sender, &g.reference, &g.total],
            )
            .await?
            .try_get(0)?;
        if oldest.is_some_and(|at| at <= cutoff) {
            given_up.push(close_group(tx, g, now, false).await?);
        }
    }
    Ok(given_up)
}

impl Postgres {
    /// Records one part received by a modem of this node and, when it completes its message,
    /// the message, in one durable transaction: the caller deletes the part from the SIM next.
    pub(crate) async fn record_inbound_part(
        &self,
        part: InboundPart,
    ) -> Result<InboundRecord, StoreError> {
        let mut client = self.client().await?;
        let tx = self.begin_client(&mut client).await?;
        let record = record_part(&tx, &self.inner.node_id, &part).await?;
        tx.commit().await?;
        if matches!(record.outcome, InboundOutcome::Stored(_)) || !record.closed.is_empty() {
            self.committed();
        }
        Ok(record)
    }

    /// Turns the parts of every message that has waited longer than `timeout_ms` for its
    /// other parts (on any node: a dead node's open texts are not left behind) into one
    /// incomplete message each; returns them.
    pub(crate) async fn expire_inbound(
        &self,
        now: Millis,
        timeout_ms: Millis,
    ) -> Result<Vec<InboundText>, StoreError> {
        let mut client = self.client().await?;
        let tx = self.begin_client(&mut client).await?;
        let given_up = expire(&tx, now, timeout_ms).await?;
        tx.commit().await?;
        if !given_up.is_empty() {
            self.committed();
        }
        Ok(given_up)
    }

    /// One inbound text by id.
    pub(crate) async fn get_inbound(&self, id: &str) -> Result<Option<InboundText>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM inbound_messages WHERE id = $1"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&id])
            .await?
            .as_ref()
            .map(row)
            .transpose()
    }

    /// The inbound log, newest first.
    pub(crate) async fn list_inbound(
        &self,
        f: InboundFilter,
    ) -> Result<Vec<InboundText>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM inbound_messages
                 WHERE ($1::text IS NULL OR sender = $1)
                   AND ($2::bigint IS NULL OR received_at >= $2)
                   AND ($3::text IS NULL
                        OR seq < (SELECT seq FROM inbound_messages WHERE id = $3))
                 ORDER BY seq DESC LIMIT $4"
            ))
            .await?;
        let limit = i64::from(f.limit.clamp(1, 1000));
        client
            .query(&stmt, &[&f.from, &f.since, &f.before, &limit])
            .await?
            .iter()
            .map(row)
            .collect()
    }

    /// Retention for inbound texts, with SQLite's rules: messages stored before
    /// `now - retention_ms` go with their parts, sender numbers of rows older than
    /// `now - mask_after_ms` are masked; parts still waiting are left to the reassembly timeout.
    pub(crate) async fn prune_inbound(
        &self,
        now: Millis,
        retention_ms: Option<Millis>,
        mask_after_ms: Option<Millis>,
    ) -> Result<InboundPruneStats, StoreError> {
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        let mut stats = InboundPruneStats::default();
        if let Some(retention) = retention_ms {
            let stmt = tx
                .prepare_cached("DELETE FROM inbound_messages WHERE received_at < $1")
                .await?;
            stats.deleted = tx.execute(&stmt, &[&(now - retention)]).await?;
        }
        if let Some(mask_after) = mask_after_ms {
            let cutoff = now - mask_after;
            // SQLite's mask (`ops::mask_sql`): the `+`, two digits, stars, the last two digits;
            // `right` is PostgreSQL's spelling of SQLite's `substr(x, -2)`. Only numbers: an
            // alphanumeric sender names no person.
            let mask = "substr(sender, 1, 3) || '*****' || right(sender, 2)";
            let stmt = tx
                .prepare_cached(&format!(
                    "UPDATE inbound_messages SET sender = {mask}
                     WHERE received_at < $1 AND sender LIKE '+%' AND strpos(sender, '*') = 0"
                ))
                .await?;
            stats.masked = tx.execute(&stmt, &[&cutoff]).await?;
            let stmt = tx
                .prepare_cached(&format!(
                    "UPDATE inbound_parts SET sender = {mask}
                     WHERE received_at < $1 AND message_seq IS NOT NULL AND sender LIKE '+%'
                       AND strpos(sender, '*') = 0"
                ))
                .await?;
            tx.execute(&stmt, &[&cutoff]).await?;
        }
        tx.commit().await?;
        Ok(stats)
    }

    /// When the oldest incomplete message (of any node) will have waited `timeout_ms`, if any
    /// waits.
    pub(crate) async fn next_inbound_expiry(
        &self,
        timeout_ms: Millis,
    ) -> Result<Option<Millis>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT MIN(received_at) FROM inbound_parts WHERE message_seq IS NULL")
            .await?;
        let oldest: Option<Millis> = client.query_one(&stmt, &[]).await?.try_get(0)?;
        Ok(oldest.map(|at| at + timeout_ms))
    }
}
