//! PostgreSQL: texts and the delivery log, and what every enqueue shares (the daily cap, the
//! queue bound, idempotency keys, the message row). The SQLite twins are `ops/enqueue.rs`,
//! `ops/idempotency.rs` and `read.rs`; outcomes, history rows and events are the same.
//!
//! Across nodes: a key is claimed by inserting it first (the primary key makes a second
//! claimer wait for the first's commit), the daily cap is counted under the number's advisory
//! lock (the caller takes it first), and the queue bound under the lock of the schema's
//! `queue_full` function.
//!
//! Every enqueue ends in one statement, [`insert`]: the daily cap's count, the queue bound and,
//! for a create, the number's pending OTPs are checked, and only if all pass is the message
//! inserted with its history row, its `message.queued` event and what else belongs to it (the
//! OTP, its code, its wording, the client's origin), in data-modifying CTEs. An enqueue is then
//! BEGIN, the number's lock (OTP texts only), the key (keyed requests only), this statement and
//! COMMIT.

use deadpool_postgres::GenericClient;
use serde_json::json;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::Postgres;
use super::common::{self, MESSAGE_COLUMNS, Tx};
use crate::store::*;

/// The advisory key of the queue bound. Arbitrary and fixed; `lock_number` hashes into the
/// same 64-bit space, where meeting this value is as likely as two numbers colliding.
///
/// How the bound holds across nodes: the count of queued messages is the striped counter the
/// schema's triggers keep (`queue_count`; no single counter row, which would make each commit
/// wait for the previous one's, across the cluster), and this cluster-wide advisory lock
/// orders the counts that matter. Far from the bound, enqueues take it shared and run side by
/// side; within [`QUEUE_BOUND_SLACK`] of it they take it exclusive and count again, and an
/// exclusive holder waits for every shared holder's commit (and PostgreSQL queues later shared
/// requests behind it), so its count sees every enqueue that could still be in flight: near
/// the bound admissions are exact and serial. The schema's `queue_full` function decides this
/// in one statement, [`insert`]'s.
///
/// The residual window: shared holders do not see each other's uncommitted rows. Each one
/// counted, after taking the lock, more than `QUEUE_BOUND_SLACK` below the bound, so the bound
/// can only be passed if more than that many shared-mode enqueues are in flight at once
/// (between their count and their commit) across the cluster. Each holds a pooled connection
/// for that time, so that takes more connections than 16 nodes of the default pool have.
const QUEUE_BOUND_LOCK: i64 = 0x5349_4d47_5155_4555;

/// How close to `queue_max` the count must come before enqueues count one at a time.
const QUEUE_BOUND_SLACK: i64 = 256;

/// Messages in status `queued`: the sum of the striped counter the schema's triggers keep
/// (`queue_count`), as cheap with a backlog of a million as with an empty queue.
async fn queued(c: &impl GenericClient) -> Result<u64, StoreError> {
    let stmt = c
        .prepare_cached("SELECT COALESCE(sum(n), 0)::BIGINT FROM queue_count")
        .await?;
    let n: i64 = c.query_one(&stmt, &[]).await?.try_get(0)?;
    Ok(n.max(0) as u64)
}

/// When one more OTP text may go to `to`, which got `count` (at least `cap`) in the last 24 h:
/// once enough of the oldest have left the window to bring the count below the cap (more than
/// one if the cap was lowered since). The caller holds the number's lock.
async fn daily_retry_after(
    c: &impl GenericClient,
    to: &str,
    cap: u32,
    count: i64,
    now: Millis,
) -> Result<Millis, StoreError> {
    let stmt = c
        .prepare_cached(
            "SELECT created_at FROM messages
             WHERE to_number = $1 AND created_at > $2 AND kind = 'otp'
             ORDER BY created_at LIMIT 1 OFFSET $3",
        )
        .await?;
    let offset = count - i64::from(cap);
    let leaving: Millis = c
        .query_one(&stmt, &[&to, &(now - DAY_MS), &offset])
        .await?
        .try_get(0)?;
    Ok((leaving + DAY_MS - now).max(1))
}

