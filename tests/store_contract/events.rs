//! The store contract: the event outbox and the webhook endpoints' delivery state.
//!
//! The scenarios of `src/store/events.rs`'s tests, for both back ends, then what only a cluster
//! has: events committed out of order by concurrent transactions on two nodes are read by a
//! cursor without a miss, and one node at a time delivers to an endpoint.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use simgate::model::Msisdn;
use simgate::store::*;

use crate::contract;

fn retry(at: Millis) -> AttemptResult {
    AttemptResult::Retry {
        next_attempt_at: at,
        error: "500".into(),
    }
}

async fn seqs_after(store: &Store, after: i64) -> Vec<i64> {
    store
        .events_after(after, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect()
}

contract! {
    async fn cursor_retry_dead_gone_and_pruning(s: Store) {
        assert_eq!(s.last_event_seq().await.unwrap(), 0);
        s.record_modem_state("m0", None, "initializing", None, 1)
            .await
            .unwrap();
        s.register_endpoints(vec![("http://a".into(), "f1".into())])
            .await
            .unwrap();
        // A new endpoint starts after what exists.
        let st = s.endpoint_state("http://a").await.unwrap().unwrap();
        assert_eq!(st.cursor, 1);
        assert_eq!((st.head_seq, st.next_attempt_at, st.attempts), (None, None, 0));
        let a = s
            .record_modem_state("m0", Some("initializing"), "ready", None, 2)
            .await
            .unwrap();
        let b = s
            .record_modem_state("m0", Some("ready"), "disconnected", None, 3)
            .await
            .unwrap();
        assert!(b > a && a > 1);
        assert_eq!(s.last_event_seq().await.unwrap(), b);
        let evs = s.events_after(1, 10).await.unwrap();
        assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(evs[0].kind, "modem.state_changed");
        assert_eq!(evs[0].subject, "m0");

        s.record_attempt("http://a", a, retry(10), 5).await.unwrap();
        s.record_attempt("http://a", a, retry(20), 10).await.unwrap();
        let st = s.endpoint_state("http://a").await.unwrap().unwrap();
        assert_eq!((st.head_seq, st.attempts), (Some(a), 2));
        assert_eq!(st.first_failure_at, Some(5));
        assert_eq!(st.next_attempt_at, Some(20));
        assert_eq!(st.last_error.as_deref(), Some("500"));
        s.record_attempt("http://a", a, AttemptResult::Dead { error: "500".into() }, 30)
            .await
            .unwrap();
        s.record_attempt("http://a", b, AttemptResult::Delivered, 31)
            .await
            .unwrap();
        let st = s.endpoint_state("http://a").await.unwrap().unwrap();
        assert_eq!((st.cursor, st.dead, st.delivered, st.attempts), (b, 1, 1, 0));
        assert_eq!((st.head_seq, st.last_error), (None, None));

        s.record_attempt("http://a", b + 1, AttemptResult::Gone, 40)
            .await
            .unwrap();
        let st = s.endpoint_state("http://a").await.unwrap().unwrap();
        assert!(st.disabled.unwrap().contains("410"));
        // Same config: stays disabled; changed config: enabled again, cursor kept.
        s.register_endpoints(vec![("http://a".into(), "f1".into())])
            .await
            .unwrap();
        let st = s.endpoint_state("http://a").await.unwrap().unwrap();
        assert!(st.disabled.is_some());
        s.register_endpoints(vec![("http://a".into(), "f2".into())])
            .await
            .unwrap();
        let st = s.endpoint_state("http://a").await.unwrap().unwrap();
        assert_eq!((st.disabled, st.cursor), (None, b));

        // Pruning keeps what an endpoint has not passed.
        let c = s
            .record_modem_state("m0", Some("disconnected"), "ready", None, 4)
            .await
            .unwrap();
        assert_eq!(s.prune_events(1000).await.unwrap(), 3);
        assert_eq!(seqs_after(&s, 0).await, vec![c]);
        // Seqs are never reused after pruning, and the last one counts pruned events.
        s.register_endpoints(vec![]).await.unwrap();
        assert_eq!(s.endpoint_state("http://a").await.unwrap(), None);
        assert!(s.endpoint_states().await.unwrap().is_empty());
        assert_eq!(s.prune_events(1000).await.unwrap(), 1);
        assert_eq!(s.last_event_seq().await.unwrap(), c);
        let d = s
            .record_modem_state("m0", Some("ready"), "disconnected", None, 5)
            .await
            .unwrap();
        assert!(d > c);
        // A new endpoint registered now starts after the pruned ones too.
        s.register_endpoints(vec![("http://n".into(), "f".into())])
            .await
            .unwrap();
        assert_eq!(s.endpoint_state("http://n").await.unwrap().unwrap().cursor, d);
    }

    async fn a_modem_state_event_has_the_same_payload_bytes(s: Store) {
        let first = s
            .record_modem_state("sim0", None, "ready", None, 1_000)
            .await
            .unwrap();
        let second = s
            .record_modem_state("sim0", Some("ready"), "disconnected", Some("port gone"), 2_000)
            .await
            .unwrap();
        let evs = s.events_after(0, 10).await.unwrap();
        assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![first, second]);
        // Byte for byte what a receiver verifies a signature over.
        assert_eq!(
            evs[0].data,
            r#"{"detail":null,"modem_id":"sim0","previous_state":null,"state":"ready"}"#
        );
        assert_eq!(
            evs[1].data,
            r#"{"detail":"port gone","modem_id":"sim0","previous_state":"ready","state":"disconnected"}"#
        );
        assert_eq!((evs[0].at, evs[1].at), (1_000, 2_000));
        assert!(evs[0].id.starts_with("evt_") && evs[0].id.len() == 36, "{}", evs[0].id);
        assert_ne!(evs[0].id, evs[1].id);
        // Paging: `limit` and `after` as a cursor.
        let page = s.events_after(0, 1).await.unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0], evs[0]);
        assert_eq!(s.events_after(first, 10).await.unwrap(), vec![evs[1].clone()]);
        assert!(s.events_after(second, 10).await.unwrap().is_empty());
    }

    async fn skipping_moves_the_cursor_only_without_a_failing_head(s: Store) {
        s.register_endpoints(vec![("http://a".into(), "f".into())])
            .await
            .unwrap();
        let a = s.record_modem_state("m0", None, "ready", None, 1).await.unwrap();
        let b = s.record_modem_state("m0", None, "ready", None, 2).await.unwrap();
        s.skip_events("http://a", a).await.unwrap();
        assert_eq!(s.endpoint_state("http://a").await.unwrap().unwrap().cursor, a);
        // Never backwards.
        s.skip_events("http://a", a - 1).await.unwrap();
        assert_eq!(s.endpoint_state("http://a").await.unwrap().unwrap().cursor, a);
        // A head waiting for its retry holds the cursor where it is.
        s.record_attempt("http://a", b, retry(50), 10).await.unwrap();
        s.skip_events("http://a", b + 5).await.unwrap();
        let st = s.endpoint_state("http://a").await.unwrap().unwrap();
        assert_eq!((st.cursor, st.head_seq), (a, Some(b)));
        // A failure of another event starts its count afresh; a delivery clears it.
        s.record_attempt("http://a", b, retry(60), 20).await.unwrap();
        let st = s.endpoint_state("http://a").await.unwrap().unwrap();
        assert_eq!((st.attempts, st.first_failure_at), (2, Some(10)));
        s.record_attempt("http://a", b, AttemptResult::Delivered, 30)
            .await
            .unwrap();
        let st = s.endpoint_state("http://a").await.unwrap().unwrap();
        assert_eq!((st.cursor, st.head_seq, st.attempts, st.delivered), (b, None, 0, 1));
    }

    async fn endpoints_are_listed_by_url_in_byte_order_and_hold_back_pruning(s: Store) {
        let old = s.record_modem_state("m0", None, "ready", None, 1).await.unwrap();
        s.register_endpoints(vec![
            ("http://b".into(), "f".into()),
            ("http://Z".into(), "f".into()),
            ("http://a".into(), "f".into()),
        ])
        .await
        .unwrap();
        let urls: Vec<String> = s
            .endpoint_states()
            .await
            .unwrap()
            .into_iter()
            .map(|(u, st)| {
                assert_eq!(st.cursor, old);
                u
            })
            .collect();
        assert_eq!(urls, ["http://Z", "http://a", "http://b"]);
        let e1 = s.record_modem_state("m0", None, "ready", None, 2).await.unwrap();
        let e2 = s.record_modem_state("m0", None, "ready", None, 3).await.unwrap();
        s.record_attempt("http://a", e1, AttemptResult::Delivered, 10).await.unwrap();
        s.record_attempt("http://a", e2, AttemptResult::Delivered, 10).await.unwrap();
        s.record_attempt("http://b", e1, AttemptResult::Delivered, 10).await.unwrap();
        // http://Z has had nothing: only what precedes every cursor goes.
        assert_eq!(s.prune_events(1_000).await.unwrap(), 1);
        assert_eq!(seqs_after(&s, 0).await, vec![e1, e2]);
        s.skip_events("http://Z", e2).await.unwrap();
        assert_eq!(s.prune_events(1_000).await.unwrap(), 1);
        assert_eq!(seqs_after(&s, 0).await, vec![e2]);
        // Young events stay whatever the cursors.
        s.record_attempt("http://b", e2, AttemptResult::Delivered, 10).await.unwrap();
        assert_eq!(s.prune_events(3).await.unwrap(), 0);
        let states = s.endpoint_states().await.unwrap();
        assert!(states.iter().all(|(_, st)| st.cursor == e2), "{states:?}");
    }

    async fn the_retention_pass_drops_events_by_the_shortest_rule(s: Store) {
        let now = 30 * DAY_MS;
        s.record_modem_state("m0", None, "ready", None, now - 8 * DAY_MS)
            .await
            .unwrap();
        s.record_modem_state("m0", None, "ready", None, now - 3 * DAY_MS)
            .await
            .unwrap();
        let fresh = s
            .record_modem_state("m0", None, "ready", None, now - DAY_MS / 2)
            .await
            .unwrap();
        // No retention rule at all: a week.
        assert_eq!(s.prune(now, None, None).await.unwrap().events_deleted, 1);
        // Numbers masked after two days: their events go with them.
        let stats = s
            .prune(now, Some(90 * DAY_MS), Some(2 * DAY_MS))
            .await
            .unwrap();
        assert_eq!(stats.events_deleted, 1);
        assert_eq!(seqs_after(&s, 0).await, vec![fresh]);
    }

    async fn state_changes_write_their_events_in_order_without_codes(s: Store) {
        let t0: Millis = 1_800_000_000_000;
        let otp = NewOtp {
            id: "otp_1".into(),
            to: Msisdn::parse("+15551234567").unwrap(),
            code_hmac: b"hmac".to_vec(),
            max_attempts: 5,
            expires_at: t0 + 300_000,
            created_at: t0,
        };
        let msg = NewMessage {
            id: "msg_1".into(),
            to: Msisdn::parse("+15551234567").unwrap(),
            kind: MessageKind::Otp,
            log_text: "Your code is ******.".into(),
            body: Body::Sealed(vec![1, 2, 3]),
            parts: 1,
            created_at: t0,
            deadline: t0 + 300_000,
        };
        s.create_otp(otp, msg, None, 0, 0).await.unwrap();
        let claimed = s.claim_next(t0 + 1).await.unwrap().unwrap();
        s.mark_sent(&claimed.id, "m0", vec![7], t0 + 2).await.unwrap();
        s.record_verify("otp_1", true, t0 + 3).await.unwrap();
        // A second approval changes nothing and records nothing.
        s.record_verify("otp_1", true, t0 + 4).await.unwrap();
        let evs = s.events_after(0, 100).await.unwrap();
        let kinds: Vec<&str> = evs.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["message.queued", "message.sent", "otp.approved"]);
        assert!(evs.windows(2).all(|w| w[0].seq < w[1].seq));
        let sent: Value = serde_json::from_str(&evs[1].data).unwrap();
        assert_eq!(sent["text"], "Your code is ******.");
        assert_eq!(sent["modem_id"], "m0");
        assert_eq!(sent["otp_id"], "otp_1");
        let approved: Value = serde_json::from_str(&evs[2].data).unwrap();
        assert_eq!(approved["status"], "approved");
        assert!(approved.get("text").is_none() && approved.get("code").is_none());
        assert_eq!(evs[2].subject, "otp_1");
    }
}

