//! Versioned schema migrations on `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] moves the schema from version `i` to `i + 1`; `user_version` records
//! how many have run. Migrations only ever append: a released step is never edited, because a
//! database in the field may already have run it. Each step runs in its own transaction together
//! with the `user_version` bump, so a crash mid-upgrade leaves the previous version intact.

use rusqlite::Connection;

use super::StoreError;

/// Version 1: the tables themselves.
const V1: &str = "
CREATE TABLE messages (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    otp_id          TEXT,
    to_number       TEXT NOT NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('otp', 'text')),
    log_text        TEXT NOT NULL,
    body            TEXT,
    sealed_body     BLOB,
    parts           INTEGER NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    error           TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    sent_at         INTEGER,
    delivered_at    INTEGER,
    deadline        INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    modem_id        TEXT,
    validity_minutes INTEGER
);
CREATE INDEX messages_queue ON messages (seq) WHERE status = 'queued';
CREATE INDEX messages_queue_due ON messages (next_attempt_at) WHERE status = 'queued';
CREATE INDEX messages_queue_deadline ON messages (deadline) WHERE status = 'queued';
CREATE INDEX messages_sending ON messages (seq) WHERE status = 'sending';
CREATE INDEX messages_to_created ON messages (to_number, created_at);
CREATE INDEX messages_created ON messages (created_at);
CREATE INDEX messages_otp ON messages (otp_id) WHERE otp_id IS NOT NULL;

CREATE TABLE message_parts (
    message_seq INTEGER NOT NULL REFERENCES messages (seq) ON DELETE CASCADE,
    part_no     INTEGER NOT NULL,
    modem_id    TEXT NOT NULL,
    mr          INTEGER NOT NULL,
    recipient   TEXT NOT NULL,
    status      TEXT NOT NULL,
    sent_at     INTEGER NOT NULL,
    reported_at INTEGER,
    detail      TEXT,
    PRIMARY KEY (message_seq, part_no)
);
CREATE INDEX message_parts_mr ON message_parts (modem_id, mr, sent_at);

