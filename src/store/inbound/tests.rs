//! Inbound storage on real SQLite files: reassembly in any order, across a reopen, the timeout,
//! redeliveries, reference reuse, paging and retention.

use super::*;
use crate::store::{Store, StoreOptions};

const T0: Millis = 1_800_000_000_000;
const SENDER: &str = "+15550001111";
const SCTS: &str = "2026-12-04T10:00:00+01:00";

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("simgate.db"), StoreOptions::default()).unwrap()
}

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

#[tokio::test]
async fn a_single_part_is_a_message_at_once_and_a_redelivery_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let m = stored(record(&store, part(None, "hello", T0)).await);
    assert!(m.id.starts_with("in_") && m.id.len() == 35, "{}", m.id);
    assert_eq!(
        (m.from.as_str(), m.text.as_str(), m.parts, m.complete),
        (SENDER, "hello", 1, true)
    );
    assert_eq!(m.sc_timestamp, SCTS);
    assert_eq!(
        record(&store, part(None, "hello", T0 + 5)).await,
        InboundOutcome::Duplicate
    );
    // Same sender and text, another SC timestamp: a second text, not a redelivery.
    let mut again = part(None, "hello", T0 + 9);
    again.sc_timestamp = "2026-12-04T10:00:07+01:00".into();
    stored(record(&store, again).await);
    let rows = all(&store).await;
    assert_eq!(rows.len(), 2);
    // One `inbound.received` per stored text, none for the redelivery; it carries the text.
    let events = store.events_after(0, 10).await.unwrap();
    let received: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "inbound.received")
        .collect();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].subject, m.id);
    let data: serde_json::Value = serde_json::from_str(&received[0].data).unwrap();
    assert_eq!(data["text"], "hello");
    assert_eq!(data["from"], m.from.as_str());
    assert_eq!(store.get_inbound(&m.id).await.unwrap(), Some(m));
}

#[tokio::test]
async fn parts_out_of_order_make_one_message_in_order_even_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let r = (300u16, 3u8);
    assert_eq!(
        record(&store, part(Some((r.0, r.1, 3)), "three", T0)).await,
        InboundOutcome::Waiting {
            received: 1,
            total: 3
        }
    );
    assert_eq!(
        record(&store, part(Some((r.0, r.1, 1)), "one ", T0 + 1)).await,
        InboundOutcome::Waiting {
            received: 2,
            total: 3
        }
    );
    // A restart mid-assembly: the parts are rows.
    drop(store);
    let store = open(&dir);
    assert!(all(&store).await.is_empty());
    // A redelivered part while the message is open changes nothing.
    assert_eq!(
        record(&store, part(Some((r.0, r.1, 1)), "one ", T0 + 2)).await,
        InboundOutcome::Duplicate
    );
    let m = stored(record(&store, part(Some((r.0, r.1, 2)), "two ", T0 + 3)).await);
    assert_eq!(
        (m.text.as_str(), m.parts, m.complete),
        ("one two three", 3, true)
    );
    assert!(m.missing.is_empty());
    assert_eq!(m.received_at, T0 + 3);
    // ... and after it is whole.
    assert_eq!(
        record(&store, part(Some((r.0, r.1, 3)), "three", T0 + 4)).await,
        InboundOutcome::Duplicate
    );
    assert_eq!(all(&store).await, vec![m]);
}

#[tokio::test]
async fn parts_of_other_senders_modems_or_references_do_not_mix() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    record(&store, part(Some((7, 2, 1)), "a1", T0)).await;
    let mut other_sender = part(Some((7, 2, 2)), "b2", T0);
    other_sender.sender = "+15550002222".into();
    record(&store, other_sender).await;
    let mut other_modem = part(Some((7, 2, 2)), "c2", T0);
    other_modem.modem_id = "modem1".into();
    record(&store, other_modem).await;
    record(&store, part(Some((8, 2, 2)), "d2", T0)).await;
    assert!(all(&store).await.is_empty());
    let m = stored(record(&store, part(Some((7, 2, 2)), "a2", T0)).await);
    assert_eq!(m.text, "a1a2");
}

