//! PostgreSQL: the event outbox and the webhook endpoints' delivery state, with the behaviour of
//! `store/events.rs` (same payloads, cursor, retry, dead-letter and 410 rules) and two additions
//! a cluster needs: a sequencer that numbers events in an order no reader can skip past, and
//! turn-taking, so that one node at a time delivers to an endpoint.
//!
//! **Numbering.** [`common::record`](super::common::record) inserts an event with `seq` NULL.
//! A number drawn at INSERT would be useless for a cursor: transactions commit in another order
//! than they draw, so a reader could see 11 committed, move its cursor past it, and never look
//! at 10, committed a moment later. [`sequence`] numbers committed events instead, in short
//! transactions of their own that run one at a time (a transaction-level advisory lock, one
//! key for the whole cluster). Why a reader that ran it first never skips an event:
//!
//! 1. Numbers are only ever given by a sequencer run, and runs are serialised by the lock,
//!    which PostgreSQL releases only after the run's commit became visible. A run draws its
//!    numbers from `events_seq` while holding the lock, so every number of a run is larger
//!    than every number of every run before it (a sequence never goes back; numbers of a run
//!    that rolled back are simply never used).
//! 2. So the numbered events visible in any snapshot are exactly those of the runs committed
//!    before it, and every event numbered after that snapshot gets a number larger than all of
//!    them. An event still uncommitted or unnumbered is invisible to `seq > cursor` (NULL
//!    compares to nothing) and, once numbered, lands above everything already visible.
//! 3. A reader that saw events up to `N` and moves its cursor to `N` has therefore seen every
//!    event that will ever carry a number up to `N`, minus pruned ones, which are pruned only
//!    once every endpoint's cursor passed them.
//!
//! The run commits with the server's `synchronous_commit` (durable), unlike the bookkeeping:
//! a reader outside the database (`GET /v1/events`) must never see a number that a crash could
//! take back and give to another event. Readers run the sequencer themselves before reading
//! (`events_after`, `last_event_seq`, `register_endpoints`), so nothing else needs to; when no
//! event waits for a number (the common case, found through the partial index
//! `events_unsequenced`), no write transaction is opened at all.
//!
//! **Turns.** Every node runs a delivery worker for every configured endpoint, over the same
//! row. An endpoint's row carries an owner (a node id) and the end of its turn
//! (`owner_until`, database clock, so the nodes' clocks need not agree). The owner's every
//! call ([`Postgres::endpoint_state`] at the top of the worker's loop, through
//! [`Postgres::take_endpoint_turn`]; `record_attempt`; `skip_events`) extends its turn by
//! [`turn_ms`], longer than the longest attempt a `[[webhook]]` may make, so a live owner never
//! loses its turn in the middle of a POST; a node takes over only a turn nobody extended for
//! that long (its node died, stalled or lost the database). Enforcement is in the row:
//! `record_attempt` and `skip_events` of a node whose turn it is not are refused with an
//! error, so a stale node can neither move the cursor nor go on with its batch; an attempt of
//! an event the cursor already passed (its node stalled while another delivered it) is refused
//! the same way. A node that is not the owner is told by `endpoint_state` to wait until the
//! turn ends. What remains is the at-least-once duplicate after a takeover: the new owner
//! sends the head event again with the same `webhook-id`; no event is skipped, since only the
//! owner moves the cursor, and only past events it delivered, gave up on or filtered out.

use deadpool_postgres::GenericClient;
use serde_json::json;
use tokio_postgres::Row;

use super::common::{self, Tx};
use super::{Postgres, wall_now};
use crate::store::{AttemptResult, EndpointState, Millis, StoreError, StoredEvent};

/// Arbitrary, fixed: the advisory lock key under which one sequencer run at a time numbers
/// events, across the cluster.
const SEQUENCER_LOCK: i64 = 0x5349_4d47_4154_4502;

