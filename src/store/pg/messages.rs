//! PostgreSQL: texts and the delivery log, and what every enqueue shares (the daily cap, the
//! queue bound, idempotency keys, the message row). The SQLite twins are `ops/enqueue.rs`,
//! `ops/idempotency.rs` and `read.rs`; outcomes, history rows and events are the same.
//!
//! Across nodes: a key is claimed by inserting it first (the primary key makes a second
//! claimer wait for the first's commit), the daily cap is counted under the number's advisory
//! lock (the caller takes it first), and the queue bound under [`queue_full`]'s lock.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::Postgres;
use super::common::{self, MESSAGE_COLUMNS, Tx};
use crate::store::*;

/// The advisory key of the queue bound. Arbitrary and fixed; `lock_number` hashes into the
/// same 64-bit space, where meeting this value is as likely as two numbers colliding.
const QUEUE_BOUND_LOCK: i64 = 0x5349_4d47_5155_4555;

/// How close to `queue_max` the count must come before enqueues count one at a time.
const QUEUE_BOUND_SLACK: u64 = 256;

/// Messages in status `queued`.
async fn queued(c: &impl GenericClient) -> Result<u64, StoreError> {
    let stmt = c
        .prepare_cached("SELECT count(*) FROM messages WHERE status = 'queued'")
        .await?;
    let n: i64 = c.query_one(&stmt, &[]).await?.try_get(0)?;
    Ok(n.max(0) as u64)
}

/// Whether the queue holds `queue_max` messages (0 = no bound).
///
/// There is no counter row: one row every enqueue updates would make each commit wait for the
/// previous one's, across the cluster. The queued rows are counted instead (an index-only scan
/// of `messages_queue`), and a cluster-wide advisory lock orders the counts that matter. Far
/// from the bound, enqueues take it shared and run side by side; within
/// [`QUEUE_BOUND_SLACK`] of it they take it exclusive and count again, and an exclusive holder
/// waits for every shared holder's commit (and PostgreSQL queues later shared requests behind
/// it), so its count sees every enqueue that could still be in flight: near the bound
/// admissions are exact and serial.
///
/// The residual window: shared holders do not see each other's uncommitted rows. Each one
/// counted, after taking the lock, more than `QUEUE_BOUND_SLACK` below the bound, so the bound
/// can only be passed if more than that many shared-mode enqueues are in flight at once
/// (between their count and their commit) across the cluster. Each holds a pooled connection
/// for that time, so that takes more connections than 16 nodes of the default pool have.
///
/// Takes the lock for the rest of the transaction: call it after the number's lock and the
/// idempotency key, which is the order every enqueue takes its locks in.
pub(super) async fn queue_full(tx: &Tx<'_>, queue_max: u64) -> Result<bool, StoreError> {
    if queue_max == 0 {
        return Ok(false);
    }
    let unlocked = queued(tx).await?;
    if unlocked >= queue_max {
        return Ok(true);
    }
    if queue_max - unlocked > QUEUE_BOUND_SLACK {
        // In a savepoint, so that if the queue filled up meanwhile the shared lock can be given
        // back (a transaction cannot trade it for the exclusive one without deadlocking against
        // another doing the same) and this enqueue counted exactly instead.
        tx.batch_execute(&format!(
            "SAVEPOINT queue_bound; SELECT pg_advisory_xact_lock_shared({QUEUE_BOUND_LOCK})"
        ))
        .await?;
        if queue_max.saturating_sub(queued(tx).await?) > QUEUE_BOUND_SLACK {
            return Ok(false);
        }
        tx.batch_execute("ROLLBACK TO SAVEPOINT queue_bound")
            .await?;
    }
    tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({QUEUE_BOUND_LOCK})"))
        .await?;
    Ok(queued(tx).await? >= queue_max)
}