#[tokio::test]
async fn a_missing_part_is_given_up_after_the_timeout_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let timeout = 60_000;
    record(&store, part(Some((9, 3, 1)), "one ", T0)).await;
    record(&store, part(Some((9, 3, 3)), "three", T0 + 10)).await;
    assert_eq!(
        store.next_inbound_expiry(timeout).await.unwrap(),
        Some(T0 + timeout)
    );
    assert!(
        store
            .expire_inbound(T0 + timeout - 1, timeout)
            .await
            .unwrap()
            .is_empty()
    );
    let expired = store.expire_inbound(T0 + timeout, timeout).await.unwrap();
    assert_eq!(expired.len(), 1);
    let m = &expired[0];
    assert_eq!(
        (m.text.as_str(), m.parts, m.complete, m.missing.clone()),
        ("one three", 3, false, vec![2])
    );
    assert_eq!(store.next_inbound_expiry(timeout).await.unwrap(), None);
    assert_eq!(all(&store).await, expired);
    // Its parts are known: a late redelivery of one adds nothing.
    assert_eq!(
        record(&store, part(Some((9, 3, 1)), "one ", T0 + timeout + 5)).await,
        InboundOutcome::Duplicate
    );
}

#[tokio::test]
async fn a_reused_reference_closes_the_open_message_as_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    record(&store, part(Some((5, 2, 1)), "old1", T0)).await;
    let r = store
        .record_inbound_part(part(Some((5, 2, 1)), "new1", T0 + 1))
        .await
        .unwrap();
    assert_eq!(r.closed.len(), 1);
    assert_eq!(
        (r.closed[0].text.as_str(), r.closed[0].complete),
        ("old1", false)
    );
    assert_eq!(r.closed[0].missing, vec![2]);
    let m = stored(record(&store, part(Some((5, 2, 2)), "new2", T0 + 2)).await);
    assert_eq!(m.text, "new1new2");
}

#[tokio::test]
async fn a_malformed_concatenation_element_keeps_the_part_as_a_text() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let m = stored(record(&store, part(Some((1, 2, 0)), "zero", T0)).await);
    assert_eq!((m.text.as_str(), m.parts), ("zero", 1));
    let m = stored(record(&store, part(Some((1, 2, 3)), "beyond", T0)).await);
    assert_eq!(m.text, "beyond");
}

#[tokio::test]
async fn the_log_pages_newest_first_by_cursor_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
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
    let second = store
        .list_inbound(page(Some(ids[3].clone()), 10))
        .await
        .unwrap();
    let got: Vec<&str> = second.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    let bank = store
        .list_inbound(InboundFilter {
            from: Some("Bank".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(bank.len(), 2);
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

#[tokio::test]
async fn retention_masks_numbers_then_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let day = 86_400_000;
    let m = stored(record(&store, part(None, "old", T0)).await);
    let mut named = part(None, "from a bank", T0);
    named.sender = "Bank".into();
    stored(record(&store, named).await);
    stored(record(&store, part(None, "new", T0 + 10 * day)).await);
    let s = store
        .prune_inbound(T0 + 10 * day, Some(30 * day), Some(7 * day))
        .await
        .unwrap();
    assert_eq!(
        s,
        InboundPruneStats {
            deleted: 0,
            masked: 1
        }
    );
    let masked = store.get_inbound(&m.id).await.unwrap().unwrap();
    assert_eq!(masked.from, "+15*****11");
    let s = store
        .prune_inbound(T0 + 31 * day, Some(30 * day), Some(7 * day))
        .await
        .unwrap();
    assert_eq!(s.deleted, 2);
    assert_eq!(all(&store).await.len(), 1);
}

/// A part holding half a surrogate pair, as the driver hands it over: U+FFFD in `text`, the
/// units beside it.
fn split_part(concat: (u16, u8, u8), units: &[u16], at: Millis) -> InboundPart {
    let mut p = part(Some(concat), &String::from_utf16_lossy(units), at);
    p.units = Some(units.to_vec());
    p
}

#[tokio::test]
async fn a_surrogate_pair_split_between_parts_is_one_character_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    // "A😀" and "B": 😀 is D83D DE00; the sender put D83D at the end of part 1.
    let one: Vec<u16> = "A".encode_utf16().chain([0xD83D]).collect();
    let two: Vec<u16> = [0xDE00].into_iter().chain("B".encode_utf16()).collect();
    record(&store, split_part((40, 2, 2), &two, T0)).await;
    // Redelivered: the same units are the same part.
    assert_eq!(
        record(&store, split_part((40, 2, 2), &two, T0 + 1)).await,
        InboundOutcome::Duplicate
    );
    drop(store);
    let store = open(&dir);
    let m = stored(record(&store, split_part((40, 2, 1), &one, T0 + 2)).await);
    assert_eq!(m.text, "A😀B");
    // A half whose other part never comes is U+FFFD.
    record(&store, split_part((41, 2, 1), &one, T0)).await;
    let given_up = store.expire_inbound(T0 + 10_000, 5_000).await.unwrap();
    assert_eq!(given_up.len(), 1);
    assert_eq!(given_up[0].text, "A\u{FFFD}");
    assert_eq!(given_up[0].missing, vec![2]);
}