/// How long a transaction holding the sequencer's lock may sit idle before the server ends
/// it: its statements follow each other at once, so only a lost client gets near it.
const SEQUENCER_IDLE_LIMIT: &str = "10s";

/// Events numbered by one sequencer transaction at most, so that one stays short after a
/// backlog (nobody read for a long while); the next run takes the rest.
const SEQUENCE_BATCH: i64 = 10_000;

/// The longest one delivery attempt may take: `webhook[i].timeout_seconds` is at most 300
/// (webhook/config.rs). A turn outlasts it, so an owner busy with a slow receiver keeps it.
const LONGEST_ATTEMPT_MS: Millis = 300_000;

/// What a waiting node adds to the time left of another node's turn before it asks again: the
/// worker must find the wait still ahead of it when it compares with its own clock.
const TURN_SLACK_MS: Millis = 1_000;

/// The database's clock in unix milliseconds: turns are compared on one clock for every node.
const DB_NOW: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// How long a turn lasts past its owner's last call: the longest attempt plus the lease of a
/// claimed message, so a node is counted out for an endpoint no sooner than for its sends.
fn turn_ms(store: &Postgres) -> Millis {
    LONGEST_ATTEMPT_MS + store.inner.lease_ms
}

/// Numbers every committed event that has no `seq` yet, in insertion order, one run at a time
/// across the cluster (see the module documentation for why a reader can then never skip an
/// event). Cheap when there is nothing to number: one index probe, no transaction.
pub(super) async fn sequence(client: &mut deadpool_postgres::Object) -> Result<(), StoreError> {
    let pending = client
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM events WHERE seq IS NULL)")
        .await?;
    loop {
        let waiting: bool = client.query_one(&pending, &[]).await?.try_get(0)?;
        if !waiting {
            return Ok(());
        }
        let tx = client.transaction().await?;
        lock_sequencer(&tx).await?;
        let numbered = sequence_locked(&tx).await?;
        tx.commit().await?;
        if numbered < SEQUENCE_BATCH {
            return Ok(());
        }
    }
}

/// Holds the sequencer's lock until the transaction ends. Every event reader of the cluster
/// may wait for it, so a holder that goes silent (its node lost the network mid-transaction,
/// which the server would otherwise notice only when TCP gives up) is cut off by the server
/// after [`SEQUENCER_IDLE_LIMIT`], which ends its transaction and frees the lock.
async fn lock_sequencer(c: &impl GenericClient) -> Result<(), StoreError> {
    c.batch_execute(&format!(
        "SET LOCAL idle_in_transaction_session_timeout = '{SEQUENCER_IDLE_LIMIT}'"
    ))
    .await?;
    let stmt = c.prepare_cached("SELECT pg_advisory_xact_lock($1)").await?;
    c.execute(&stmt, &[&SEQUENCER_LOCK]).await?;
    Ok(())
}

/// One batch of numbering, under the sequencer's lock; returns how many events it numbered.
async fn sequence_locked(c: &impl GenericClient) -> Result<i64, StoreError> {
    // The lock was taken by an earlier statement, so this one's snapshot holds every earlier
    // run's numbers: what is NULL here is NULL for good until we number it.
    let stmt = c
        .prepare_cached(
            "SELECT insert_id FROM events WHERE seq IS NULL ORDER BY insert_id LIMIT $1",
        )
        .await?;
    let ids: Vec<i64> = c
        .query(&stmt, &[&SEQUENCE_BATCH])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Ok(0);
    }
    let n = ids.len() as i64;
    // The order in which a set-returning query evaluates nextval() is not something SQL
    // promises; sorting the numbers drawn is, so the lowest goes to the oldest insert.
    let stmt = c
        .prepare_cached("SELECT nextval('events_seq') FROM generate_series(1, $1::bigint)")
        .await?;
    let mut seqs: Vec<i64> = c
        .query(&stmt, &[&n])
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    seqs.sort_unstable();
    let stmt = c
        .prepare_cached(
            "UPDATE events SET seq = v.seq
             FROM unnest($1::bigint[], $2::bigint[]) AS v (insert_id, seq)
             WHERE events.insert_id = v.insert_id",
        )
        .await?;
    c.execute(&stmt, &[&ids, &seqs]).await?;
    Ok(n)
}

