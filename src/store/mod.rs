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

pub mod events;
mod inbound;
mod ops;
mod read;
mod schema;
mod stats;
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

/// How far back a status report may reach to find the part it belongs to. TP-MR is one octet, so
/// a busy modem reuses each value every 256 parts; the most recent sent part within this window is
/// the only sound match.
pub const REPORT_WINDOW_MS: Millis = 3 * 24 * 60 * 60 * 1000;

/// The window of the per-number daily OTP cap.
pub const DAY_MS: Millis = 24 * 60 * 60 * 1000;

/// Errors of the store. SQLite errors are carried as text-bearing variants so callers can log
/// them; none of them ever contains message bodies (we never put bodies into error texts).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused a statement (constraint, I/O, corruption).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The batch containing this operation failed to commit, so nothing of it is stored.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The writer thread is gone (store shut down or crashed).
    #[error("store is closed")]
    Closed,
    /// An operation panicked; it was rolled back and the writer kept running.
    #[error("store operation panicked")]
    Panicked,
    /// The database was written by a newer simgate.
    #[error("database schema version {found} is newer than this build supports ({supported})")]
    TooNew {
        /// `PRAGMA user_version` found on disk.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// A row holds a value this build cannot interpret (e.g. an unknown status string).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Creating the data directory or a similar filesystem step failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Which commits sync the WAL to stable storage; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is synced (`synchronous = FULL`): nothing acknowledged is lost even on power
    /// loss, at one fsync per group commit for the dispatcher's bookkeeping too.
    Full,
    /// The default. A commit is synced when it answers an API client (enqueue, OTP creation,
    /// resend, verify, cancel); the dispatcher's bookkeeping (claim, sent, retry, reports) is
    /// committed without a sync and becomes durable with the next synced commit or checkpoint.
    Balanced,
    /// No commit is synced (`synchronous = NORMAL`): survives a process kill, may lose the last
    /// commits on power loss. For disposable data directories (tests, benchmarks, tmpfs).
    Normal,
}

/// Tuning of [`Store::open`]. The defaults suit the daemon.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Sync policy of commits.
    pub durability: Durability,
    /// Capacity of the channel into the writer thread; a full channel makes writers wait, which
    /// is the back-pressure that keeps memory bounded under an overload.
    pub write_queue: usize,
    /// Most operations per group commit, bounding the latency the first of them sees.
    pub max_batch: usize,
    /// Read connections kept open for reuse.
    pub readers: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Balanced,
            write_queue: 4096,
            max_batch: 1024,
            readers: 4,
        }
    }
}

/// The text to send, in the form it may rest on disk.
#[derive(Clone, PartialEq, Eq)]
pub enum Body {
    /// An OTP text encrypted by `otp.rs`; wiped from the row once the message is sent or final.
    Sealed(Vec<u8>),
    /// A plain text, stored as is.
    Clear(String),
}

impl std::fmt::Debug for Body {
    // Neither form may reach a log through a `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Sealed(b) => write!(f, "Sealed({} bytes)", b.len()),
            Body::Clear(s) => write!(f, "Clear({} chars)", s.chars().count()),
        }
    }
}

/// A message to queue. IDs are generated by the caller so the HTTP answer can name them before
/// the commit.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Public id, e.g. `msg_<uuid>`.
    pub id: String,
    /// Recipient in E.164 (`+` and digits).
    pub to: String,
    /// OTP or plain text.
    pub kind: MessageKind,
    /// What the delivery log shows: the text itself, or for an OTP the text with the code masked.
    pub log_text: String,
    /// What the modem will send.
    pub body: Body,
    /// SMS parts the text needs, computed by the caller with the PDU codec.
    pub parts: u32,
    /// When the request was accepted.
    pub created_at: Millis,
    /// After this instant the message is never sent (OTP expiry; for texts, created + max age).
    pub deadline: Millis,
}

