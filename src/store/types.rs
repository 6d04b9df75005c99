//! The store's public types: its errors and options, what callers hand in (new messages, OTPs,
//! idempotency keys, status reports) and what they get back (outcomes, rows, prune counts).
//! Apart from the `Store` so that its methods read without scrolling past every type.

#[cfg(doc)]
use super::Store;
use crate::model::{MessageKind, MessageStatus, Millis, Msisdn, OtpStatus};
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
    /// PostgreSQL refused a statement or could not be reached (the server's message and
    /// SQLSTATE, or the connection error).
    #[error("postgres: {0}")]
    Postgres(String),
    /// The database cannot be reached (connection refused or lost, pool exhausted): nothing
    /// of the operation is known to be stored; try again later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// This node's OTP keys differ from the ones the cluster's database recorded.
    #[error("this node's OTP keys (fingerprint {node}) are not the cluster's ({cluster})")]
    KeysDiffer {
        /// The fingerprint the database holds.
        cluster: String,
        /// This node's.
        node: String,
    },
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
    pub to: Msisdn,
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
    pub to: Msisdn,
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
    pub to: Msisdn,
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
