//! The writer thread: sole owner of the write connection, committing queued operations in groups.
//!
//! Group commit: the thread blocks for one operation, then drains whatever else is already waiting
//! (up to a batch limit) into the same transaction. Each operation runs inside its own SAVEPOINT,
//! so an operation that fails is rolled back alone and the rest of the batch still commits. Only
//! after the single COMMIT returns does any caller get its answer, which is what makes an answer
//! mean "durable". Under load, callers pile up while the previous COMMIT syncs, so the number of
//! syncs per second stays bounded while the operations per second grow with the batch size.
//!
//! Each batch is committed with `synchronous = FULL` or `NORMAL` as [`Durability`] asks; under
//! `Balanced` a batch is synced when any of its operations answers an API client.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::{Durability, StoreError};

/// What the writer thread does with an operation after COMMIT: hands the caller its result.
pub(crate) type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// One queued write: runs against the write connection inside the open transaction, or is given
/// `None` when no transaction could be opened, so its caller still hears why.
/// The body of a [`Job`]: runs the operation (or learns it cannot) and returns its reply.
type Run = Box<dyn FnOnce(Option<&Connection>) -> Reply + Send>;

pub(crate) struct Job {
    run: Run,
    /// Whether the answer is a promise to an API client (see [`super::Durability::Balanced`]).
    client: bool,
    /// When the caller queued it: the wait until its batch starts is the queueing in front of
    /// the writer (the previous batch's commit, mostly).
    queued: Instant,
}

/// What the writer did since the store opened, for `/metrics` and the benchmark: how big the
/// groups are, how many of them were synced, where an operation's time goes.
#[derive(Debug, Default)]
pub struct WriterStats {
    batches: AtomicU64,
    synced_batches: AtomicU64,
    ops: AtomicU64,
    queue_wait_ns: AtomicU64,
    commit_ns: AtomicU64,
    synced_commit_ns: AtomicU64,
}

/// A reading of [`WriterStats`]; every figure counts from the store's opening.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterSnapshot {
    /// Group commits (transactions).
    pub batches: u64,
    /// Of those, the ones committed with `synchronous = FULL`: one WAL fsync each.
    pub synced_batches: u64,
    /// Operations committed (or rolled back alone) in those groups.
    pub ops: u64,
    /// Sum over operations of the time from being queued to their group starting.
    pub queue_wait: Duration,
    /// Sum over groups of the time COMMIT took.
    pub commit: Duration,
    /// The part of `commit` spent in synced groups (the fsync is most of it).
    pub synced_commit: Duration,
}

impl WriterStats {
    /// The current totals.
    pub fn snapshot(&self) -> WriterSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriterSnapshot {
            batches: get(&self.batches),
            synced_batches: get(&self.synced_batches),
            ops: get(&self.ops),
            queue_wait: Duration::from_nanos(get(&self.queue_wait_ns)),
            commit: Duration::from_nanos(get(&self.commit_ns)),
            synced_commit: Duration::from_nanos(get(&self.synced_commit_ns)),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Wraps an operation so it runs in a SAVEPOINT and answers through a oneshot after COMMIT.
pub(crate) fn job<T, F>(client: bool, f: F) -> (Job, oneshot::Receiver<Result<T, StoreError>>)
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let run: Run = Box::new(move |conn: Option<&Connection>| -> Reply {
        let result = match conn {
            Some(conn) => in_savepoint(conn, f),
            None => Err(StoreError::Commit("no write transaction".into())),
        };
        Box::new(move |commit: Result<(), String>| {
            let answer = match commit {
                Ok(()) => result,
                // The op itself may have succeeded, but nothing of it is on disk.
                Err(e) => Err(StoreError::Commit(e)),
            };
            // A caller that gave up (dropped its future) simply does not hear back.
            let _ = tx.send(answer);
        })
    });
    (
        Job {
            run,
            client,
            queued: Instant::now(),
        },
        rx,
    )
}

fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT op")?;
    // A panicking operation must not take the writer thread (and every later caller) down with it.
    let result = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
        Ok(r) => r,
        Err(_) => Err(StoreError::Panicked),
    };
    match &result {
        Ok(_) => conn.execute_batch("RELEASE op")?,
        Err(_) => conn.execute_batch("ROLLBACK TO op; RELEASE op")?,
    }
    result
}

/// Runs until every sender is gone. `max_batch` bounds how long the last caller of a batch
/// waits behind the others.
pub(crate) fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    durability: Durability,
    stats: &WriterStats,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(max_batch);
    let mut replies: Vec<Reply> = Vec::with_capacity(max_batch);
    // What the connection was configured with at open.
    let mut syncing = durability != Durability::Normal;
    while let Some(first) = rx.blocking_recv() {
        // Drain what is already waiting, then decide how this batch commits.
        jobs.push(first);
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(next) => jobs.push(next),
                Err(_) => break,
            }
        }
        let sync = match durability {
            Durability::Full => true,
            Durability::Normal => false,
            Durability::Balanced => jobs.iter().any(|j| j.client),
        };
        let batch_start = Instant::now();
        let waited: Duration = jobs
            .iter()
            .map(|j| batch_start.saturating_duration_since(j.queued))
            .sum();
        stats.ops.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        stats
            .queue_wait_ns
            .fetch_add(nanos(waited), Ordering::Relaxed);
        let begun = set_sync(&conn, &mut syncing, sync)
            .and_then(|()| conn.execute_batch("BEGIN IMMEDIATE"));
        if let Err(e) = begun {
            let reason = e.to_string();
            tracing::error!(error = %reason, "store: cannot begin a write transaction");
            for job in jobs.drain(..) {
                (job.run)(None)(Err(reason.clone()));
            }
            continue;
        }
        for job in jobs.drain(..) {
            replies.push((job.run)(Some(&conn)));
        }
        let commit_start = Instant::now();
        let commit = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
        let took = nanos(commit_start.elapsed());
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.commit_ns.fetch_add(took, Ordering::Relaxed);
        if sync {
            stats.synced_batches.fetch_add(1, Ordering::Relaxed);
            stats.synced_commit_ns.fetch_add(took, Ordering::Relaxed);
        }
        if let Err(reason) = &commit {
            tracing::error!(error = %reason, batch = replies.len(), "store: group commit failed");
            // Leave no half-open transaction behind for the next batch.
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies.drain(..) {
            reply(commit.clone());
        }
    }
}

/// Switches `synchronous` between FULL and NORMAL (outside any transaction), only on a change.
fn set_sync(conn: &Connection, syncing: &mut bool, sync: bool) -> rusqlite::Result<()> {
    if *syncing != sync {
        conn.pragma_update(None, "synchronous", if sync { "FULL" } else { "NORMAL" })?;
        *syncing = sync;
    }
    Ok(())
}
