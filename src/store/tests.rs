//! Store unit tests on fresh file databases in temporary directories.

use std::path::PathBuf;

use rusqlite::Connection;

use super::*;

const MIN: Millis = 60_000;
const T0: Millis = 1_800_000_000_000;

struct Db {
    store: Store,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

fn open() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("simgate.db");
    let store = Store::open(&path, StoreOptions::default()).unwrap();
    Db {
        store,
        path,
        _dir: dir,
    }
}

/// A direct connection for assertions on columns the API never exposes (sealed bodies).
fn raw(db: &Db) -> Connection {
    Connection::open(&db.path).unwrap()
}

fn text(id: &str, to: &str, at: Millis) -> NewMessage {
    NewMessage {
        id: id.into(),
        to: crate::model::Msisdn::parse(to).unwrap(),
        kind: MessageKind::Text,
        log_text: format!("hello from {id}"),
        body: Body::Clear(format!("hello from {id}")),
        parts: 1,
        created_at: at,
        deadline: at + 24 * 60 * MIN,
    }
}

fn otp(id: &str, to: &str, at: Millis) -> (NewOtp, NewMessage) {
    (
        NewOtp {
            id: id.into(),
            to: crate::model::Msisdn::parse(to).unwrap(),
            code_hmac: format!("hmac-{id}").into_bytes(),
            max_attempts: 5,
            expires_at: at + 5 * MIN,
            created_at: at,
        },
        NewMessage {
            id: format!("msg_{id}"),
            to: crate::model::Msisdn::parse(to).unwrap(),
            kind: MessageKind::Otp,
            log_text: "Your code is ******.".into(),
            body: Body::Sealed(vec![1, 2, 3, 4]),
            parts: 1,
            created_at: at,
            deadline: at + 5 * MIN,
        },
    )
}

async fn create(db: &Db, id: &str, to: &str, at: Millis) -> CreateOutcome {
    let (o, m) = otp(id, to, at);
    db.store.create_otp(o, m, None, 0, 0).await.unwrap()
}

fn idem(key: &str, hash: &[u8], response: &str) -> Idempotency {
    Idempotency {
        scope: "token-digest".into(),
        key: key.into(),
        request_hash: hash.to_vec(),
        response: response.into(),
    }
}

async fn status_of(db: &Db, id: &str) -> MessageStatus {
    db.store.get_message(id).await.unwrap().unwrap().status
}

#[tokio::test]
async fn fresh_database_gets_the_current_schema() {
    let db = open();
    assert_eq!(db.store.schema_version().await.unwrap(), SCHEMA_VERSION);
    let c = raw(&db);
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(db.store.queue_depth().await.unwrap(), 0);
}

#[tokio::test]
async fn database_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let db = open();
    db.store
        .enqueue_text(text("msg_a", "+15550000001", T0), None, 0)
        .await
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db.path.display());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{path} is readable by others: {mode:o}");
    }
}

#[tokio::test]
async fn upgrades_from_every_earlier_version() {
    for start in 0..SCHEMA_VERSION {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let old = Store::open_at_version(&path, StoreOptions::default(), start).unwrap();
            let c = Connection::open(&path).unwrap();
            let v: u32 = c
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, start);
            if start >= 1 {
                // Rows written by the old schema must survive the upgrade and be counted.
                c.execute_batch(
                    "INSERT INTO messages (id, to_number, kind, log_text, body, parts, status,
                         created_at, updated_at, deadline, next_attempt_at)
                     VALUES ('msg_a', '+15550001', 'text', 'a', 'a', 1, 'queued', 1, 1, 9e15, 1),
                            ('msg_b', '+15550002', 'text', 'b', 'b', 1, 'sent', 2, 2, 9e15, 2);",
                )
                .unwrap();
            }
            drop(old);
        }
        let store = Store::open(&path, StoreOptions::default()).unwrap();
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
        let expect_queued = if start >= 1 { 1 } else { 0 };
        assert_eq!(
            store.queue_depth().await.unwrap(),
            expect_queued,
            "from v{start}"
        );
        // The upgraded database works end to end.
        let out = store
            .enqueue_text(text("msg_new", "+15550003", T0), None, 0)
            .await
            .unwrap();
        assert_eq!(out, CreateOutcome::Created);
        assert_eq!(store.queue_depth().await.unwrap(), expect_queued + 1);
    }
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    Connection::open(&path)
        .unwrap()
        .execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))
        .unwrap();
    // Owner-only, or the store refuses it for its mode before reading its version.
    let owner_only = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&path, owner_only).unwrap();
    match Store::open(&path, StoreOptions::default()) {
        Err(StoreError::TooNew { found, .. }) => assert_eq!(found, SCHEMA_VERSION + 1),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a newer database was opened"),
    }
}

