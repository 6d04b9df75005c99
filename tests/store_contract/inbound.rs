//! The store contract: inbound texts.
//!
//! The scenarios of `src/store/inbound/tests.rs`, for both back ends (a reopen is the one thing
//! a contract scenario cannot do), then what only a cluster has: a part recorded twice at once
//! is stored once, and expiry passes on two nodes at once give each incomplete text up once.

use std::collections::HashSet;

use simgate::store::*;

use crate::contract;

const T0: Millis = 1_800_000_000_000;
const SENDER: &str = "+15550001111";
const SCTS: &str = "2026-12-04T10:00:00+01:00";

fn part(concat: Option<(u16, u8, u8)>, text: &str, at: Millis) -> InboundPart {
    InboundPart {
        modem_id: "modem0".into(),
        sender: SENDER.into(),
        sc_timestamp: SCTS.into(),
        concat,
        text: text.into(),
        units: None,
        received_at: at,
    }
}

/// A part holding half a surrogate pair, as the driver hands it over: U+FFFD in `text`, the
/// units beside it.
fn split_part(concat: (u16, u8, u8), units: &[u16], at: Millis) -> InboundPart {
    let mut p = part(Some(concat), &String::from_utf16_lossy(units), at);
    p.units = Some(units.to_vec());
    p
}

async fn record(store: &Store, p: InboundPart) -> InboundOutcome {
    let r = store.record_inbound_part(p).await.unwrap();
    assert!(r.closed.is_empty(), "{r:?}");
    r.outcome
}

fn stored(outcome: InboundOutcome) -> InboundText {
    match outcome {
        InboundOutcome::Stored(m) => m,
        other => panic!("not stored: {other:?}"),
    }
}