/// `Some(retry_after_ms)` if `to` already got `cap` OTP texts in the last 24 h. The caller
/// holds the number's lock, so no other node adds one between this count and its commit.
pub(super) async fn daily_cap_hit(
    c: &impl GenericClient,
    to: &str,
    cap: u32,
    now: Millis,
) -> Result<Option<Millis>, StoreError> {
    if cap == 0 {
        return Ok(None);
    }
    let since = now - DAY_MS;
    let stmt = c
        .prepare_cached(
            "SELECT count(*) FROM messages
             WHERE to_number = $1 AND created_at > $2 AND kind = 'otp'",
        )
        .await?;
    let count: i64 = c.query_one(&stmt, &[&to, &since]).await?.try_get(0)?;
    if count < i64::from(cap) {
        return Ok(None);
    }
    // One more is allowed once enough of the oldest have left the window to bring the count
    // below the cap (more than one if the cap was lowered since).
    let stmt = c
        .prepare_cached(
            "SELECT created_at FROM messages
             WHERE to_number = $1 AND created_at > $2 AND kind = 'otp'
             ORDER BY created_at LIMIT 1 OFFSET $3",
        )
        .await?;
    let offset = count - i64::from(cap);
    let leaving: Millis = c
        .query_one(&stmt, &[&to, &since, &offset])
        .await?
        .try_get(0)?;
    Ok(Some((leaving + DAY_MS - now).max(1)))
}

/// Inserts a queued message with its history row and `message.queued` event, and wakes every
/// node's dispatcher at commit. Returns its `seq`.
pub(super) async fn insert_message(
    c: &impl GenericClient,
    msg: &NewMessage,
    otp_id: Option<&str>,
) -> Result<i64, StoreError> {
    let (body, sealed) = match &msg.body {
        Body::Clear(text) => (Some(text.as_str()), None),
        Body::Sealed(bytes) => (None, Some(bytes.as_slice())),
    };
    let stmt = c
        .prepare_cached(
            "INSERT INTO messages (id, otp_id, to_number, kind, log_text, body, sealed_body,
                 parts, status, created_at, updated_at, deadline, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9, $9, $10, $9)
             RETURNING seq",
        )
        .await?;
    let seq: i64 = c
        .query_one(
            &stmt,
            &[
                &msg.id,
                &otp_id,
                &msg.to.as_str(),
                &msg.kind.as_str(),
                &msg.log_text,
                &body,
                &sealed,
                &i64::from(msg.parts),
                &msg.created_at,
                &msg.deadline,
            ],
        )
        .await?
        .try_get(0)?;
    common::event(c, seq, msg.created_at, MessageStatus::Queued, None).await?;
    common::message_changed(c, seq, msg.created_at).await?;
    Ok(seq)
}

/// What claiming an idempotency key did, so a refusal can undo exactly that.
pub(super) enum Claim {
    /// The request has no key.
    Unkeyed,
    /// The key was new: this transaction inserted it.
    Fresh,
    /// The key had expired (older than a day) and was taken over; its old row, to put back.
    Renewed {
        request_hash: Vec<u8>,
        response: String,
        created_at: Millis,
    },
}

/// Claims the request's key for this transaction, storing the answer it will give, or returns
/// the answer a repeat gets: `Err(Replay)` for the same request, `Err(IdempotencyConflict)` for
/// another one under a key seen within a day.
///
/// The INSERT comes first: a second transaction inserting the same key, on any node, waits on
/// the primary key until the first ends, then finds the committed row (a replay) or none (the
/// first refused and gave the key back). So two nodes receiving one key never both create.
/// A refusal must [`unclaim_key`] (or roll back): SQLite stores a key only with a success.
pub(super) async fn claim_key(
    c: &impl GenericClient,
    idem: Option<&Idempotency>,
    now: Millis,
) -> Result<Result<Claim, CreateOutcome>, StoreError> {
    let Some(idem) = idem else {
        return Ok(Ok(Claim::Unkeyed));
    };
    let insert = c
        .prepare_cached(
            "INSERT INTO idempotency (scope, key, request_hash, response, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, key) DO NOTHING",
        )
        .await?;
    let stored = c
        .prepare_cached(
            "SELECT request_hash, response, created_at FROM idempotency
             WHERE scope = $1 AND key = $2 FOR UPDATE",
        )
        .await?;
    loop {
        let inserted = c
            .execute(
                &insert,
                &[
                    &idem.scope,
                    &idem.key,
                    &idem.request_hash,
                    &idem.response,
                    &now,
                ],
            )
            .await?;
        if inserted == 1 {
            return Ok(Ok(Claim::Fresh));
        }
        // Gone again: its claimer refused and deleted it. Claim it anew.
        let Some(row) = c.query_opt(&stored, &[&idem.scope, &idem.key]).await? else {
            continue;
        };
        let (request_hash, response, created_at): (Vec<u8>, String, Millis) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        if created_at > now - DAY_MS {
            return Ok(Err(if request_hash == idem.request_hash {
                CreateOutcome::Replay(response)
            } else {
                CreateOutcome::IdempotencyConflict
            }));
        }
        // A key older than its day may be reused for a new request (SQLite's REPLACE).
        write_key(
            c,
            &idem.scope,
            &idem.key,
            &idem.request_hash,
            &idem.response,
            now,
        )
        .await?;
        return Ok(Ok(Claim::Renewed {
            request_hash,
            response,
            created_at,
        }));
    }
}