#[tokio::test]
async fn create_otp_stores_otp_and_message_and_replaces_pending_one() {
    let db = open();
    assert_eq!(
        create(&db, "otp_1", "+15551234567", T0).await,
        CreateOutcome::Created
    );
    let first = db.store.get_otp("otp_1").await.unwrap().unwrap();
    assert_eq!(first.status, OtpStatus::Pending);
    assert_eq!(first.code_hmacs, vec![b"hmac-otp_1".to_vec()]);
    assert_eq!(first.message_ids, vec!["msg_otp_1".to_string()]);
    let msg = db.store.get_message("msg_otp_1").await.unwrap().unwrap();
    assert_eq!(msg.status, MessageStatus::Queued);
    assert_eq!(msg.kind, MessageKind::Otp);
    assert_eq!(msg.otp_id.as_deref(), Some("otp_1"));
    assert_eq!(msg.log_text, "Your code is ******.");

    assert_eq!(
        create(&db, "otp_2", "+15551234567", T0 + 1000).await,
        CreateOutcome::Created
    );
    let first = db.store.get_otp("otp_1").await.unwrap().unwrap();
    assert_eq!(first.status, OtpStatus::Canceled);
    assert_eq!(status_of(&db, "msg_otp_1").await, MessageStatus::Canceled);
    let newest = db
        .store
        .newest_pending_otp("+15551234567", T0 + 2000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(newest.id, "otp_2");
    // Past its expiry it is no longer offered for verification by number.
    assert!(
        db.store
            .newest_pending_otp("+15551234567", T0 + 1000 + 5 * MIN)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(db.store.queue_depth().await.unwrap(), 1);
    // The canceled text's sealed code is gone from disk.
    let sealed: Option<Vec<u8>> = raw(&db)
        .query_row(
            "SELECT sealed_body FROM messages WHERE id = 'msg_otp_1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sealed, None);
}

#[tokio::test]
async fn idempotency_replays_same_request_and_rejects_a_different_one() {
    let db = open();
    let (o, m) = otp("otp_1", "+15551234567", T0);
    let key = idem("k1", b"hash-a", "{\"id\":\"otp_1\"}");
    assert_eq!(
        db.store
            .create_otp(o, m, Some(key.clone()), 0, 0)
            .await
            .unwrap(),
        CreateOutcome::Created
    );
    let (o2, m2) = otp("otp_2", "+15551234567", T0 + 10);
    assert_eq!(
        db.store
            .create_otp(o2.clone(), m2.clone(), Some(key), 0, 0)
            .await
            .unwrap(),
        CreateOutcome::Replay("{\"id\":\"otp_1\"}".into())
    );
    assert!(db.store.get_otp("otp_2").await.unwrap().is_none());
    assert_eq!(
        db.store
            .create_otp(o2, m2, Some(idem("k1", b"hash-b", "{}")), 0, 0)
            .await
            .unwrap(),
        CreateOutcome::IdempotencyConflict
    );
    // Same key, other scope: an independent request.
    let mut other = idem("k1", b"hash-b", "{}");
    other.scope = "other-token".into();
    assert_eq!(
        db.store
            .enqueue_text(text("msg_t", "+15550000001", T0), Some(other), 0)
            .await
            .unwrap(),
        CreateOutcome::Created
    );
    // Keys live one day.
    let (o3, m3) = otp("otp_3", "+15551234567", T0 + DAY_MS + 1);
    assert_eq!(
        db.store
            .create_otp(o3, m3, Some(idem("k1", b"hash-c", "{}")), 0, 0)
            .await
            .unwrap(),
        CreateOutcome::Created
    );
}

#[tokio::test]
async fn daily_cap_counts_otp_texts_per_number_and_says_when_to_retry() {
    let db = open();
    let to = "+15551234567";
    for i in 0..3 {
        let (o, m) = otp(&format!("otp_{i}"), to, T0 + i * MIN);
        assert_eq!(
            db.store.create_otp(o, m, None, 3, 0).await.unwrap(),
            CreateOutcome::Created
        );
    }
    // Another number and plain texts do not count.
    let (o, m) = otp("otp_other", "+15559999999", T0);
    assert_eq!(
        db.store.create_otp(o, m, None, 3, 0).await.unwrap(),
        CreateOutcome::Created
    );
    db.store
        .enqueue_text(text("msg_plain", to, T0), None, 0)
        .await
        .unwrap();
    let now = T0 + 4 * MIN;
    let (o, m) = otp("otp_4", to, now);
    assert_eq!(
        db.store.create_otp(o, m, None, 3, 0).await.unwrap(),
        CreateOutcome::DailyLimit {
            retry_after_ms: T0 + DAY_MS - now
        }
    );
    // A resend counts too.
    let (_, m) = otp("otp_2_again", to, now);
    assert_eq!(
        db.store
            .resend_otp("otp_2", b"h2".to_vec(), m, 3, 0)
            .await
            .unwrap(),
        ResendOutcome::DailyLimit {
            retry_after_ms: T0 + DAY_MS - now
        }
    );
    // Once the oldest leaves the window, one more is accepted.
    let (o, m) = otp("otp_5", to, T0 + DAY_MS + 1);
    assert_eq!(
        db.store.create_otp(o, m, None, 3, 0).await.unwrap(),
        CreateOutcome::Created
    );
}

#[tokio::test]
async fn queue_bound_rejects_beyond_queue_max() {
    let db = open();
    for i in 0..3 {
        assert_eq!(
            db.store
                .enqueue_text(text(&format!("msg_{i}"), "+15550000001", T0), None, 3)
                .await
                .unwrap(),
            CreateOutcome::Created
        );
    }
    assert_eq!(
        db.store
            .enqueue_text(text("msg_x", "+15550000001", T0), None, 3)
            .await
            .unwrap(),
        CreateOutcome::QueueFull
    );
    let (o, m) = otp("otp_x", "+15550000002", T0);
    assert_eq!(
        db.store.create_otp(o, m, None, 0, 3).await.unwrap(),
        CreateOutcome::QueueFull
    );
    // Claiming one frees a slot.
    db.store.claim_next(T0).await.unwrap().unwrap();
    assert_eq!(db.store.queue_depth().await.unwrap(), 2);
    assert_eq!(
        db.store
            .enqueue_text(text("msg_y", "+15550000001", T0), None, 3)
            .await
            .unwrap(),
        CreateOutcome::Created
    );
}

#[tokio::test]
async fn fifty_concurrent_right_codes_approve_exactly_once() {
    let db = open();
    create(&db, "otp_1", "+15551234567", T0).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            store.record_verify("otp_1", true, T0 + 1000).await.unwrap()
        }));
    }
    let mut verified = 0;
    for t in tasks {
        let r = t.await.unwrap().unwrap();
        assert_eq!(r.status, OtpStatus::Approved);
        verified += usize::from(r.verified);
    }
    assert_eq!(verified, 1);
}