async fn all(store: &Store) -> Vec<InboundText> {
    store
        .list_inbound(InboundFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn received_events(store: &Store) -> Vec<StoredEvent> {
    store
        .events_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "inbound.received")
        .collect()
}

contract! {
    async fn a_single_part_is_a_message_at_once_and_a_redelivery_is_dropped(store: Store) {
        let m = stored(record(&store, part(None, "hello", T0)).await);
        assert!(m.id.starts_with("in_") && m.id.len() == 35, "{}", m.id);
        assert_eq!(
            (m.from.as_str(), m.text.as_str(), m.parts, m.complete),
            (SENDER, "hello", 1, true)
        );
        assert_eq!((m.sc_timestamp.as_str(), m.modem_id.as_str()), (SCTS, "modem0"));
        assert_eq!(m.received_at, T0);
        assert!(m.missing.is_empty());
        assert_eq!(
            record(&store, part(None, "hello", T0 + 5)).await,
            InboundOutcome::Duplicate
        );
        // Same sender and text, another SC timestamp: a second text, not a redelivery.
        let mut again = part(None, "hello", T0 + 9);
        again.sc_timestamp = "2026-12-04T10:00:07+01:00".into();
        stored(record(&store, again).await);
        assert_eq!(all(&store).await.len(), 2);
        // One `inbound.received` per stored text, none for the redelivery; it carries the
        // text, byte for byte the same payload on both back ends.
        let received = received_events(&store).await;
        assert_eq!(received.len(), 2);
        assert_eq!(received[0].subject, m.id);
        assert_eq!(received[0].at, T0);
        assert_eq!(
            received[0].data,
            format!(
                r#"{{"complete":true,"from":"{SENDER}","id":"{}","missing_parts":[],"modem":"modem0","parts":1,"sc_timestamp":"{SCTS}","text":"hello"}}"#,
                m.id
            )
        );
        assert_eq!(store.get_inbound(&m.id).await.unwrap(), Some(m));
        assert_eq!(store.get_inbound("in_00000000000000000000000000000000").await.unwrap(), None);
    }

    async fn parts_out_of_order_make_one_message_in_order(store: Store) {
        let r = (300u16, 3u8);
        assert_eq!(
            record(&store, part(Some((r.0, r.1, 3)), "three", T0)).await,
            InboundOutcome::Waiting { received: 1, total: 3 }
        );
        assert_eq!(
            record(&store, part(Some((r.0, r.1, 1)), "one ", T0 + 1)).await,
            InboundOutcome::Waiting { received: 2, total: 3 }
        );
        assert!(all(&store).await.is_empty());
        assert!(received_events(&store).await.is_empty());
        // A redelivered part while the message is open changes nothing.
        assert_eq!(
            record(&store, part(Some((r.0, r.1, 1)), "one ", T0 + 2)).await,
            InboundOutcome::Duplicate
        );
        let m = stored(record(&store, part(Some((r.0, r.1, 2)), "two ", T0 + 3)).await);
        assert_eq!((m.text.as_str(), m.parts, m.complete), ("one two three", 3, true));
        assert!(m.missing.is_empty());
        assert_eq!(m.received_at, T0 + 3);
        // ... and after it is whole.
        assert_eq!(
            record(&store, part(Some((r.0, r.1, 3)), "three", T0 + 4)).await,
            InboundOutcome::Duplicate
        );
        assert_eq!(all(&store).await, vec![m]);
        assert_eq!(received_events(&store).await.len(), 1);
    }

    async fn parts_of_other_senders_modems_or_references_do_not_mix(store: Store) {
        record(&store, part(Some((7, 2, 1)), "a1", T0)).await;
        let mut other_sender = part(Some((7, 2, 2)), "b2", T0);
        other_sender.sender = "+15550002222".into();
        record(&store, other_sender).await;
        let mut other_modem = part(Some((7, 2, 2)), "c2", T0);
        other_modem.modem_id = "modem1".into();
        record(&store, other_modem).await;
        record(&store, part(Some((8, 2, 2)), "d2", T0)).await;
        // Another total with the same reference is another message too.
        record(&store, part(Some((7, 3, 2)), "e2", T0)).await;
        assert!(all(&store).await.is_empty());
        let m = stored(record(&store, part(Some((7, 2, 2)), "a2", T0)).await);
        assert_eq!(m.text, "a1a2");
    }

    async fn a_missing_part_is_given_up_after_the_timeout_and_listed(store: Store) {
        let timeout = 60_000;
        assert_eq!(store.next_inbound_expiry(timeout).await.unwrap(), None);
        assert!(store.expire_inbound(T0, timeout).await.unwrap().is_empty());
        record(&store, part(Some((9, 3, 1)), "one ", T0)).await;
        record(&store, part(Some((9, 3, 3)), "three", T0 + 10)).await;
        assert_eq!(
            store.next_inbound_expiry(timeout).await.unwrap(),
            Some(T0 + timeout)
        );
        assert!(store.expire_inbound(T0 + timeout - 1, timeout).await.unwrap().is_empty());
        let expired = store.expire_inbound(T0 + timeout, timeout).await.unwrap();
        assert_eq!(expired.len(), 1);
        let m = &expired[0];
        assert_eq!(
            (m.text.as_str(), m.parts, m.complete, m.missing.clone()),
            ("one three", 3, false, vec![2])
        );
        assert_eq!(m.received_at, T0 + timeout);
        assert_eq!(store.next_inbound_expiry(timeout).await.unwrap(), None);
        assert!(store.expire_inbound(T0 + 2 * timeout, timeout).await.unwrap().is_empty());
        assert_eq!(all(&store).await, expired);
        let received = received_events(&store).await;
        assert_eq!(received.len(), 1);
        let data: serde_json::Value = serde_json::from_str(&received[0].data).unwrap();
        assert_eq!(data["complete"], false);
        assert_eq!(data["missing_parts"], serde_json::json!([2]));
        assert_eq!(data["parts"], 3);
        // Its parts are known: a late redelivery of one adds nothing.
        assert_eq!(
            record(&store, part(Some((9, 3, 1)), "one ", T0 + timeout + 5)).await,
            InboundOutcome::Duplicate
        );
    }

    async fn a_reused_reference_closes_the_open_message_as_incomplete(store: Store) {
        record(&store, part(Some((5, 2, 1)), "old1", T0)).await;
        let r = store
            .record_inbound_part(part(Some((5, 2, 1)), "new1", T0 + 1))
            .await
            .unwrap();
        assert_eq!(r.outcome, InboundOutcome::Waiting { received: 1, total: 2 });
        assert_eq!(r.closed.len(), 1);
        assert_eq!((r.closed[0].text.as_str(), r.closed[0].complete), ("old1", false));
        assert_eq!(r.closed[0].missing, vec![2]);
        let m = stored(record(&store, part(Some((5, 2, 2)), "new2", T0 + 2)).await);
        assert_eq!(m.text, "new1new2");
        assert_eq!(all(&store).await.len(), 2);
    }

    async fn a_malformed_concatenation_element_keeps_the_part_as_a_text(store: Store) {
        let m = stored(record(&store, part(Some((1, 2, 0)), "zero", T0)).await);
        assert_eq!((m.text.as_str(), m.parts), ("zero", 1));
        let m = stored(record(&store, part(Some((1, 2, 3)), "beyond", T0)).await);
        assert_eq!(m.text, "beyond");
        // A "concatenated" text of one part is a single text as well.
        let m = stored(record(&store, part(Some((1, 1, 1)), "alone", T0)).await);
        assert_eq!((m.text.as_str(), m.parts, m.complete), ("alone", 1, true));
    }

    async fn the_log_pages_newest_first_by_cursor_and_filters(store: Store) {
        let mut ids = Vec::new();
        for i in 0..5 {
            let mut p = part(None, &format!("text {i}"), T0 + i);
            if i % 2 == 1 {
                p.sender = "Bank".into();
            }
            ids.push(stored(record(&store, p).await).id);
        }
        let page = |before: Option<String>, limit| InboundFilter {
            before,
            limit,
            ..Default::default()
        };
        let first = store.list_inbound(page(None, 2)).await.unwrap();
        let got: Vec<&str> = first.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(got, [ids[4].as_str(), ids[3].as_str()]);
        let second = store.list_inbound(page(Some(ids[3].clone()), 10)).await.unwrap();
        let got: Vec<&str> = second.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(got, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
        // An unknown cursor finds nothing; a limit of 0 is read as 1.
        let unknown = Some("in_00000000000000000000000000000000".to_string());
        assert!(store.list_inbound(page(unknown, 10)).await.unwrap().is_empty());
        assert_eq!(store.list_inbound(page(None, 0)).await.unwrap().len(), 1);
        let bank = store
            .list_inbound(InboundFilter {
                from: Some("Bank".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(bank.len(), 2);
        assert!(bank.iter().all(|m| m.from == "Bank"));
        let since = store
            .list_inbound(InboundFilter {
                since: Some(T0 + 3),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(since.len(), 2);
    }

    async fn retention_masks_numbers_then_deletes(store: Store) {
        let day = 86_400_000;
        let m = stored(record(&store, part(None, "old", T0)).await);
        let mut named = part(None, "from a bank", T0);
        named.sender = "Bank".into();
        stored(record(&store, named).await);
        stored(record(&store, part(None, "new", T0 + 10 * day)).await);
        // Nothing asked, nothing done.
        assert_eq!(
            store.prune_inbound(T0 + 10 * day, None, None).await.unwrap(),
            InboundPruneStats::default()
        );
        let s = store
            .prune_inbound(T0 + 10 * day, Some(30 * day), Some(7 * day))
            .await
            .unwrap();
        assert_eq!(s, InboundPruneStats { deleted: 0, masked: 1 });
        let masked = store.get_inbound(&m.id).await.unwrap().unwrap();
        assert_eq!(masked.from, "+15*****11");
        // Masked once only.
        let s = store
            .prune_inbound(T0 + 10 * day, Some(30 * day), Some(7 * day))
            .await
            .unwrap();
        assert_eq!(s.masked, 0);
        let s = store
            .prune_inbound(T0 + 31 * day, Some(30 * day), Some(7 * day))
            .await
            .unwrap();
        assert_eq!(s.deleted, 2);
        assert_eq!(all(&store).await.len(), 1);
        assert_eq!(store.get_inbound(&m.id).await.unwrap(), None);
    }

    async fn a_surrogate_pair_split_between_parts_is_one_character_again(store: Store) {
        // "A😀" and "B": 😀 is D83D DE00; the sender put D83D at the end of part 1.
        let one: Vec<u16> = "A".encode_utf16().chain([0xD83D]).collect();
        let two: Vec<u16> = [0xDE00].into_iter().chain("B".encode_utf16()).collect();
        record(&store, split_part((40, 2, 2), &two, T0)).await;
        // Redelivered: the same units are the same part.
        assert_eq!(
            record(&store, split_part((40, 2, 2), &two, T0 + 1)).await,
            InboundOutcome::Duplicate
        );
        let m = stored(record(&store, split_part((40, 2, 1), &one, T0 + 2)).await);
        assert_eq!(m.text, "A😀B");
        // A half whose other part never comes is U+FFFD.
        record(&store, split_part((41, 2, 1), &one, T0)).await;
        let given_up = store.expire_inbound(T0 + 10_000, 5_000).await.unwrap();
        assert_eq!(given_up.len(), 1);
        assert_eq!(given_up[0].text, "A\u{FFFD}");
        assert_eq!(given_up[0].missing, vec![2]);
    }
}

/// One part at once through two handles of the same node (two connections of its pool, or a
/// restarted daemon overlapping its predecessor): stored once, one text, one event. The same
/// part at another node's modem of the same name is another text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_recorded_twice_at_once_is_stored_once() {
    let Some(pg) = crate::pg::shared() else {
        return;
    };
    let url = pg.create_database();
    let a1 = crate::postgres_node(&url, "node-a").await;
    let a2 = crate::postgres_node(&url, "node-a").await;
    const TEXTS: u16 = 25;
    for i in 0..TEXTS {
        let single = part(None, &format!("single {i}"), T0 + i64::from(i));
        let (r1, r2) = tokio::join!(
            a1.record_inbound_part(single.clone()),
            a2.record_inbound_part(single)
        );
        let mut outcomes = [r1.unwrap().outcome, r2.unwrap().outcome];
        outcomes.sort_by_key(|o| matches!(o, InboundOutcome::Duplicate));
        assert!(
            matches!(outcomes[0], InboundOutcome::Stored(_)),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[1], InboundOutcome::Duplicate);
        // Both parts of a long text, each twice at once: one message, complete.
        let p1 = part(Some((i, 2, 1)), "first half, ", T0);
        let p2 = part(Some((i, 2, 2)), "second half", T0);
        let (r1, r2, r3, r4) = tokio::join!(
            a1.record_inbound_part(p1.clone()),
            a2.record_inbound_part(p2.clone()),
            a2.record_inbound_part(p1),
            a1.record_inbound_part(p2),
        );
        let outcomes: Vec<InboundOutcome> = [r1, r2, r3, r4]
            .into_iter()
            .map(|r| {
                let r = r.unwrap();
                assert!(r.closed.is_empty());
                r.outcome
            })
            .collect();
        let texts: Vec<&InboundText> = outcomes
            .iter()
            .filter_map(|o| match o {
                InboundOutcome::Stored(m) => Some(m),
                _ => None,
            })
            .collect();
        assert_eq!(texts.len(), 1, "{outcomes:?}");
        assert_eq!(texts[0].text, "first half, second half");
        assert!(texts[0].complete);
        let duplicates = outcomes
            .iter()
            .filter(|o| **o == InboundOutcome::Duplicate)
            .count();
        assert_eq!(duplicates, 2, "{outcomes:?}");
    }
    let texts = all(&a1).await;
    assert_eq!(texts.len(), 2 * usize::from(TEXTS));
    assert_eq!(received_events(&a2).await.len(), texts.len());

    let b = crate::postgres_node(&url, "node-b").await;
    let elsewhere = stored(record(&b, part(None, "single 0", T0)).await);
    assert_eq!(elsewhere.modem_id, "modem0");
    assert_eq!(all(&a1).await.len(), texts.len() + 1);
}

/// Open texts of two nodes, given up on by expiry passes that run on both nodes at once (and
/// twice each): each becomes exactly one incomplete message and one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_on_two_nodes_at_once_gives_each_text_up_once() {
    let Some(pg) = crate::pg::shared() else {
        return;
    };
    let url = pg.create_database();
    let a = crate::postgres_node(&url, "node-a").await;
    let b = crate::postgres_node(&url, "node-b").await;
    const OPEN: u16 = 30;
    for i in 0..OPEN {
        let s = if i % 2 == 0 { &a } else { &b };
        let outcome = record(s, part(Some((i / 2, 3, 2)), &format!("middle {i}"), T0)).await;
        assert_eq!(
            outcome,
            InboundOutcome::Waiting {
                received: 1,
                total: 3
            }
        );
    }
    // Both nodes' modem0 hold part 2 of each reference below OPEN / 2: different texts.
    let timeout = 1_000;
    assert_eq!(
        a.next_inbound_expiry(timeout).await.unwrap(),
        Some(T0 + timeout)
    );
    let now = T0 + timeout;
    let (r1, r2, r3, r4) = tokio::join!(
        a.expire_inbound(now, timeout),
        b.expire_inbound(now, timeout),
        b.expire_inbound(now, timeout),
        a.expire_inbound(now, timeout),
    );
    let given_up: Vec<InboundText> = [r1, r2, r3, r4]
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    assert_eq!(given_up.len(), usize::from(OPEN));
    let ids: HashSet<&str> = given_up.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), given_up.len());
    let texts: HashSet<&str> = given_up.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts.len(), usize::from(OPEN));
    assert!(
        given_up
            .iter()
            .all(|m| !m.complete && m.missing == vec![1, 3] && m.parts == 3)
    );
    assert_eq!(all(&a).await.len(), usize::from(OPEN));
    assert_eq!(received_events(&b).await.len(), usize::from(OPEN));
    assert_eq!(b.next_inbound_expiry(timeout).await.unwrap(), None);
    assert!(a.expire_inbound(now, timeout).await.unwrap().is_empty());
}
