//! The store contract: queue. The dispatcher's claims and outcomes, status reports, recovery,
//! retention and the status page's aggregates, on both back ends (the scenarios of
//! `src/store/tests.rs` that the public API can express), then PostgreSQL-only cluster
//! scenarios: two or more nodes on one database.
//!
//! Scenarios take a [`Fx`] rather than a bare `Store` (hence [`queue_contract!`] beside
//! `contract!`): some assertions read columns the API never shows (a wiped sealed body, parts,
//! the claiming node), through the database itself. The fixture's `enqueue`, `message`,
//! `history`, `canceled_otp` and `otp_exists` use the public API; only while the PostgreSQL
//! messages and OTP families still answer "not built yet" (before their branches are merged)
//! do they write or read the rows with SQL instead ([`unbuilt`]). Once merged, that fallback is
//! dead and may go.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use simgate::model::Msisdn;
use simgate::store::*;

use crate::contract;

const MIN: Millis = 60_000;
const HOUR: Millis = 60 * MIN;
const T0: Millis = 1_800_000_000_000;

/// A scenario's store, with a way into its database for assertions the API cannot make.
struct Fx {
    store: Store,
    db: Db,
    _guard: crate::Guard,
}

enum Db {
    Sqlite(std::path::PathBuf),
    Postgres(tokio_postgres::Client),
}

impl Fx {
    fn sqlite() -> Fx {
        let (store, guard) = crate::sqlite();
        let crate::Guard::Dir(dir) = &guard else {
            unreachable!("a SQLite store lives in a directory")
        };
        let path = dir.path().join("simgate.db");
        Fx {
            store,
            db: Db::Sqlite(path),
            _guard: guard,
        }
    }

    async fn postgres() -> Option<Fx> {
        let url = crate::pg::shared()?.create_database();
        let store = crate::postgres_node(&url, "node-a").await;
        Some(Fx {
            store,
            db: Db::Postgres(raw_client(&url).await),
            _guard: crate::Guard::None,
        })
    }

    /// One integer from `sql`, which must read the same in both dialects.
    async fn scalar(&self, sql: &str) -> i64 {
        match &self.db {
            Db::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .query_row(sql, [], |r| r.get(0))
                .unwrap(),
            Db::Postgres(c) => c.query_one(sql, &[]).await.unwrap().get(0),
        }
    }

    async fn enqueue(&self, msg: NewMessage) {
        self.enqueue_with(msg, None).await;
    }

    async fn enqueue_with(&self, msg: NewMessage, idem: Option<Idempotency>) {
        let got = self.store.enqueue_text(msg.clone(), idem.clone(), 0).await;
        match (&self.db, got) {
            (_, Ok(outcome)) => assert_eq!(outcome, CreateOutcome::Created),
            (Db::Postgres(c), Err(e)) if unbuilt(&e) => raw_enqueue(c, &msg, idem.as_ref()).await,
            (_, Err(e)) => panic!("enqueue {}: {e}", msg.id),
        }
    }

    async fn message(&self, id: &str) -> Option<Message> {
        match (&self.db, self.store.get_message(id).await) {
            (_, Ok(m)) => m,
            (Db::Postgres(c), Err(e)) if unbuilt(&e) => raw_message(c, id).await,
            (_, Err(e)) => panic!("get_message {id}: {e}"),
        }
    }

    async fn status(&self, id: &str) -> MessageStatus {
        self.message(id).await.expect("message exists").status
    }

    async fn history(&self, id: &str) -> Vec<MessageEvent> {
        match (&self.db, self.store.message_events(id).await) {
            (_, Ok(h)) => h,
            (Db::Postgres(c), Err(e)) if unbuilt(&e) => raw_history(c, id).await,
            (_, Err(e)) => panic!("message_events {id}: {e}"),
        }
    }

    /// An OTP whose first text was canceled at `at + 1`.
    async fn canceled_otp(&self, id: &str, to: &str, at: Millis) {
        let (o, m) = otp(id, to, at);
        match (
            &self.db,
            self.store.create_otp(o, m.clone(), None, 0, 0).await,
        ) {
            (_, Ok(outcome)) => {
                assert!(matches!(outcome, CreateOutcome::Created), "{outcome:?}");
                let now = self.store.cancel_otp(id, at + 1).await.unwrap();
                assert_eq!(now, Some(OtpStatus::Canceled));
            }
            (Db::Postgres(c), Err(e)) if unbuilt(&e) => {
                c.execute(
                    "INSERT INTO otps (id, to_number, status, max_attempts, expires_at,
                         created_at, updated_at)
                     VALUES ($1, $2, 'canceled', 5, $3, $4, $5)",
                    &[&id, &to, &(at + 5 * MIN), &at, &(at + 1)],
                )
                .await
                .unwrap();
                raw_enqueue(c, &m, None).await;
                c.execute(
                    "UPDATE messages SET otp_id = $2, status = 'canceled' WHERE id = $1",
                    &[&m.id, &id],
                )
                .await
                .unwrap();
            }
            (_, Err(e)) => panic!("create_otp {id}: {e}"),
        }
    }

    async fn otp_exists(&self, id: &str) -> bool {
        match (&self.db, self.store.get_otp(id).await) {
            (_, Ok(o)) => o.is_some(),
            (Db::Postgres(c), Err(e)) if unbuilt(&e) => c
                .query_opt("SELECT 1 FROM otps WHERE id = $1", &[&id])
                .await
                .unwrap()
                .is_some(),
            (_, Err(e)) => panic!("get_otp {id}: {e}"),
        }
    }
}

/// Until the messages and OTP families of the PostgreSQL back end are merged, their methods
/// answer this; the fixture then writes and reads the rows itself, as the SQLite back end
/// would have (a message row and its `queued` history row).
fn unbuilt(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres(m) if m.ends_with("not built yet"))
}

async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    client
}

async fn raw_enqueue(c: &tokio_postgres::Client, m: &NewMessage, idem: Option<&Idempotency>) {
    let (body, sealed) = match &m.body {
        Body::Clear(t) => (Some(t.clone()), None),
        Body::Sealed(b) => (None, Some(b.clone())),
    };
    let seq: i64 = c
        .query_one(
            "INSERT INTO messages (id, to_number, kind, log_text, body, sealed_body, parts,
                 status, created_at, updated_at, deadline, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $8, $9, $8) RETURNING seq",
            &[
                &m.id,
                &m.to.as_str(),
                &m.kind.as_str(),
                &m.log_text,
                &body,
                &sealed,
                &i64::from(m.parts),
                &m.created_at,
                &m.deadline,
            ],
        )
        .await
        .unwrap()
        .get(0);
    c.execute(
        "INSERT INTO message_events (message_seq, at, status) VALUES ($1, $2, 'queued')",
        &[&seq, &m.created_at],
    )
    .await
    .unwrap();
    if let Some(i) = idem {
        c.execute(
            "INSERT INTO idempotency (scope, key, request_hash, response, created_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &i.scope,
                &i.key,
                &i.request_hash,
                &i.response,
                &m.created_at,
            ],
        )
        .await
        .unwrap();
    }
}