/// An OTP to create together with its first text.
#[derive(Debug, Clone)]
pub struct NewOtp {
    /// Public id, e.g. `otp_<uuid>`.
    pub id: String,
    /// Recipient in E.164; must equal the message's `to`.
    pub to: String,
    /// HMAC of the code (never the code itself).
    pub code_hmac: Vec<u8>,
    /// Wrong attempts allowed before `max_attempts_reached`.
    pub max_attempts: u32,
    /// When every code of this OTP stops verifying.
    pub expires_at: Millis,
    /// When the request was accepted.
    pub created_at: Millis,
}

/// An `Idempotency-Key` and the answer to store with the request it protects.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// Who owns the key: a digest of the bearer token (never the token itself), so two clients
    /// cannot collide on or replay each other's keys.
    pub scope: String,
    /// The client's `Idempotency-Key` header.
    pub key: String,
    /// Digest of the request body, to tell a retry from a different request reusing the key.
    pub request_hash: Vec<u8>,
    /// The JSON answer to replay on a retry.
    pub response: String,
}

/// Result of [`Store::create_otp`] and [`Store::enqueue_text`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Committed; the answer may be sent.
    Created,
    /// Same key and same request seen before: here is the stored answer, nothing new was queued.
    Replay(String),
    /// Same key with a different request.
    IdempotencyConflict,
    /// The number reached its daily OTP cap; the oldest counted text leaves the window then.
    DailyLimit {
        /// Milliseconds until one more OTP would be accepted.
        retry_after_ms: Millis,
    },
    /// The queue holds `queue_max` messages already.
    QueueFull,
}

/// Result of [`Store::resend_otp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResendOutcome {
    /// Committed: the new code is valid alongside the earlier ones.
    Created,
    /// No OTP has this id.
    NotFound,
    /// The OTP is no longer pending (or expired now); nothing was queued.
    NotPending(OtpStatus),
    /// See [`CreateOutcome::DailyLimit`].
    DailyLimit {
        /// Milliseconds until one more OTP text would be accepted.
        retry_after_ms: Millis,
    },
    /// See [`CreateOutcome::QueueFull`].
    QueueFull,
}

/// Where the code sits in an OTP's first text (see [`Store::create_otp_worded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpWording {
    /// Digits of every code of the OTP.
    pub code_length: u32,
    /// Byte offsets of each occurrence of the code in the first text's `log_text`.
    pub code_offsets: Vec<usize>,
}

/// What [`Store::create_otp_worded`] does with a pending OTP of the same number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPending {
    /// Cancel it and its queued texts (SPEC's original rule).
    Supersede,
    /// Create nothing and name it, so the caller can add a text to it instead.
    Keep,
}

/// Result of [`Store::create_otp_worded`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOtpOutcome {
    /// What [`Store::create_otp`] answers.
    Done(CreateOutcome),
    /// [`OnPending::Keep`] and the number has this pending, unexpired OTP; nothing was written.
    PendingExists {
        /// The pending OTP's id.
        otp_id: String,
    },
}

/// An extra text for a pending OTP (see [`Store::add_otp_text`]).
#[derive(Debug, Clone)]
pub struct NewOtpText {
    /// The OTP.
    pub otp_id: String,
    /// HMAC of the new code.
    pub code_hmac: Vec<u8>,
    /// The text carrying it.
    pub msg: NewMessage,
    /// Replays and stores the answer, as for a create.
    pub idem: Option<Idempotency>,
    /// Most texts one OTP may have (the first included); 0 = no cap.
    pub max_texts: u32,
    /// See [`Store::create_otp`].
    pub daily_cap: u32,
    /// See [`Store::create_otp`].
    pub queue_max: u64,
}