/// The highest number `events_seq` gave out (0 before the first): every event numbered so far
/// has at most this `seq`, pruned ones included. Exact under the sequencer's lock; without it,
/// it may count numbers of a run that has not committed yet (or rolled back).
async fn last_seq(c: &impl GenericClient) -> Result<i64, StoreError> {
    let stmt = c
        .prepare_cached("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_seq")
        .await?;
    Ok(c.query_one(&stmt, &[]).await?.try_get(0)?)
}

/// Deletes events older than `cutoff` that every endpoint's cursor has passed, and dead-letter
/// rows older than `cutoff`; returns the events deleted. Runs in the caller's transaction, so
/// the store's retention pass (`prune`) can include it. Events without a number yet are never
/// deleted: no cursor can have passed them.
pub(super) async fn prune_outbox(
    c: &impl GenericClient,
    cutoff: Millis,
) -> Result<u64, StoreError> {
    let stmt = c
        .prepare_cached("SELECT MIN(cursor) FROM webhook_endpoints")
        .await?;
    let min_cursor: Option<i64> = c.query_one(&stmt, &[]).await?.try_get(0)?;
    let stmt = c
        .prepare_cached("DELETE FROM events WHERE at < $1 AND seq <= $2")
        .await?;
    let n = c
        .execute(&stmt, &[&cutoff, &min_cursor.unwrap_or(i64::MAX)])
        .await?;
    let stmt = c
        .prepare_cached("DELETE FROM webhook_dead WHERE at < $1")
        .await?;
    c.execute(&stmt, &[&cutoff]).await?;
    Ok(n)
}

const ENDPOINT_COLUMNS: &str = "cursor, head_seq, attempts, first_failure_at, next_attempt_at,
    disabled_reason, delivered, dead, last_error";

/// A row of [`ENDPOINT_COLUMNS`], in that order.
fn endpoint_row(r: &Row) -> Result<EndpointState, StoreError> {
    Ok(EndpointState {
        cursor: r.try_get(0)?,
        head_seq: r.try_get(1)?,
        attempts: common::count(r.try_get(2)?),
        first_failure_at: r.try_get(3)?,
        next_attempt_at: r.try_get(4)?,
        disabled: r.try_get(5)?,
        delivered: r.try_get::<_, i64>(6)?.max(0) as u64,
        dead: r.try_get::<_, i64>(7)?.max(0) as u64,
        last_error: r.try_get(8)?,
    })
}

/// Whose turn it is at an endpoint, after [`take_turn`].
enum Turn {
    /// This node's: the row is locked until the transaction ends and the turn extended.
    Mine,
    /// Another node's, for this many more milliseconds of the database's clock.
    Theirs { owner: String, left_ms: Millis },
    /// No such endpoint.
    Unknown,
}

/// Takes or extends this node's turn at endpoint `url` in the caller's transaction: granted
/// when the endpoint has no owner, is this node's, or its owner let the turn run out.
async fn take_turn(store: &Postgres, c: &Tx<'_>, url: &str) -> Result<Turn, StoreError> {
    let stmt = c
        .prepare_cached(&format!(
            "UPDATE webhook_endpoints SET owner = $2, owner_until = {DB_NOW} + $3
             WHERE url = $1 AND (owner IS NULL OR owner = $2 OR owner_until < {DB_NOW})"
        ))
        .await?;
    let node = &store.inner.node_id;
    if c.execute(&stmt, &[&url, node, &turn_ms(store)]).await? == 1 {
        return Ok(Turn::Mine);
    }
    let stmt = c
        .prepare_cached(&format!(
            "SELECT owner, owner_until - {DB_NOW} FROM webhook_endpoints WHERE url = $1"
        ))
        .await?;
    Ok(match c.query_opt(&stmt, &[&url]).await? {
        None => Turn::Unknown,
        Some(r) => Turn::Theirs {
            owner: r.try_get::<_, Option<String>>(0)?.unwrap_or_default(),
            left_ms: r.try_get::<_, Option<i64>>(1)?.unwrap_or(0).max(0),
        },
    })
}