async fn raw_message(c: &tokio_postgres::Client, id: &str) -> Option<Message> {
    let r = c
        .query_opt(
            "SELECT id, otp_id, to_number, kind, log_text, parts, status, attempts, error,
                 created_at, sent_at, delivered_at, deadline, next_attempt_at, modem_id
             FROM messages WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()?;
    Some(Message {
        id: r.get(0),
        otp_id: r.get(1),
        to: r.get(2),
        kind: MessageKind::parse(r.get(3)).unwrap(),
        log_text: r.get(4),
        parts: r.get::<_, i64>(5) as u32,
        status: MessageStatus::parse(r.get(6)).unwrap(),
        attempts: r.get::<_, i64>(7) as u32,
        error: r.get(8),
        created_at: r.get(9),
        sent_at: r.get(10),
        delivered_at: r.get(11),
        deadline: r.get(12),
        next_attempt_at: r.get(13),
        modem_id: r.get(14),
    })
}

async fn raw_history(c: &tokio_postgres::Client, id: &str) -> Vec<MessageEvent> {
    c.query(
        "SELECT e.at, e.status, e.detail FROM message_events e
         JOIN messages m ON m.seq = e.message_seq WHERE m.id = $1 ORDER BY e.id",
        &[&id],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| MessageEvent {
        at: r.get(0),
        status: MessageStatus::parse(r.get(1)).unwrap(),
        detail: r.get(2),
    })
    .collect()
}

/// Runs each named scenario (`async fn name(fx: Fx)`) on both back ends, like `contract!`,
/// handing it a [`Fx`]; the scenarios stay plain functions, which rustfmt formats.
macro_rules! queue_contract {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Fx::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(fx) = super::Fx::postgres().await else {
                    return;
                };
                super::$name(fx).await;
            }
        }
    )*};
}

fn text(id: &str, to: &str, at: Millis) -> NewMessage {
    NewMessage {
        id: id.into(),
        to: Msisdn::parse(to).unwrap(),
        kind: MessageKind::Text,
        log_text: format!("hello from {id}"),
        body: Body::Clear(format!("hello from {id}")),
        parts: 1,
        created_at: at,
        deadline: at + 24 * HOUR,
    }
}

/// An OTP text as `create_otp` queues it: sealed, five minutes to live.
fn otp_text(id: &str, to: &str, at: Millis) -> NewMessage {
    NewMessage {
        id: id.into(),
        to: Msisdn::parse(to).unwrap(),
        kind: MessageKind::Otp,
        log_text: "Your code is ******.".into(),
        body: Body::Sealed(vec![1, 2, 3, 4]),
        parts: 1,
        created_at: at,
        deadline: at + 5 * MIN,
    }
}

fn otp(id: &str, to: &str, at: Millis) -> (NewOtp, NewMessage) {
    (
        NewOtp {
            id: id.into(),
            to: Msisdn::parse(to).unwrap(),
            code_hmac: format!("hmac-{id}").into_bytes(),
            max_attempts: 5,
            expires_at: at + 5 * MIN,
            created_at: at,
        },
        otp_text(&format!("msg_{id}"), to, at),
    )
}

fn report(modem: &str, mr: u8, to: &str, outcome: ReportOutcome, at: Millis) -> StatusReport {
    StatusReport {
        modem_id: modem.into(),
        message_reference: mr,
        recipient: to.into(),
        outcome,
        at,
    }
}

fn statuses(h: &[MessageEvent]) -> Vec<MessageStatus> {
    h.iter().map(|e| e.status).collect()
}

fn details(h: &[MessageEvent]) -> Vec<String> {
    h.iter().filter_map(|e| e.detail.clone()).collect()
}

queue_contract!(
    claim_takes_oldest_due_and_expires_overdue,
    expire_overdue_expires_only_queued_messages_past_their_deadline,
    sent_wipes_sealed_body_and_reports_complete_delivery,
    failed_report_fails_message_and_reports_match_most_recent_send,
    interrupted_sends_are_resent_per_policy,
    interrupted_sends_are_failed_per_policy,
    unknown_outcome_during_run_follows_policy,
    unknown_outcomes_are_counted_and_capped,
    not_taken_gives_the_attempt_back,
    sent_parts_count_is_what_the_modem_took,
    a_partial_send_is_counted_and_its_parts_answer_reports,
    a_report_matches_only_the_whole_number_and_a_plausible_time,
    prune_deletes_old_final_rows_and_masks_numbers,
    prune_masks_the_numbers_of_old_parts,
    status_page_aggregates_count_the_window_only,
);

async fn claim_takes_oldest_due_and_expires_overdue(fx: Fx) {
    let s = &fx.store;
    fx.enqueue(text("msg_a", "+15550000001", T0)).await;
    fx.enqueue(otp_text("msg_otp", "+15550000002", T0 + 1))
        .await;
    fx.enqueue(text("msg_c", "+15550000003", T0 + 2)).await;
    assert_eq!(s.oldest_queued().await.unwrap(), Some(T0));
    assert_eq!(s.next_expiry().await.unwrap(), Some(T0 + 1 + 5 * MIN));

    let a = s.claim_next(T0 + 10).await.unwrap().unwrap();
    assert_eq!(a.id, "msg_a");
    assert_eq!(a.body, Body::Clear("hello from msg_a".into()));
    assert_eq!((a.attempts, a.parts, a.created_at), (1, 1, T0));
    assert_eq!(fx.status("msg_a").await, MessageStatus::Sending);
    // A temporary failure puts it back with a later due time; the next oldest goes first.
    s.mark_retry("msg_a", "network busy", T0 + 10 * MIN, T0 + 20)
        .await
        .unwrap();
    assert_eq!(s.next_due().await.unwrap(), Some(T0 + 1));
    // The OTP text's deadline (T0 + 1 + 5 min) has passed by now: it expires, never sent.
    let c = s.claim_next(T0 + 6 * MIN).await.unwrap().unwrap();
    assert_eq!(c.id, "msg_c");
    assert_eq!(fx.status("msg_otp").await, MessageStatus::Expired);
    assert_eq!(
        fx.message("msg_otp").await.unwrap().error.as_deref(),
        Some("deadline passed")
    );
    assert!(s.claim_next(T0 + 6 * MIN).await.unwrap().is_none());
    assert_eq!(s.next_due().await.unwrap(), Some(T0 + 10 * MIN));
    let a = s.claim_next(T0 + 10 * MIN).await.unwrap().unwrap();
    assert_eq!((a.id.as_str(), a.attempts), ("msg_a", 2));
    let h = fx.history("msg_a").await;
    assert_eq!(
        statuses(&h),
        [
            MessageStatus::Queued,
            MessageStatus::Sending,
            MessageStatus::Queued,
            MessageStatus::Sending
        ]
    );
    assert_eq!(h[2].detail.as_deref(), Some("retry: network busy"));
    assert_eq!(s.next_due().await.unwrap(), None);
    assert_eq!(s.oldest_queued().await.unwrap(), None);
}