/// The `message.queued` event's payload for `msg`, as `common::message_changed` writes it
/// from the row just inserted (same keys, order and values), without reading the row back.
fn queued_event(msg: &NewMessage, otp_id: Option<&str>) -> String {
    let attempts: u32 = 0;
    let none: Option<&str> = None;
    json!({
        "message_id": msg.id,
        "otp_id": otp_id,
        "to": msg.to.as_str(),
        "kind": msg.kind.as_str(),
        "status": MessageStatus::Queued.as_str(),
        "parts": msg.parts,
        "attempts": attempts,
        // The delivery log's text: an OTP's code is masked in it.
        "text": msg.log_text,
        "error": none,
        "modem_id": none,
    })
    .to_string()
}

/// An enqueue's write, for [`insert`]: the message, what belongs to it, and what to check
/// first.
pub(super) struct Insert<'a> {
    pub msg: &'a NewMessage,
    /// The OTP the message carries a code of.
    pub otp_id: Option<&'a str>,
    /// The OTP itself, inserted with its first text (a create; `otp_id` is its id).
    pub otp: Option<&'a NewOtp>,
    /// A code row for `otp_id`, carried by this message.
    pub code_hmac: Option<&'a [u8]>,
    /// The create's wording.
    pub wording: Option<&'a OtpWording>,
    /// A client's `From` and `StatusCallback`.
    pub origin: Option<&'a MessageOrigin>,
    /// OTP texts `msg.to` may get in 24 h; 0 = no cap. The caller holds the number's lock.
    pub daily_cap: u32,
    /// 0 = no bound.
    pub queue_max: u64,
    /// A create's check of the number's pending OTPs (under the number's lock): with
    /// `Some(_)`, nothing is inserted while the number has one, and they are locked
    /// (`FOR UPDATE`) and returned.
    pub pending: Option<OnPending>,
}

/// What [`insert`] did.
#[derive(Debug)]
pub(super) enum Inserted {
    Created,
    /// Nothing written.
    DailyLimit {
        retry_after_ms: Millis,
    },
    /// Nothing written.
    QueueFull,
    /// Nothing written: the number has pending OTPs, `ids` oldest first, now locked by this
    /// transaction; `unexpired` is the newest that has not expired, which [`OnPending::Keep`]
    /// names (it is reported first, before the daily cap; the others come after the cap and
    /// before the queue bound, which was not checked: cancel them and insert again).
    Pending {
        ids: Vec<String>,
        unexpired: Option<String>,
    },
}

/// A statement's text and its parameters, numbered as they are added.
struct Sql<'a> {
    text: String,
    params: Vec<&'a (dyn ToSql + Sync)>,
}

impl<'a> Sql<'a> {
    /// Adds a parameter and returns its placeholder, typed: the server cannot infer the type of
    /// a parameter in `INSERT ... SELECT`'s select list.
    fn param(&mut self, value: &'a (dyn ToSql + Sync), ty: &str) -> String {
        self.params.push(value);
        format!("${}::{ty}", self.params.len())
    }
}

