//! All SQL lives here. [`Store`] is the one store interface the rest of the daemon sees; it has
//! two back ends behind it, chosen by `[store] backend`:
//!
//! - **SQLite** (the default): the queue and the delivery log in one file, one writer thread
//!   with group commit, a pool of readers. One node.
//! - **PostgreSQL** (`pg/`): several `simgate serve` nodes share one database; claims are leased
//!   per node, wake-ups travel by `LISTEN/NOTIFY`, and every limit that protects users is
//!   enforced in the database's transactions, not per process.
//!
//! Both back ends answer every method of [`Store`]: the `backend!` table below lists each
//! method once and forwards it to both, so a method one of them lacks does not compile, and
//! `tests/store_contract.rs` runs one behavioural suite against both.
//!
//! What follows describes the SQLite back end; `pg/mod.rs` says where PostgreSQL differs.
//!
//! The SQLite store is the queue and the delivery log in one SQLite file (bundled SQLite, WAL journal).
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

pub mod pg;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

use tokio::sync::Notify;

pub use crate::model::{EndpointState, InboundText, StoredEvent};
pub use events::AttemptResult;
pub use pg::PgOptions;
use sqlite::Sqlite;

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

/// Handle to the database; cheap to clone, shared by the service, the dispatcher and the
/// sweeps. Which back end it drives was decided when it was opened.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(Sqlite),
    Postgres(pg::Postgres),
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `path`, migrates it to the current
    /// schema and starts the writer thread. The writer stops when the last clone is dropped.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Sqlite(Sqlite::open(path, opts)?),
        })
    }

    /// Like [`Store::open`] but migrates only up to `version`; lets tests build an old database.
    #[doc(hidden)]
    pub fn open_at_version(
        path: &Path,
        opts: StoreOptions,
        version: u32,
    ) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Sqlite(Sqlite::open_at_version(path, opts, version)?),
        })
    }

    /// Connects to a PostgreSQL database shared with other nodes, migrates it and starts this
    /// node's listener (cross-node wake-ups) and lease renewal.
    pub async fn connect_postgres(opts: PgOptions) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Postgres(pg::Postgres::connect(opts).await?),
        })
    }

    /// `"sqlite"` or `"postgres"`, for logs, metrics and the status page.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The PostgreSQL back end, for what only a cluster has (nodes, leases).
    pub fn postgres(&self) -> Option<&pg::Postgres> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(p) => Some(p),
        }
    }

    /// How long a claim outlives a node that stops renewing it; `None` with one node (SQLite),
    /// where nothing is ever abandoned while the process runs.
    pub fn claim_lease_ms(&self) -> Option<Millis> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(p) => Some(p.lease_ms()),
        }
    }

    /// This node's name in a cluster; `None` with SQLite.
    pub fn node_id(&self) -> Option<&str> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(p) => Some(p.node_id()),
        }
    }

    /// What the SQLite writer thread did so far: groups, syncs, operations, waits. PostgreSQL
    /// has no writer thread of ours; its counters stay zero.
    pub fn writer_stats(&self) -> WriterSnapshot {
        match &self.backend {
            Backend::Sqlite(s) => s.writer_stats(),
            Backend::Postgres(_) => WriterSnapshot::default(),
        }
    }

    /// Woken after every commit that may have added events (on PostgreSQL also another node's,
    /// by `NOTIFY`), so outbox readers see new events at once instead of polling.
    pub fn outbox_wake(&self) -> Arc<Notify> {
        match &self.backend {
            Backend::Sqlite(s) => s.outbox_wake(),
            Backend::Postgres(p) => p.outbox_wake(),
        }
    }

    /// Pokes `wake` whenever another node queues a message (PostgreSQL `NOTIFY`), so this
    /// node's dispatcher may claim it. With SQLite only this process enqueues, and the service
    /// pokes the dispatcher itself.
    pub fn forward_queue_wakes(&self, wake: Arc<Notify>) {
        if let Backend::Postgres(p) = &self.backend {
            p.forward_queue_wakes(wake);
        }
    }
}