async fn expire_overdue_expires_only_queued_messages_past_their_deadline(fx: Fx) {
    let s = &fx.store;
    fx.enqueue(otp_text("msg_1", "+15550000001", T0)).await;
    fx.enqueue(otp_text("msg_2", "+15550000002", T0 + MIN))
        .await;
    fx.enqueue(otp_text("msg_3", "+15550000003", T0 + 2 * MIN))
        .await;
    s.claim_next(T0).await.unwrap().unwrap();
    assert_eq!(s.expire_overdue(T0 + 5 * MIN).await.unwrap(), 0);
    // msg_1 is being sent: its deadline is the sender's business.
    assert_eq!(s.expire_overdue(T0 + 6 * MIN).await.unwrap(), 1);
    assert_eq!(fx.status("msg_1").await, MessageStatus::Sending);
    assert_eq!(fx.status("msg_2").await, MessageStatus::Expired);
    assert_eq!(s.next_expiry().await.unwrap(), Some(T0 + 7 * MIN));
    assert_eq!(s.expire_overdue(T0 + 7 * MIN).await.unwrap(), 1);
    assert_eq!(s.next_expiry().await.unwrap(), None);
    s.mark_expired("msg_1", "deadline passed before sending", T0 + 7 * MIN)
        .await
        .unwrap();
    let m = fx.message("msg_1").await.unwrap();
    assert_eq!(m.status, MessageStatus::Expired);
    assert_eq!(m.error.as_deref(), Some("deadline passed before sending"));
}

