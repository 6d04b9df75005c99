//! Versioned migrations of the PostgreSQL schema, in `simgate_schema.version`.
//!
//! The same rules as SQLite's (`store/schema.rs`): steps only append, each runs in its own
//! transaction with the version bump, and a database newer than this build is refused. Several
//! nodes may start at once: a session-level advisory lock lets one migrate while the others
//! wait, then find nothing left to do.
//!
//! The tables mirror SQLite's version 7 with PostgreSQL types (`BIGINT` for every integer and
//! instant, `BYTEA` for blobs, `BOOLEAN`), plus what a cluster needs: which node claimed a
//! message and until when (`node_id`, `lease_until`), the node of each sent part (TP-MR is a
//! modem's counter, and modem ids are unique per node only), the `nodes` that are alive, and
//! rate-limit state shared by every node. Event payloads stay `TEXT`, not `jsonb`: `jsonb`
//! reorders keys, and every delivery of an event must sign the same bytes.

use super::super::StoreError;

/// Version 1: everything SQLite has at its version 7, for a cluster.
const V1: &str = "
CREATE TABLE messages (
    seq              BIGSERIAL PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    otp_id           TEXT,
    to_number        TEXT NOT NULL,
    kind             TEXT NOT NULL CHECK (kind IN ('otp', 'text')),
    log_text         TEXT NOT NULL,
    body             TEXT,
    sealed_body      BYTEA,
    parts            BIGINT NOT NULL,
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    error            TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    sent_at          BIGINT,
    delivered_at     BIGINT,
    deadline         BIGINT NOT NULL,
    next_attempt_at  BIGINT NOT NULL,
    modem_id         TEXT,
    validity_minutes BIGINT,
    unknown_outcomes BIGINT NOT NULL DEFAULT 0,
    partial_sends    BIGINT NOT NULL DEFAULT 0,
    node_id          TEXT,
    lease_until      BIGINT
);
CREATE INDEX messages_queue ON messages (seq) WHERE status = 'queued';
CREATE INDEX messages_queue_due ON messages (next_attempt_at) WHERE status = 'queued';
CREATE INDEX messages_queue_deadline ON messages (deadline) WHERE status = 'queued';
CREATE INDEX messages_sending ON messages (lease_until) WHERE status = 'sending';
CREATE INDEX messages_to_created ON messages (to_number, created_at);
CREATE INDEX messages_created ON messages (created_at);
CREATE INDEX messages_otp ON messages (otp_id) WHERE otp_id IS NOT NULL;

CREATE TABLE message_parts (
    message_seq BIGINT NOT NULL REFERENCES messages (seq) ON DELETE CASCADE,
    part_no     BIGINT NOT NULL,
    node_id     TEXT NOT NULL,
    modem_id    TEXT NOT NULL,
    mr          BIGINT NOT NULL,
    recipient   TEXT NOT NULL,
    status      TEXT NOT NULL,
    sent_at     BIGINT NOT NULL,
    reported_at BIGINT,
    detail      TEXT,
    PRIMARY KEY (message_seq, part_no)
);
CREATE INDEX message_parts_mr ON message_parts (node_id, modem_id, mr, sent_at);

