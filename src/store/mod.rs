//! All SQL lives here: migrations, one writer thread with group commit, a pool of readers.
//!
//! The store is the queue and the delivery log in one SQLite file (bundled SQLite, WAL journal).
//! Every write goes through the single writer thread (see `writer`), which owns the write
//! connection and commits waiting operations in groups; a write method returns only after the
//! COMMIT that contains it has returned. Reads use separate connections, which WAL lets run
//! concurrently with the writer.
//!
//! **Durability: `synchronous = FULL` for every commit that answers an API client, `NORMAL` for
//! the dispatcher's own bookkeeping ([`Durability::Balanced`], the default).** In WAL mode,
//! `NORMAL` already survives a process kill (a committed transaction is in the WAL file, in the
//! OS page cache, before COMMIT returns), but not a power cut or kernel crash, which can lose the
//! last commits. A `202` promises that the request is stored, and an OTP that silently vanishes
//! after a power cut is exactly the failure users cannot diagnose, so client-facing writes pay a
//! WAL fsync. Group commit makes that affordable: one fsync is shared by every operation of the
//! batch. The dispatcher's claims and sent marks are another matter: they are on the hot path
//! of every send (two per message), an fsync costs several milliseconds on common disks, and
//! the pickup and drain targets could not be met if each waited for one. Losing them on power
//! loss is harmless by construction: the WAL is a log, so a power cut loses only a suffix of
//! unsynced commits, never an earlier synced one, and what is lost can only roll a message back
//! to `queued` or `sending`, which start-up recovery treats as an unknown outcome (resend or
//! fail, as configured). Under a process kill nothing is lost in any mode. [`Durability::Full`]
//! syncs everything; [`Durability::Normal`] nothing (tests, tmpfs).
//!
//! Timestamps are unix milliseconds ([`Millis`]) everywhere; callers convert at their edges.
//!
//! Layout: the public types are in `types`; the `Store` handle, opening and the writer/reader
//! plumbing are here; its methods are grouped by caller in `api_otps` (OTPs), `api_messages`
//! (texts and the delivery log) and `api_dispatch` (the dispatcher's bookkeeping and retention),
//! each a thin wrapper over `ops` (writes) or `read`.

mod api_dispatch;
mod api_messages;
mod api_otps;
pub mod events;
mod inbound;
mod ops;
mod read;
mod schema;
mod stats;
mod types;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;

pub use crate::model::{Message, MessageKind, MessageOrigin, MessageStatus, Millis, OtpStatus};
pub use inbound::{InboundFilter, InboundOutcome, InboundPart, InboundPruneStats, InboundRecord};
pub use schema::CURRENT_VERSION as SCHEMA_VERSION;
pub use stats::{HourCount, Latency, MAX_LATENCY_SAMPLES};
pub use writer::{WriterSnapshot, WriterStats};

pub use types::{
    AddTextOutcome, Body, Claimed, CreateOtpOutcome, CreateOutcome, DAY_MS, Durability,
    Idempotency, MessageEvent, MessageFilter, NewMessage, NewOtp, NewOtpText, OnPending, Otp,
    OtpWording, PruneStats, REPORT_WINDOW_MS, ReportEffect, ReportOutcome, ResendOutcome,
    StatusReport, StoreError, StoreOptions, UnknownOutcomePolicy, UnknownOutcomeRule, VerifyResult,
};

/// Handle to the database; cheap to clone, shared by the service and the dispatcher.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// Into the writer thread.
    writer: mpsc::Sender<writer::Job>,
    /// Idle read connections.
    readers: Mutex<Vec<Connection>>,
    /// Reopened when the pool is empty.
    path: PathBuf,
    /// How many idle read connections to keep.
    max_readers: usize,
    /// The writer thread's counters.
    writer_stats: Arc<WriterStats>,
    /// Woken after every commit, so outbox readers (webhook workers) see new events at once
    /// instead of polling; see [`Store::outbox_wake`].
    outbox: Arc<tokio::sync::Notify>,
}

fn configure(conn: &Connection, durability: Durability) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Full | Durability::Balanced => "FULL",
            Durability::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// Creates the database file readable by its owner only, if it does not exist yet: it holds
/// phone numbers, code HMACs and sealed texts. SQLite gives its `-wal` and `-shm` files the
/// main file's permissions. An existing database, and any journal next to it, must be a
/// regular file only its owner can use and never a symlink (`crate::datadir`): following a
/// planted link would create the database wherever it points.
fn create_private(path: &Path) -> Result<(), StoreError> {
    crate::datadir::ensure_private(path).map_err(std::io::Error::from)?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        crate::datadir::check_private(Path::new(&side)).map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// `path` with its directory resolved, so that `SQLITE_OPEN_NOFOLLOW` (which refuses a symlink
/// anywhere in the name) objects only to one at the file itself: a symlinked data directory
/// is the administrator's choice.
fn resolved(path: &Path) -> Result<PathBuf, StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    Ok(std::fs::canonicalize(dir)?.join(name))
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

impl Store {
    /// Opens (creating if needed) the database at `path`, migrates it to the current schema and
    /// starts the writer thread. The writer stops when the last clone of the handle is dropped.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        Self::open_at_version(path, opts, schema::CURRENT_VERSION)
    }

    /// Like [`Store::open`] but migrates only up to `version`; lets tests build an old database.
    #[doc(hidden)]
    pub fn open_at_version(
        path: &Path,
        opts: StoreOptions,
        version: u32,
    ) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let path = &resolved(path)?;
        create_private(path)?;
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::default() | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )?;
        configure(&conn, opts.durability)?;
        schema::migrate_to(&mut conn, version)?;
        let (tx, rx) = mpsc::channel(opts.write_queue.max(1));
        let max_batch = opts.max_batch.max(1);
        let writer_stats = Arc::new(WriterStats::default());
        let stats = writer_stats.clone();
        std::thread::Builder::new()
            .name("simgate-store-writer".into())
            .spawn(move || writer::run(conn, rx, max_batch, opts.durability, &stats))?;
        Ok(Store {
            inner: Arc::new(Inner {
                writer: tx,
                readers: Mutex::new(Vec::new()),
                path: path.to_owned(),
                max_readers: opts.readers.max(1),
                writer_stats,
                outbox: Arc::new(tokio::sync::Notify::new()),
            }),
        })
    }

    /// Queues one write operation of the dispatcher's bookkeeping and waits until the batch
    /// containing it has committed (see [`Durability::Balanced`] for how it is synced).
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_as(false, f).await
    }

    /// Like [`Store::write`] for an operation whose answer is a promise to an API client.
    async fn client_write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_as(true, f).await
    }

    async fn write_as<T, F>(&self, client: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (job, rx) = writer::job(client, f);
        self.inner
            .writer
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)?;
        let result = rx.await.map_err(|_| StoreError::Closed)?;
        // After the COMMIT: a woken reader is sure to see what this write recorded.
        self.inner.outbox.notify_waiters();
        result
    }

    /// Runs a read on a pooled connection off the async threads.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            let conn = match pooled {
                Some(c) => c,
                None => open_reader(&inner.path)?,
            };
            let result = f(&conn);
            let mut pool = inner.readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < inner.max_readers {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|_| StoreError::Panicked)?
    }

    /// What the writer thread did so far: groups, syncs, operations, waits.
    pub fn writer_stats(&self) -> WriterSnapshot {
        self.inner.writer_stats.snapshot()
    }

    /// The schema version of the open database.
    pub async fn schema_version(&self) -> Result<u32, StoreError> {
        self.read(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
            .await
    }
}

#[cfg(test)]
mod tests;