/// A raw connection to the test database, for what no store method does: a transaction held
/// open on purpose, or a look at (and a push to) the rows themselves.
async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("raw connection");
    tokio::spawn(connection);
    client
}

/// Events inserted by many transactions on two nodes, some held open long after others
/// committed (the shape that breaks a number drawn at INSERT), are all read, once each and in
/// increasing `seq`, by a reader that moves its cursor after every page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_misses_no_event_committed_out_of_order_on_two_nodes() {
    let Some(pg) = crate::pg::shared() else {
        return;
    };
    let url = pg.create_database();
    let a = crate::postgres_node(&url, "node-a").await;
    let b = crate::postgres_node(&url, "node-b").await;
    const TASKS_PER_NODE: usize = 4;
    const EVENTS_PER_TASK: usize = 40;
    const SLOW_TASKS: usize = 3;
    const SLOW_EVENTS: usize = 12;
    let expected = 2 * TASKS_PER_NODE * EVENTS_PER_TASK + SLOW_TASKS * SLOW_EVENTS;

    let mut writers = Vec::new();
    for (n, store) in [a.clone(), b.clone()].into_iter().enumerate() {
        for t in 0..TASKS_PER_NODE {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..EVENTS_PER_TASK {
                    store
                        .record_modem_state(&format!("n{n}t{t}"), None, "ready", None, i as i64)
                        .await
                        .unwrap();
                }
            }));
        }
    }
    // Slow transactions: insert first, commit after others have committed and been read.
    for t in 0..SLOW_TASKS {
        let url = url.clone();
        writers.push(tokio::spawn(async move {
            let mut c = raw(&url).await;
            for i in 0..SLOW_EVENTS {
                let tx = c.transaction().await.unwrap();
                tx.execute(
                    "INSERT INTO events (id, type, subject, at, data)
                     VALUES ($1, 'modem.state_changed', 'slow', 0, '{}')",
                    &[&format!("evt_slow_{t}_{i}")],
                )
                .await
                .unwrap();
                let pause = 15 + 37 * ((t * SLOW_EVENTS + i) % 5) as u64;
                tokio::time::sleep(Duration::from_millis(pause)).await;
                tx.execute("SELECT pg_notify('simgate_events', '')", &[])
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }

    let writing = Arc::new(AtomicBool::new(true));
    let reader = {
        let a = a.clone();
        let writing = writing.clone();
        tokio::spawn(async move {
            let mut cursor = 0;
            let mut seen: Vec<(i64, String)> = Vec::new();
            // Until a read that began after every writer was done finds nothing new.
            loop {
                let after_writers = !writing.load(Ordering::SeqCst);
                let page = a.events_after(cursor, 7).await.unwrap();
                for e in &page {
                    assert!(e.seq > cursor, "seq {} after cursor {cursor}", e.seq);
                    cursor = e.seq;
                    seen.push((e.seq, e.id.clone()));
                }
                if page.is_empty() {
                    if after_writers {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            }
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    writing.store(false, Ordering::SeqCst);
    let seen = reader.await.unwrap();

    let ids: HashSet<&str> = seen.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), seen.len(), "an event was read twice");
    assert_eq!(seen.len(), expected);
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    let c = raw(&url).await;
    let all: HashSet<String> = c
        .query("SELECT id FROM events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(all.len(), expected);
    assert!(all.iter().all(|id| ids.contains(id.as_str())));
    assert_eq!(
        a.last_event_seq().await.unwrap(),
        seen.last().unwrap().0,
        "the last number given out is the last event's"
    );
    // The other node reads the same numbers.
    let from_b: Vec<i64> = {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = b.events_after(after, 1000).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.seq;
            out.extend(page.iter().map(|e| e.seq));
        }
        out
    };
    assert_eq!(from_b, seen.iter().map(|(s, _)| *s).collect::<Vec<_>>());
}

/// What a worker acts on at the top of a round: it takes the turn, then reads the state; when
/// the turn is another node's, the head event waits until that turn ends.
async fn state_for_worker(s: &Store, hook: &str) -> EndpointState {
    let turn = s.take_endpoint_turn(hook).await.unwrap();
    let st = s.endpoint_state(hook).await.unwrap().unwrap();
    match turn {
        None => st,
        Some(until) => EndpointState {
            head_seq: Some(st.head_seq.unwrap_or(st.cursor + 1)),
            next_attempt_at: Some(st.next_attempt_at.unwrap_or(0).max(until)),
            ..st
        },
    }
}

fn waits(st: &EndpointState) -> bool {
    st.next_attempt_at.is_some_and(|at| {
        at > std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    })
}

/// Both nodes run a worker for the same endpoint: one holds the turn and records; the other is
/// told to wait and its writes are refused; after the owner stops extending its turn (a stall,
/// simulated by ending it in the row), the other takes over and the stale node can change
/// nothing. Racing for a free endpoint, exactly one node wins each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_at_a_time_records_attempts_for_an_endpoint() {
    let Some(pg) = crate::pg::shared() else {
        return;
    };
    let url = pg.create_database();
    let a = crate::postgres_node(&url, "node-a").await;
    let b = crate::postgres_node(&url, "node-b").await;
    let db = raw(&url).await;
    let hook = "https://hooks.example/simgate";
    for s in [&a, &b] {
        s.register_endpoints(vec![(hook.into(), "f".into())])
            .await
            .unwrap();
    }
    let e1 = a
        .record_modem_state("m0", None, "ready", None, 1)
        .await
        .unwrap();
    let e2 = b
        .record_modem_state("m0", None, "ready", None, 2)
        .await
        .unwrap();
    let e3 = a
        .record_modem_state("m0", None, "ready", None, 3)
        .await
        .unwrap();

    let st = state_for_worker(&a, hook).await;
    assert!(!waits(&st) && st.head_seq.is_none(), "{st:?}");
    // Node b is told to wait out a's turn (longer than the longest attempt) ...
    let st = state_for_worker(&b, hook).await;
    assert!(waits(&st), "{st:?}");
    assert_eq!(st.head_seq, Some(st.cursor + 1));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(st.next_attempt_at.unwrap() >= now + 300_000, "{st:?}");
    // ... and changes nothing if it tries.
    assert!(
        b.record_attempt(hook, e1, AttemptResult::Delivered, 10)
            .await
            .is_err()
    );
    assert!(b.record_attempt(hook, e1, retry(99), 10).await.is_err());
    assert!(b.skip_events(hook, e3).await.is_err());
    let (_, st) = a.endpoint_states().await.unwrap().remove(0);
    assert_eq!((st.cursor, st.head_seq, st.delivered), (e1 - 1, None, 0));

    a.record_attempt(hook, e1, AttemptResult::Delivered, 10)
        .await
        .unwrap();
    // a stalls past its turn: b takes over, and a's late writes are refused.
    db.execute("UPDATE webhook_endpoints SET owner_until = 0", &[])
        .await
        .unwrap();
    let st = state_for_worker(&b, hook).await;
    assert!(!waits(&st), "{st:?}");
    assert_eq!(st.cursor, e1);
    assert!(
        a.record_attempt(hook, e2, AttemptResult::Delivered, 11)
            .await
            .is_err()
    );
    assert!(waits(&state_for_worker(&a, hook).await));
    b.record_attempt(hook, e2, retry(50), 11).await.unwrap();
    b.record_attempt(hook, e2, AttemptResult::Delivered, 12)
        .await
        .unwrap();
    // b stalls too; a comes back with an answer for an event b already delivered: nothing
    // moves or counts twice.
    db.execute("UPDATE webhook_endpoints SET owner_until = 0", &[])
        .await
        .unwrap();
    assert!(a.record_attempt(hook, e2, retry(70), 13).await.is_err());
    assert!(
        a.record_attempt(hook, e1, AttemptResult::Delivered, 13)
            .await
            .is_err()
    );
    let dead = AttemptResult::Dead { error: "x".into() };
    assert!(a.record_attempt(hook, e1, dead, 13).await.is_err());
    let (_, st) = a.endpoint_states().await.unwrap().remove(0);
    assert_eq!(
        (st.cursor, st.head_seq, st.delivered, st.attempts),
        (e2, None, 2, 0),
        "{st:?}"
    );
    a.record_attempt(hook, e3, AttemptResult::Delivered, 14)
        .await
        .unwrap();
    assert!(waits(&state_for_worker(&b, hook).await));

    // A free endpoint, asked for by both at once: one turn each time.
    for round in 0..20 {
        db.execute(
            "UPDATE webhook_endpoints SET owner = NULL, owner_until = NULL",
            &[],
        )
        .await
        .unwrap();
        let (sa, sb) = tokio::join!(state_for_worker(&a, hook), state_for_worker(&b, hook));
        assert!(waits(&sa) != waits(&sb), "round {round}: {sa:?} {sb:?}");
    }
}

/// Workers on two nodes deliver the same endpoint's events while the turn is taken from its
/// owner several times (a stall): every event is delivered, in order within each turn, at most
/// one duplicate per takeover (the head, re-sent with its id), and the cursor and counters are
/// exactly those of one delivery per event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_on_two_nodes_deliver_each_event_and_only_duplicate_at_a_takeover() {
    let Some(pg) = crate::pg::shared() else {
        return;
    };
    let url = pg.create_database();
    let a = crate::postgres_node(&url, "node-a").await;
    let b = crate::postgres_node(&url, "node-b").await;
    let db = raw(&url).await;
    let hook = "https://hooks.example/simgate";
    for s in [&a, &b] {
        s.register_endpoints(vec![(hook.into(), "f".into())])
            .await
            .unwrap();
    }
    const EVENTS: usize = 120;
    let mut last = 0;
    for i in 0..EVENTS {
        let s = if i % 2 == 0 { &a } else { &b };
        last = s
            .record_modem_state("m0", None, "ready", None, i as i64)
            .await
            .unwrap();
    }
    // What the receiver got: (node, seq), in arrival order.
    let received: Arc<Mutex<Vec<(&'static str, i64)>>> = Arc::default();
    let worker = |store: Store, name: &'static str| {
        let received = received.clone();
        tokio::spawn(async move {
            loop {
                let st = state_for_worker(&store, hook).await;
                if st.cursor >= last {
                    return;
                }
                if waits(&st) {
                    // The real worker sleeps until then; a short nap keeps the test short.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                let batch = store.events_after(st.cursor, 8).await.unwrap();
                for e in batch {
                    received.lock().unwrap().push((name, e.seq));
                    tokio::task::yield_now().await;
                    if store
                        .record_attempt(hook, e.seq, AttemptResult::Delivered, 1)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        })
    };
    let wa = worker(a.clone(), "a");
    let wb = worker(b.clone(), "b");
    let mut takeovers = 0;
    while !(wa.is_finished() && wb.is_finished()) {
        tokio::time::sleep(Duration::from_millis(15)).await;
        takeovers += db
            .execute(
                "UPDATE webhook_endpoints SET owner_until = 0 WHERE owner IS NOT NULL",
                &[],
            )
            .await
            .unwrap() as usize;
    }
    wa.await.unwrap();
    wb.await.unwrap();

    let received = received.lock().unwrap().clone();
    let mut times: BTreeMap<i64, usize> = BTreeMap::new();
    for (_, seq) in &received {
        *times.entry(*seq).or_default() += 1;
    }
    let all: Vec<i64> = a
        .events_after(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(
        times.keys().copied().collect::<Vec<_>>(),
        all,
        "an event was skipped"
    );
    let duplicates: usize = times.values().map(|n| n - 1).sum();
    assert!(
        duplicates <= takeovers,
        "{duplicates} duplicates for {takeovers} takeovers: {received:?}"
    );
    // Within a run of one node's deliveries, strictly in order.
    for run in received.chunk_by(|x, y| x.0 == y.0) {
        assert!(run.windows(2).all(|w| w[0].1 < w[1].1), "{run:?}");
    }
    let (_, st) = a.endpoint_states().await.unwrap().remove(0);
    assert_eq!((st.cursor, st.delivered, st.dead), (last, EVENTS as u64, 0));
}