/// Result of [`Store::add_otp_text`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddTextOutcome {
    /// Committed: the new code is valid alongside the earlier ones.
    Added,
    /// See [`CreateOutcome::Replay`].
    Replay(String),
    /// See [`CreateOutcome::IdempotencyConflict`].
    IdempotencyConflict,
    /// No OTP has this id.
    NotFound,
    /// The OTP is no longer pending (or expired now); nothing was queued.
    NotPending(OtpStatus),
    /// The OTP has `max_texts` texts already.
    TextCap {
        /// Texts it has.
        texts: u32,
    },
    /// See [`CreateOutcome::DailyLimit`].
    DailyLimit {
        /// Milliseconds until one more OTP text would be accepted.
        retry_after_ms: Millis,
    },
    /// See [`CreateOutcome::QueueFull`].
    QueueFull,
}

/// Result of [`Store::record_verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyResult {
    /// Status after this attempt.
    pub status: OtpStatus,
    /// True only for the one attempt that moved the OTP to `approved`.
    pub verified: bool,
    /// Wrong attempts still allowed.
    pub attempts_remaining: u32,
}

/// An OTP as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Otp {
    /// Public id.
    pub id: String,
    /// Recipient in E.164 (masked after the retention's masking age).
    pub to: String,
    /// Current status (an expired but not yet verified OTP still says `pending` here; compare
    /// `expires_at` with the clock, or call [`Store::record_verify`]).
    pub status: OtpStatus,
    /// One HMAC per text sent; any of them verifies until expiry.
    pub code_hmacs: Vec<Vec<u8>>,
    /// Wrong attempts so far.
    pub attempts: u32,
    /// Wrong attempts allowed.
    pub max_attempts: u32,
    /// When every code stops verifying.
    pub expires_at: Millis,
    /// When the OTP was created.
    pub created_at: Millis,
    /// The messages carrying its codes, oldest first.
    pub message_ids: Vec<String>,
}

/// One entry of a message's status history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEvent {
    /// When it happened.
    pub at: Millis,
    /// The status entered (or kept, for notes such as an unknown outcome).
    pub status: MessageStatus,
    /// Why, in words (never a body).
    pub detail: Option<String>,
}

/// Filter of [`Store::list_messages`].
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Only this recipient.
    pub to: Option<String>,
    /// Only this status.
    pub status: Option<MessageStatus>,
    /// Only messages created strictly before this instant (paging: pass the last `created_at`).
    pub before: Option<Millis>,
    /// At most this many (capped at 1000).
    pub limit: u32,
}

/// What the dispatcher needs to send a claimed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// Public id.
    pub id: String,
    /// Recipient in E.164.
    pub to: String,
    /// OTP or text (decides whether the body must be opened).
    pub kind: MessageKind,
    /// The text, sealed or clear.
    pub body: Body,
    /// Not to be sent after this.
    pub deadline: Millis,
    /// Including this attempt.
    pub attempts: u32,
    /// SMS parts expected.
    pub parts: u32,
    /// When it was queued (pickup latency metrics).
    pub created_at: Millis,
    /// Earlier sends whose outcome was unknown.
    pub unknown_outcomes: u32,
    /// Earlier sends that failed after some, not all, parts were accepted.
    pub partial_sends: u32,
}

/// What a delivery report said about one part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// Delivered to the handset.
    Delivered,
    /// The service centre is still trying; recorded in the history only.
    Pending(String),
    /// Delivery failed for good; the reason lands in the message's `error`.
    Failed(String),
}

/// A decoded `+CDS` status report, as far as correlation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// Which modem's TP-MR space the reference belongs to.
    pub modem_id: String,
    /// TP-MR of the part (TS 23.040 §9.2.3.6).
    pub message_reference: u8,
    /// TP-RA as the network reported it (may lack the `+` or use national format).
    pub recipient: String,
    /// What happened.
    pub outcome: ReportOutcome,
    /// When it arrived.
    pub at: Millis,
}

/// Effect of a status report on its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportEffect {
    /// The message the report belonged to.
    pub message_id: String,
    /// Its status after the report.
    pub status: MessageStatus,
}