CREATE TABLE message_events (
    id          BIGSERIAL PRIMARY KEY,
    message_seq BIGINT NOT NULL REFERENCES messages (seq) ON DELETE CASCADE,
    at          BIGINT NOT NULL,
    status      TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX message_events_msg ON message_events (message_seq);

CREATE TABLE message_origins (
    message_seq     BIGINT PRIMARY KEY REFERENCES messages (seq) ON DELETE CASCADE,
    sender          TEXT,
    status_callback TEXT
);

CREATE TABLE otps (
    id           TEXT PRIMARY KEY,
    to_number    TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX otps_pending ON otps (to_number, created_at) WHERE status = 'pending';
CREATE INDEX otps_pending_expiry ON otps (expires_at) WHERE status = 'pending';
CREATE INDEX otps_created ON otps (created_at);

CREATE TABLE otp_codes (
    id         BIGSERIAL PRIMARY KEY,
    otp_id     TEXT NOT NULL REFERENCES otps (id) ON DELETE CASCADE,
    code_hmac  BYTEA NOT NULL,
    message_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX otp_codes_otp ON otp_codes (otp_id);

CREATE TABLE otp_wordings (
    otp_id       TEXT PRIMARY KEY REFERENCES otps (id) ON DELETE CASCADE,
    code_length  BIGINT NOT NULL,
    code_offsets TEXT NOT NULL
);

CREATE TABLE idempotency (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash BYTEA NOT NULL,
    response     TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_created ON idempotency (created_at);

CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('concat_ref', 0);

-- The number of queued messages, striped: `sum(n)` over the 64 slots is the count of
-- `status = 'queued'` rows in any snapshot, without counting them (which costs in proportion
-- to the backlog, exactly when enqueues must stay fast). The triggers below keep it, whoever
-- changes a status (an enqueue, a claim, a retry, a cancel, an expiry, a prune), and add a
-- transaction's whole change to one slot, chosen by its transaction id: concurrent
-- transactions have different ids, so they rarely touch the same row, and none waits for two
-- slots, so two can never deadlock over them. The triggers are deferred to COMMIT: the slot's
-- row lock is then held only while the transaction commits, and taken after every other lock
-- the transaction needs, so whoever waits for a slot waits for a commit that waits for
-- nothing else. The count a transaction reads therefore leaves out its own uncommitted
-- changes. (TRUNCATE fires no row trigger: messages must be deleted.)
CREATE TABLE queue_count (
    slot SMALLINT PRIMARY KEY,
    n    BIGINT NOT NULL
);
INSERT INTO queue_count (slot, n) SELECT s, 0 FROM generate_series(0, 63) AS s;

CREATE FUNCTION queue_count_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE queue_count SET n = n + TG_ARGV[0]::BIGINT WHERE slot = txid_current() % 64;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER queue_count_insert AFTER INSERT ON messages
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.status = 'queued') EXECUTE FUNCTION queue_count_add('1');
CREATE CONSTRAINT TRIGGER queue_count_enter AFTER UPDATE OF status ON messages
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.status <> 'queued' AND NEW.status = 'queued') EXECUTE FUNCTION queue_count_add('1');
CREATE CONSTRAINT TRIGGER queue_count_leave AFTER UPDATE OF status ON messages
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.status = 'queued' AND NEW.status <> 'queued') EXECUTE FUNCTION queue_count_add('-1');
CREATE CONSTRAINT TRIGGER queue_count_delete AFTER DELETE ON messages
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (OLD.status = 'queued') EXECUTE FUNCTION queue_count_add('-1');

-- Whether the queue holds `queue_max` messages, deciding under the queue bound's advisory lock
-- `lock_key` (see messages.rs, `QUEUE_BOUND_LOCK`): far from the bound (more than `slack`
-- below it) the lock is taken shared and the count checked again; if the queue filled up
-- meanwhile, the shared lock is given back (the block's subtransaction rolls back) and the
-- exclusive one taken, after which the count is exact. A function so that the whole decision
-- is one statement, and VOLATILE so that, at READ COMMITTED, each count inside it takes a new
-- snapshot: one taken after the lock, which sees the commits of everyone the lock waited for.
CREATE FUNCTION queue_full(queue_max BIGINT, slack BIGINT, lock_key BIGINT) RETURNS BOOLEAN
    LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    queued BIGINT;
BEGIN
    SELECT COALESCE(sum(n), 0) INTO queued FROM queue_count;
    IF queued >= queue_max THEN
        RETURN TRUE;
    END IF;
    IF queue_max - queued > slack THEN
        BEGIN
            PERFORM pg_advisory_xact_lock_shared(lock_key);
            SELECT COALESCE(sum(n), 0) INTO queued FROM queue_count;
            IF queue_max - queued > slack THEN
                RETURN FALSE;
            END IF;
            RAISE EXCEPTION USING ERRCODE = 'SGQ01';
        EXCEPTION WHEN SQLSTATE 'SGQ01' THEN
            NULL;
        END;
    END IF;
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT COALESCE(sum(n), 0) INTO queued FROM queue_count;
    RETURN queued >= queue_max;
END
$$;

-- The outbox. `seq` is NULL until the sequencer (events.rs) numbers committed events in
-- insertion order, under a lock: numbers assigned at INSERT would commit out of order across
-- concurrent transactions, and a reader whose cursor passed a number could miss an event that
-- commits later with a smaller one.
CREATE SEQUENCE events_seq;
CREATE TABLE events (
    insert_id BIGSERIAL PRIMARY KEY,
    seq       BIGINT UNIQUE,
    id        TEXT NOT NULL UNIQUE,
    type      TEXT NOT NULL,
    subject   TEXT NOT NULL,
    at        BIGINT NOT NULL,
    data      TEXT NOT NULL
);
CREATE INDEX events_unsequenced ON events (insert_id) WHERE seq IS NULL;
CREATE INDEX events_at ON events (at);

CREATE TABLE webhook_endpoints (
    url              TEXT PRIMARY KEY,
    fingerprint      TEXT NOT NULL,
    cursor           BIGINT NOT NULL,
    head_seq         BIGINT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    first_failure_at BIGINT,
    next_attempt_at  BIGINT,
    last_error       TEXT,
    disabled_at      BIGINT,
    disabled_reason  TEXT,
    delivered        BIGINT NOT NULL DEFAULT 0,
    dead             BIGINT NOT NULL DEFAULT 0,
    -- The node whose turn it is to deliver (every node runs a worker per endpoint), until
    -- `owner_until` (the database's clock, ms): see events.rs.
    owner            TEXT,
    owner_until      BIGINT
);

CREATE TABLE webhook_dead (
    url       TEXT NOT NULL,
    event_seq BIGINT NOT NULL,
    at        BIGINT NOT NULL,
    attempts  BIGINT NOT NULL,
    reason    TEXT NOT NULL,
    PRIMARY KEY (url, event_seq)
);
CREATE INDEX webhook_dead_at ON webhook_dead (at);

-- Inbound texts: a part's text is `text`, and, for a UCS-2 part holding half a surrogate pair,
-- its UTF-16 units big-endian in `units` (see store/inbound.rs). A part belongs to the node
-- whose modem received it: modem ids are unique per node only (see pg/inbound.rs).
CREATE TABLE inbound_messages (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    modem_id     TEXT NOT NULL,
    sender       TEXT NOT NULL,
    text         TEXT NOT NULL,
    sc_timestamp TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    parts        BIGINT NOT NULL,
    complete     BOOLEAN NOT NULL,
    missing      TEXT NOT NULL
);
CREATE INDEX inbound_messages_received ON inbound_messages (received_at);
CREATE INDEX inbound_messages_sender ON inbound_messages (sender, seq);

CREATE TABLE inbound_parts (
    seq          BIGSERIAL PRIMARY KEY,
    message_seq  BIGINT REFERENCES inbound_messages (seq) ON DELETE CASCADE,
    node_id      TEXT NOT NULL,
    modem_id     TEXT NOT NULL,
    sender       TEXT NOT NULL,
    sc_timestamp TEXT NOT NULL,
    concat_ref   BIGINT NOT NULL,
    concat_total BIGINT NOT NULL,
    concat_seq   BIGINT NOT NULL,
    text         TEXT NOT NULL,
    units        BYTEA,
    received_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX inbound_parts_same ON inbound_parts
    (node_id, modem_id, sender, sc_timestamp, concat_ref, concat_total, concat_seq, text,
     coalesce(units, '\\x'::bytea));
CREATE INDEX inbound_parts_open ON inbound_parts
    (node_id, modem_id, sender, concat_ref, concat_total, concat_seq)
    WHERE message_seq IS NULL;
CREATE INDEX inbound_parts_message ON inbound_parts (message_seq);

-- The nodes of the cluster: each renews `last_seen` with its leases and publishes its modems
-- (a JSON array of `GET /v1/modems` objects), so any node can list every live node's modems.
CREATE TABLE nodes (
    node_id    TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL,
    modems     TEXT NOT NULL DEFAULT '[]'
);

-- Facts every node must agree on, such as the fingerprint of the OTP keys.
CREATE TABLE cluster_settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Rate limits every node shares (GCRA: the theoretical arrival time of the next request).
CREATE TABLE rate_limits (
    key TEXT PRIMARY KEY,
    tat BIGINT NOT NULL
);
";

/// Every migration, in order; `MIGRATIONS[i]` upgrades version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1];

/// The schema version this build writes.
pub const CURRENT_VERSION: u32 = MIGRATIONS.len() as u32;

/// Arbitrary, fixed: the advisory lock key under which one node migrates at a time.
const MIGRATION_LOCK: i64 = 0x5349_4d47_4154_4501;

pub(super) async fn version(client: &tokio_postgres::Client) -> Result<u32, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('simgate_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: i64 = client
        .query_one("SELECT version FROM simgate_schema", &[])
        .await?
        .get(0);
    Ok(v as u32)
}

pub(super) async fn migrate(client: &mut tokio_postgres::Client) -> Result<u32, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = migrate_locked(client).await;
    // Released whatever happened; a dropped connection releases it too.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn migrate_locked(client: &mut tokio_postgres::Client) -> Result<u32, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS simgate_schema (version BIGINT NOT NULL);
             INSERT INTO simgate_schema (version)
                 SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM simgate_schema)",
        )
        .await?;
    let found = version(client).await?;
    if found > CURRENT_VERSION {
        return Err(StoreError::TooNew {
            found,
            supported: CURRENT_VERSION,
        });
    }
    for v in found..CURRENT_VERSION {
        let tx = client.transaction().await?;
        tx.batch_execute(MIGRATIONS[v as usize]).await?;
        tx.execute(
            "UPDATE simgate_schema SET version = $1",
            &[&(i64::from(v) + 1)],
        )
        .await?;
        tx.commit().await?;
    }
    version(client).await
}