/// Checks and writes an enqueue in one statement (see the module docs): the checks run in
/// CTEs, and the inserts take their rows from the checks' verdict, so that a refusal writes
/// nothing. The daily count and the pending OTPs are read in this statement's snapshot, taken
/// after the caller's earlier statement acquired the number's lock, so they see everything the
/// lock's previous holders committed. The queue bound is decided last, and only if everything
/// else passed (a `CASE` never evaluates the branch it does not take): its lock is then the
/// last one the transaction takes before COMMIT, so its holders never wait for anything else.
pub(super) async fn insert(c: &impl GenericClient, w: &Insert<'_>) -> Result<Inserted, StoreError> {
    let msg = w.msg;
    let now = msg.created_at;
    let (body, sealed) = match &msg.body {
        Body::Clear(text) => (Some(text.as_str()), None),
        Body::Sealed(bytes) => (None, Some(bytes.as_slice())),
    };
    let to = msg.to.as_str();
    let kind = msg.kind.as_str();
    let parts = i64::from(msg.parts);
    let event_id = format!("evt_{}", uuid::Uuid::new_v4().simple());
    let data = queued_event(msg, w.otp_id);
    let since = now - DAY_MS;
    let cap = i64::from(w.daily_cap);
    let queue_max = i64::try_from(w.queue_max).unwrap_or(i64::MAX);
    let otp_row = w.otp.map(|o| {
        (
            o.to.as_str(),
            i64::from(o.max_attempts),
            o.expires_at,
            o.created_at,
        )
    });
    let wording = w.wording.map(|w| {
        let offsets: Vec<String> = w.code_offsets.iter().map(|o| o.to_string()).collect();
        (i64::from(w.code_length), offsets.join(","))
    });

    let mut q = Sql {
        text: String::from("WITH "),
        params: Vec::new(),
    };
    let id = q.param(&msg.id, "TEXT");
    let otp_id = q.param(&w.otp_id, "TEXT");
    let to_p = q.param(&to, "TEXT");
    let now_p = q.param(&msg.created_at, "BIGINT");
    // The checks: each a refusal when true.
    let mut refusals = Vec::new();
    if w.daily_cap > 0 {
        let since = q.param(&since, "BIGINT");
        let cap = q.param(&cap, "BIGINT");
        q.text.push_str(&format!(
            "d AS MATERIALIZED (SELECT count(*) AS n FROM messages
                 WHERE to_number = {to_p} AND created_at > {since} AND kind = 'otp'), "
        ));
        refusals.push(format!("(SELECT n FROM d) >= {cap}"));
    } else {
        q.text.push_str("d AS (SELECT 0::BIGINT AS n), ");
    }
    if w.pending.is_some() {
        q.text.push_str(&format!(
            "p AS MATERIALIZED (SELECT id, expires_at, created_at FROM otps
                 WHERE to_number = {to_p} AND status = 'pending' ORDER BY created_at FOR UPDATE), "
        ));
        refusals.push("EXISTS (SELECT 1 FROM p)".to_owned());
    } else {
        q.text.push_str(
            "p AS (SELECT NULL::TEXT AS id, 0::BIGINT AS expires_at, 0::BIGINT AS created_at
                 WHERE false), ",
        );
    }
    let bound = if w.queue_max > 0 {
        let max = q.param(&queue_max, "BIGINT");
        let slack = q.param(&QUEUE_BOUND_SLACK, "BIGINT");
        let key = q.param(&QUEUE_BOUND_LOCK, "BIGINT");
        format!("queue_full({max}, {slack}, {key})")
    } else {
        "false".to_owned()
    };
    // `over_bound`: true when the queue bound refuses, false when it admits, NULL when a check
    // before it refused (and it was not asked).
    if refusals.is_empty() {
        q.text.push_str(&format!(
            "q AS MATERIALIZED (SELECT {bound} AS over_bound), "
        ));
    } else {
        q.text.push_str(&format!(
            "q AS MATERIALIZED (SELECT CASE WHEN {} THEN NULL ELSE {bound} END AS over_bound), ",
            refusals.join(" OR ")
        ));
    }
    // The message, its history row and its event.
    let kind = q.param(&kind, "TEXT");
    let log_text = q.param(&msg.log_text, "TEXT");
    let body = q.param(&body, "TEXT");
    let sealed = q.param(&sealed, "BYTEA");
    let parts = q.param(&parts, "BIGINT");
    let deadline = q.param(&msg.deadline, "BIGINT");
    let event_id = q.param(&event_id, "TEXT");
    let data = q.param(&data, "TEXT");
    q.text.push_str(&format!(
        "m AS (INSERT INTO messages (id, otp_id, to_number, kind, log_text, body, sealed_body,
                   parts, status, created_at, updated_at, deadline, next_attempt_at)
               SELECT {id}, {otp_id}, {to_p}, {kind}, {log_text}, {body}, {sealed}, {parts},
                   'queued', {now_p}, {now_p}, {deadline}, {now_p}
               FROM q WHERE q.over_bound IS FALSE
               RETURNING seq),
         h AS (INSERT INTO message_events (message_seq, at, status)
               SELECT seq, {now_p}, 'queued' FROM m),
         e AS (INSERT INTO events (id, type, subject, at, data)
               SELECT {event_id}, 'message.queued', {id}, {now_p}, {data} FROM m)"
    ));
    if let (Some(otp), Some((otp_to, max_attempts, expires_at, created_at))) = (w.otp, &otp_row) {
        debug_assert_eq!(w.otp_id, Some(otp.id.as_str()));
        let otp_to = q.param(otp_to, "TEXT");
        let max_attempts = q.param(max_attempts, "BIGINT");
        let expires_at = q.param(expires_at, "BIGINT");
        let created_at = q.param(created_at, "BIGINT");
        q.text.push_str(&format!(
            ", o AS (INSERT INTO otps (id, to_number, status, attempts, max_attempts, expires_at,
                         created_at, updated_at)
                     SELECT {otp_id}, {otp_to}, 'pending', 0, {max_attempts}, {expires_at},
                         {created_at}, {created_at} FROM m)"
        ));
    }
    if let Some(hmac) = &w.code_hmac {
        let hmac = q.param(hmac, "BYTEA");
        q.text.push_str(&format!(
            ", c AS (INSERT INTO otp_codes (otp_id, code_hmac, message_id, created_at)
                     SELECT {otp_id}, {hmac}, {id}, {now_p} FROM m)"
        ));
    }
    if let Some((code_length, offsets)) = &wording {
        let code_length = q.param(code_length, "BIGINT");
        let offsets = q.param(offsets, "TEXT");
        q.text.push_str(&format!(
            ", w AS (INSERT INTO otp_wordings (otp_id, code_length, code_offsets)
                     SELECT {otp_id}, {code_length}, {offsets} FROM m)"
        ));
    }
    if let Some(o) = w.origin {
        let sender = q.param(&o.sender, "TEXT");
        let callback = q.param(&o.status_callback, "TEXT");
        q.text.push_str(&format!(
            ", r AS (INSERT INTO message_origins (message_seq, sender, status_callback)
                     SELECT seq, {sender}, {callback} FROM m)"
        ));
    }
    q.text.push_str(&format!(
        " SELECT (SELECT over_bound FROM q), (SELECT n FROM d),
             ARRAY(SELECT id FROM p ORDER BY created_at),
             (SELECT id FROM p WHERE expires_at > {now_p} ORDER BY created_at DESC LIMIT 1),
             (SELECT seq FROM m)"
    ));

    let stmt = c.prepare_cached(&q.text).await?;
    let r = c.query_one(&stmt, &q.params).await?;
    let over_bound: Option<bool> = r.try_get(0)?;
    let day: i64 = r.try_get(1)?;
    let ids: Vec<String> = r.try_get(2)?;
    let unexpired: Option<String> = r.try_get(3)?;
    let seq: Option<i64> = r.try_get(4)?;
    if w.pending == Some(OnPending::Keep) && unexpired.is_some() {
        return Ok(Inserted::Pending { ids, unexpired });
    }
    if w.daily_cap > 0 && day >= cap {
        let retry_after_ms = daily_retry_after(c, to, w.daily_cap, day, now).await?;
        return Ok(Inserted::DailyLimit { retry_after_ms });
    }
    if !ids.is_empty() {
        return Ok(Inserted::Pending { ids, unexpired });
    }
    match (over_bound, seq) {
        (Some(false), Some(_)) => Ok(Inserted::Created),
        (Some(true), None) => Ok(Inserted::QueueFull),
        other => Err(StoreError::Corrupt(format!(
            "enqueue of {}: over the queue bound {:?}, inserted {:?}",
            msg.id, other.0, other.1
        ))),
    }
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
    /// Commits a transaction that queued or changed something, then makes the wake-ups that
    /// follow such a commit ([`Postgres::committed`]).
    pub(super) async fn commit_events(&self, tx: Tx<'_>) -> Result<(), StoreError> {
        tx.commit().await?;
        self.committed();
        Ok(())
    }

    /// Shared by the text enqueues: a refusal rolls back, key included, since nothing else was
    /// written. BEGIN, the number's lock (with a daily cap), the key, the write, COMMIT.
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
        let write = Insert {
            msg,
            otp_id: None,
            otp: None,
            code_hmac: None,
            wording: None,
            origin,
            daily_cap: daily_cap.unwrap_or(0),
            queue_max,
            pending: None,
        };
        let outcome = match insert(&tx, &write).await? {
            Inserted::Created => {
                self.commit_events(tx).await?;
                return Ok(CreateOutcome::Created);
            }
            Inserted::DailyLimit { retry_after_ms } => CreateOutcome::DailyLimit { retry_after_ms },
            Inserted::QueueFull => CreateOutcome::QueueFull,
            Inserted::Pending { .. } => {
                return Err(StoreError::Corrupt(
                    "a text's enqueue checked pending OTPs".into(),
                ));
            }
        };
        tx.rollback().await?;
        Ok(outcome)
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