/// What to do with a message whose send may or may not have reached the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownOutcomePolicy {
    /// Send again (at-least-once; an OTP resend carries the same code). The default.
    Resend,
    /// Mark it failed (at-most-once).
    Fail,
}

/// How an unknown outcome is handled: the policy, how long a resend waits, and when resending
/// stops. The count lives in the message's row, so the caps hold across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownOutcomeRule {
    /// Resend or fail.
    pub policy: UnknownOutcomePolicy,
    /// With `Resend`: the unknown outcome that makes this many fails the message instead.
    pub max_unknown: u32,
    /// Attempts after which the message fails whatever the outcome; 0 = no cap.
    pub max_attempts: u32,
    /// Wait before the first resend; doubles with each further unknown outcome.
    pub backoff_base_ms: Millis,
    /// Longest wait before a resend.
    pub backoff_max_ms: Millis,
}

impl UnknownOutcomeRule {
    /// The wait before resending after the `n`-th unknown outcome (n >= 1).
    pub fn resend_delay_ms(&self, n: u32) -> Millis {
        let doublings = n.saturating_sub(1).min(20);
        self.backoff_base_ms
            .saturating_mul(1 << doublings)
            .min(self.backoff_max_ms)
    }
}

impl From<UnknownOutcomePolicy> for UnknownOutcomeRule {
    /// The bare policy: resend at once and without a cap, or fail.
    fn from(policy: UnknownOutcomePolicy) -> Self {
        UnknownOutcomeRule {
            policy,
            max_unknown: u32::MAX,
            max_attempts: 0,
            backoff_base_ms: 0,
            backoff_max_ms: 0,
        }
    }
}