async fn write_key(
    c: &impl GenericClient,
    scope: &str,
    key: &str,
    request_hash: &[u8],
    response: &str,
    created_at: Millis,
) -> Result<(), StoreError> {
    let stmt = c
        .prepare_cached(
            "UPDATE idempotency SET request_hash = $3, response = $4, created_at = $5
             WHERE scope = $1 AND key = $2",
        )
        .await?;
    c.execute(
        &stmt,
        &[&scope, &key, &request_hash, &response, &created_at],
    )
    .await?;
    Ok(())
}

/// Gives back a key claimed by [`claim_key`] when the request was refused but the transaction
/// still commits other changes (an OTP that expired on the way).
pub(super) async fn unclaim_key(
    c: &impl GenericClient,
    idem: Option<&Idempotency>,
    claim: Claim,
) -> Result<(), StoreError> {
    let Some(idem) = idem else { return Ok(()) };
    match claim {
        Claim::Unkeyed => {}
        Claim::Fresh => {
            let stmt = c
                .prepare_cached("DELETE FROM idempotency WHERE scope = $1 AND key = $2")
                .await?;
            c.execute(&stmt, &[&idem.scope, &idem.key]).await?;
        }
        Claim::Renewed {
            request_hash,
            response,
            created_at,
        } => {
            write_key(
                c,
                &idem.scope,
                &idem.key,
                &request_hash,
                &response,
                created_at,
            )
            .await?;
        }
    }
    Ok(())
}

impl Postgres {
    /// Commits a transaction that queued or changed something, and pokes local outbox readers.
    pub(super) async fn commit_events(&self, tx: Tx<'_>) -> Result<(), StoreError> {
        tx.commit().await?;
        self.committed();
        Ok(())
    }

    /// Shared by both plain-text enqueues: a refusal rolls back, key included, since nothing
    /// else was written.
    async fn enqueue(
        &self,
        msg: &NewMessage,
        idem: Option<&Idempotency>,
        daily_cap: Option<u32>,
        queue_max: u64,
        origin: Option<&MessageOrigin>,
    ) -> Result<CreateOutcome, StoreError> {
        let now = msg.created_at;
        let mut client = self.client().await?;
        let tx = self.begin_client(&mut client).await?;
        if daily_cap.is_some() {
            common::lock_number(&tx, msg.to.as_str()).await?;
        }
        if let Err(seen) = claim_key(&tx, idem, now).await? {
            tx.rollback().await?;
            return Ok(seen);
        }
        if let Some(cap) = daily_cap
            && let Some(retry_after_ms) = daily_cap_hit(&tx, msg.to.as_str(), cap, now).await?
        {
            tx.rollback().await?;
            return Ok(CreateOutcome::DailyLimit { retry_after_ms });
        }
        if queue_full(&tx, queue_max).await? {
            tx.rollback().await?;
            return Ok(CreateOutcome::QueueFull);
        }
        let seq = insert_message(&tx, msg, None).await?;
        if let Some(o) = origin {
            let stmt = tx
                .prepare_cached(
                    "INSERT INTO message_origins (message_seq, sender, status_callback)
                     VALUES ($1, $2, $3)",
                )
                .await?;
            tx.execute(&stmt, &[&seq, &o.sender, &o.status_callback])
                .await?;
        }
        self.commit_events(tx).await?;
        Ok(CreateOutcome::Created)
    }

