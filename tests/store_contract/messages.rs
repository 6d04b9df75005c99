//! The store contract: texts and the delivery log (enqueue, origins, idempotent enqueues, the
//! queue bound, reads and counts), then PostgreSQL cluster scenarios: one idempotency key sent
//! to two nodes at once, and the queue bound under enqueues from both.

use simgate::store::*;

use crate::contract;
use crate::otps::{MIN, T0, create, idem, otp, status_of, text};

contract! {
    async fn a_text_is_queued_with_its_history(store: Store) {
        assert_eq!(
            store
                .enqueue_text(text("msg_a", "+15550000001", T0), None, 0)
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        let m = store.get_message("msg_a").await.unwrap().unwrap();
        assert_eq!(
            m,
            Message {
                id: "msg_a".into(),
                otp_id: None,
                to: "+15550000001".into(),
                kind: MessageKind::Text,
                log_text: "hello from msg_a".into(),
                parts: 1,
                status: MessageStatus::Queued,
                attempts: 0,
                error: None,
                created_at: T0,
                sent_at: None,
                delivered_at: None,
                deadline: T0 + 24 * 60 * MIN,
                next_attempt_at: T0,
                modem_id: None,
            }
        );
        assert_eq!(
            store.message_events("msg_a").await.unwrap(),
            [MessageEvent {
                at: T0,
                status: MessageStatus::Queued,
                detail: None
            }]
        );
        assert_eq!(store.message_origin("msg_a").await.unwrap(), None);
        assert!(store.get_message("msg_none").await.unwrap().is_none());
        assert!(store.message_events("msg_none").await.unwrap().is_empty());
        assert_eq!(store.queue_depth().await.unwrap(), 1);
    }

    async fn a_text_keeps_what_its_client_said(store: Store) {
        let origin = MessageOrigin {
            sender: Some("+15559990000".into()),
            status_callback: Some("https://example.com/status".into()),
        };
        assert_eq!(
            store
                .enqueue_text_from(text("msg_a", "+15550000001", T0), None, 0, origin.clone())
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        assert_eq!(store.message_origin("msg_a").await.unwrap(), Some(origin));
        let bare = MessageOrigin {
            sender: None,
            status_callback: None,
        };
        store
            .enqueue_text_from(text("msg_b", "+15550000001", T0), None, 0, bare.clone())
            .await
            .unwrap();
        assert_eq!(store.message_origin("msg_b").await.unwrap(), Some(bare));
        // A refused one stores no origin (and no message).
        let other = MessageOrigin {
            sender: Some("x".into()),
            status_callback: None,
        };
        assert_eq!(
            store
                .enqueue_text_from(text("msg_c", "+15550000001", T0), None, 2, other)
                .await
                .unwrap(),
            CreateOutcome::QueueFull
        );
        assert!(store.get_message("msg_c").await.unwrap().is_none());
        assert_eq!(store.message_origin("msg_c").await.unwrap(), None);
        assert_eq!(store.message_origin("msg_none").await.unwrap(), None);
    }

    async fn an_idempotent_text_replays_and_a_refused_one_stores_no_key(store: Store) {
        let key = idem("k", b"h", "{\"id\":\"msg_a\"}");
        assert_eq!(
            store
                .enqueue_text(text("msg_a", "+15550000001", T0), Some(key.clone()), 2)
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        assert_eq!(
            store
                .enqueue_text(text("msg_b", "+15550000001", T0 + 1), Some(key.clone()), 2)
                .await
                .unwrap(),
            CreateOutcome::Replay("{\"id\":\"msg_a\"}".into())
        );
        assert_eq!(
            store
                .enqueue_text(
                    text("msg_b", "+15550000001", T0 + 1),
                    Some(idem("k", b"x", "{}")),
                    2
                )
                .await
                .unwrap(),
            CreateOutcome::IdempotencyConflict
        );
        assert!(store.get_message("msg_b").await.unwrap().is_none());
        // A replay is answered even when the queue is full.
        create(&store, "otp_1", "+15550000002", T0).await;
        assert_eq!(
            store
                .enqueue_text(text("msg_b", "+15550000001", T0 + 2), Some(key), 2)
                .await
                .unwrap(),
            CreateOutcome::Replay("{\"id\":\"msg_a\"}".into())
        );
        // Refused for the bound: the key stays free, so the retry after a slot frees is new.
        let fresh = idem("k2", b"h", "{\"id\":\"msg_c\"}");
        assert_eq!(
            store
                .enqueue_text(
                    text("msg_c", "+15550000001", T0 + 3),
                    Some(fresh.clone()),
                    2
                )
                .await
                .unwrap(),
            CreateOutcome::QueueFull
        );
        store.cancel_otp("otp_1", T0 + 4).await.unwrap();
        assert_eq!(
            store
                .enqueue_text(
                    text("msg_c", "+15550000001", T0 + 5),
                    Some(fresh.clone()),
                    2
                )
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        assert_eq!(
            store
                .enqueue_text(text("msg_d", "+15550000001", T0 + 6), Some(fresh), 0)
                .await
                .unwrap(),
            CreateOutcome::Replay("{\"id\":\"msg_c\"}".into())
        );
        // Relayed OTP texts replay too, before their daily cap is looked at.
        let mut relayed = text("msg_r", "+15550000003", T0);
        relayed.kind = MessageKind::Otp;
        let rkey = idem("k3", b"h", "{\"id\":\"msg_r\"}");
        assert_eq!(
            store
                .enqueue_relayed_otp_text(relayed.clone(), Some(rkey.clone()), 1, 0)
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        relayed.id = "msg_r2".into();
        assert_eq!(
            store
                .enqueue_relayed_otp_text(relayed.clone(), Some(rkey), 1, 0)
                .await
                .unwrap(),
            CreateOutcome::Replay("{\"id\":\"msg_r\"}".into())
        );
        let refused = idem("k4", b"h", "{\"id\":\"msg_r2\"}");
        assert!(matches!(
            store
                .enqueue_relayed_otp_text(relayed.clone(), Some(refused.clone()), 1, 0)
                .await
                .unwrap(),
            CreateOutcome::DailyLimit { .. }
        ));
        assert_eq!(
            store
                .enqueue_relayed_otp_text(relayed, Some(refused), 2, 0)
                .await
                .unwrap(),
            CreateOutcome::Created
        );
    }

    async fn queue_bound_rejects_beyond_queue_max(store: Store) {
        for i in 0..2 {
            assert_eq!(
                store
                    .enqueue_text(text(&format!("msg_{i}"), "+15550000001", T0), None, 3)
                    .await
                    .unwrap(),
                CreateOutcome::Created
            );
        }
        let (o, m) = otp("otp_1", "+15550000003", T0);
        assert_eq!(
            store.create_otp(o, m, None, 0, 3).await.unwrap(),
            CreateOutcome::Created
        );
        assert_eq!(
            store
                .enqueue_text(text("msg_x", "+15550000001", T0), None, 3)
                .await
                .unwrap(),
            CreateOutcome::QueueFull
        );
        let (o, m) = otp("otp_x", "+15550000002", T0);
        assert_eq!(
            store.create_otp(o, m, None, 0, 3).await.unwrap(),
            CreateOutcome::QueueFull
        );
        let mut relayed = text("msg_r", "+15550000002", T0);
        relayed.kind = MessageKind::Otp;
        assert_eq!(
            store
                .enqueue_relayed_otp_text(relayed, None, 0, 3)
                .await
                .unwrap(),
            CreateOutcome::QueueFull
        );
        assert!(store.get_otp("otp_x").await.unwrap().is_none());
        assert!(store.get_message("msg_x").await.unwrap().is_none());
        assert_eq!(store.queue_depth().await.unwrap(), 3);
        // 0 is no bound.
        assert_eq!(
            store
                .enqueue_text(text("msg_unbounded", "+15550000001", T0), None, 0)
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        assert_eq!(store.queue_depth().await.unwrap(), 4);
        // A text leaving the queue frees a slot.
        store.cancel_otp("otp_1", T0 + 1).await.unwrap();
        assert_eq!(store.queue_depth().await.unwrap(), 3);
        assert_eq!(
            store
                .enqueue_text(text("msg_y", "+15550000001", T0), None, 4)
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        assert_eq!(store.queue_depth().await.unwrap(), 4);
    }

    async fn list_messages_filters_and_pages_newest_first(store: Store) {
        for i in 0..5 {
            store
                .enqueue_text(
                    text(&format!("msg_{i}"), "+15550000001", T0 + i * 1000),
                    None,
                    0,
                )
                .await
                .unwrap();
        }
        store
            .enqueue_text(text("msg_other", "+15550000002", T0 + 99_000), None, 0)
            .await
            .unwrap();
        create(&store, "otp_1", "+15550000003", T0 + 500).await;
        store.cancel_otp("otp_1", T0 + 600).await.unwrap();
        // Same instant: the later insert first.
        store
            .enqueue_text(text("msg_tie", "+15550000001", T0 + 4000), None, 0)
            .await
            .unwrap();
        let page = store
            .list_messages(MessageFilter {
                to: Some("+15550000001".into()),
                limit: 2,
                ..Default::default()
            })
            .await
            .unwrap();
        let ids: Vec<_> = page.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["msg_tie", "msg_4"]);
        let next = store
            .list_messages(MessageFilter {
                to: Some("+15550000001".into()),
                before: Some(page[1].created_at),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let ids: Vec<_> = next.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["msg_3", "msg_2", "msg_1", "msg_0"]);
        let canceled = store
            .list_messages(MessageFilter {
                status: Some(MessageStatus::Canceled),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(canceled.len(), 1);
        assert_eq!(canceled[0].id, "msg_otp_1");
        assert_eq!(canceled[0].error.as_deref(), Some("OTP canceled"));
        // Every filter at once, and a limit of 0 still answers one.
        let one = store
            .list_messages(MessageFilter {
                to: Some("+15550000001".into()),
                status: Some(MessageStatus::Queued),
                before: Some(T0 + 2500),
                limit: 0,
            })
            .await
            .unwrap();
        let ids: Vec<_> = one.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["msg_2"]);
        let all = store
            .list_messages(MessageFilter {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 8);
        assert_eq!(all[0].id, "msg_other");
        let counts = store.status_counts().await.unwrap();
        assert_eq!(counts.len(), MessageStatus::ALL.len());
        assert!(counts.contains(&(MessageStatus::Queued, 7)));
        assert!(counts.contains(&(MessageStatus::Canceled, 1)));
        assert!(counts.contains(&(MessageStatus::Delivered, 0)));
        assert_eq!(store.queue_depth().await.unwrap(), 7);
        assert_eq!(
            status_of(&store, "msg_otp_1").await,
            MessageStatus::Canceled
        );
    }
}

/// Two nodes of one cluster on a fresh database, or `None` without PostgreSQL.
async fn two_nodes() -> Option<(Store, Store)> {
    let url = crate::pg::shared()?.create_database();
    let a = crate::postgres_node(&url, "node-a").await;
    let b = crate::postgres_node(&url, "node-b").await;
    Some((a, b))
}

/// One key sent to both nodes at once creates one message (or OTP); every other request
/// replays its answer, and one with another body conflicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_one_idempotency_key_creates_once() {
    let Some((a, b)) = two_nodes().await else {
        return;
    };
    for round in 0..5 {
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let key = idem(
                    &format!("key-{round}"),
                    b"same",
                    &format!("{{\"round\":{round}}}"),
                );
                let msg = text(&format!("msg_{round}_{i}"), "+15550000001", T0 + i);
                store.enqueue_text(msg, Some(key), 0).await.unwrap()
            }));
        }
        let mut created = 0;
        for t in tasks {
            match t.await.unwrap() {
                CreateOutcome::Created => created += 1,
                CreateOutcome::Replay(r) => assert_eq!(r, format!("{{\"round\":{round}}}")),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(created, 1, "round {round}");
    }
    assert_eq!(a.queue_depth().await.unwrap(), 5);

    // OTP creates, with a conflicting body among them.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let hash: &[u8] = if i == 7 { b"other" } else { b"same" };
            let (o, m) = otp(&format!("otp_{i}"), "+15550000002", T0 + i);
            store
                .create_otp(o, m, Some(idem("otp-key", hash, "{}")), 0, 0)
                .await
                .unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let created = outcomes
        .iter()
        .filter(|o| **o == CreateOutcome::Created)
        .count();
    assert_eq!(created, 1, "{outcomes:?}");
    let mut otps = 0;
    for i in 0..16 {
        otps += usize::from(a.get_otp(&format!("otp_{i}")).await.unwrap().is_some());
    }
    assert_eq!(otps, 1);
    // The request with the other body either came first (and created) or conflicts.
    assert!(matches!(
        outcomes[7],
        CreateOutcome::Created | CreateOutcome::IdempotencyConflict
    ));
    assert_eq!(a.queue_depth().await.unwrap(), 6);
}

/// Enqueues from both nodes at once fill the queue to exactly `queue_max`: counted one at a
/// time near the bound (`queue_max` below the slack), and after a shared-lock stretch
/// (`queue_max` above it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_queue_max_holds_across_nodes() {
    for (queue_max, attempts) in [(40u64, 160), (400, 600)] {
        let Some((a, b)) = two_nodes().await else {
            return;
        };
        let mut tasks = Vec::new();
        const TASKS: i64 = 40;
        for t in 0..TASKS {
            let store = if t % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for i in 0..attempts / TASKS {
                    let outcome = if i % 4 == 3 {
                        let (o, m) =
                            otp(&format!("otp_{t}_{i}"), &format!("+1555{t:04}{i:03}"), T0);
                        store.create_otp(o, m, None, 0, queue_max).await.unwrap()
                    } else {
                        let id = format!("msg_{t}_{i}");
                        store
                            .enqueue_text(text(&id, "+15550000001", T0), None, queue_max)
                            .await
                            .unwrap()
                    };
                    outcomes.push(outcome);
                }
                outcomes
            }));
        }
        let mut created = 0;
        for t in tasks {
            for outcome in t.await.unwrap() {
                match outcome {
                    CreateOutcome::Created => created += 1,
                    CreateOutcome::QueueFull => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(created, queue_max, "queue_max {queue_max}");
        assert_eq!(a.queue_depth().await.unwrap(), queue_max);
        assert_eq!(b.queue_depth().await.unwrap(), queue_max);
    }
}

/// The shared GCRA budget of `Postgres::take_rate`: `count` cells at once, one back every
/// `period / count`, the wait named on refusal, and one budget however many nodes spend it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_rate_budget_is_shared_and_refills() {
    let Some(pg) = crate::pg::shared() else {
        return;
    };
    let url = pg.create_database();
    let a = crate::postgres_node(&url, "node-a").await;
    let b = crate::postgres_node(&url, "node-b").await;
    let (a, b) = (a.postgres().unwrap(), b.postgres().unwrap());
    let t0 = 1_800_000_000_000;
    // 3 per 30 s: three cells at once, whichever node spends them.
    assert_eq!(a.take_rate("k", 3, 30_000, 1, t0).await.unwrap(), Ok(()));
    assert_eq!(b.take_rate("k", 3, 30_000, 1, t0).await.unwrap(), Ok(()));
    assert_eq!(a.take_rate("k", 3, 30_000, 1, t0).await.unwrap(), Ok(()));
    assert_eq!(
        b.take_rate("k", 3, 30_000, 1, t0).await.unwrap(),
        Err(10_000)
    );
    // Two cells need two refills; one refill later, one cell passes.
    assert_eq!(
        a.take_rate("k", 3, 30_000, 2, t0 + 10_000).await.unwrap(),
        Err(10_000)
    );
    assert_eq!(
        a.take_rate("k", 3, 30_000, 1, t0 + 10_000).await.unwrap(),
        Ok(())
    );
    // Another key is another budget.
    assert_eq!(
        a.take_rate("other", 3, 30_000, 3, t0).await.unwrap(),
        Ok(())
    );
    // Concurrent spenders on two nodes: exactly the budget passes.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            s.take_rate("race", 10, 600_000, 1, t0)
                .await
                .unwrap()
                .is_ok()
        }));
    }
    let mut passed = 0;
    for t in tasks {
        passed += usize::from(t.await.unwrap());
    }
    assert_eq!(passed, 10);
    // Full budgets are forgotten.
    assert!(a.prune_rates(t0 + 3_600_000).await.unwrap() >= 3);
}