#[tokio::test]
async fn wrong_codes_use_attempts_until_the_limit() {
    let db = open();
    create(&db, "otp_1", "+15551234567", T0).await;
    for left in (1..5).rev() {
        let r = db
            .store
            .record_verify("otp_1", false, T0 + 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.attempts_remaining), (OtpStatus::Pending, left));
    }
    let r = db
        .store
        .record_verify("otp_1", false, T0 + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, OtpStatus::MaxAttemptsReached);
    assert_eq!(r.attempts_remaining, 0);
    // The right code no longer helps.
    let r = db
        .store
        .record_verify("otp_1", true, T0 + 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.status, r.verified),
        (OtpStatus::MaxAttemptsReached, false)
    );
    assert!(
        db.store
            .record_verify("otp_nope", true, T0)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn verify_after_expiry_marks_expired() {
    let db = open();
    create(&db, "otp_1", "+15551234567", T0).await;
    let r = db
        .store
        .record_verify("otp_1", true, T0 + 5 * MIN)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((r.status, r.verified), (OtpStatus::Expired, false));
    assert_eq!(
        db.store.get_otp("otp_1").await.unwrap().unwrap().status,
        OtpStatus::Expired
    );
}

#[tokio::test]
async fn resend_adds_a_code_and_cancel_stops_queued_texts() {
    let db = open();
    create(&db, "otp_1", "+15551234567", T0).await;
    let (_, mut m) = otp("otp_1", "+15551234567", T0 + 1000);
    m.id = "msg_resend".into();
    assert_eq!(
        db.store
            .resend_otp("otp_1", b"second".to_vec(), m.clone(), 10, 0)
            .await
            .unwrap(),
        ResendOutcome::Created
    );
    let o = db.store.get_otp("otp_1").await.unwrap().unwrap();
    assert_eq!(
        o.code_hmacs,
        vec![b"hmac-otp_1".to_vec(), b"second".to_vec()]
    );
    assert_eq!(o.message_ids, vec!["msg_otp_1", "msg_resend"]);
    assert_eq!(
        db.store.cancel_otp("otp_1", T0 + 2000).await.unwrap(),
        Some(OtpStatus::Canceled)
    );
    assert_eq!(status_of(&db, "msg_otp_1").await, MessageStatus::Canceled);
    assert_eq!(status_of(&db, "msg_resend").await, MessageStatus::Canceled);
    m.id = "msg_third".into();
    assert_eq!(
        db.store
            .resend_otp("otp_1", b"third".to_vec(), m.clone(), 10, 0)
            .await
            .unwrap(),
        ResendOutcome::NotPending(OtpStatus::Canceled)
    );
    assert_eq!(
        db.store
            .resend_otp("otp_none", b"x".to_vec(), m, 10, 0)
            .await
            .unwrap(),
        ResendOutcome::NotFound
    );
    assert_eq!(db.store.cancel_otp("otp_none", T0).await.unwrap(), None);
    assert_eq!(db.store.queue_depth().await.unwrap(), 0);
}

#[tokio::test]
async fn claim_takes_oldest_due_and_expires_overdue() {
    let db = open();
    db.store
        .enqueue_text(text("msg_a", "+15550000001", T0), None, 0)
        .await
        .unwrap();
    create(&db, "otp_1", "+15550000002", T0 + 1).await;
    db.store
        .enqueue_text(text("msg_c", "+15550000003", T0 + 2), None, 0)
        .await
        .unwrap();

    let a = db.store.claim_next(T0 + 10).await.unwrap().unwrap();
    assert_eq!(a.id, "msg_a");
    assert_eq!(a.body, Body::Clear("hello from msg_a".into()));
    assert_eq!(a.attempts, 1);
    assert_eq!(status_of(&db, "msg_a").await, MessageStatus::Sending);
    // A temporary failure puts it back with a later due time; the next oldest goes first.
    db.store
        .mark_retry("msg_a", "network busy", T0 + 10 * MIN, T0 + 20)
        .await
        .unwrap();
    assert_eq!(db.store.next_due().await.unwrap(), Some(T0 + 1));
    // The OTP text's deadline (T0 + 1 + 5 min) has passed by now: it expires, never sent.
    let c = db.store.claim_next(T0 + 6 * MIN).await.unwrap().unwrap();
    assert_eq!(c.id, "msg_c");
    assert_eq!(status_of(&db, "msg_otp_1").await, MessageStatus::Expired);
    assert!(db.store.claim_next(T0 + 6 * MIN).await.unwrap().is_none());
    assert_eq!(db.store.next_due().await.unwrap(), Some(T0 + 10 * MIN));
    let a = db.store.claim_next(T0 + 10 * MIN).await.unwrap().unwrap();
    assert_eq!((a.id.as_str(), a.attempts), ("msg_a", 2));
    let events = db.store.message_events("msg_a").await.unwrap();
    let statuses: Vec<_> = events.iter().map(|e| e.status).collect();
    assert_eq!(
        statuses,
        [
            MessageStatus::Queued,
            MessageStatus::Sending,
            MessageStatus::Queued,
            MessageStatus::Sending
        ]
    );
    assert_eq!(events[2].detail.as_deref(), Some("retry: network busy"));
}

#[tokio::test]
async fn sent_wipes_sealed_body_and_reports_complete_delivery() {
    let db = open();
    let (o, mut m) = otp("otp_1", "+4915112345678", T0);
    m.parts = 2;
    db.store.create_otp(o, m, None, 0, 0).await.unwrap();
    let claimed = db.store.claim_next(T0).await.unwrap().unwrap();
    assert_eq!(claimed.body, Body::Sealed(vec![1, 2, 3, 4]));
    db.store
        .mark_sent("msg_otp_1", "modem0", vec![7, 8], T0 + 100)
        .await
        .unwrap();
    let sealed: Option<Vec<u8>> = raw(&db)
        .query_row(
            "SELECT sealed_body FROM messages WHERE id = 'msg_otp_1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sealed, None);
    let msg = db.store.get_message("msg_otp_1").await.unwrap().unwrap();
    assert_eq!(
        (msg.status, msg.sent_at, msg.modem_id.as_deref()),
        (MessageStatus::Sent, Some(T0 + 100), Some("modem0"))
    );

    let report = |mr: u8, recipient: &str, outcome: ReportOutcome, modem: &str| StatusReport {
        modem_id: modem.into(),
        message_reference: mr,
        recipient: recipient.into(),
        outcome,
        at: T0 + 5000,
    };
    // Wrong modem, wrong number: no match.
    assert_eq!(
        db.store
            .record_status_report(report(7, "+4915112345678", ReportOutcome::Delivered, "m1"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        db.store
            .record_status_report(report(
                7,
                "+4915100000000",
                ReportOutcome::Delivered,
                "modem0"
            ))
            .await
            .unwrap(),
        None
    );
    let first = db
        .store
        .record_status_report(report(
            7,
            "015112345678",
            ReportOutcome::Delivered,
            "modem0",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.status, MessageStatus::Sent, "one part still out");
    let second = db
        .store
        .record_status_report(report(
            8,
            "4915112345678",
            ReportOutcome::Delivered,
            "modem0",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.message_id, "msg_otp_1");
    assert_eq!(second.status, MessageStatus::Delivered);
    let msg = db.store.get_message("msg_otp_1").await.unwrap().unwrap();
    assert_eq!(msg.delivered_at, Some(T0 + 5000));
}

#[tokio::test]
async fn failed_report_fails_message_and_reports_match_most_recent_send() {
    let db = open();
    for id in ["msg_old", "msg_new"] {
        db.store
            .enqueue_text(text(id, "+15551234567", T0), None, 0)
            .await
            .unwrap();
    }
    db.store.claim_next(T0).await.unwrap();
    db.store
        .mark_sent("msg_old", "m0", vec![42], T0)
        .await
        .unwrap();
    db.store.claim_next(T0).await.unwrap();
    db.store
        .mark_sent("msg_new", "m0", vec![42], T0 + 1000)
        .await
        .unwrap();
    let effect = db
        .store
        .record_status_report(StatusReport {
            modem_id: "m0".into(),
            message_reference: 42,
            recipient: "+15551234567".into(),
            outcome: ReportOutcome::Failed("SC rejected (0x41)".into()),
            at: T0 + 2000,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(effect.message_id, "msg_new");
    assert_eq!(effect.status, MessageStatus::Failed);
    let m = db.store.get_message("msg_new").await.unwrap().unwrap();
    assert!(m.error.unwrap().contains("SC rejected"));
    assert_eq!(status_of(&db, "msg_old").await, MessageStatus::Sent);
    // Past the correlation window nothing matches.
    assert_eq!(
        db.store
            .record_status_report(StatusReport {
                modem_id: "m0".into(),
                message_reference: 42,
                recipient: "+15551234567".into(),
                outcome: ReportOutcome::Delivered,
                at: T0 + 1001 + REPORT_WINDOW_MS,
            })
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn interrupted_sends_are_resent_or_failed_per_policy() {
    for (policy, expect) in [
        (UnknownOutcomePolicy::Resend, MessageStatus::Queued),
        (UnknownOutcomePolicy::Fail, MessageStatus::Failed),
    ] {
        let db = open();
        create(&db, "otp_1", "+15551234567", T0).await;
        db.store.claim_next(T0).await.unwrap().unwrap();
        drop(db.store);
        // A new process finds the message still `sending`.
        let store = Store::open(&db.path, StoreOptions::default()).unwrap();
        assert_eq!(store.recover_interrupted(policy, T0 + 50).await.unwrap(), 1);
        assert_eq!(store.recover_interrupted(policy, T0 + 55).await.unwrap(), 0);
        let msg = store.get_message("msg_otp_1").await.unwrap().unwrap();
        assert_eq!(msg.status, expect);
        let events = store.message_events("msg_otp_1").await.unwrap();
        assert!(events.iter().any(|e| {
            e.detail
                .as_deref()
                .unwrap_or("")
                .contains("outcome unknown")
        }));
        if policy == UnknownOutcomePolicy::Resend {
            // The same sealed text (hence the same code) goes out again.
            let again = store.claim_next(T0 + 60).await.unwrap().unwrap();
            assert_eq!(again.body, Body::Sealed(vec![1, 2, 3, 4]));
            assert_eq!(again.attempts, 2);
        }
    }
}

#[tokio::test]
async fn unknown_outcome_during_run_follows_policy() {
    let db = open();
    db.store
        .enqueue_text(text("msg_a", "+15550000001", T0), None, 0)
        .await
        .unwrap();
    db.store.claim_next(T0).await.unwrap().unwrap();
    let st = db
        .store
        .mark_unknown_outcome("msg_a", "no +CMGS", UnknownOutcomePolicy::Fail, T0 + 1)
        .await
        .unwrap();
    assert_eq!(st, MessageStatus::Failed);
    assert_eq!(status_of(&db, "msg_a").await, MessageStatus::Failed);
}

#[tokio::test]
async fn list_messages_filters_and_pages_newest_first() {
    let db = open();
    for i in 0..5 {
        db.store
            .enqueue_text(
                text(&format!("msg_{i}"), "+15550000001", T0 + i * 1000),
                None,
                0,
            )
            .await
            .unwrap();
    }
    db.store
        .enqueue_text(text("msg_other", "+15550000002", T0 + 99_000), None, 0)
        .await
        .unwrap();
    db.store.claim_next(T0).await.unwrap();
    let page = db
        .store
        .list_messages(MessageFilter {
            to: Some("+15550000001".into()),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = page.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["msg_4", "msg_3"]);
    let next = db
        .store
        .list_messages(MessageFilter {
            to: Some("+15550000001".into()),
            before: Some(page[1].created_at),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = next.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["msg_2", "msg_1", "msg_0"]);
    let sending = db
        .store
        .list_messages(MessageFilter {
            status: Some(MessageStatus::Sending),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(sending.len(), 1);
    assert_eq!(sending[0].id, "msg_0");
    let counts = db.store.status_counts().await.unwrap();
    assert!(counts.contains(&(MessageStatus::Queued, 5)));
    assert!(counts.contains(&(MessageStatus::Sending, 1)));
    assert!(counts.contains(&(MessageStatus::Delivered, 0)));
}

#[tokio::test]
async fn prune_deletes_old_final_rows_and_masks_numbers() {
    let db = open();
    let day = DAY_MS;
    // Old and finished: deleted after 30 days.
    db.store
        .enqueue_text(text("msg_old", "+15551234567", T0), None, 0)
        .await
        .unwrap();
    db.store.claim_next(T0).await.unwrap();
    db.store
        .mark_sent("msg_old", "m0", vec![1], T0)
        .await
        .unwrap();
    // Old but still queued (deadline far away): kept.
    let mut stuck = text("msg_stuck", "+15551234567", T0 + 1);
    stuck.deadline = T0 + 400 * day;
    stuck.created_at = T0 + 1;
    db.store.enqueue_text(stuck, None, 0).await.unwrap();
    create(&db, "otp_old", "+15557654321", T0).await;
    db.store
        .cancel_otp("otp_old", T0 + 1)
        .await
        .unwrap()
        .unwrap();
    // 10 days old and final: masked, kept.
    db.store
        .enqueue_text(text("msg_mid", "+15551234567", T0 + 25 * day), None, 0)
        .await
        .unwrap();
    db.store
        .mark_failed("msg_mid", "rejected", T0 + 25 * day)
        .await
        .unwrap();
    // Fresh: untouched.
    db.store
        .enqueue_text(text("msg_new", "+15551234567", T0 + 35 * day - 1), None, 0)
        .await
        .unwrap();
    let stats = db
        .store
        .prune(T0 + 35 * day, Some(30 * day), Some(7 * day))
        .await
        .unwrap();
    assert_eq!(
        stats.messages_deleted, 2,
        "msg_old and the canceled OTP text"
    );
    assert_eq!(stats.otps_deleted, 1);
    assert!(db.store.get_message("msg_old").await.unwrap().is_none());
    assert!(db.store.message_events("msg_old").await.unwrap().is_empty());
    assert!(db.store.get_otp("otp_old").await.unwrap().is_none());
    // Still queued: the modem needs the number, so it is neither deleted nor masked.
    let stuck = db.store.get_message("msg_stuck").await.unwrap().unwrap();
    assert_eq!(stuck.to, "+15551234567");
    let mid = db.store.get_message("msg_mid").await.unwrap().unwrap();
    assert_eq!(mid.to, "+15*****67");
    let new = db.store.get_message("msg_new").await.unwrap().unwrap();
    assert_eq!(new.to, "+15551234567");
    assert_eq!(stats.numbers_masked, 1);
    // Idempotent: a second run changes nothing.
    let again = db
        .store
        .prune(T0 + 35 * day, Some(30 * day), Some(7 * day))
        .await
        .unwrap();
    assert_eq!(again, PruneStats::default());
    let parts: i64 = raw(&db)
        .query_row("SELECT COUNT(*) FROM message_parts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(parts, 0, "parts went with their message");
}

#[tokio::test]
async fn group_commit_answers_every_caller_and_isolates_failing_ops() {
    let db = open();
    let mut tasks = Vec::new();
    for i in 0..400 {
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            // Every tenth reuses an id, so its insert fails inside the batch.
            let id = if i % 10 == 9 {
                "msg_0".to_string()
            } else {
                format!("msg_{i}")
            };
            store
                .enqueue_text(text(&id, "+15550000001", T0 + i), None, 0)
                .await
        }));
    }
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(CreateOutcome::Created) => ok += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(StoreError::Sqlite(_)) => failed += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!((ok, failed), (360, 40));
    assert_eq!(db.store.queue_depth().await.unwrap(), 360);
    let rows: i64 = raw(&db)
        .query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 360);
}

#[tokio::test]
async fn concat_reference_rotates_and_survives_reopen() {
    let db = open();
    let first = db.store.next_concat_reference().await.unwrap();
    let second = db.store.next_concat_reference().await.unwrap();
    assert_eq!(second, first.wrapping_add(1));
    drop(db.store);
    let store = Store::open(&db.path, StoreOptions::default()).unwrap();
    assert_eq!(
        store.next_concat_reference().await.unwrap(),
        second.wrapping_add(1)
    );
    let mut last = second.wrapping_add(1);
    for _ in 0..300 {
        let next = store.next_concat_reference().await.unwrap();
        assert_eq!(next, last.wrapping_add(1));
        last = next;
    }
}

#[tokio::test]
async fn client_writes_sync_and_bookkeeping_does_not_under_balanced() {
    // PRAGMA synchronous reads 2 for FULL and 1 for NORMAL.
    async fn seen(store: &Sqlite, client: bool) -> i64 {
        store
            .write_as(client, |c| {
                Ok(c.query_row("PRAGMA synchronous", [], |r| r.get(0))?)
            })
            .await
            .unwrap()
    }
    for (durability, client, bookkeeping) in [
        (Durability::Balanced, 2, 1),
        (Durability::Full, 2, 2),
        (Durability::Normal, 1, 1),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(
            &dir.path().join("d.db"),
            StoreOptions {
                durability,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        for _ in 0..2 {
            assert_eq!(seen(&store, true).await, client, "{durability:?} client");
            assert_eq!(
                seen(&store, false).await,
                bookkeeping,
                "{durability:?} bookkeeping"
            );
        }
    }
}

#[tokio::test]
async fn sent_parts_count_is_what_the_modem_took() {
    let db = open();
    // Enqueued as one part, encoded as three.
    db.store
        .enqueue_text(text("msg_a", "+15551234567", T0), None, 0)
        .await
        .unwrap();
    db.store.claim_next(T0).await.unwrap().unwrap();
    db.store
        .mark_sent("msg_a", "m0", vec![10, 11, 12], T0)
        .await
        .unwrap();
    assert_eq!(
        db.store.get_message("msg_a").await.unwrap().unwrap().parts,
        3
    );
    for (mr, want) in [
        (10, MessageStatus::Sent),
        (12, MessageStatus::Sent),
        (11, MessageStatus::Delivered),
    ] {
        let effect = db
            .store
            .record_status_report(StatusReport {
                modem_id: "m0".into(),
                message_reference: mr,
                recipient: "+15551234567".into(),
                outcome: ReportOutcome::Delivered,
                at: T0 + 10,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(effect.status, want, "after TP-MR {mr}");
    }
}

fn wording(offsets: &[usize]) -> OtpWording {
    OtpWording {
        code_length: 6,
        code_offsets: offsets.to_vec(),
    }
}

fn extra_text(otp_id: &str, msg_id: &str, at: Millis, max_texts: u32) -> NewOtpText {
    let (_, mut msg) = otp(otp_id, "+15550000001", at);
    msg.id = msg_id.into();
    NewOtpText {
        otp_id: otp_id.into(),
        code_hmac: format!("hmac-{msg_id}").into_bytes(),
        msg,
        idem: None,
        max_texts,
        daily_cap: 0,
        queue_max: 0,
    }
}

#[tokio::test]
async fn worded_create_keeps_or_supersedes_a_pending_otp() {
    let db = open();
    let to = "+15550000001";
    let (o, m) = otp("otp_1", to, T0);
    let keep = |o, m, at_offsets: &[usize]| {
        db.store
            .create_otp_worded(o, m, wording(at_offsets), OnPending::Keep, None, 0, 0)
    };
    assert_eq!(
        keep(o, m, &[13]).await.unwrap(),
        CreateOtpOutcome::Done(CreateOutcome::Created)
    );
    assert_eq!(
        db.store.otp_wording("otp_1").await.unwrap(),
        Some(wording(&[13]))
    );
    // Keep: the pending OTP is named and nothing is written.
    let (o2, m2) = otp("otp_2", to, T0 + 1000);
    assert_eq!(
        keep(o2.clone(), m2.clone(), &[13]).await.unwrap(),
        CreateOtpOutcome::PendingExists {
            otp_id: "otp_1".into()
        }
    );
    assert!(db.store.get_otp("otp_2").await.unwrap().is_none());
    assert!(db.store.otp_wording("otp_2").await.unwrap().is_none());
    // Once the pending one has expired, Keep creates.
    let (o3, m3) = otp("otp_3", to, T0 + 6 * MIN);
    assert_eq!(
        keep(o3, m3, &[0, 20]).await.unwrap(),
        CreateOtpOutcome::Done(CreateOutcome::Created)
    );
    assert_eq!(
        db.store.otp_wording("otp_3").await.unwrap(),
        Some(wording(&[0, 20]))
    );
    // Supersede cancels it, as create_otp does.
    let (o4, m4) = otp("otp_4", to, T0 + 7 * MIN);
    assert_eq!(
        db.store
            .create_otp_worded(o4, m4, wording(&[13]), OnPending::Supersede, None, 0, 0)
            .await
            .unwrap(),
        CreateOtpOutcome::Done(CreateOutcome::Created)
    );
    assert_eq!(
        db.store.get_otp("otp_3").await.unwrap().unwrap().status,
        OtpStatus::Canceled
    );
    // OTPs from before schema 3 simply have no wording.
    create(&db, "otp_5", "+15550000009", T0).await;
    assert!(db.store.otp_wording("otp_5").await.unwrap().is_none());
}

#[tokio::test]
async fn added_texts_are_capped_per_otp_and_replay_their_key() {
    let db = open();
    create(&db, "otp_1", "+15550000001", T0).await;
    assert_eq!(
        db.store
            .add_otp_text(extra_text("otp_1", "msg_2", T0 + 1, 3))
            .await
            .unwrap(),
        AddTextOutcome::Added
    );
    let mut keyed = extra_text("otp_1", "msg_3", T0 + 2, 3);
    keyed.idem = Some(idem("k", b"h", "{\"answer\":3}"));
    assert_eq!(
        db.store.add_otp_text(keyed.clone()).await.unwrap(),
        AddTextOutcome::Added
    );
    // The cap counts every text, the first included.
    assert_eq!(
        db.store
            .add_otp_text(extra_text("otp_1", "msg_4", T0 + 3, 3))
            .await
            .unwrap(),
        AddTextOutcome::TextCap { texts: 3 }
    );
    // A retry of the keyed request gets its answer, even past the cap; another body conflicts.
    keyed.msg.id = "msg_5".into();
    assert_eq!(
        db.store.add_otp_text(keyed.clone()).await.unwrap(),
        AddTextOutcome::Replay("{\"answer\":3}".into())
    );
    keyed.idem = Some(idem("k", b"other", "{}"));
    assert_eq!(
        db.store.add_otp_text(keyed).await.unwrap(),
        AddTextOutcome::IdempotencyConflict
    );
    let o = db.store.get_otp("otp_1").await.unwrap().unwrap();
    assert_eq!(o.message_ids, ["msg_otp_1", "msg_2", "msg_3"]);
    // Unknown, expired.
    assert_eq!(
        db.store
            .add_otp_text(extra_text("otp_x", "msg_6", T0 + 4, 0))
            .await
            .unwrap(),
        AddTextOutcome::NotFound
    );
    assert_eq!(
        db.store
            .add_otp_text(extra_text("otp_1", "msg_7", T0 + 6 * MIN, 0))
            .await
            .unwrap(),
        AddTextOutcome::NotPending(OtpStatus::Expired)
    );
}

#[tokio::test]
async fn unknown_outcomes_are_counted_across_restarts_and_capped() {
    let db = open();
    create(&db, "otp_1", "+15551234567", T0).await;
    let rule = UnknownOutcomeRule {
        policy: UnknownOutcomePolicy::Resend,
        max_unknown: 2,
        max_attempts: 0,
        backoff_base_ms: 1_000,
        backoff_max_ms: 60_000,
    };
    db.store.claim_next(T0).await.unwrap().unwrap();
    drop(db.store);
    // First restart: requeued, but not due before the backoff.
    let store = Store::open(&db.path, StoreOptions::default()).unwrap();
    assert_eq!(store.recover_interrupted(rule, T0 + 10).await.unwrap(), 1);
    assert!(store.claim_next(T0 + 10).await.unwrap().is_none());
    let again = store.claim_next(T0 + 1_010).await.unwrap().unwrap();
    assert_eq!((again.attempts, again.unknown_outcomes), (2, 1));
    drop(store);
    // Second restart: the cap is reached, the message fails with the reason.
    let store = Store::open(&db.path, StoreOptions::default()).unwrap();
    assert_eq!(
        store.recover_interrupted(rule, T0 + 2_000).await.unwrap(),
        1
    );
    let msg = store.get_message("msg_otp_1").await.unwrap().unwrap();
    assert_eq!(msg.status, MessageStatus::Failed);
    assert!(msg.error.unwrap().contains("outcome unknown 2 times"));
}

#[tokio::test]
async fn a_report_matches_only_the_whole_number_and_a_plausible_time() {
    let db = open();
    db.store
        .enqueue_text(text("msg_a", "+4915112345678", T0), None, 0)
        .await
        .unwrap();
    db.store.claim_next(T0).await.unwrap().unwrap();
    db.store
        .mark_sent("msg_a", "modem0", vec![9], T0 + 100)
        .await
        .unwrap();
    let report = |recipient: &str, at: Millis| StatusReport {
        modem_id: "modem0".into(),
        message_reference: 9,
        recipient: recipient.into(),
        outcome: ReportOutcome::Delivered,
        at,
    };
    let matches = async |recipient: &str, at: Millis| {
        db.store
            .record_status_report(report(recipient, at))
            .await
            .unwrap()
            .is_some()
    };
    // A number that is only the tail of the recipient (issue 17.8).
    assert!(!matches("+5112345678", T0 + 5_000).await);
    // Before the send, and long after the text's validity (deadline + 1 h slack) ran out.
    assert!(!matches("+4915112345678", T0 + 50).await);
    assert!(!matches("+4915112345678", T0 + 24 * 60 * MIN + 61 * MIN).await);
    assert_eq!(status_of(&db, "msg_a").await, MessageStatus::Sent);
    // The real one: same modem, TP-MR, whole number, in time.
    assert!(matches("+4915112345678", T0 + 5_000).await);
    assert_eq!(status_of(&db, "msg_a").await, MessageStatus::Delivered);
}