    pub(crate) async fn enqueue_text(
        &self,
        msg: NewMessage,
        idem: Option<Idempotency>,
        queue_max: u64,
    ) -> Result<CreateOutcome, StoreError> {
        self.enqueue(&msg, idem.as_ref(), None, queue_max, None)
            .await
    }

    pub(crate) async fn enqueue_text_from(
        &self,
        msg: NewMessage,
        idem: Option<Idempotency>,
        queue_max: u64,
        origin: MessageOrigin,
    ) -> Result<CreateOutcome, StoreError> {
        self.enqueue(&msg, idem.as_ref(), None, queue_max, Some(&origin))
            .await
    }

    pub(crate) async fn enqueue_relayed_otp_text(
        &self,
        msg: NewMessage,
        idem: Option<Idempotency>,
        daily_cap: u32,
        queue_max: u64,
    ) -> Result<CreateOutcome, StoreError> {
        self.enqueue(&msg, idem.as_ref(), Some(daily_cap), queue_max, None)
            .await
    }

    pub(crate) async fn message_origin(
        &self,
        id: &str,
    ) -> Result<Option<MessageOrigin>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT o.sender, o.status_callback FROM message_origins o
                 JOIN messages m ON m.seq = o.message_seq WHERE m.id = $1",
            )
            .await?;
        client
            .query_opt(&stmt, &[&id])
            .await?
            .map(|r| {
                Ok(MessageOrigin {
                    sender: r.try_get(0)?,
                    status_callback: r.try_get(1)?,
                })
            })
            .transpose()
    }

    pub(crate) async fn get_message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1");
        let stmt = client.prepare_cached(&sql).await?;
        client
            .query_opt(&stmt, &[&id])
            .await?
            .as_ref()
            .map(common::message)
            .transpose()
    }

    pub(crate) async fn message_events(&self, id: &str) -> Result<Vec<MessageEvent>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT e.at, e.status, e.detail FROM message_events e
                 JOIN messages m ON m.seq = e.message_seq WHERE m.id = $1 ORDER BY e.id",
            )
            .await?;
        client
            .query(&stmt, &[&id])
            .await?
            .iter()
            .map(|r| {
                let status: String = r.try_get(1)?;
                Ok(MessageEvent {
                    at: r.try_get(0)?,
                    status: common::message_status(&status)?,
                    detail: r.try_get(2)?,
                })
            })
            .collect()
    }

    pub(crate) async fn list_messages(
        &self,
        filter: MessageFilter,
    ) -> Result<Vec<Message>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE ($1::TEXT IS NULL OR to_number = $1)
               AND ($2::TEXT IS NULL OR status = $2)
               AND ($3::BIGINT IS NULL OR created_at < $3)
             ORDER BY created_at DESC, seq DESC LIMIT $4"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let limit = i64::from(filter.limit.clamp(1, 1000));
        let rows: Vec<Row> = client
            .query(
                &stmt,
                &[
                    &filter.to,
                    &filter.status.map(|s| s.as_str()),
                    &filter.before,
                    &limit,
                ],
            )
            .await?;
        rows.iter().map(common::message).collect()
    }

    pub(crate) async fn queue_depth(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        queued(&client).await
    }

    pub(crate) async fn status_counts(&self) -> Result<Vec<(MessageStatus, u64)>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT status, count(*) FROM messages GROUP BY status")
            .await?;
        let mut counts: Vec<(MessageStatus, u64)> =
            MessageStatus::ALL.iter().map(|s| (*s, 0)).collect();
        for r in client.query(&stmt, &[]).await? {
            let status: String = r.try_get(0)?;
            let n: i64 = r.try_get(1)?;
            let status = common::message_status(&status)?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == status) {
                slot.1 = n.max(0) as u64;
            }
        }
        Ok(counts)
    }
}