/// Against a real server (tests/support/pg.rs; skipped without one): what the one-statement
/// enqueue writes is what the helpers it replaced wrote, and the striped counter is the count.
#[cfg(test)]
#[path = "../../../tests/support/pg.rs"]
mod test_pg;

#[cfg(test)]
mod tests {
    use super::test_pg as pg;
    use super::*;
    use crate::model::Msisdn;
    use crate::store::pg::PgOptions;

    const T0: Millis = 1_800_000_000_000;
    const MIN: Millis = 60_000;

    async fn store() -> Option<Postgres> {
        let url = pg::shared()?.create_database();
        Some(
            Postgres::connect(PgOptions::new(url, "node-a"))
                .await
                .expect("connect"),
        )
    }

    fn text(id: &str, log_text: &str, at: Millis) -> NewMessage {
        NewMessage {
            id: id.into(),
            to: Msisdn::parse("+15550000001").unwrap(),
            kind: MessageKind::Text,
            log_text: log_text.into(),
            body: Body::Clear(log_text.into()),
            parts: 3,
            created_at: at,
            deadline: at + 10 * MIN,
        }
    }

    fn otp(id: &str, to: &str, at: Millis) -> (NewOtp, NewMessage) {
        let otp = NewOtp {
            id: id.into(),
            to: Msisdn::parse(to).unwrap(),
            code_hmac: vec![7; 32],
            max_attempts: 5,
            expires_at: at + 5 * MIN,
            created_at: at,
        };
        let msg = NewMessage {
            id: format!("msg_{id}"),
            to: Msisdn::parse(to).unwrap(),
            kind: MessageKind::Otp,
            log_text: "Your code is ******.".into(),
            body: Body::Sealed(vec![1, 2, 3]),
            parts: 1,
            created_at: at,
            deadline: at + 5 * MIN,
        };
        (otp, msg)
    }