/// The refusal of a write by a node whose turn it is not (see the module documentation).
fn not_my_turn(owner: &str) -> StoreError {
    StoreError::Postgres(format!(
        "webhook endpoint: node {owner:?} delivers to it now; this node's attempt is not \
         recorded and it waits for its turn"
    ))
}

impl Postgres {
    /// Records a modem's state change (`from` is `None` for the first state seen after start),
    /// and returns the event's `seq`: it is committed and numbered before this returns.
    pub(crate) async fn record_modem_state(
        &self,
        modem_id: &str,
        from: Option<&str>,
        to: &str,
        detail: Option<&str>,
        at: Millis,
    ) -> Result<i64, StoreError> {
        let data = json!({
            "modem_id": modem_id,
            "state": to,
            "previous_state": from,
            "detail": detail,
        });
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        common::record(&tx, "modem.state_changed", modem_id, at, &data).await?;
        // The row `record` just inserted, by the insertion number this session drew last.
        let stmt = tx
            .prepare_cached("SELECT currval(pg_get_serial_sequence('events', 'insert_id'))")
            .await?;
        let insert_id: i64 = tx.query_one(&stmt, &[]).await?.try_get(0)?;
        tx.commit().await?;
        self.committed();
        sequence(&mut client).await?;
        let stmt = client
            .prepare_cached("SELECT seq FROM events WHERE insert_id = $1")
            .await?;
        client
            .query_one(&stmt, &[&insert_id])
            .await?
            .try_get::<_, Option<i64>>(0)?
            .ok_or_else(|| StoreError::Corrupt("a committed event left without a seq".into()))
    }