/// Lists every method of the store interface once and forwards it to the back end.
macro_rules! backend {
    ($(
        $(#[$attr:meta])*
        pub async fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
    )*) => {
        impl Store {
            $(
                $(#[$attr])*
                // The interface's arity is the back ends' (create_otp_worded has seven).
                #[allow(clippy::too_many_arguments)]
                pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match &self.backend {
                        Backend::Sqlite(s) => s.$name($($arg),*).await,
                        Backend::Postgres(p) => p.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

backend! {
    /// The schema version of the open database.
    pub async fn schema_version(&self) -> Result<u32, StoreError>;

    // --- OTPs ---

    /// Creates an OTP and queues its first text in one transaction. Refused (nothing written)
    /// when `daily_cap` texts went to the number within [`DAY_MS`] or the queue holds
    /// `queue_max` messages; an `Idempotency-Key` seen before replays or conflicts. A pending
    /// OTP of the same number is superseded (cancelled with its queued texts).
    pub async fn create_otp(
        &self,
        otp: NewOtp,
        msg: NewMessage,
        idem: Option<Idempotency>,
        daily_cap: u32,
        queue_max: u64,
    ) -> Result<CreateOutcome, StoreError>;

    /// Like [`Store::create_otp`], also recording where the code sits in the text (so a resend
    /// repeats it), and with a choice of what a pending OTP of the number means.
    pub async fn create_otp_worded(
        &self,
        otp: NewOtp,
        msg: NewMessage,
        wording: OtpWording,
        on_pending: OnPending,
        idem: Option<Idempotency>,
        daily_cap: u32,
        queue_max: u64,
    ) -> Result<CreateOtpOutcome, StoreError>;

    /// Adds a text with a new code to a pending OTP.
    pub async fn add_otp_text(&self, t: NewOtpText) -> Result<AddTextOutcome, StoreError>;

    /// Where the code sits in the OTP's first text, if recorded.
    pub async fn otp_wording(&self, otp_id: &str) -> Result<Option<OtpWording>, StoreError>;

    /// Queues another text for a pending OTP with a new code.
    pub async fn resend_otp(
        &self,
        otp_id: &str,
        code_hmac: Vec<u8>,
        msg: NewMessage,
        daily_cap: u32,
        queue_max: u64,
    ) -> Result<ResendOutcome, StoreError>;

    /// Records one verification attempt atomically: the attempt that matches moves the OTP to
    /// `approved` exactly once; a wrong one counts, up to `max_attempts`. `None`: no such OTP.
    pub async fn record_verify(
        &self,
        otp_id: &str,
        matched: bool,
        now: Millis,
    ) -> Result<Option<VerifyResult>, StoreError>;

    /// Cancels a pending OTP and its queued texts; answers the status it has now.
    pub async fn cancel_otp(&self, otp_id: &str, now: Millis)
    -> Result<Option<OtpStatus>, StoreError>;

    /// One OTP with its code HMACs and messages.
    pub async fn get_otp(&self, otp_id: &str) -> Result<Option<Otp>, StoreError>;

    /// The newest pending, unexpired OTP of a number.
    pub async fn newest_pending_otp(&self, to: &str, now: Millis)
    -> Result<Option<Otp>, StoreError>;

    /// Moves at most `limit` pending OTPs whose TTL ended to `expired`; returns how many.
    pub async fn expire_due_otps(&self, now: Millis, limit: u32) -> Result<u64, StoreError>;

    /// When the next pending OTP expires.
    pub async fn next_otp_expiry(&self) -> Result<Option<Millis>, StoreError>;

    // --- Texts and the delivery log ---

    /// Queues a plain text.
    pub async fn enqueue_text(
        &self,
        msg: NewMessage,
        idem: Option<Idempotency>,
        queue_max: u64,
    ) -> Result<CreateOutcome, StoreError>;

    /// Queues a plain text with what its client said of it (Twilio's `From`, `StatusCallback`).
    pub async fn enqueue_text_from(
        &self,
        msg: NewMessage,
        idem: Option<Idempotency>,
        queue_max: u64,
        origin: MessageOrigin,
    ) -> Result<CreateOutcome, StoreError>;

    /// Queues a code an identity server drew, as a masked OTP text under the daily cap.
    pub async fn enqueue_relayed_otp_text(
        &self,
        msg: NewMessage,
        idem: Option<Idempotency>,
        daily_cap: u32,
        queue_max: u64,
    ) -> Result<CreateOutcome, StoreError>;

    /// What a client said of a text beyond recipient and body.
    pub async fn message_origin(&self, id: &str) -> Result<Option<MessageOrigin>, StoreError>;

    /// One message of the delivery log.
    pub async fn get_message(&self, id: &str) -> Result<Option<Message>, StoreError>;

    /// A message's status history, oldest first.
    pub async fn message_events(&self, id: &str) -> Result<Vec<MessageEvent>, StoreError>;

    /// The delivery log, newest first.
    pub async fn list_messages(&self, filter: MessageFilter) -> Result<Vec<Message>, StoreError>;

    /// Messages waiting in the queue.
    pub async fn queue_depth(&self) -> Result<u64, StoreError>;

    /// Messages per status.
    pub async fn status_counts(&self) -> Result<Vec<(MessageStatus, u64)>, StoreError>;

    // --- The dispatcher ---

    /// Claims the oldest due queued message (expiring overdue ones first) and marks it
    /// `sending`. On PostgreSQL the claim is this node's, leased and renewed while it lives.
    pub async fn claim_next(&self, now: Millis) -> Result<Option<Claimed>, StoreError>;

    /// Records a sent message with the TP-MR of each part.
    pub async fn mark_sent(
        &self,
        id: &str,
        modem_id: &str,
        mrs: Vec<u8>,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Puts a message back in the queue after a temporary error.
    pub async fn mark_retry(
        &self,
        id: &str,
        reason: &str,
        next_attempt_at: Millis,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Fails a message for good.
    pub async fn mark_failed(&self, id: &str, reason: &str, now: Millis) -> Result<(), StoreError>;

    /// Expires a message (its deadline passed).
    pub async fn mark_expired(&self, id: &str, reason: &str, now: Millis)
    -> Result<(), StoreError>;

    /// A send whose outcome is unknown: resend after a backoff or fail, per `rule`.
    pub async fn mark_unknown_outcome(
        &self,
        id: &str,
        reason: &str,
        rule: impl Into<UnknownOutcomeRule> + Send,
        now: Millis,
    ) -> Result<MessageStatus, StoreError>;

    /// A claimed message no modem took: back to the queue, the attempt not counted.
    pub async fn mark_not_taken(&self, id: &str, reason: &str, now: Millis)
    -> Result<(), StoreError>;

    /// Some parts of a long text were accepted before a failure; returns the partial sends so
    /// far.
    pub async fn record_partial_send(
        &self,
        id: &str,
        modem_id: &str,
        accepted: Vec<u8>,
        now: Millis,
    ) -> Result<u32, StoreError>;

    /// Applies a status report to the part it belongs to (see [`REPORT_WINDOW_MS`]).
    pub async fn record_status_report(
        &self,
        report: StatusReport,
    ) -> Result<Option<ReportEffect>, StoreError>;

    /// At start-up: messages this node left `sending` get the unknown-outcome rule.
    pub async fn recover_interrupted(
        &self,
        rule: impl Into<UnknownOutcomeRule> + Send,
        now: Millis,
    ) -> Result<u64, StoreError>;

    /// While running: messages another node claimed and stopped renewing (it died or lost the
    /// database) get the unknown-outcome rule. SQLite has no other node: always 0.
    pub async fn recover_abandoned(
        &self,
        rule: impl Into<UnknownOutcomeRule> + Send,
        now: Millis,
    ) -> Result<u64, StoreError>;

    /// When the earliest claim another node holds runs out unless renewed; `None` when no
    /// other node is sending (always, with one node).
    pub async fn next_foreign_lease_expiry(&self) -> Result<Option<Millis>, StoreError>;

    /// When the next queued message becomes due.
    pub async fn next_due(&self) -> Result<Option<Millis>, StoreError>;

    /// When the next queued message's deadline passes.
    pub async fn next_expiry(&self) -> Result<Option<Millis>, StoreError>;

    /// Expires every queued message whose deadline passed; returns how many.
    pub async fn expire_overdue(&self, now: Millis) -> Result<u64, StoreError>;

    /// The next concatenation reference (TS 23.040 §9.2.3.24.1), persisted.
    pub async fn next_concat_reference(&self) -> Result<u8, StoreError>;

    /// Retention: deletes old messages, OTPs, idempotency records and events, masks numbers.
    pub async fn prune(
        &self,
        now: Millis,
        retention_ms: Option<Millis>,
        mask_after_ms: Option<Millis>,
    ) -> Result<PruneStats, StoreError>;

    // --- Statistics for the status page ---

    /// Messages created at or after `since`, counted per hour of creation and current status.
    pub async fn hourly_outcomes(&self, since: Millis) -> Result<Vec<HourCount>, StoreError>;

    /// Delivery latencies of the messages created at or after `since` that were delivered,
    /// newest first, at most [`MAX_LATENCY_SAMPLES`].
    pub async fn delivery_latencies(&self, since: Millis) -> Result<Vec<Latency>, StoreError>;

    /// When the oldest message still waiting in the queue was created.
    pub async fn oldest_queued(&self) -> Result<Option<Millis>, StoreError>;

    // --- The event outbox and webhook endpoints ---

    /// Records `modem.state_changed`; returns the event's `seq`.
    pub async fn record_modem_state(
        &self,
        modem_id: &str,
        from: Option<&str>,
        to: &str,
        detail: Option<&str>,
        at: Millis,
    ) -> Result<i64, StoreError>;

    /// Events with `seq > after`, oldest first, at most `limit`.
    pub async fn events_after(&self, after: i64, limit: u32)
    -> Result<Vec<StoredEvent>, StoreError>;

    /// Creates or updates the rows of the configured endpoints (`(url, fingerprint)`).
    pub async fn register_endpoints(
        &self,
        endpoints: Vec<(String, String)>,
    ) -> Result<(), StoreError>;

    /// Whether this node's worker delivers to `url` now: `None` when it is this node's turn
    /// (always, with one node), else when the other node's turn lapses. On PostgreSQL every
    /// node runs a worker per endpoint and one of them at a time holds the turn, so receivers
    /// see events in order and never two deliveries at once.
    pub async fn take_endpoint_turn(&self, url: &str) -> Result<Option<Millis>, StoreError>;

    /// One endpoint's delivery state.
    pub async fn endpoint_state(&self, url: &str) -> Result<Option<EndpointState>, StoreError>;

    /// Every endpoint's delivery state.
    pub async fn endpoint_states(&self) -> Result<Vec<(String, EndpointState)>, StoreError>;

    /// The highest event `seq` ever assigned (0 before the first), pruned events included.
    pub async fn last_event_seq(&self) -> Result<i64, StoreError>;

    /// Records one delivery attempt of the event at an endpoint's head.
    pub async fn record_attempt(
        &self,
        url: &str,
        seq: i64,
        result: AttemptResult,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Moves an endpoint's cursor past events it does not subscribe to.
    pub async fn skip_events(&self, url: &str, up_to: i64) -> Result<(), StoreError>;

    /// Drops events older than `cutoff` that every endpoint has passed.
    pub async fn prune_events(&self, cutoff: Millis) -> Result<u64, StoreError>;

    // --- Inbound texts ---

    /// Stores one received part; the message row is written when its last part arrives.
    pub async fn record_inbound_part(&self, part: InboundPart)
    -> Result<InboundRecord, StoreError>;

    /// Turns parts that waited `timeout_ms` into incomplete messages.
    pub async fn expire_inbound(
        &self,
        now: Millis,
        timeout_ms: Millis,
    ) -> Result<Vec<InboundText>, StoreError>;

    /// One received text.
    pub async fn get_inbound(&self, id: &str) -> Result<Option<InboundText>, StoreError>;

    /// Received texts, newest first.
    pub async fn list_inbound(&self, f: InboundFilter) -> Result<Vec<InboundText>, StoreError>;

    /// Retention of received texts.
    pub async fn prune_inbound(
        &self,
        now: Millis,
        retention_ms: Option<Millis>,
        mask_after_ms: Option<Millis>,
    ) -> Result<InboundPruneStats, StoreError>;

    /// When the oldest incomplete message will have waited `timeout_ms`, if any waits.
    pub async fn next_inbound_expiry(&self, timeout_ms: Millis)
    -> Result<Option<Millis>, StoreError>;
}

#[cfg(test)]
mod tests;