    /// The `message.queued` event and history row [`insert`] writes are, byte for byte, what
    /// `common::event` and `common::message_changed` write for the row it inserted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queued_event_is_the_one_message_changed_writes() {
        let Some(store) = store().await else { return };
        let (o, m) = otp("otp_1", "+15550000002", T0);
        let odd = text(
            "msg_odd",
            "quotes \" and \\ backslash, naïve ☃ \u{1}, <tag> & 'x'",
            T0,
        );
        let cases = [
            (text("msg_plain", "hello", T0), None, None),
            (odd, None, None),
            (m.clone(), Some("otp_1"), Some(&o)),
            (
                NewMessage {
                    id: "msg_added".into(),
                    ..m.clone()
                },
                Some("otp_1"),
                None,
            ),
        ];
        let mut client = store.client().await.unwrap();
        let tx = client.transaction().await.unwrap();
        for (msg, otp_id, otp) in &cases {
            let write = Insert {
                msg,
                otp_id: *otp_id,
                otp: *otp,
                code_hmac: otp_id.map(|_| &[7u8; 32][..]),
                wording: None,
                origin: None,
                daily_cap: 0,
                queue_max: 0,
                pending: None,
            };
            assert!(matches!(
                insert(&tx, &write).await.unwrap(),
                Inserted::Created
            ));
            let seq: i64 = tx
                .query_one("SELECT seq FROM messages WHERE id = $1", &[&msg.id])
                .await
                .unwrap()
                .get(0);
            common::event(&tx, seq, msg.created_at, MessageStatus::Queued, None)
                .await
                .unwrap();
            common::message_changed(&tx, seq, msg.created_at)
                .await
                .unwrap();
            let history = tx
                .query(
                    "SELECT at, status, detail FROM message_events WHERE message_seq = $1
                     ORDER BY id",
                    &[&seq],
                )
                .await
                .unwrap();
            assert_eq!(history.len(), 2);
            let rows: Vec<(i64, String, Option<String>)> = history
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            assert_eq!(rows[0], rows[1], "history of {}", msg.id);
            let events = tx
                .query(
                    "SELECT type, subject, at, data FROM events WHERE subject = $1
                     ORDER BY insert_id",
                    &[&msg.id],
                )
                .await
                .unwrap();
            assert_eq!(events.len(), 2);
            let rows: Vec<(String, String, i64, String)> = events
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect();
            assert_eq!(rows[0], rows[1], "event of {}", msg.id);
            assert_eq!(rows[0].3, queued_event(msg, *otp_id));
        }
        tx.rollback().await.unwrap();
    }

    /// The striped counter against `count(*)`, on the store's connection.
    async fn assert_counted(store: &Postgres, when: &str) -> u64 {
        let client = store.client().await.unwrap();
        let counted: i64 = client
            .query_one("SELECT count(*) FROM messages WHERE status = 'queued'", &[])
            .await
            .unwrap()
            .get(0);
        let depth = store.queue_depth().await.unwrap();
        assert_eq!(depth, counted as u64, "after {when}");
        depth
    }

    /// Every way a message enters or leaves `queued` moves the counter: enqueues of every
    /// kind, claims, retries, unknown outcomes, a refused claim, sends, failures, expiries,
    /// cancels (a superseded OTP, a verify, a cancel), the recovery of a node's sends, a
    /// delete; refusals and rollbacks move nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queue_depth_is_the_count_of_queued_messages() {
        let Some(store) = store().await else { return };
        assert_eq!(assert_counted(&store, "nothing").await, 0);
        for i in 0..6 {
            let m = text(&format!("msg_{i}"), "hi", T0 + i);
            store.enqueue_text(m, None, 0).await.unwrap();
        }
        let origin = MessageOrigin {
            sender: Some("x".into()),
            status_callback: None,
        };
        store
            .enqueue_text_from(text("msg_from", "hi", T0), None, 0, origin)
            .await
            .unwrap();
        let (o, m) = otp("otp_a", "+15550000002", T0);
        store.create_otp(o, m, None, 10, 0).await.unwrap();
        store
            .add_otp_text(NewOtpText {
                otp_id: "otp_a".into(),
                code_hmac: vec![8; 32],
                msg: NewMessage {
                    id: "msg_otp_a_2".into(),
                    ..otp("otp_a", "+15550000002", T0 + 1).1
                },
                idem: None,
                max_texts: 0,
                daily_cap: 10,
                queue_max: 0,
            })
            .await
            .unwrap();
        store
            .resend_otp(
                "otp_a",
                vec![9; 32],
                NewMessage {
                    id: "msg_otp_a_3".into(),
                    ..otp("otp_a", "+15550000002", T0 + 2).1
                },
                10,
                0,
            )
            .await
            .unwrap();
        assert_eq!(assert_counted(&store, "enqueues").await, 10);
        // Refusals write nothing.
        assert_eq!(
            store
                .enqueue_text(text("msg_full", "hi", T0), None, 10)
                .await
                .unwrap(),
            CreateOutcome::QueueFull
        );
        let (o, m) = otp("otp_capped", "+15550000002", T0);
        assert!(matches!(
            store.create_otp(o, m, None, 3, 0).await.unwrap(),
            CreateOutcome::DailyLimit { .. }
        ));
        assert_eq!(assert_counted(&store, "refusals").await, 10);
        // Superseding cancels otp_a's three queued texts.
        let (o, m) = otp("otp_b", "+15550000002", T0 + 3);
        store.create_otp(o, m, None, 0, 0).await.unwrap();
        assert_eq!(assert_counted(&store, "a superseding create").await, 8);

        let now = T0 + MIN;
        let rule = UnknownOutcomeRule::from(UnknownOutcomePolicy::Resend);
        let claimed = |s: Option<Claimed>| s.expect("a due message").id;
        let a = claimed(store.claim_next(now).await.unwrap());
        let b = claimed(store.claim_next(now).await.unwrap());
        let c = claimed(store.claim_next(now).await.unwrap());
        let d = claimed(store.claim_next(now).await.unwrap());
        let e = claimed(store.claim_next(now).await.unwrap());
        assert_eq!(assert_counted(&store, "claims").await, 3);
        store.mark_retry(&a, "busy", now, now).await.unwrap();
        store.mark_not_taken(&b, "no modem", now).await.unwrap();
        store
            .mark_unknown_outcome(&c, "timeout", rule, now)
            .await
            .unwrap();
        assert_eq!(assert_counted(&store, "retries").await, 6);
        store.mark_sent(&d, "m1", vec![1], now).await.unwrap();
        store.mark_failed(&e, "refused", now).await.unwrap();
        assert_eq!(assert_counted(&store, "sent and failed").await, 6);
        // otp_b's text: approved by a verify, its queued text canceled.
        store.record_verify("otp_b", true, now).await.unwrap();
        assert_eq!(assert_counted(&store, "a verify").await, 5);
        // Texts past their deadline expire at the next claim.
        let later = T0 + 11 * MIN;
        let rest = store.claim_next(later).await.unwrap();
        assert!(rest.is_none());
        assert_eq!(assert_counted(&store, "expiries").await, 0);
        store.expire_overdue(later).await.unwrap();

        // A node's interrupted sends are queued again; a cancel; a delete of a queued row.
        for i in 0..3 {
            let m = text(&format!("msg_late_{i}"), "hi", later + i);
            store.enqueue_text(m, None, 0).await.unwrap();
        }
        let (o, m) = otp("otp_c", "+15550000003", later);
        store.create_otp(o, m, None, 0, 0).await.unwrap();
        assert_eq!(assert_counted(&store, "more enqueues").await, 4);
        claimed(store.claim_next(later).await.unwrap());
        claimed(store.claim_next(later).await.unwrap());
        assert_eq!(assert_counted(&store, "more claims").await, 2);
        store.recover_interrupted(rule, later).await.unwrap();
        assert_eq!(assert_counted(&store, "a recovery").await, 4);
        store.cancel_otp("otp_c", later).await.unwrap();
        assert_eq!(assert_counted(&store, "a cancel").await, 3);
        let client = store.client().await.unwrap();
        client
            .execute("DELETE FROM messages WHERE id = 'msg_late_0'", &[])
            .await
            .unwrap();
        assert_eq!(assert_counted(&store, "a delete").await, 2);
        // A transaction that rolls back moves nothing; one that moves a row in and out again
        // moves nothing either.
        let mut client = store.client().await.unwrap();
        let tx = client.transaction().await.unwrap();
        tx.execute(
            "UPDATE messages SET status = 'canceled' WHERE status = 'queued'",
            &[],
        )
        .await
        .unwrap();
        tx.rollback().await.unwrap();
        let tx = client.transaction().await.unwrap();
        tx.execute(
            "UPDATE messages SET status = 'sending' WHERE id = 'msg_late_1'",
            &[],
        )
        .await
        .unwrap();
        tx.execute(
            "UPDATE messages SET status = 'queued' WHERE id = 'msg_late_1'",
            &[],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(assert_counted(&store, "rollbacks").await, 2);
        let pruned = store
            .prune(later + 365 * DAY_MS, Some(DAY_MS), None)
            .await
            .unwrap();
        assert!(pruned.messages_deleted > 0);
        assert_eq!(assert_counted(&store, "a prune").await, 2);
    }
}
