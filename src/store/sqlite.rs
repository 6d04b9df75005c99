//! The SQLite back end's plumbing: opening the file, the writer thread and the reader pool.
//! Its operations are the `impl Sqlite` blocks of `api_*.rs`, `events.rs`, `inbound.rs` and
//! `stats.rs`, over the SQL of `ops` and `read`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;

use super::{Durability, StoreError, StoreOptions, WriterSnapshot, WriterStats, schema, writer};

/// The SQLite back end: one file, one writer thread, a pool of readers. Cheap to clone.
#[derive(Clone)]
pub struct Sqlite {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
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

impl Sqlite {
    /// Opens (creating if needed) the database at `path`, migrates it to the current schema and
    /// starts the writer thread. The writer stops when the last clone of the handle is dropped.
    pub(super) fn open(path: &Path, opts: StoreOptions) -> Result<Sqlite, StoreError> {
        Self::open_at_version(path, opts, schema::CURRENT_VERSION)
    }

    /// Like [`Sqlite::open`] but migrates only up to `version`; lets tests build an old database.
    #[doc(hidden)]
    pub(super) fn open_at_version(
        path: &Path,
        opts: StoreOptions,
        version: u32,
    ) -> Result<Sqlite, StoreError> {
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
        Ok(Sqlite {
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
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_as(false, f).await
    }

    /// Like [`Store::write`] for an operation whose answer is a promise to an API client.
    pub(super) async fn client_write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_as(true, f).await
    }

    pub(super) async fn write_as<T, F>(&self, client: bool, f: F) -> Result<T, StoreError>
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
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
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

    /// Woken after every commit (see `Store::outbox_wake`).
    pub(super) fn outbox_wake(&self) -> Arc<tokio::sync::Notify> {
        self.inner.outbox.clone()
    }

    /// What the writer thread did so far: groups, syncs, operations, waits.
    pub(super) fn writer_stats(&self) -> WriterSnapshot {
        self.inner.writer_stats.snapshot()
    }

    /// The schema version of the open database.
    pub(super) async fn schema_version(&self) -> Result<u32, StoreError> {
        self.read(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
            .await
    }
}