    /// Events after `after`, oldest first, at most `limit`.
    pub(crate) async fn events_after(
        &self,
        after: i64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut client = self.client().await?;
        sequence(&mut client).await?;
        let stmt = client
            .prepare_cached(
                "SELECT seq, id, type, subject, at, data FROM events WHERE seq > $1
                 ORDER BY seq LIMIT $2",
            )
            .await?;
        client
            .query(&stmt, &[&after, &i64::from(limit)])
            .await?
            .iter()
            .map(|r| {
                Ok(StoredEvent {
                    seq: r.try_get(0)?,
                    id: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    subject: r.try_get(3)?,
                    at: r.try_get(4)?,
                    data: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// Creates or updates the rows of the configured endpoints (`(url, fingerprint)`), as
    /// SQLite does: a new endpoint starts after the last event numbered so far, a changed
    /// config lifts a 410's disabling, rows of endpoints no longer configured are dropped.
    /// Numbering runs in this transaction, under the sequencer's lock, so "the last event so
    /// far" is exact: no run can be halfway while the start is read.
    pub(crate) async fn register_endpoints(
        &self,
        endpoints: Vec<(String, String)>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_sequencer(&tx).await?;
        while sequence_locked(&tx).await? == SEQUENCE_BATCH {}
        let start = last_seq(&tx).await?;
        let upsert = tx
            .prepare_cached(
                "INSERT INTO webhook_endpoints (url, fingerprint, cursor) VALUES ($1, $2, $3)
                 ON CONFLICT (url) DO UPDATE SET fingerprint = excluded.fingerprint,
                     disabled_at = CASE WHEN webhook_endpoints.fingerprint = excluded.fingerprint
                         THEN webhook_endpoints.disabled_at END,
                     disabled_reason = CASE
                         WHEN webhook_endpoints.fingerprint = excluded.fingerprint
                         THEN webhook_endpoints.disabled_reason END",
            )
            .await?;
        for (url, fingerprint) in &endpoints {
            tx.execute(&upsert, &[url, fingerprint, &start]).await?;
        }
        let keep: Vec<&str> = endpoints.iter().map(|(u, _)| u.as_str()).collect();
        let stmt = tx
            .prepare_cached("DELETE FROM webhook_endpoints WHERE NOT (url = ANY ($1))")
            .await?;
        tx.execute(&stmt, &[&keep]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes or extends this node's turn to deliver to `url`: `None` when it is this node's
    /// (or there is no such endpoint), else until when (this node's clock, with a margin)
    /// another node's turn lasts, to ask again then.
    ///
    /// What the facade would call at the top of the worker's round, before `endpoint_state`,
    /// if it had the method; until then `endpoint_state` calls it.
    pub(crate) async fn take_endpoint_turn(&self, url: &str) -> Result<Option<Millis>, StoreError> {
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        let turn = take_turn(self, &tx, url).await?;
        tx.commit().await?;
        Ok(match turn {
            Turn::Mine | Turn::Unknown => None,
            Turn::Theirs { left_ms, .. } => Some(wall_now() + left_ms + TURN_SLACK_MS),
        })
    }

    /// One endpoint's delivery state; `None` if it is not registered. A plain read: which
    /// node delivers is settled by [`Postgres::take_endpoint_turn`] before it.
    pub(crate) async fn endpoint_state(
        &self,
        url: &str,
    ) -> Result<Option<EndpointState>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE url = $1"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&url])
            .await?
            .map(|r| endpoint_row(&r))
            .transpose()
    }

    /// Every registered endpoint's state, by URL (the status page's webhook panel): the rows
    /// as they are, whichever node delivers.
    pub(crate) async fn endpoint_states(&self) -> Result<Vec<(String, EndpointState)>, StoreError> {
        let client = self.client().await?;
        // Byte order, as SQLite sorts, whatever the database's collation.
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {ENDPOINT_COLUMNS}, url FROM webhook_endpoints ORDER BY url COLLATE \"C\""
            ))
            .await?;
        client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(|r| Ok((r.try_get(9)?, endpoint_row(r)?)))
            .collect()
    }

    /// The highest event `seq` ever given out (0 before the first), pruned events included,
    /// after numbering what is committed. Without the sequencer's lock it may already count a
    /// run still under way: a gauge and a hint to pollers, not a cursor.
    pub(crate) async fn last_event_seq(&self) -> Result<i64, StoreError> {
        let mut client = self.client().await?;
        sequence(&mut client).await?;
        last_seq(&client).await
    }

    /// Records one delivery attempt of event `seq` to `url`, if it is this node's turn there
    /// (else an error, and nothing changes).
    pub(crate) async fn record_attempt(
        &self,
        url: &str,
        seq: i64,
        result: AttemptResult,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        match take_turn(self, &tx, url).await? {
            Turn::Mine => {}
            Turn::Theirs { owner, .. } => return Err(not_my_turn(&owner)),
            // SQLite's updates change no row then, but its dead-letter step needs the row.
            Turn::Unknown if matches!(result, AttemptResult::Dead { .. }) => {
                return Err(StoreError::Postgres(
                    "webhook endpoint: not registered".into(),
                ));
            }
            Turn::Unknown => return Ok(()),
        }
        if !matches!(result, AttemptResult::Gone) {
            // An event the cursor already passed was delivered (or given up on) by another
            // node during a stall of this one: its late answer must not count the event twice
            // nor make it the head again, and the rest of its batch is stale too, so the
            // worker is stopped (an error) to read the state afresh.
            let stmt = tx
                .prepare_cached("SELECT cursor FROM webhook_endpoints WHERE url = $1")
                .await?;
            let cursor: i64 = tx.query_one(&stmt, &[&url]).await?.try_get(0)?;
            if seq <= cursor {
                return Err(StoreError::Postgres(format!(
                    "webhook endpoint: event {seq} was passed meanwhile (cursor {cursor}) by \
                     another node's delivery; this attempt is not recorded"
                )));
            }
        }
        match &result {
            AttemptResult::Delivered => {
                let stmt = tx
                    .prepare_cached(
                        "UPDATE webhook_endpoints SET cursor = GREATEST(cursor, $2),
                             head_seq = NULL, attempts = 0, first_failure_at = NULL,
                             next_attempt_at = NULL, last_error = NULL,
                             delivered = delivered + 1
                         WHERE url = $1",
                    )
                    .await?;
                tx.execute(&stmt, &[&url, &seq]).await?;
            }
            AttemptResult::Retry {
                next_attempt_at,
                error,
            } => {
                let stmt = tx
                    .prepare_cached(
                        "UPDATE webhook_endpoints SET
                             attempts = CASE WHEN head_seq IS NOT DISTINCT FROM $2
                                 THEN attempts + 1 ELSE 1 END,
                             first_failure_at = CASE WHEN head_seq IS NOT DISTINCT FROM $2
                                 THEN first_failure_at ELSE $3 END,
                             head_seq = $2, next_attempt_at = $4, last_error = $5
                         WHERE url = $1",
                    )
                    .await?;
                tx.execute(&stmt, &[&url, &seq, &now, next_attempt_at, error])
                    .await?;
            }
            AttemptResult::Dead { error } => {
                let stmt = tx
                    .prepare_cached(
                        "SELECT CASE WHEN head_seq IS NOT DISTINCT FROM $2
                             THEN attempts + 1 ELSE 1 END
                         FROM webhook_endpoints WHERE url = $1",
                    )
                    .await?;
                let attempts: i64 = tx.query_one(&stmt, &[&url, &seq]).await?.try_get(0)?;
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO webhook_dead (url, event_seq, at, attempts, reason)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (url, event_seq) DO UPDATE SET at = excluded.at,
                             attempts = excluded.attempts, reason = excluded.reason",
                    )
                    .await?;
                tx.execute(&stmt, &[&url, &seq, &now, &attempts, error])
                    .await?;
                let stmt = tx
                    .prepare_cached(
                        "UPDATE webhook_endpoints SET cursor = GREATEST(cursor, $2),
                             head_seq = NULL, attempts = 0, first_failure_at = NULL,
                             next_attempt_at = NULL, last_error = $3, dead = dead + 1
                         WHERE url = $1",
                    )
                    .await?;
                tx.execute(&stmt, &[&url, &seq, error]).await?;
            }
            AttemptResult::Gone => {
                let reason = format!("answered 410 Gone to event {seq}");
                let stmt = tx
                    .prepare_cached(
                        "UPDATE webhook_endpoints SET disabled_at = $2,
                             disabled_reason = $3, last_error = $3
                         WHERE url = $1",
                    )
                    .await?;
                tx.execute(&stmt, &[&url, &now, &reason]).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Moves an endpoint's cursor over events its filter skips, so they hold back no pruning;
    /// only in this node's turn (else an error, and nothing changes).
    pub(crate) async fn skip_events(&self, url: &str, up_to: i64) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        match take_turn(self, &tx, url).await? {
            Turn::Mine => {}
            Turn::Theirs { owner, .. } => return Err(not_my_turn(&owner)),
            Turn::Unknown => return Ok(()),
        }
        let stmt = tx
            .prepare_cached(
                "UPDATE webhook_endpoints SET cursor = GREATEST(cursor, $2)
                 WHERE url = $1 AND head_seq IS NULL",
            )
            .await?;
        tx.execute(&stmt, &[&url, &up_to]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Retention of the outbox (see [`prune_outbox`]). Numbers what is committed first, so
    /// that old events nobody read yet can go too.
    pub(crate) async fn prune_events(&self, cutoff: Millis) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        sequence(&mut client).await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        let n = prune_outbox(&tx, cutoff).await?;
        tx.commit().await?;
        Ok(n)
    }
}