/// Counts removed or changed by [`Store::prune`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    /// Messages deleted (with their parts and history).
    pub messages_deleted: u64,
    /// OTPs deleted (with their code HMACs).
    pub otps_deleted: u64,
    /// Rows whose phone number was masked.
    pub numbers_masked: u64,
    /// Idempotency records dropped.
    pub idempotency_deleted: u64,
    /// Outbox events dropped.
    pub events_deleted: u64,
}

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

    /// Creates an OTP and queues its first text in one transaction: idempotency check, daily cap
    /// (`daily_cap` OTP texts per number per 24 h; 0 = off), queue bound (`queue_max`; 0 = off),
    /// cancellation of the number's pending OTPs and their still-queued texts, inserts, and the
    /// idempotent answer.
    pub async fn create_otp(
        &self,
        otp: NewOtp,
        msg: NewMessage,
        idem: Option<Idempotency>,
        daily_cap: u32,
        queue_max: u64,
    ) -> Result<CreateOutcome, StoreError> {
        self.client_write(move |c| {
            ops::create_otp(c, &otp, &msg, idem.as_ref(), daily_cap, queue_max)
        })
        .await
    }

    /// [`Store::create_otp`] that also records where the code sits in the first text, and that
    /// with [`OnPending::Keep`] leaves a pending, unexpired OTP of the number alone and names it
    /// (after the idempotency check, so a retry still gets its answer).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_otp_worded(
        &self,
        otp: NewOtp,
        msg: NewMessage,
        wording: OtpWording,
        on_pending: OnPending,
        idem: Option<Idempotency>,
        daily_cap: u32,
        queue_max: u64,
    ) -> Result<CreateOtpOutcome, StoreError> {
        self.client_write(move |c| {
            ops::create_otp_worded(
                c,
                &otp,
                &msg,
                &wording,
                on_pending,
                idem.as_ref(),
                daily_cap,
                queue_max,
            )
        })
        .await
    }

    /// Adds a code (its HMAC) and a text to a pending OTP, in one transaction with the
    /// idempotency check, the per-OTP text cap, the daily cap and the queue bound.
    pub async fn add_otp_text(&self, t: NewOtpText) -> Result<AddTextOutcome, StoreError> {
        self.client_write(move |c| ops::add_otp_text(c, &t)).await
    }

    /// Where the code sits in the OTP's first text; `None` for OTPs created before schema 3.
    pub async fn otp_wording(&self, otp_id: &str) -> Result<Option<OtpWording>, StoreError> {
        let otp_id = otp_id.to_owned();
        self.read(move |c| read::otp_wording(c, &otp_id)).await
    }

    /// Queues a plain text: idempotency check, queue bound (0 = off), insert, idempotent answer.
    pub async fn enqueue_text(
        &self,
        msg: NewMessage,
        idem: Option<Idempotency>,
        queue_max: u64,
    ) -> Result<CreateOutcome, StoreError> {
        self.client_write(move |c| ops::enqueue_text(c, &msg, idem.as_ref(), queue_max, None))
            .await
    }

    /// [`Store::enqueue_text`] with what the client said about the text beyond recipient and
    /// body, written in the same transaction.
    pub async fn enqueue_text_from(
        &self,
        msg: NewMessage,
        idem: Option<Idempotency>,
        queue_max: u64,
        origin: MessageOrigin,
    ) -> Result<CreateOutcome, StoreError> {
        self.client_write(move |c| {
            ops::enqueue_text(c, &msg, idem.as_ref(), queue_max, Some(&origin))
        })
        .await
    }

    /// Queues an OTP text whose code was drawn elsewhere (an identity server's): as
    /// [`Store::enqueue_text`], plus the per-number daily cap of OTP texts (0 = off).
    pub async fn enqueue_relayed_otp_text(
        &self,
        msg: NewMessage,
        idem: Option<Idempotency>,
        daily_cap: u32,
        queue_max: u64,
    ) -> Result<CreateOutcome, StoreError> {
        self.client_write(move |c| {
            ops::enqueue_relayed_otp_text(c, &msg, idem.as_ref(), daily_cap, queue_max)
        })
        .await
    }

    /// What the client said about message `id` beyond recipient and body (`None`: nothing).
    pub async fn message_origin(&self, id: &str) -> Result<Option<MessageOrigin>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| read::message_origin(c, &id)).await
    }

    /// Adds a code (its HMAC) and a text to a pending OTP; earlier codes stay valid. Counts
    /// against the daily cap and the queue bound like a new OTP.
    pub async fn resend_otp(
        &self,
        otp_id: &str,
        code_hmac: Vec<u8>,
        msg: NewMessage,
        daily_cap: u32,
        queue_max: u64,
    ) -> Result<ResendOutcome, StoreError> {
        let otp_id = otp_id.to_owned();
        self.client_write(move |c| {
            ops::resend_otp(c, &otp_id, &code_hmac, &msg, daily_cap, queue_max)
        })
        .await
    }

    /// Records one verification attempt; `matched` is whether the code matched one of the OTP's
    /// HMACs. Exactly one of any number of concurrent matching attempts sees `verified = true`.
    /// `None` if the id is unknown.
    pub async fn record_verify(
        &self,
        otp_id: &str,
        matched: bool,
        now: Millis,
    ) -> Result<Option<VerifyResult>, StoreError> {
        let otp_id = otp_id.to_owned();
        self.client_write(move |c| ops::record_verify(c, &otp_id, matched, now))
            .await
    }

    /// Cancels a pending OTP and its still-queued texts. Returns the status afterwards (a final
    /// status other than `canceled` means it had already ended), `None` if the id is unknown.
    pub async fn cancel_otp(
        &self,
        otp_id: &str,
        now: Millis,
    ) -> Result<Option<OtpStatus>, StoreError> {
        let otp_id = otp_id.to_owned();
        self.client_write(move |c| ops::cancel_otp(c, &otp_id, now))
            .await
    }

    /// One OTP with its code HMACs and message ids.
    pub async fn get_otp(&self, otp_id: &str) -> Result<Option<Otp>, StoreError> {
        let otp_id = otp_id.to_owned();
        self.read(move |c| read::get_otp(c, &otp_id)).await
    }

    /// The newest `pending` OTP for a number that has not expired at `now`.
    pub async fn newest_pending_otp(
        &self,
        to: &str,
        now: Millis,
    ) -> Result<Option<Otp>, StoreError> {
        let to = to.to_owned();
        self.read(move |c| read::newest_pending_otp(c, &to, now))
            .await
    }

    /// One message of the delivery log.
    pub async fn get_message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| read::get_message(c, &id)).await
    }

    /// A message's status history, oldest first.
    pub async fn message_events(&self, id: &str) -> Result<Vec<MessageEvent>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| read::message_events(c, &id)).await
    }

    /// Messages newest first.
    pub async fn list_messages(&self, filter: MessageFilter) -> Result<Vec<Message>, StoreError> {
        self.read(move |c| read::list_messages(c, &filter)).await
    }

    /// Messages waiting in the queue (status `queued`).
    pub async fn queue_depth(&self) -> Result<u64, StoreError> {
        self.read(read::queue_depth).await
    }

    /// How many messages are in each status (for metrics).
    pub async fn status_counts(&self) -> Result<Vec<(MessageStatus, u64)>, StoreError> {
        self.read(read::status_counts).await
    }

    /// Claims the oldest queued message whose `next_attempt_at` has come: marks it `sending`,
    /// counts the attempt and returns what is needed to send it. Queued messages whose deadline
    /// has passed are marked `expired` in the same transaction, so they are never returned.
    pub async fn claim_next(&self, now: Millis) -> Result<Option<Claimed>, StoreError> {
        self.write(move |c| ops::claim_next(c, now)).await
    }

    /// Every part was accepted: `sent`, with the modem and the TP-MR of each part (whose count
    /// becomes the message's `parts`). The sealed body is wiped: nothing will be sent again.
    pub async fn mark_sent(
        &self,
        id: &str,
        modem_id: &str,
        mrs: Vec<u8>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (id, modem_id) = (id.to_owned(), modem_id.to_owned());
        self.write(move |c| ops::mark_sent(c, &id, &modem_id, &mrs, now))
            .await
    }

    /// A temporary failure: back to `queued` until `next_attempt_at`.
    pub async fn mark_retry(
        &self,
        id: &str,
        reason: &str,
        next_attempt_at: Millis,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (id, reason) = (id.to_owned(), reason.to_owned());
        self.write(move |c| ops::mark_retry(c, &id, &reason, next_attempt_at, now))
            .await
    }

    /// A permanent failure with the modem's reason.
    pub async fn mark_failed(&self, id: &str, reason: &str, now: Millis) -> Result<(), StoreError> {
        let (id, reason) = (id.to_owned(), reason.to_owned());
        self.write(move |c| ops::finish(c, &id, MessageStatus::Failed, Some(&reason), now))
            .await
    }

    /// The deadline passed before the message could be sent (`reason` says what held it up).
    pub async fn mark_expired(
        &self,
        id: &str,
        reason: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (id, reason) = (id.to_owned(), reason.to_owned());
        self.write(move |c| ops::finish(c, &id, MessageStatus::Expired, Some(&reason), now))
            .await
    }

    /// The PDU may have reached the network but no answer came. Counts and notes it, then
    /// requeues (resent after the rule's backoff) or fails the message per `rule`; a message
    /// whose unknown outcomes or attempts reach the rule's caps fails with the reason.
    pub async fn mark_unknown_outcome(
        &self,
        id: &str,
        reason: &str,
        rule: impl Into<UnknownOutcomeRule>,
        now: Millis,
    ) -> Result<MessageStatus, StoreError> {
        let (id, reason, rule) = (id.to_owned(), reason.to_owned(), rule.into());
        self.write(move |c| ops::mark_unknown_outcome(c, &id, &reason, &rule, now))
            .await
    }

    /// The modem could not take the message at all (not ready): back to `queued` at once, and
    /// the attempt the claim counted is taken back, since no modem was handed the text.
    pub async fn mark_not_taken(
        &self,
        id: &str,
        reason: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (id, reason) = (id.to_owned(), reason.to_owned());
        self.write(move |c| ops::mark_not_taken(c, &id, &reason, now))
            .await
    }

    /// Some parts of a multi-part text were accepted (TP-MRs `accepted`, in part order) before
    /// a later part failed. Records those parts, so their status reports still match, and counts
    /// the partial send; returns how many partial sends the message has had, this one included.
    pub async fn record_partial_send(
        &self,
        id: &str,
        modem_id: &str,
        accepted: Vec<u8>,
        now: Millis,
    ) -> Result<u32, StoreError> {
        let (id, modem_id) = (id.to_owned(), modem_id.to_owned());
        self.write(move |c| ops::record_partial_send(c, &id, &modem_id, &accepted, now))
            .await
    }

    /// Applies a status report to the part it belongs to (same modem, same TP-MR, same recipient,
    /// most recent send within [`REPORT_WINDOW_MS`]). `None` if no part matches.
    pub async fn record_status_report(
        &self,
        report: StatusReport,
    ) -> Result<Option<ReportEffect>, StoreError> {
        self.write(move |c| ops::record_status_report(c, &report))
            .await
    }

    /// At start-up: every message left `sending` by a previous process had an unknown outcome;
    /// counts, notes and requeues or fails it per `rule`. Returns how many were found.
    pub async fn recover_interrupted(
        &self,
        rule: impl Into<UnknownOutcomeRule>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let rule = rule.into();
        self.write(move |c| ops::recover_interrupted(c, &rule, now))
            .await
    }

    /// The earliest instant at which a queued message becomes due or expires; the dispatcher
    /// sleeps until then when it has nothing to claim.
    pub async fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        self.read(read::next_due).await
    }

    /// The earliest deadline among queued messages: when one of them must become `expired`.
    pub async fn next_expiry(&self) -> Result<Option<Millis>, StoreError> {
        self.read(read::next_expiry).await
    }

    /// Marks `expired` every queued message whose deadline has passed; returns how many. The
    /// dispatcher calls it when no modem is free, so expiry does not wait for a modem.
    pub async fn expire_overdue(&self, now: Millis) -> Result<u64, StoreError> {
        self.write(move |c| ops::expire_overdue(c, now)).await
    }

    /// Marks `expired` up to `limit` pending OTPs whose TTL has ended (see
    /// [`crate::expiry`]); returns how many.
    pub async fn expire_due_otps(&self, now: Millis, limit: u32) -> Result<u64, StoreError> {
        self.write(move |c| ops::expire_due_otps(c, now, limit))
            .await
    }

    /// When the next pending OTP's TTL ends, if any is pending.
    pub async fn next_otp_expiry(&self) -> Result<Option<Millis>, StoreError> {
        self.read(ops::next_otp_expiry).await
    }

    /// The next concatenation reference (TS 23.040 §9.2.3.24.1), a persisted rotating octet, so
    /// parts of consecutive messages never share a reference, even across restarts.
    pub async fn next_concat_reference(&self) -> Result<u8, StoreError> {
        self.write(ops::next_concat_reference).await
    }

    /// Retention: deletes messages no longer in flight (and ended OTPs) created before
    /// `now - retention_ms`, masks phone numbers of such rows created before
    /// `now - mask_after_ms`, drops idempotency records older than a day. `None` disables either
    /// step. `mask_after_ms` should exceed [`REPORT_WINDOW_MS`] so that late status reports still
    /// find their (unmasked) recipient.
    pub async fn prune(
        &self,
        now: Millis,
        retention_ms: Option<Millis>,
        mask_after_ms: Option<Millis>,
    ) -> Result<PruneStats, StoreError> {
        self.write(move |c| ops::prune(c, now, retention_ms, mask_after_ms))
            .await
    }
}

#[cfg(test)]
mod tests;