async fn sent_wipes_sealed_body_and_reports_complete_delivery(fx: Fx) {
    let s = &fx.store;
    let mut m = otp_text("msg_otp_1", "+4915112345678", T0);
    m.parts = 2;
    fx.enqueue(m).await;
    let claimed = s.claim_next(T0).await.unwrap().unwrap();
    assert_eq!(claimed.body, Body::Sealed(vec![1, 2, 3, 4]));
    assert_eq!(claimed.kind, MessageKind::Otp);
    s.mark_sent("msg_otp_1", "modem0", vec![7, 8], T0 + 100)
        .await
        .unwrap();
    let sealed = fx
        .scalar("SELECT COUNT(*) FROM messages WHERE id = 'msg_otp_1' AND sealed_body IS NOT NULL")
        .await;
    assert_eq!(sealed, 0);
    let msg = fx.message("msg_otp_1").await.unwrap();
    assert_eq!(
        (msg.status, msg.sent_at, msg.modem_id.as_deref(), msg.error),
        (MessageStatus::Sent, Some(T0 + 100), Some("modem0"), None)
    );
    let h = fx.history("msg_otp_1").await;
    assert_eq!(
        h.last().unwrap().detail.as_deref(),
        Some("modem modem0, TP-MR 7,8")
    );

    let at = T0 + 5000;
    // Wrong modem, wrong number: no match.
    for r in [
        report("m1", 7, "+4915112345678", ReportOutcome::Delivered, at),
        report("modem0", 7, "+4915100000000", ReportOutcome::Delivered, at),
    ] {
        assert_eq!(s.record_status_report(r).await.unwrap(), None);
    }
    let pending = s
        .record_status_report(report(
            "modem0",
            8,
            "+4915112345678",
            ReportOutcome::Pending("SC busy".into()),
            at,
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pending.status, MessageStatus::Sent);
    let first = s
        .record_status_report(report(
            "modem0",
            7,
            "015112345678",
            ReportOutcome::Delivered,
            at,
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.status, MessageStatus::Sent, "one part still out");
    let second = s
        .record_status_report(report(
            "modem0",
            8,
            "4915112345678",
            ReportOutcome::Delivered,
            at,
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.message_id, "msg_otp_1");
    assert_eq!(second.status, MessageStatus::Delivered);
    let msg = fx.message("msg_otp_1").await.unwrap();
    assert_eq!(msg.delivered_at, Some(at));
    let notes = details(&fx.history("msg_otp_1").await);
    assert!(
        notes.contains(&"part 2 of 2: still trying (SC busy)".to_owned()),
        "{notes:?}"
    );
    assert!(
        notes.contains(&"part 1 of 2 delivered".to_owned()),
        "{notes:?}"
    );
    assert_eq!(
        statuses(&fx.history("msg_otp_1").await).last(),
        Some(&MessageStatus::Delivered)
    );
}

async fn failed_report_fails_message_and_reports_match_most_recent_send(fx: Fx) {
    let s = &fx.store;
    for id in ["msg_old", "msg_new"] {
        fx.enqueue(text(id, "+15551234567", T0)).await;
    }
    s.claim_next(T0).await.unwrap();
    s.mark_sent("msg_old", "m0", vec![42], T0).await.unwrap();
    s.claim_next(T0).await.unwrap();
    s.mark_sent("msg_new", "m0", vec![42], T0 + 1000)
        .await
        .unwrap();
    let effect = s
        .record_status_report(report(
            "m0",
            42,
            "+15551234567",
            ReportOutcome::Failed("SC rejected (0x41)".into()),
            T0 + 2000,
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(effect.message_id, "msg_new");
    assert_eq!(effect.status, MessageStatus::Failed);
    let m = fx.message("msg_new").await.unwrap();
    assert_eq!(
        m.error.as_deref(),
        Some("part 1 of 1 not delivered: SC rejected (0x41)")
    );
    assert_eq!(fx.status("msg_old").await, MessageStatus::Sent);
    // Past the correlation window nothing matches.
    let late = report(
        "m0",
        42,
        "+15551234567",
        ReportOutcome::Delivered,
        T0 + 1001 + REPORT_WINDOW_MS,
    );
    assert_eq!(s.record_status_report(late).await.unwrap(), None);
}

async fn interrupted_sends_are_resent_per_policy(fx: Fx) {
    let s = &fx.store;
    fx.enqueue(otp_text("msg_otp_1", "+15551234567", T0)).await;
    s.claim_next(T0).await.unwrap().unwrap();
    // As at the start of the next process: the message is still `sending`.
    assert_eq!(
        s.recover_interrupted(UnknownOutcomePolicy::Resend, T0 + 50)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.recover_interrupted(UnknownOutcomePolicy::Resend, T0 + 55)
            .await
            .unwrap(),
        0
    );
    assert_eq!(fx.status("msg_otp_1").await, MessageStatus::Queued);
    let notes = details(&fx.history("msg_otp_1").await);
    assert!(
        notes.contains(&"outcome unknown: interrupted by a restart while sending".to_owned()),
        "{notes:?}"
    );
    assert!(
        notes.contains(&"resend after unknown outcome 1 in 0 ms".to_owned()),
        "{notes:?}"
    );
    // The same sealed text (hence the same code) goes out again.
    let again = s.claim_next(T0 + 60).await.unwrap().unwrap();
    assert_eq!(again.body, Body::Sealed(vec![1, 2, 3, 4]));
    assert_eq!((again.attempts, again.unknown_outcomes), (2, 1));
}

async fn interrupted_sends_are_failed_per_policy(fx: Fx) {
    let s = &fx.store;
    fx.enqueue(otp_text("msg_otp_1", "+15551234567", T0)).await;
    s.claim_next(T0).await.unwrap().unwrap();
    assert_eq!(
        s.recover_interrupted(UnknownOutcomePolicy::Fail, T0 + 50)
            .await
            .unwrap(),
        1
    );
    let m = fx.message("msg_otp_1").await.unwrap();
    assert_eq!(m.status, MessageStatus::Failed);
    assert_eq!(
        m.error.as_deref(),
        Some("outcome unknown: interrupted by a restart while sending")
    );
    assert!(s.claim_next(T0 + 60).await.unwrap().is_none());
    // Once recovered, nothing of it is left for another start.
    assert_eq!(
        s.recover_interrupted(UnknownOutcomePolicy::Fail, T0 + 70)
            .await
            .unwrap(),
        0
    );
    // No other node exists on SQLite, and on PostgreSQL this node's claims are alive.
    assert_eq!(
        s.recover_abandoned(UnknownOutcomePolicy::Fail, T0 + 70)
            .await
            .unwrap(),
        0
    );
}

async fn unknown_outcome_during_run_follows_policy(fx: Fx) {
    let s = &fx.store;
    fx.enqueue(text("msg_a", "+15550000001", T0)).await;
    fx.enqueue(text("msg_b", "+15550000002", T0)).await;
    s.claim_next(T0).await.unwrap().unwrap();
    let st = s
        .mark_unknown_outcome("msg_a", "no +CMGS", UnknownOutcomePolicy::Fail, T0 + 1)
        .await
        .unwrap();
    assert_eq!(st, MessageStatus::Failed);
    assert_eq!(fx.status("msg_a").await, MessageStatus::Failed);
    let rule = UnknownOutcomeRule {
        policy: UnknownOutcomePolicy::Resend,
        max_unknown: 5,
        max_attempts: 0,
        backoff_base_ms: 1_000,
        backoff_max_ms: 60_000,
    };
    s.claim_next(T0 + 2).await.unwrap().unwrap();
    let st = s
        .mark_unknown_outcome("msg_b", "no +CMGS", rule, T0 + 3)
        .await
        .unwrap();
    assert_eq!(st, MessageStatus::Queued);
    let m = fx.message("msg_b").await.unwrap();
    assert_eq!(
        (m.next_attempt_at, m.error.as_deref()),
        (T0 + 1_003, Some("outcome unknown: no +CMGS"))
    );
    assert!(s.claim_next(T0 + 1_002).await.unwrap().is_none());
    let again = s.claim_next(T0 + 1_003).await.unwrap().unwrap();
    assert_eq!(
        (again.id.as_str(), again.unknown_outcomes, again.attempts),
        ("msg_b", 1, 2)
    );
    // The attempt cap ends the resends.
    let capped = UnknownOutcomeRule {
        max_attempts: 2,
        ..rule
    };
    let st = s
        .mark_unknown_outcome("msg_b", "no +CMGS", capped, T0 + 2_000)
        .await
        .unwrap();
    assert_eq!(st, MessageStatus::Failed);
    let m = fx.message("msg_b").await.unwrap();
    assert_eq!(
        m.error.as_deref(),
        Some("gave up after 2 attempts; last: outcome unknown: no +CMGS")
    );
}

async fn unknown_outcomes_are_counted_and_capped(fx: Fx) {
    let s = &fx.store;
    fx.enqueue(otp_text("msg_otp_1", "+15551234567", T0)).await;
    let rule = UnknownOutcomeRule {
        policy: UnknownOutcomePolicy::Resend,
        max_unknown: 2,
        max_attempts: 0,
        backoff_base_ms: 1_000,
        backoff_max_ms: 60_000,
    };
    s.claim_next(T0).await.unwrap().unwrap();
    // First recovery: requeued, but not due before the backoff.
    assert_eq!(s.recover_interrupted(rule, T0 + 10).await.unwrap(), 1);
    assert!(s.claim_next(T0 + 10).await.unwrap().is_none());
    let again = s.claim_next(T0 + 1_010).await.unwrap().unwrap();
    assert_eq!((again.attempts, again.unknown_outcomes), (2, 1));
    // Second: the cap is reached, the message fails with the reason.
    assert_eq!(s.recover_interrupted(rule, T0 + 2_000).await.unwrap(), 1);
    let msg = fx.message("msg_otp_1").await.unwrap();
    assert_eq!(msg.status, MessageStatus::Failed);
    assert!(msg.error.unwrap().contains("outcome unknown 2 times"));
}

async fn not_taken_gives_the_attempt_back(fx: Fx) {
    let s = &fx.store;
    fx.enqueue(text("msg_a", "+15550000001", T0)).await;
    let a = s.claim_next(T0).await.unwrap().unwrap();
    assert_eq!(a.attempts, 1);
    s.mark_not_taken("msg_a", "m0 not ready", T0 + 5)
        .await
        .unwrap();
    let m = fx.message("msg_a").await.unwrap();
    assert_eq!(
        (m.status, m.attempts, m.next_attempt_at),
        (MessageStatus::Queued, 0, T0 + 5)
    );
    assert_eq!(m.error.as_deref(), Some("m0 not ready"));
    assert_eq!(
        fx.history("msg_a").await.last().unwrap().detail.as_deref(),
        Some("retry: m0 not ready")
    );
    let a = s.claim_next(T0 + 5).await.unwrap().unwrap();
    assert_eq!(a.attempts, 1);
    s.mark_failed("msg_a", "m0: CMS ERROR 500", T0 + 6)
        .await
        .unwrap();
    let m = fx.message("msg_a").await.unwrap();
    assert_eq!(
        (m.status, m.error.as_deref()),
        (MessageStatus::Failed, Some("m0: CMS ERROR 500"))
    );
}

async fn sent_parts_count_is_what_the_modem_took(fx: Fx) {
    let s = &fx.store;
    // Enqueued as one part, encoded as three.
    fx.enqueue(text("msg_a", "+15551234567", T0)).await;
    s.claim_next(T0).await.unwrap().unwrap();
    s.mark_sent("msg_a", "m0", vec![10, 11, 12], T0)
        .await
        .unwrap();
    assert_eq!(fx.message("msg_a").await.unwrap().parts, 3);
    assert_eq!(fx.scalar("SELECT COUNT(*) FROM message_parts").await, 3);
    for (mr, want) in [
        (10, MessageStatus::Sent),
        (12, MessageStatus::Sent),
        (11, MessageStatus::Delivered),
    ] {
        let effect = s
            .record_status_report(report(
                "m0",
                mr,
                "+15551234567",
                ReportOutcome::Delivered,
                T0 + 10,
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(effect.status, want, "after TP-MR {mr}");
    }
}

async fn a_partial_send_is_counted_and_its_parts_answer_reports(fx: Fx) {
    let s = &fx.store;
    let mut m = text("msg_a", "+15551234567", T0);
    m.parts = 3;
    fx.enqueue(m).await;
    s.claim_next(T0).await.unwrap().unwrap();
    assert_eq!(
        s.record_partial_send("msg_a", "m0", vec![20, 21], T0 + 1)
            .await
            .unwrap(),
        1
    );
    let last = fx.history("msg_a").await.pop().unwrap();
    assert_eq!(last.status, MessageStatus::Sending);
    assert_eq!(
        last.detail.as_deref(),
        Some("partial send #1: modem m0 accepted part(s) 1..=2 (TP-MR 20,21)")
    );
    // A report of an accepted part is noted while the message waits for its resend.
    s.mark_retry("msg_a", "m0: part 3 failed", T0 + 10, T0 + 2)
        .await
        .unwrap();
    let effect = s
        .record_status_report(report(
            "m0",
            21,
            "+15551234567",
            ReportOutcome::Delivered,
            T0 + 3,
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(effect.status, MessageStatus::Queued);
    let again = s.claim_next(T0 + 10).await.unwrap().unwrap();
    assert_eq!((again.partial_sends, again.attempts), (1, 2));
    assert_eq!(
        s.record_partial_send("msg_a", "m0", vec![30], T0 + 11)
            .await
            .unwrap(),
        2
    );
    // The resend's parts replace the first send's: its TP-MRs are the ones that match now.
    s.mark_sent("msg_a", "m0", vec![30, 31, 32], T0 + 12)
        .await
        .unwrap();
    let stale = report("m0", 20, "+15551234567", ReportOutcome::Delivered, T0 + 13);
    assert_eq!(s.record_status_report(stale).await.unwrap(), None);
    for mr in [30, 31, 32] {
        s.record_status_report(report(
            "m0",
            mr,
            "+15551234567",
            ReportOutcome::Delivered,
            T0 + 14,
        ))
        .await
        .unwrap()
        .unwrap();
    }
    assert_eq!(fx.status("msg_a").await, MessageStatus::Delivered);
}

async fn a_report_matches_only_the_whole_number_and_a_plausible_time(fx: Fx) {
    let s = &fx.store;
    fx.enqueue(text("msg_a", "+4915112345678", T0)).await;
    s.claim_next(T0).await.unwrap().unwrap();
    s.mark_sent("msg_a", "modem0", vec![9], T0 + 100)
        .await
        .unwrap();
    let matches = async |recipient: &str, at: Millis| {
        s.record_status_report(report("modem0", 9, recipient, ReportOutcome::Delivered, at))
            .await
            .unwrap()
            .is_some()
    };
    // A number that is only the tail of the recipient.
    assert!(!matches("+5112345678", T0 + 5_000).await);
    // Before the send, and long after the text's validity (deadline + 1 h slack) ran out.
    assert!(!matches("+4915112345678", T0 + 50).await);
    assert!(!matches("+4915112345678", T0 + 24 * HOUR + 61 * MIN).await);
    assert_eq!(fx.status("msg_a").await, MessageStatus::Sent);
    // The real one: same modem, TP-MR, whole number, in time.
    assert!(matches("+4915112345678", T0 + 5_000).await);
    assert_eq!(fx.status("msg_a").await, MessageStatus::Delivered);
}

async fn prune_deletes_old_final_rows_and_masks_numbers(fx: Fx) {
    let s = &fx.store;
    let day = DAY_MS;
    // Old and finished: deleted after 30 days, with its idempotency record (a day).
    let idem = Idempotency {
        scope: "token-digest".into(),
        key: "k1".into(),
        request_hash: vec![1, 2],
        response: "{}".into(),
    };
    fx.enqueue_with(text("msg_old", "+15551234567", T0), Some(idem))
        .await;
    s.claim_next(T0).await.unwrap();
    s.mark_sent("msg_old", "m0", vec![1], T0).await.unwrap();
    // Old but still queued (deadline far away): kept.
    let mut stuck = text("msg_stuck", "+15551234567", T0 + 1);
    stuck.deadline = T0 + 400 * day;
    fx.enqueue(stuck).await;
    fx.canceled_otp("otp_old", "+15557654321", T0).await;
    // 10 days old and final: masked, kept.
    fx.enqueue(text("msg_mid", "+15551234567", T0 + 25 * day))
        .await;
    s.mark_failed("msg_mid", "rejected", T0 + 25 * day)
        .await
        .unwrap();
    // Fresh: untouched.
    fx.enqueue(text("msg_new", "+15551234567", T0 + 35 * day - 1))
        .await;
    let stats = s
        .prune(T0 + 35 * day, Some(30 * day), Some(7 * day))
        .await
        .unwrap();
    assert_eq!(
        stats.messages_deleted, 2,
        "msg_old and the canceled OTP text"
    );
    assert_eq!(stats.otps_deleted, 1);
    assert_eq!(stats.idempotency_deleted, 1);
    assert!(fx.message("msg_old").await.is_none());
    assert!(fx.history("msg_old").await.is_empty());
    assert!(!fx.otp_exists("otp_old").await);
    // Still queued: the modem needs the number, so it is neither deleted nor masked.
    assert_eq!(fx.message("msg_stuck").await.unwrap().to, "+15551234567");
    assert_eq!(fx.message("msg_mid").await.unwrap().to, "+15*****67");
    assert_eq!(fx.message("msg_new").await.unwrap().to, "+15551234567");
    assert_eq!(stats.numbers_masked, 1);
    // Idempotent: a second run changes nothing (events aside: PostgreSQL may number more
    // of them meanwhile, which makes them prunable).
    let again = s
        .prune(T0 + 35 * day, Some(30 * day), Some(7 * day))
        .await
        .unwrap();
    assert_eq!(
        again,
        PruneStats {
            events_deleted: again.events_deleted,
            ..PruneStats::default()
        }
    );
    assert_eq!(
        fx.scalar("SELECT COUNT(*) FROM message_parts").await,
        0,
        "parts went with their message"
    );
    assert_eq!(fx.scalar("SELECT COUNT(*) FROM idempotency").await, 0);
}

async fn prune_masks_the_numbers_of_old_parts(fx: Fx) {
    let s = &fx.store;
    fx.enqueue(text("msg_a", "+15551234567", T0)).await;
    s.claim_next(T0).await.unwrap();
    s.mark_sent("msg_a", "m0", vec![3], T0).await.unwrap();
    let stats = s
        .prune(T0 + 8 * DAY_MS, None, Some(7 * DAY_MS))
        .await
        .unwrap();
    assert_eq!(
        (stats.messages_deleted, stats.numbers_masked),
        (0, 2),
        "message and part"
    );
    assert_eq!(
        fx.scalar("SELECT COUNT(*) FROM message_parts WHERE recipient = '+15*****67'")
            .await,
        1
    );
}

async fn status_page_aggregates_count_the_window_only(fx: Fx) {
    let s = &fx.store;
    // T0 is a whole hour.
    let (h10, h11) = (T0 + 10 * HOUR, T0 + 11 * HOUR);
    fx.enqueue(text("msg_1", "+15550000001", h10 + 5)).await;
    fx.enqueue(text("msg_2", "+15550000002", h10 + 50)).await;
    fx.enqueue(text("msg_3", "+15550000003", h11)).await;
    fx.enqueue(text("msg_4", "+15550000004", h11 + 7)).await;
    fx.enqueue(text("msg_0", "+15550000005", T0 + 9 * HOUR))
        .await;
    // Delivered 900 and 100 ms after being sent.
    for (id, mr, sent, delivered) in [
        ("msg_1", 1, h10 + 6, h10 + 906),
        ("msg_2", 2, h10 + 60, h10 + 160),
    ] {
        assert_eq!(s.claim_next(h11 + 10).await.unwrap().unwrap().id, id);
        s.mark_sent(id, "m0", vec![mr], sent).await.unwrap();
        let to = fx.message(id).await.unwrap().to;
        s.record_status_report(report("m0", mr, &to, ReportOutcome::Delivered, delivered))
            .await
            .unwrap()
            .unwrap();
    }
    s.mark_failed("msg_3", "rejected", h11 + 1).await.unwrap();
    s.mark_failed("msg_0", "rejected", h11 + 1).await.unwrap();
    assert_eq!(
        s.hourly_outcomes(h10).await.unwrap(),
        vec![
            HourCount {
                hour: h10,
                status: MessageStatus::Delivered,
                count: 2
            },
            HourCount {
                hour: h11,
                status: MessageStatus::Failed,
                count: 1
            },
            HourCount {
                hour: h11,
                status: MessageStatus::Queued,
                count: 1
            },
        ]
    );
    assert_eq!(
        s.delivery_latencies(h10).await.unwrap(),
        vec![
            Latency {
                created_at: h10 + 50,
                millis: 100
            },
            Latency {
                created_at: h10 + 5,
                millis: 900
            },
        ]
    );
    assert_eq!(s.oldest_queued().await.unwrap(), Some(h11 + 7));
}

contract! {
    async fn concat_reference_rotates_through_every_octet(store: Store) {
        let first = store.next_concat_reference().await.unwrap();
        let mut last = first;
        for _ in 0..300 {
            let next = store.next_concat_reference().await.unwrap();
            assert_eq!(next, last.wrapping_add(1));
            last = next;
        }
    }

    async fn an_unknown_message_is_a_broken_invariant(store: Store) {
        let err = store.mark_sent("msg_nope", "m0", vec![1], T0).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        let err = store.mark_retry("msg_nope", "x", T0, T0).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    }
}

// --- PostgreSQL only: several nodes on one database ---

fn wall_now() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as Millis
}

/// A fresh database and a raw connection to it, or `None` without PostgreSQL.
async fn cluster_db() -> Option<(String, tokio_postgres::Client)> {
    let url = crate::pg::shared()?.create_database();
    // The first node migrates the database; the raw connection needs its tables.
    drop(crate::postgres_node(&url, "migrator").await);
    let raw = raw_client(&url).await;
    Some((url, raw))
}

async fn node(url: &str, name: &str, lease_ms: Millis) -> Store {
    Store::connect_postgres(PgOptions {
        lease_ms,
        ..PgOptions::new(url, name)
    })
    .await
    .expect("connect PostgreSQL node")
}

/// Who holds message `id` and until when.
async fn holder(raw: &tokio_postgres::Client, id: &str) -> (String, Option<String>, Option<i64>) {
    let r = raw
        .query_one(
            "SELECT status, node_id, lease_until FROM messages WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

async fn enqueue_raw(raw: &tokio_postgres::Client, msg: NewMessage) {
    raw_enqueue(raw, &msg, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_concurrent_claims_take_each_message_exactly_once() {
    let Some((url, raw)) = cluster_db().await else {
        return;
    };
    const N: usize = 300;
    let now = wall_now();
    for i in 0..N {
        enqueue_raw(&raw, text(&format!("msg_{i:04}"), "+15550000001", now)).await;
    }
    let nodes = [
        node(&url, "node-a", 30_000).await,
        node(&url, "node-b", 30_000).await,
    ];
    let start = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for k in 0..8 {
        let store = nodes[k % 2].clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut got = Vec::new();
            while let Some(c) = store.claim_next(wall_now()).await.unwrap() {
                got.push(c.id);
            }
            (k % 2, got)
        }));
    }
    let mut seen = HashSet::new();
    let mut per_node = [0usize; 2];
    for t in tasks {
        let (n, ids) = t.await.unwrap();
        per_node[n] += ids.len();
        for id in ids {
            let (status, holder_node, lease) = holder(&raw, &id).await;
            assert_eq!(status, "sending");
            assert_eq!(
                holder_node.as_deref(),
                Some(["node-a", "node-b"][n]),
                "{id}"
            );
            assert!(lease.unwrap() > now, "{id} has a lease");
            assert!(seen.insert(id.clone()), "{id} claimed twice");
        }
    }
    assert_eq!(seen.len(), N, "every message claimed");
    assert!(
        per_node.iter().all(|&n| n > 0),
        "both nodes claimed: {per_node:?}"
    );
    let claims: i64 = raw
        .query_one(
            "SELECT COUNT(*) FROM message_events WHERE status = 'sending'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(claims, N as i64, "one claim in each message's history");
    let attempts: i64 = raw
        .query_one("SELECT MAX(attempts) FROM messages", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_dead_nodes_claim_is_recovered_by_a_survivor_per_policy() {
    for policy in [UnknownOutcomePolicy::Resend, UnknownOutcomePolicy::Fail] {
        let Some((url, raw)) = cluster_db().await else {
            return;
        };
        let now = wall_now();
        enqueue_raw(&raw, otp_text("msg_dead", "+15550000001", now)).await;
        enqueue_raw(&raw, otp_text("msg_live", "+15550000002", now)).await;
        // Renewed every 2/3 s: a busy machine may delay a renewal by a second without a live
        // node losing its claim.
        let survivor = node(&url, "node-b", 2_000).await;
        let live = node(&url, "node-c", 2_000).await;
        let dead = node(&url, "node-a", 2_000).await;
        assert_eq!(
            dead.claim_next(wall_now()).await.unwrap().unwrap().id,
            "msg_dead"
        );
        assert_eq!(
            live.claim_next(wall_now()).await.unwrap().unwrap().id,
            "msg_live"
        );
        // node-a dies: its renewal stops with its last handle.
        drop(dead);
        assert_eq!(
            survivor
                .recover_abandoned(policy, wall_now())
                .await
                .unwrap(),
            0,
            "leases still run"
        );
        tokio::time::sleep(Duration::from_millis(3_000)).await;
        assert_eq!(
            survivor
                .recover_abandoned(policy, wall_now())
                .await
                .unwrap(),
            1,
            "{policy:?}"
        );
        // Once recovered, it is no one's to recover again.
        assert_eq!(
            survivor
                .recover_abandoned(policy, wall_now())
                .await
                .unwrap(),
            0
        );
        // node-c lives: its lease was renewed past the instants node-a's ran out.
        let (status, by, lease) = holder(&raw, "msg_live").await;
        assert_eq!(
            (status.as_str(), by.as_deref()),
            ("sending", Some("node-c"))
        );
        assert!(lease.unwrap() > wall_now(), "node-c's lease is renewed");
        let h = raw_history(&raw, "msg_dead").await;
        assert!(
            details(&h).contains(
                &"outcome unknown: interrupted: node node-a stopped renewing its claim".to_owned()
            ),
            "{h:?}"
        );
        let m = raw_message(&raw, "msg_dead").await.unwrap();
        match policy {
            UnknownOutcomePolicy::Resend => {
                assert_eq!(m.status, MessageStatus::Queued);
                let again = survivor.claim_next(wall_now()).await.unwrap().unwrap();
                assert_eq!(
                    (again.id.as_str(), again.attempts, again.unknown_outcomes),
                    ("msg_dead", 2, 1)
                );
                assert_eq!(again.body, Body::Sealed(vec![1, 2, 3, 4]));
                assert_eq!(holder(&raw, "msg_dead").await.1.as_deref(), Some("node-b"));
            }
            UnknownOutcomePolicy::Fail => {
                assert_eq!(m.status, MessageStatus::Failed);
                assert!(survivor.claim_next(wall_now()).await.unwrap().is_none());
                // The final status reached the outbox.
                let failed: i64 = raw
                    .query_one(
                        "SELECT COUNT(*) FROM events
                         WHERE type = 'message.failed' AND subject = 'msg_dead'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(failed, 1);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_two_survivors_recover_an_abandoned_message_once() {
    let Some((url, raw)) = cluster_db().await else {
        return;
    };
    let now = wall_now();
    for i in 0..40 {
        enqueue_raw(&raw, text(&format!("msg_{i:02}"), "+15550000001", now)).await;
    }
    let dead = node(&url, "node-a", 1_000).await;
    while dead.claim_next(wall_now()).await.unwrap().is_some() {}
    drop(dead);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (b, c) = (
        node(&url, "node-b", 30_000).await,
        node(&url, "node-c", 30_000).await,
    );
    let at = wall_now();
    let (nb, nc) = tokio::join!(
        b.recover_abandoned(UnknownOutcomePolicy::Resend, at),
        c.recover_abandoned(UnknownOutcomePolicy::Resend, at)
    );
    assert_eq!(nb.unwrap() + nc.unwrap(), 40);
    let notes: i64 = raw
        .query_one(
            "SELECT COUNT(*) FROM message_events WHERE detail LIKE 'outcome unknown:%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(notes, 40, "each message recovered once");
    let unknown: i64 = raw
        .query_one("SELECT MAX(unknown_outcomes) FROM messages", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(unknown, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_recover_interrupted_touches_only_this_nodes_sends() {
    let Some((url, raw)) = cluster_db().await else {
        return;
    };
    let now = wall_now();
    enqueue_raw(&raw, text("msg_a", "+15550000001", now)).await;
    enqueue_raw(&raw, text("msg_b", "+15550000002", now)).await;
    let a = node(&url, "node-a", 30_000).await;
    let b = node(&url, "node-b", 30_000).await;
    assert_eq!(a.claim_next(now).await.unwrap().unwrap().id, "msg_a");
    assert_eq!(b.claim_next(now).await.unwrap().unwrap().id, "msg_b");
    // node-a restarts: a new process under the same name finds its send interrupted.
    drop(a);
    let a = node(&url, "node-a", 30_000).await;
    assert_eq!(
        a.recover_interrupted(UnknownOutcomePolicy::Fail, now + 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        raw_message(&raw, "msg_a").await.unwrap().status,
        MessageStatus::Failed
    );
    let (status, by, _) = holder(&raw, "msg_b").await;
    assert_eq!(
        (status.as_str(), by.as_deref()),
        ("sending", Some("node-b"))
    );
    assert!(
        raw_history(&raw, "msg_b").await.len() == 2,
        "queued, sending: nothing else"
    );
    // And node-b's own outcome still applies.
    b.mark_sent("msg_b", "m0", vec![1], now + 20).await.unwrap();
    assert_eq!(
        raw_message(&raw, "msg_b").await.unwrap().status,
        MessageStatus::Sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_reports_match_only_this_nodes_parts() {
    let Some((url, raw)) = cluster_db().await else {
        return;
    };
    let now = wall_now();
    enqueue_raw(&raw, text("msg_a", "+15551234567", now)).await;
    enqueue_raw(&raw, text("msg_b", "+15551234567", now)).await;
    enqueue_raw(&raw, text("msg_c", "+15557654321", now)).await;
    let a = node(&url, "node-a", 30_000).await;
    let b = node(&url, "node-b", 30_000).await;
    assert_eq!(a.claim_next(now).await.unwrap().unwrap().id, "msg_a");
    assert_eq!(b.claim_next(now).await.unwrap().unwrap().id, "msg_b");
    assert_eq!(b.claim_next(now).await.unwrap().unwrap().id, "msg_c");
    // Both nodes have a modem "m0"; both drew TP-MR 42 for the same recipient. node-b's send
    // is the more recent, which would win if reports matched across nodes.
    a.mark_sent("msg_a", "m0", vec![42], now + 1).await.unwrap();
    b.mark_sent("msg_b", "m0", vec![42], now + 2).await.unwrap();
    b.mark_sent("msg_c", "m0", vec![43], now + 2).await.unwrap();
    let effect = a
        .record_status_report(report(
            "m0",
            42,
            "+15551234567",
            ReportOutcome::Delivered,
            now + 3,
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        effect,
        ReportEffect {
            message_id: "msg_a".into(),
            status: MessageStatus::Delivered
        }
    );
    assert_eq!(
        raw_message(&raw, "msg_b").await.unwrap().status,
        MessageStatus::Sent
    );
    // A report on node-a for what only node-b sent matches nothing.
    let other = report("m0", 43, "+15557654321", ReportOutcome::Delivered, now + 3);
    assert_eq!(a.record_status_report(other.clone()).await.unwrap(), None);
    assert_eq!(
        raw_message(&raw, "msg_c").await.unwrap().status,
        MessageStatus::Sent
    );
    let effect = b.record_status_report(other).await.unwrap().unwrap();
    assert_eq!(effect.message_id, "msg_c");
    let effect = b
        .record_status_report(report(
            "m0",
            42,
            "+15551234567",
            ReportOutcome::Failed("expired".into()),
            now + 4,
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (effect.message_id.as_str(), effect.status),
        ("msg_b", MessageStatus::Failed)
    );
    assert_eq!(
        raw_message(&raw, "msg_a").await.unwrap().status,
        MessageStatus::Delivered
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_late_outcome_does_not_overwrite_the_new_owner() {
    let Some((url, raw)) = cluster_db().await else {
        return;
    };
    let now = wall_now();
    enqueue_raw(&raw, text("msg_a", "+15551234567", now)).await;
    // A long lease: node-a's renewal will not run during the test, so its lapse (written
    // below, as if it had lost the database for a while) stays lapsed.
    let a = node(&url, "node-a", 600_000).await;
    let b = node(&url, "node-b", 600_000).await;
    assert_eq!(a.claim_next(now).await.unwrap().unwrap().id, "msg_a");
    raw.execute(
        "UPDATE messages SET lease_until = $1 WHERE id = 'msg_a'",
        &[&(now - 1)],
    )
    .await
    .unwrap();
    assert_eq!(
        b.recover_abandoned(UnknownOutcomePolicy::Resend, now)
            .await
            .unwrap(),
        1
    );
    let again = b.claim_next(now + 1).await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.attempts), ("msg_a", 2));
    // node-a comes back with outcomes of its lapsed claim: none may undo node-b's claim.
    a.mark_retry("msg_a", "m0: busy", now + 100, now + 2)
        .await
        .unwrap();
    a.mark_not_taken("msg_a", "m0 not ready", now + 3)
        .await
        .unwrap();
    a.mark_failed("msg_a", "m0: CMS ERROR 500", now + 4)
        .await
        .unwrap();
    a.mark_expired("msg_a", "deadline passed before sending", now + 5)
        .await
        .unwrap();
    let st = a
        .mark_unknown_outcome("msg_a", "m0: no +CMGS", UnknownOutcomePolicy::Fail, now + 6)
        .await
        .unwrap();
    assert_eq!(st, MessageStatus::Sending);
    let (status, by, lease) = holder(&raw, "msg_a").await;
    assert_eq!(
        (status.as_str(), by.as_deref()),
        ("sending", Some("node-b"))
    );
    assert!(lease.is_some());
    let m = raw_message(&raw, "msg_a").await.unwrap();
    assert_eq!(
        (m.attempts, m.error.as_deref()),
        (
            2,
            Some("outcome unknown: interrupted: node node-a stopped renewing its claim")
        )
    );
    let notes = details(&raw_history(&raw, "msg_a").await);
    assert!(
        notes.contains(
            &"not applied: retry: m0: busy (node node-a no longer holds the message; \
              node node-b is sending it)"
                .to_owned()
        ),
        "{notes:?}"
    );
    assert_eq!(
        notes
            .iter()
            .filter(|n| n.starts_with("not applied:"))
            .count(),
        5,
        "{notes:?}"
    );
    // node-a's text did reach the network, though: that is recorded, and it is node-a's now.
    a.mark_sent("msg_a", "m0", vec![7], now + 7).await.unwrap();
    let (status, by, lease) = holder(&raw, "msg_a").await;
    assert_eq!(
        (status.as_str(), by.as_deref(), lease),
        ("sent", Some("node-a"), None)
    );
    let last = raw_history(&raw, "msg_a").await.pop().unwrap();
    assert_eq!(last.status, MessageStatus::Sent);
    assert_eq!(
        last.detail.as_deref(),
        Some(
            "modem m0, TP-MR 7; sent by node node-a, which no longer held the message \
             (node node-b is sending it)"
        )
    );
    // node-b's copy went out too: noted, but it neither changes the status nor takes the parts.
    b.mark_sent("msg_a", "m0", vec![9], now + 8).await.unwrap();
    b.mark_failed("msg_a", "m0: CMS ERROR 500", now + 9)
        .await
        .unwrap();
    let m = raw_message(&raw, "msg_a").await.unwrap();
    assert_eq!(
        (m.status, m.sent_at, m.modem_id.as_deref()),
        (MessageStatus::Sent, Some(now + 7), Some("m0"))
    );
    let notes = details(&raw_history(&raw, "msg_a").await);
    assert!(
        notes.contains(
            &"late send by node node-b, which no longer held the message (it is sent \
              already): modem m0, TP-MR 9; status unchanged"
                .to_owned()
        ),
        "{notes:?}"
    );
    // Reports: node-a's part answers; node-b's did not replace it.
    let effect = a
        .record_status_report(report(
            "m0",
            7,
            "+15551234567",
            ReportOutcome::Delivered,
            now + 10,
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(effect.status, MessageStatus::Delivered);
    let r = report("m0", 9, "+15551234567", ReportOutcome::Delivered, now + 10);
    assert_eq!(b.record_status_report(r).await.unwrap(), None);
    let sent_events: i64 = raw
        .query_one(
            "SELECT COUNT(*) FROM events WHERE type = 'message.sent' AND subject = 'msg_a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sent_events, 1, "one message.sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_node_that_cannot_reach_the_database_does_not_claim() {
    let Some((url, raw)) = cluster_db().await else {
        return;
    };
    let now = wall_now();
    enqueue_raw(&raw, text("msg_a", "+15551234567", now)).await;
    let a = node(&url, "node-a", 1_000).await;
    assert!(a.postgres().unwrap().connected());
    // The database refuses new connections and drops node-a's: its listener notices at once
    // and cannot come back. (Done from another database: none may lock itself out.)
    let db: String = raw
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    let admin = raw_client(&crate::pg::shared().unwrap().url("postgres")).await;
    let allow = async |on: bool| {
        admin
            .batch_execute(&format!(
                "ALTER DATABASE \"{db}\" WITH ALLOW_CONNECTIONS {on}"
            ))
            .await
            .unwrap()
    };
    allow(false).await;
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&db],
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while a.postgres().unwrap().connected() {
        assert!(std::time::Instant::now() < deadline, "node-a never noticed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = a.claim_next(wall_now()).await.unwrap_err();
    assert!(err.to_string().contains("cannot renew its claims"), "{err}");
    // The database is back: node-a reconnects and claims again.
    allow(true).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut claimed = None;
    while claimed.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "node-a never claimed again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        claimed = a.claim_next(wall_now()).await.ok().flatten();
    }
    let claimed = claimed.unwrap();
    // Its first claim: none went through while it was cut off.
    assert_eq!((claimed.id.as_str(), claimed.attempts), ("msg_a", 1));
    let raw = raw_client(&url).await;
    assert_eq!(holder(&raw, "msg_a").await.1.as_deref(), Some("node-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_prune_keeps_events_an_endpoint_or_the_sequencer_has_not_passed() {
    let Some((url, raw)) = cluster_db().await else {
        return;
    };
    let store = node(&url, "node-a", 30_000).await;
    let old = T0 - 8 * DAY_MS;
    for (seq, at) in [
        (Some(1i64), old),
        (Some(2), old),
        (Some(3), old),
        (None, old),
        (Some(4), T0),
    ] {
        raw.execute(
            "INSERT INTO events (seq, id, type, subject, at, data)
             VALUES ($1, 'evt_' || gen_random_uuid(), 'message.sent', 'msg_x', $2, '{}')",
            &[&seq, &at],
        )
        .await
        .unwrap();
    }
    raw.execute(
        "INSERT INTO webhook_endpoints (url, fingerprint, cursor) VALUES
             ('https://a.example/hook', 'f', 2), ('https://b.example/hook', 'f', 4)",
        &[],
    )
    .await
    .unwrap();
    raw.execute(
        "INSERT INTO webhook_dead (url, event_seq, at, attempts, reason) VALUES
             ('https://a.example/hook', 1, $1, 3, 'gone'),
             ('https://a.example/hook', 4, $2, 3, 'gone')",
        &[&old, &T0],
    )
    .await
    .unwrap();
    let stats = store.prune(T0, None, None).await.unwrap();
    assert_eq!(stats.events_deleted, 2, "old, and passed by every cursor");
    let left: Vec<Option<i64>> = raw
        .query("SELECT seq FROM events ORDER BY insert_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, [Some(3), None, Some(4)]);
    let dead: i64 = raw
        .query_one("SELECT COUNT(*) FROM webhook_dead", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dead, 1);
    // Without endpoints every old numbered event goes, the unnumbered one still stays.
    raw.execute("DELETE FROM webhook_endpoints", &[])
        .await
        .unwrap();
    assert_eq!(store.prune(T0, None, None).await.unwrap().events_deleted, 1);
    let left: i64 = raw
        .query_one("SELECT COUNT(*) FROM events WHERE seq IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_concat_references_are_shared_by_the_nodes() {
    let Some((url, _raw)) = cluster_db().await else {
        return;
    };
    let (a, b) = (
        node(&url, "node-a", 30_000).await,
        node(&url, "node-b", 30_000).await,
    );
    let mut tasks = Vec::new();
    for k in 0..4 {
        let s = if k % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..64 {
                got.push(s.next_concat_reference().await.unwrap());
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    // 256 draws from one rotating counter: every octet exactly once.
    let distinct: HashSet<u8> = all.iter().copied().collect();
    assert_eq!((all.len(), distinct.len()), (256, 256));
}