CREATE TABLE message_events (
    id          INTEGER PRIMARY KEY,
    message_seq INTEGER NOT NULL REFERENCES messages (seq) ON DELETE CASCADE,
    at          INTEGER NOT NULL,
    status      TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX message_events_msg ON message_events (message_seq);

CREATE TABLE otps (
    id           TEXT PRIMARY KEY,
    to_number    TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX otps_pending ON otps (to_number, created_at) WHERE status = 'pending';
CREATE INDEX otps_created ON otps (created_at);

CREATE TABLE otp_codes (
    otp_id     TEXT NOT NULL REFERENCES otps (id) ON DELETE CASCADE,
    code_hmac  BLOB NOT NULL,
    message_id TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX otp_codes_otp ON otp_codes (otp_id);

CREATE TABLE idempotency (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    response     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_created ON idempotency (created_at);
";

/// Version 2: O(1) queue depth and the persisted concatenation reference.
///
/// Counting `status = 'queued'` rows on every enqueue (for the queue bound) costs a scan of up to
/// `queue_max` index entries; triggers keep the count exact inside the same transaction instead.
const V2: &str = "
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO counters (name, value)
    SELECT 'queued', COUNT(*) FROM messages WHERE status = 'queued';
INSERT INTO counters (name, value) VALUES ('concat_ref', 0);

CREATE TRIGGER messages_queued_ins AFTER INSERT ON messages WHEN NEW.status = 'queued'
BEGIN
    UPDATE counters SET value = value + 1 WHERE name = 'queued';
END;
CREATE TRIGGER messages_queued_upd AFTER UPDATE OF status ON messages
    WHEN OLD.status <> NEW.status AND (OLD.status = 'queued' OR NEW.status = 'queued')
BEGIN
    UPDATE counters SET value = value + (NEW.status = 'queued') - (OLD.status = 'queued')
        WHERE name = 'queued';
END;
CREATE TRIGGER messages_queued_del AFTER DELETE ON messages WHEN OLD.status = 'queued'
BEGIN
    UPDATE counters SET value = value - 1 WHERE name = 'queued';
END;
";

/// Version 3: where the code sits in an OTP's first text, so a resend repeats that text exactly.
///
/// The masked log text alone cannot say it: a template with a literal `*` next to `{code}` masks
/// to a longer run of stars than the code has. Offsets are byte offsets into the first message's
/// `log_text`, comma-separated; rows of OTPs created before this version are simply absent.
const V3: &str = "
CREATE TABLE otp_wordings (
    otp_id       TEXT PRIMARY KEY REFERENCES otps (id) ON DELETE CASCADE,
    code_length  INTEGER NOT NULL,
    code_offsets TEXT NOT NULL
);
";

/// Version 4: per-message counters that bound resends across restarts.
///
/// `unknown_outcomes` counts sends whose outcome could not be known (each may have reached the
/// phone), `partial_sends` sends of a multi-part text that failed after some parts were
/// accepted (the recipient holds those parts). Both only grow; the dispatcher fails a message
/// when one reaches its configured cap.
const V4: &str = "
ALTER TABLE messages ADD COLUMN unknown_outcomes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN partial_sends INTEGER NOT NULL DEFAULT 0;
";

/// Version 5: inbound texts (`store::inbound`).
///
/// A part is a row from the moment it arrives, so a concatenated text survives a restart in the
/// middle; `inbound_parts_same` makes a redelivered part a no-op; `message_seq` is NULL while
/// the part waits for the rest of its message. `concat_ref` is -1 for a text in one part.
const V5: &str = "
CREATE TABLE inbound_messages (
    seq          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    modem_id     TEXT NOT NULL,
    sender       TEXT NOT NULL,
    text         TEXT NOT NULL,
    sc_timestamp TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    parts        INTEGER NOT NULL,
    complete     INTEGER NOT NULL,
    missing      TEXT NOT NULL
);
CREATE INDEX inbound_messages_received ON inbound_messages (received_at);
CREATE INDEX inbound_messages_sender ON inbound_messages (sender, seq);

CREATE TABLE inbound_parts (
    seq          INTEGER PRIMARY KEY,
    message_seq  INTEGER REFERENCES inbound_messages (seq) ON DELETE CASCADE,
    modem_id     TEXT NOT NULL,
    sender       TEXT NOT NULL,
    sc_timestamp TEXT NOT NULL,
    concat_ref   INTEGER NOT NULL,
    concat_total INTEGER NOT NULL,
    concat_seq   INTEGER NOT NULL,
    text         TEXT NOT NULL,
    received_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX inbound_parts_same ON inbound_parts
    (modem_id, sender, sc_timestamp, concat_ref, concat_total, concat_seq, text);
CREATE INDEX inbound_parts_open ON inbound_parts
    (modem_id, sender, concat_ref, concat_total, concat_seq) WHERE message_seq IS NULL;
CREATE INDEX inbound_parts_message ON inbound_parts (message_seq);
";

/// Version 6: the event outbox and the webhook endpoints' delivery state.
///
/// `events` rows are written in the same transaction as the change they report, so an event
/// exists exactly when its change committed. `AUTOINCREMENT` keeps `seq` from ever being reused
/// after pruning: endpoints and `GET /v1/events` clients hold cursors into it. `data` is the
/// event's JSON object, frozen at the change, so every delivery of it signs the same bytes.
/// `webhook_endpoints` holds one row per configured URL: its cursor (every event up to it is
/// delivered or dead), the retry state of the event at its head, and a 410's disabling, which
/// lasts while `fingerprint` (a digest of the endpoint's config) stays the same.
const V6: &str = "
CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    id      TEXT NOT NULL UNIQUE,
    type    TEXT NOT NULL,
    subject TEXT NOT NULL,
    at      INTEGER NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX events_at ON events (at);

CREATE TABLE webhook_endpoints (
    url              TEXT PRIMARY KEY,
    fingerprint      TEXT NOT NULL,
    cursor           INTEGER NOT NULL,
    head_seq         INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    first_failure_at INTEGER,
    next_attempt_at  INTEGER,
    last_error       TEXT,
    disabled_at      INTEGER,
    disabled_reason  TEXT,
    delivered        INTEGER NOT NULL DEFAULT 0,
    dead             INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE webhook_dead (
    url       TEXT NOT NULL,
    event_seq INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    attempts  INTEGER NOT NULL,
    reason    TEXT NOT NULL,
    PRIMARY KEY (url, event_seq)
);
CREATE INDEX webhook_dead_at ON webhook_dead (at);
";

/// Version 7: what a client said about a text beyond recipient and body (`model::MessageOrigin`:
/// Twilio's `From` and `StatusCallback`), written in the message's own transaction and deleted
/// with it.
const V7: &str = "
CREATE TABLE message_origins (
    message_seq     INTEGER PRIMARY KEY REFERENCES messages (seq) ON DELETE CASCADE,
    sender          TEXT,
    status_callback TEXT
);
";

/// Every migration, in order; `MIGRATIONS[i]` upgrades version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7];

/// The schema version this build writes.
pub const CURRENT_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings `conn` up to `target` (at most [`CURRENT_VERSION`]).
///
/// A database newer than this build is refused rather than written to: an older binary cannot
/// know which invariants the newer schema relies on.
pub(crate) fn migrate_to(conn: &mut Connection, target: u32) -> Result<u32, StoreError> {
    let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > CURRENT_VERSION {
        return Err(StoreError::TooNew {
            found,
            supported: CURRENT_VERSION,
        });
    }
    for version in found..target.min(CURRENT_VERSION) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(MIGRATIONS[version as usize])?;
        // user_version takes no bound parameters; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", version + 1))?;
        tx.commit()?;
    }
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}
