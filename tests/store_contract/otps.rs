//! The store contract: OTPs (create, supersede, keep, idempotency, daily cap, verify, resend,
//! added texts, cancel, expiry), then PostgreSQL cluster scenarios: two nodes on one database
//! racing for what must stay exact (verify counts, one approval, the daily cap, one pending
//! OTP per number).

use std::collections::HashSet;

use simgate::model::Msisdn;
use simgate::store::*;

use crate::contract;

pub const MIN: Millis = 60_000;
pub const T0: Millis = 1_800_000_000_000;

pub fn text(id: &str, to: &str, at: Millis) -> NewMessage {
    NewMessage {
        id: id.into(),
        to: Msisdn::parse(to).unwrap(),
        kind: MessageKind::Text,
        log_text: format!("hello from {id}"),
        body: Body::Clear(format!("hello from {id}")),
        parts: 1,
        created_at: at,
        deadline: at + 24 * 60 * MIN,
    }
}

pub fn otp(id: &str, to: &str, at: Millis) -> (NewOtp, NewMessage) {
    (
        NewOtp {
            id: id.into(),
            to: Msisdn::parse(to).unwrap(),
            code_hmac: format!("hmac-{id}").into_bytes(),
            max_attempts: 5,
            expires_at: at + 5 * MIN,
            created_at: at,
        },
        NewMessage {
            id: format!("msg_{id}"),
            to: Msisdn::parse(to).unwrap(),
            kind: MessageKind::Otp,
            log_text: "Your code is ******.".into(),
            body: Body::Sealed(vec![1, 2, 3, 4]),
            parts: 1,
            created_at: at,
            deadline: at + 5 * MIN,
        },
    )
}

pub async fn create(store: &Store, id: &str, to: &str, at: Millis) -> CreateOutcome {
    let (o, m) = otp(id, to, at);
    store.create_otp(o, m, None, 0, 0).await.unwrap()
}

pub fn idem(key: &str, hash: &[u8], response: &str) -> Idempotency {
    Idempotency {
        scope: "token-digest".into(),
        key: key.into(),
        request_hash: hash.to_vec(),
        response: response.into(),
    }
}

pub async fn status_of(store: &Store, id: &str) -> MessageStatus {
    store.get_message(id).await.unwrap().unwrap().status
}

async fn otp_status_of(store: &Store, id: &str) -> OtpStatus {
    store.get_otp(id).await.unwrap().unwrap().status
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

contract! {
    async fn create_otp_stores_otp_and_message_and_replaces_pending_one(store: Store) {
        assert_eq!(
            create(&store, "otp_1", "+15551234567", T0).await,
            CreateOutcome::Created
        );
        let first = store.get_otp("otp_1").await.unwrap().unwrap();
        assert_eq!(first.status, OtpStatus::Pending);
        assert_eq!(first.to, "+15551234567");
        assert_eq!((first.attempts, first.max_attempts), (0, 5));
        assert_eq!((first.created_at, first.expires_at), (T0, T0 + 5 * MIN));
        assert_eq!(first.code_hmacs, vec![b"hmac-otp_1".to_vec()]);
        assert_eq!(first.message_ids, vec!["msg_otp_1".to_string()]);
        let msg = store.get_message("msg_otp_1").await.unwrap().unwrap();
        assert_eq!(msg.status, MessageStatus::Queued);
        assert_eq!(msg.kind, MessageKind::Otp);
        assert_eq!(msg.otp_id.as_deref(), Some("otp_1"));
        assert_eq!(msg.log_text, "Your code is ******.");
        assert_eq!((msg.parts, msg.attempts), (1, 0));
        assert_eq!((msg.created_at, msg.deadline), (T0, T0 + 5 * MIN));
        assert_eq!(msg.next_attempt_at, T0);

        assert_eq!(
            create(&store, "otp_2", "+15551234567", T0 + 1000).await,
            CreateOutcome::Created
        );
        assert_eq!(otp_status_of(&store, "otp_1").await, OtpStatus::Canceled);
        assert_eq!(
            status_of(&store, "msg_otp_1").await,
            MessageStatus::Canceled
        );
        let history = store.message_events("msg_otp_1").await.unwrap();
        assert_eq!(
            history,
            [
                MessageEvent {
                    at: T0,
                    status: MessageStatus::Queued,
                    detail: None
                },
                MessageEvent {
                    at: T0 + 1000,
                    status: MessageStatus::Canceled,
                    detail: Some("replaced by a newer OTP".into()),
                },
            ]
        );
        let canceled = store.get_message("msg_otp_1").await.unwrap().unwrap();
        assert_eq!(canceled.error.as_deref(), Some("replaced by a newer OTP"));
        let newest = store
            .newest_pending_otp("+15551234567", T0 + 2000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(newest.id, "otp_2");
        // Past its expiry it is no longer offered for verification by number.
        assert!(
            store
                .newest_pending_otp("+15551234567", T0 + 1000 + 5 * MIN)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .newest_pending_otp("+15550000000", T0)
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.get_otp("otp_none").await.unwrap().is_none());
        assert_eq!(store.queue_depth().await.unwrap(), 1);
    }

    async fn idempotency_replays_same_request_and_rejects_a_different_one(store: Store) {
        let (o, m) = otp("otp_1", "+15551234567", T0);
        let key = idem("k1", b"hash-a", "{\"id\":\"otp_1\"}");
        assert_eq!(
            store
                .create_otp(o, m, Some(key.clone()), 0, 0)
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        let (o2, m2) = otp("otp_2", "+15551234567", T0 + 10);
        assert_eq!(
            store
                .create_otp(o2.clone(), m2.clone(), Some(key), 0, 0)
                .await
                .unwrap(),
            CreateOutcome::Replay("{\"id\":\"otp_1\"}".into())
        );
        assert!(store.get_otp("otp_2").await.unwrap().is_none());
        assert_eq!(otp_status_of(&store, "otp_1").await, OtpStatus::Pending);
        assert_eq!(
            store
                .create_otp(o2, m2, Some(idem("k1", b"hash-b", "{}")), 0, 0)
                .await
                .unwrap(),
            CreateOutcome::IdempotencyConflict
        );
        // Same key, other scope: an independent request.
        let mut other = idem("k1", b"hash-b", "{}");
        other.scope = "other-token".into();
        assert_eq!(
            store
                .enqueue_text(text("msg_t", "+15550000001", T0), Some(other), 0)
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        // Keys live one day: after it the key serves a new request, and then replays that one.
        let (o3, m3) = otp("otp_3", "+15551234567", T0 + DAY_MS + 1);
        assert_eq!(
            store
                .create_otp(
                    o3,
                    m3,
                    Some(idem("k1", b"hash-c", "{\"id\":\"otp_3\"}")),
                    0,
                    0
                )
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        let (o4, m4) = otp("otp_4", "+15551234567", T0 + DAY_MS + 2);
        assert_eq!(
            store
                .create_otp(o4, m4, Some(idem("k1", b"hash-c", "{}")), 0, 0)
                .await
                .unwrap(),
            CreateOutcome::Replay("{\"id\":\"otp_3\"}".into())
        );
    }

    async fn a_refused_request_stores_no_key(store: Store) {
        let to = "+15550000001";
        let key = idem("k", b"h", "{\"id\":\"otp_2\"}");
        create(&store, "otp_1", to, T0).await;
        // Refused by the daily cap: a retry once the window moved on is a new request.
        let (o, m) = otp("otp_2", to, T0 + 1);
        assert!(matches!(
            store
                .create_otp(o, m, Some(key.clone()), 1, 0)
                .await
                .unwrap(),
            CreateOutcome::DailyLimit { .. }
        ));
        // Refused by the queue bound (one queued already).
        let (o, m) = otp("otp_2", to, T0 + 2);
        assert_eq!(
            store
                .create_otp(o, m, Some(key.clone()), 0, 1)
                .await
                .unwrap(),
            CreateOutcome::QueueFull
        );
        // Keep found the pending OTP.
        let (o, m) = otp("otp_2", to, T0 + 3);
        assert_eq!(
            store
                .create_otp_worded(
                    o,
                    m,
                    wording(&[13]),
                    OnPending::Keep,
                    Some(key.clone()),
                    0,
                    0
                )
                .await
                .unwrap(),
            CreateOtpOutcome::PendingExists {
                otp_id: "otp_1".into()
            }
        );
        assert_eq!(otp_status_of(&store, "otp_1").await, OtpStatus::Pending);
        let (o, m) = otp("otp_2", to, T0 + 4);
        assert_eq!(
            store
                .create_otp(o, m, Some(key.clone()), 0, 0)
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        let (o, m) = otp("otp_3", to, T0 + 5);
        assert_eq!(
            store.create_otp(o, m, Some(key), 0, 0).await.unwrap(),
            CreateOutcome::Replay("{\"id\":\"otp_2\"}".into())
        );
        // An added text refused because its OTP expired: the expiry stays, the key does not.
        let mut late = extra_text("otp_2", "msg_late", T0 + 4 + 5 * MIN, 0);
        late.idem = Some(idem("k-late", b"h", "{\"late\":1}"));
        assert_eq!(
            store.add_otp_text(late.clone()).await.unwrap(),
            AddTextOutcome::NotPending(OtpStatus::Expired)
        );
        assert_eq!(otp_status_of(&store, "otp_2").await, OtpStatus::Expired);
        create(&store, "otp_5", "+15550000001", T0 + 6 * MIN).await;
        late.otp_id = "otp_5".into();
        late.msg.created_at = T0 + 6 * MIN + 1;
        assert_eq!(
            store.add_otp_text(late).await.unwrap(),
            AddTextOutcome::Added
        );
    }

    async fn daily_cap_counts_otp_texts_per_number_and_says_when_to_retry(store: Store) {
        let to = "+15551234567";
        for i in 0..3 {
            let (o, m) = otp(&format!("otp_{i}"), to, T0 + i * MIN);
            assert_eq!(
                store.create_otp(o, m, None, 3, 0).await.unwrap(),
                CreateOutcome::Created
            );
        }
        // Another number and plain texts do not count.
        let (o, m) = otp("otp_other", "+15559999999", T0);
        assert_eq!(
            store.create_otp(o, m, None, 3, 0).await.unwrap(),
            CreateOutcome::Created
        );
        store
            .enqueue_text(text("msg_plain", to, T0), None, 0)
            .await
            .unwrap();
        let now = T0 + 4 * MIN;
        let (o, m) = otp("otp_4", to, now);
        assert_eq!(
            store.create_otp(o, m, None, 3, 0).await.unwrap(),
            CreateOutcome::DailyLimit {
                retry_after_ms: T0 + DAY_MS - now
            }
        );
        assert!(store.get_otp("otp_4").await.unwrap().is_none());
        // A resend counts too.
        let (_, m) = otp("otp_2_again", to, now);
        assert_eq!(
            store
                .resend_otp("otp_2", b"h2".to_vec(), m, 3, 0)
                .await
                .unwrap(),
            ResendOutcome::DailyLimit {
                retry_after_ms: T0 + DAY_MS - now
            }
        );
        // So does a relayed OTP text, and a lowered cap waits for more of them to leave.
        let mut relayed = text("msg_relayed", to, now);
        relayed.kind = MessageKind::Otp;
        assert_eq!(
            store
                .enqueue_relayed_otp_text(relayed.clone(), None, 3, 0)
                .await
                .unwrap(),
            CreateOutcome::DailyLimit {
                retry_after_ms: T0 + DAY_MS - now
            }
        );
        assert_eq!(
            store
                .enqueue_relayed_otp_text(relayed.clone(), None, 2, 0)
                .await
                .unwrap(),
            CreateOutcome::DailyLimit {
                retry_after_ms: T0 + MIN + DAY_MS - now
            }
        );
        assert!(store.get_message("msg_relayed").await.unwrap().is_none());
        // Once the oldest leaves the window, one more is accepted.
        let (o, m) = otp("otp_5", to, T0 + DAY_MS + 1);
        assert_eq!(
            store.create_otp(o, m, None, 3, 0).await.unwrap(),
            CreateOutcome::Created
        );
        relayed.created_at = T0 + DAY_MS + MIN + 1;
        assert_eq!(
            store
                .enqueue_relayed_otp_text(relayed, None, 3, 0)
                .await
                .unwrap(),
            CreateOutcome::Created
        );
        let m = store.get_message("msg_relayed").await.unwrap().unwrap();
        assert_eq!((m.kind, m.otp_id), (MessageKind::Otp, None));
    }

    async fn fifty_concurrent_right_codes_approve_exactly_once(store: Store) {
        create(&store, "otp_1", "+15551234567", T0).await;
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.record_verify("otp_1", true, T0 + 1000).await.unwrap()
            }));
        }
        let mut verified = 0;
        for t in tasks {
            let r = t.await.unwrap().unwrap();
            assert_eq!(r.status, OtpStatus::Approved);
            assert_eq!(r.attempts_remaining, 5);
            verified += usize::from(r.verified);
        }
        assert_eq!(verified, 1);
        assert_eq!(otp_status_of(&store, "otp_1").await, OtpStatus::Approved);
        // Its text, still queued, is no longer needed.
        assert_eq!(
            status_of(&store, "msg_otp_1").await,
            MessageStatus::Canceled
        );
        let history = store.message_events("msg_otp_1").await.unwrap();
        assert_eq!(
            history.last().unwrap().detail.as_deref(),
            Some("OTP approved")
        );
    }

    async fn wrong_codes_use_attempts_until_the_limit(store: Store) {
        create(&store, "otp_1", "+15551234567", T0).await;
        for left in (1..5).rev() {
            let r = store
                .record_verify("otp_1", false, T0 + 1)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (r.status, r.attempts_remaining, r.verified),
                (OtpStatus::Pending, left, false)
            );
        }
        assert_eq!(store.get_otp("otp_1").await.unwrap().unwrap().attempts, 4);
        let r = store
            .record_verify("otp_1", false, T0 + 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status, OtpStatus::MaxAttemptsReached);
        assert_eq!(r.attempts_remaining, 0);
        assert_eq!(
            status_of(&store, "msg_otp_1").await,
            MessageStatus::Canceled
        );
        let history = store.message_events("msg_otp_1").await.unwrap();
        assert_eq!(
            history.last().unwrap().detail.as_deref(),
            Some("OTP attempts exhausted")
        );
        // The right code no longer helps, and nothing counts any more.
        let r = store
            .record_verify("otp_1", true, T0 + 2)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.status, r.verified, r.attempts_remaining),
            (OtpStatus::MaxAttemptsReached, false, 0)
        );
        let o = store.get_otp("otp_1").await.unwrap().unwrap();
        assert_eq!((o.status, o.attempts), (OtpStatus::MaxAttemptsReached, 5));
        assert!(
            store
                .record_verify("otp_nope", true, T0)
                .await
                .unwrap()
                .is_none()
        );
    }

    async fn verify_after_expiry_marks_expired(store: Store) {
        create(&store, "otp_1", "+15551234567", T0).await;
        let r = store
            .record_verify("otp_1", false, T0 + 1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.attempts_remaining, 4);
        let r = store
            .record_verify("otp_1", true, T0 + 5 * MIN)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.status, r.verified, r.attempts_remaining),
            (OtpStatus::Expired, false, 4)
        );
        assert_eq!(otp_status_of(&store, "otp_1").await, OtpStatus::Expired);
        // An expiry leaves the texts to their own deadline.
        assert_eq!(status_of(&store, "msg_otp_1").await, MessageStatus::Queued);
        assert_eq!(
            store.cancel_otp("otp_1", T0 + 6 * MIN).await.unwrap(),
            Some(OtpStatus::Expired)
        );
        // Expiry settles on cancel as well.
        create(&store, "otp_2", "+15550000002", T0).await;
        assert_eq!(
            store.cancel_otp("otp_2", T0 + 5 * MIN).await.unwrap(),
            Some(OtpStatus::Expired)
        );
        assert_eq!(status_of(&store, "msg_otp_2").await, MessageStatus::Queued);
    }

    async fn resend_adds_a_code_and_cancel_stops_queued_texts(store: Store) {
        create(&store, "otp_1", "+15551234567", T0).await;
        let (_, mut m) = otp("otp_1", "+15551234567", T0 + 1000);
        m.id = "msg_resend".into();
        assert_eq!(
            store
                .resend_otp("otp_1", b"second".to_vec(), m.clone(), 10, 0)
                .await
                .unwrap(),
            ResendOutcome::Created
        );
        let o = store.get_otp("otp_1").await.unwrap().unwrap();
        assert_eq!(
            o.code_hmacs,
            vec![b"hmac-otp_1".to_vec(), b"second".to_vec()]
        );
        assert_eq!(o.message_ids, vec!["msg_otp_1", "msg_resend"]);
        assert_eq!(store.queue_depth().await.unwrap(), 2);
        // The queue bound holds for resends.
        m.id = "msg_full".into();
        assert_eq!(
            store
                .resend_otp("otp_1", b"full".to_vec(), m.clone(), 10, 2)
                .await
                .unwrap(),
            ResendOutcome::QueueFull
        );
        assert_eq!(
            store.cancel_otp("otp_1", T0 + 2000).await.unwrap(),
            Some(OtpStatus::Canceled)
        );
        assert_eq!(
            status_of(&store, "msg_otp_1").await,
            MessageStatus::Canceled
        );
        assert_eq!(
            status_of(&store, "msg_resend").await,
            MessageStatus::Canceled
        );
        let history = store.message_events("msg_resend").await.unwrap();
        assert_eq!(
            history.last().unwrap().detail.as_deref(),
            Some("OTP canceled")
        );
        // Cancelling again answers the status it has.
        assert_eq!(
            store.cancel_otp("otp_1", T0 + 3000).await.unwrap(),
            Some(OtpStatus::Canceled)
        );
        m.id = "msg_third".into();
        assert_eq!(
            store
                .resend_otp("otp_1", b"third".to_vec(), m.clone(), 10, 0)
                .await
                .unwrap(),
            ResendOutcome::NotPending(OtpStatus::Canceled)
        );
        assert_eq!(
            store
                .resend_otp("otp_none", b"x".to_vec(), m.clone(), 10, 0)
                .await
                .unwrap(),
            ResendOutcome::NotFound
        );
        assert_eq!(store.cancel_otp("otp_none", T0).await.unwrap(), None);
        assert_eq!(store.queue_depth().await.unwrap(), 0);
        // A resend past the expiry expires the OTP.
        create(&store, "otp_2", "+15551234567", T0).await;
        m.created_at = T0 + 5 * MIN;
        assert_eq!(
            store
                .resend_otp("otp_2", b"late".to_vec(), m, 10, 0)
                .await
                .unwrap(),
            ResendOutcome::NotPending(OtpStatus::Expired)
        );
        assert_eq!(otp_status_of(&store, "otp_2").await, OtpStatus::Expired);
        assert!(store.get_message("msg_third").await.unwrap().is_none());
    }

    async fn worded_create_keeps_or_supersedes_a_pending_otp(store: Store) {
        let to = "+15550000001";
        let keep = |o, m, at_offsets: &[usize]| {
            store.create_otp_worded(o, m, wording(at_offsets), OnPending::Keep, None, 0, 0)
        };
        let (o, m) = otp("otp_1", to, T0);
        assert_eq!(
            keep(o, m, &[13]).await.unwrap(),
            CreateOtpOutcome::Done(CreateOutcome::Created)
        );
        assert_eq!(
            store.otp_wording("otp_1").await.unwrap(),
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
        assert!(store.get_otp("otp_2").await.unwrap().is_none());
        assert!(store.otp_wording("otp_2").await.unwrap().is_none());
        assert!(store.get_message("msg_otp_2").await.unwrap().is_none());
        // A keyed retry of a Keep still gets its answer first.
        let (o, m) = otp("otp_k", "+15550000005", T0);
        let key = idem("kk", b"h", "{\"kept\":1}");
        assert_eq!(
            store
                .create_otp_worded(
                    o.clone(),
                    m.clone(),
                    wording(&[1]),
                    OnPending::Keep,
                    Some(key.clone()),
                    0,
                    0
                )
                .await
                .unwrap(),
            CreateOtpOutcome::Done(CreateOutcome::Created)
        );
        assert_eq!(
            store
                .create_otp_worded(o, m, wording(&[1]), OnPending::Keep, Some(key), 0, 0)
                .await
                .unwrap(),
            CreateOtpOutcome::Done(CreateOutcome::Replay("{\"kept\":1}".into()))
        );
        // Once the pending one has expired, Keep creates (and cancels the expired one).
        let (o3, m3) = otp("otp_3", to, T0 + 6 * MIN);
        assert_eq!(
            keep(o3, m3, &[0, 20]).await.unwrap(),
            CreateOtpOutcome::Done(CreateOutcome::Created)
        );
        assert_eq!(
            store.otp_wording("otp_3").await.unwrap(),
            Some(wording(&[0, 20]))
        );
        assert_eq!(otp_status_of(&store, "otp_1").await, OtpStatus::Canceled);
        // Supersede cancels it, as create_otp does.
        let (o4, m4) = otp("otp_4", to, T0 + 7 * MIN);
        assert_eq!(
            store
                .create_otp_worded(o4, m4, wording(&[13]), OnPending::Supersede, None, 0, 0)
                .await
                .unwrap(),
            CreateOtpOutcome::Done(CreateOutcome::Created)
        );
        assert_eq!(otp_status_of(&store, "otp_3").await, OtpStatus::Canceled);
        // A refused worded create writes no wording.
        let (o6, m6) = otp("otp_6", "+15550000006", T0);
        assert_eq!(
            store
                .create_otp_worded(o6, m6, wording(&[2]), OnPending::Supersede, None, 0, 1)
                .await
                .unwrap(),
            CreateOtpOutcome::Done(CreateOutcome::QueueFull)
        );
        assert!(store.otp_wording("otp_6").await.unwrap().is_none());
        // OTPs created without a wording simply have none.
        create(&store, "otp_5", "+15550000009", T0).await;
        assert!(store.otp_wording("otp_5").await.unwrap().is_none());
    }

    async fn added_texts_are_capped_per_otp_and_replay_their_key(store: Store) {
        create(&store, "otp_1", "+15550000001", T0).await;
        assert_eq!(
            store
                .add_otp_text(extra_text("otp_1", "msg_2", T0 + 1, 3))
                .await
                .unwrap(),
            AddTextOutcome::Added
        );
        let mut keyed = extra_text("otp_1", "msg_3", T0 + 2, 3);
        keyed.idem = Some(idem("k", b"h", "{\"answer\":3}"));
        assert_eq!(
            store.add_otp_text(keyed.clone()).await.unwrap(),
            AddTextOutcome::Added
        );
        // The cap counts every text, the first included.
        assert_eq!(
            store
                .add_otp_text(extra_text("otp_1", "msg_4", T0 + 3, 3))
                .await
                .unwrap(),
            AddTextOutcome::TextCap { texts: 3 }
        );
        // A retry of the keyed request gets its answer, even past the cap; another body conflicts.
        keyed.msg.id = "msg_5".into();
        assert_eq!(
            store.add_otp_text(keyed.clone()).await.unwrap(),
            AddTextOutcome::Replay("{\"answer\":3}".into())
        );
        keyed.idem = Some(idem("k", b"other", "{}"));
        assert_eq!(
            store.add_otp_text(keyed).await.unwrap(),
            AddTextOutcome::IdempotencyConflict
        );
        let o = store.get_otp("otp_1").await.unwrap().unwrap();
        assert_eq!(o.message_ids, ["msg_otp_1", "msg_2", "msg_3"]);
        assert_eq!(o.code_hmacs[2], b"hmac-msg_3".to_vec());
        assert_eq!(
            store
                .get_message("msg_3")
                .await
                .unwrap()
                .unwrap()
                .otp_id
                .as_deref(),
            Some("otp_1")
        );
        // The daily cap and the queue bound hold for added texts.
        let mut capped = extra_text("otp_1", "msg_6", T0 + 4, 0);
        capped.daily_cap = 3;
        assert_eq!(
            store.add_otp_text(capped.clone()).await.unwrap(),
            AddTextOutcome::DailyLimit {
                retry_after_ms: DAY_MS - 4
            }
        );
        capped.daily_cap = 0;
        capped.queue_max = 3;
        assert_eq!(
            store.add_otp_text(capped).await.unwrap(),
            AddTextOutcome::QueueFull
        );
        // Unknown, expired.
        assert_eq!(
            store
                .add_otp_text(extra_text("otp_x", "msg_6", T0 + 4, 0))
                .await
                .unwrap(),
            AddTextOutcome::NotFound
        );
        assert_eq!(
            store
                .add_otp_text(extra_text("otp_1", "msg_7", T0 + 6 * MIN, 0))
                .await
                .unwrap(),
            AddTextOutcome::NotPending(OtpStatus::Expired)
        );
        assert_eq!(
            store
                .add_otp_text(extra_text("otp_1", "msg_8", T0 + 7 * MIN, 0))
                .await
                .unwrap(),
            AddTextOutcome::NotPending(OtpStatus::Expired)
        );
        assert_eq!(store.queue_depth().await.unwrap(), 3);
    }

    async fn due_otps_expire_in_batches(store: Store) {
        assert_eq!(store.next_otp_expiry().await.unwrap(), None);
        assert_eq!(store.expire_due_otps(T0, 10).await.unwrap(), 0);
        for (i, at) in [(1, T0), (2, T0 + MIN), (3, T0 + 2 * MIN)] {
            create(&store, &format!("otp_{i}"), &format!("+1555000000{i}"), at).await;
        }
        assert_eq!(store.next_otp_expiry().await.unwrap(), Some(T0 + 5 * MIN));
        // Approved and canceled ones are not pending: they never expire.
        store
            .record_verify("otp_3", true, T0 + 2 * MIN)
            .await
            .unwrap();
        let due = T0 + 6 * MIN;
        assert_eq!(store.expire_due_otps(due, 1).await.unwrap(), 1);
        assert_eq!(store.expire_due_otps(due, 10).await.unwrap(), 1);
        assert_eq!(store.expire_due_otps(due, 10).await.unwrap(), 0);
        for id in ["otp_1", "otp_2"] {
            assert_eq!(otp_status_of(&store, id).await, OtpStatus::Expired);
        }
        assert_eq!(otp_status_of(&store, "otp_3").await, OtpStatus::Approved);
        assert_eq!(store.next_otp_expiry().await.unwrap(), None);
        create(&store, "otp_4", "+15550000004", T0 + 10 * MIN).await;
        assert_eq!(store.next_otp_expiry().await.unwrap(), Some(T0 + 15 * MIN));
        // Not yet due.
        assert_eq!(
            store.expire_due_otps(T0 + 15 * MIN - 1, 10).await.unwrap(),
            0
        );
        let r = store
            .record_verify("otp_1", true, due)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.verified), (OtpStatus::Expired, false));
    }
}

/// Two nodes of one cluster on a fresh database, or `None` without PostgreSQL.
async fn two_nodes() -> Option<(Store, Store, String)> {
    let url = crate::pg::shared()?.create_database();
    let a = crate::postgres_node(&url, "node-a").await;
    let b = crate::postgres_node(&url, "node-b").await;
    Some((a, b, url))
}

/// Wrong guesses from both nodes at once are counted one by one: exactly `max_attempts` of
/// them count, none approves, and every later one answers `max_attempts_reached`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ten_thousand_wrong_guesses_count_exactly_max_attempts() {
    let Some((a, b, _)) = two_nodes().await else {
        return;
    };
    const GUESSES: usize = 10_000;
    const TASKS: usize = 200;
    let (mut o, m) = otp("otp_1", "+15551234567", T0);
    o.max_attempts = 20;
    a.create_otp(o, m, None, 0, 0).await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..GUESSES / TASKS {
                seen.push(
                    store
                        .record_verify("otp_1", false, T0 + 1)
                        .await
                        .unwrap()
                        .unwrap(),
                );
            }
            seen
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.extend(t.await.unwrap());
    }
    assert_eq!(results.len(), GUESSES);
    assert!(results.iter().all(|r| !r.verified));
    // The guesses that counted while the OTP was pending saw each remaining count once.
    let mut pending: Vec<u32> = results
        .iter()
        .filter(|r| r.status == OtpStatus::Pending)
        .map(|r| r.attempts_remaining)
        .collect();
    pending.sort_unstable();
    assert_eq!(pending, (1..20).collect::<Vec<u32>>());
    let locked_out = results
        .iter()
        .filter(|r| r.status == OtpStatus::MaxAttemptsReached && r.attempts_remaining == 0)
        .count();
    assert_eq!(locked_out, GUESSES - 19);
    let o = b.get_otp("otp_1").await.unwrap().unwrap();
    assert_eq!((o.status, o.attempts), (OtpStatus::MaxAttemptsReached, 20));
    // The right code is no use now, on either node.
    for store in [&a, &b] {
        let r = store
            .record_verify("otp_1", true, T0 + 2)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.status, r.verified),
            (OtpStatus::MaxAttemptsReached, false)
        );
    }
}

/// Eight right codes at once over two nodes: one approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_eight_right_codes_approve_once() {
    let Some((a, b, _)) = two_nodes().await else {
        return;
    };
    for round in 0..5 {
        let id = format!("otp_{round}");
        create(&a, &id, &format!("+1555123456{round}"), T0).await;
        let mut tasks = Vec::new();
        for i in 0..8 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .record_verify(&id, true, T0 + 1)
                    .await
                    .unwrap()
                    .unwrap()
            }));
        }
        let mut verified = 0;
        for t in tasks {
            let r = t.await.unwrap();
            assert_eq!(r.status, OtpStatus::Approved);
            verified += usize::from(r.verified);
        }
        assert_eq!(verified, 1, "round {round}");
    }
}

/// Concurrent creates for one number on both nodes: exactly `daily_cap` are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_daily_cap_holds_across_nodes() {
    let Some((a, b, _)) = two_nodes().await else {
        return;
    };
    const CAP: u32 = 7;
    let to = "+15551234567";
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let (o, m) = otp(&format!("otp_{i}"), to, T0 + i);
            if i % 3 == 0 {
                // Relayed texts count against the same cap.
                store
                    .enqueue_relayed_otp_text(m, None, CAP, 0)
                    .await
                    .unwrap()
            } else {
                store.create_otp(o, m, None, CAP, 0).await.unwrap()
            }
        }));
    }
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            CreateOutcome::Created => created += 1,
            CreateOutcome::DailyLimit { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, CAP);
    let texts = a
        .list_messages(MessageFilter {
            to: Some(to.into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(texts.len(), CAP as usize);
}

/// Concurrent creates for one number on both nodes leave exactly one pending OTP, every other
/// one canceled with its texts; concurrent `Keep` creates make exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_one_pending_otp_per_number() {
    let Some((a, b, _)) = two_nodes().await else {
        return;
    };
    let to = "+15551234567";
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let (o, m) = otp(&format!("otp_{i}"), to, T0 + i);
            store.create_otp(o, m, None, 0, 0).await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), CreateOutcome::Created);
    }
    let mut pending = Vec::new();
    for i in 0..40 {
        let id = format!("otp_{i}");
        match otp_status_of(&a, &id).await {
            OtpStatus::Pending => pending.push(id),
            OtpStatus::Canceled => {
                assert_eq!(
                    status_of(&b, &format!("msg_{id}")).await,
                    MessageStatus::Canceled
                );
            }
            other => panic!("{id} is {other:?}"),
        }
    }
    assert_eq!(pending.len(), 1, "pending: {pending:?}");
    assert_eq!(a.queue_depth().await.unwrap(), 1);
    let newest = b.newest_pending_otp(to, T0 + 100).await.unwrap().unwrap();
    assert_eq!(newest.id, pending[0]);

    let to = "+15557654321";
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let (o, m) = otp(&format!("keep_{i}"), to, T0 + i);
            store
                .create_otp_worded(o, m, wording(&[13]), OnPending::Keep, None, 0, 0)
                .await
                .unwrap()
        }));
    }
    let mut created = 0;
    let mut named = HashSet::new();
    for t in tasks {
        match t.await.unwrap() {
            CreateOtpOutcome::Done(CreateOutcome::Created) => created += 1,
            CreateOtpOutcome::PendingExists { otp_id } => {
                named.insert(otp_id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 1);
    let kept = a.newest_pending_otp(to, T0 + 100).await.unwrap().unwrap();
    assert!(
        named.iter().all(|id| *id == kept.id),
        "named {named:?}, kept {}",
        kept.id
    );
}

/// Every OTP and enqueue path, in one order, for the parity test below.
async fn every_path(store: &Store) -> Vec<String> {
    let a = "+15550000001";
    let (o, m) = otp("otp_1", a, T0);
    let key = idem("k", b"h", "{}");
    store
        .create_otp(o, m, Some(key.clone()), 3, 100)
        .await
        .unwrap();
    // Superseded, resent, added to, then locked out by wrong codes.
    let (o, m) = otp("otp_2", a, T0 + 1);
    store.create_otp(o, m, None, 3, 100).await.unwrap();
    let (_, mut m) = otp("otp_2", a, T0 + 2);
    m.id = "msg_resend".into();
    store
        .resend_otp("otp_2", b"r".to_vec(), m, 5, 100)
        .await
        .unwrap();
    store
        .add_otp_text(extra_text("otp_2", "msg_added", T0 + 3, 5))
        .await
        .unwrap();
    for _ in 0..5 {
        store.record_verify("otp_2", false, T0 + 4).await.unwrap();
    }
    // Approved.
    let (o, m) = otp("otp_3", "+15550000002", T0 + 5);
    store
        .create_otp_worded(o, m, wording(&[13]), OnPending::Keep, None, 3, 100)
        .await
        .unwrap();
    store.record_verify("otp_3", true, T0 + 6).await.unwrap();
    // Canceled, swept out, expired on verify and on an added text.
    create(store, "otp_4", "+15550000003", T0 + 7).await;
    store.cancel_otp("otp_4", T0 + 8).await.unwrap();
    create(store, "otp_5", "+15550000004", T0 + 9).await;
    store.expire_due_otps(T0 + 9 + 5 * MIN, 10).await.unwrap();
    create(store, "otp_6", "+15550000005", T0 + 10).await;
    store
        .record_verify("otp_6", true, T0 + 10 + 5 * MIN)
        .await
        .unwrap();
    create(store, "otp_7", "+15550000001", T0 + 11).await;
    store
        .add_otp_text(extra_text("otp_7", "msg_late", T0 + 11 + 5 * MIN, 0))
        .await
        .unwrap();
    // Plain, with an origin, relayed; and refusals, which record nothing.
    store
        .enqueue_text(text("msg_t1", "+15550000006", T0 + 12), None, 100)
        .await
        .unwrap();
    let origin = MessageOrigin {
        sender: Some("+15559990000".into()),
        status_callback: Some("https://example.com/cb".into()),
    };
    store
        .enqueue_text_from(text("msg_t2", "+15550000006", T0 + 13), None, 100, origin)
        .await
        .unwrap();
    let mut relayed = text("msg_r", "+15550000007", T0 + 14);
    relayed.kind = MessageKind::Otp;
    relayed.log_text = "Code ******".into();
    store
        .enqueue_relayed_otp_text(relayed, None, 3, 100)
        .await
        .unwrap();
    let (o, m) = otp("otp_8", a, T0 + 15);
    store.create_otp(o, m, Some(key), 3, 100).await.unwrap();
    store
        .enqueue_text(text("msg_full", "+15550000006", T0 + 16), None, 1)
        .await
        .unwrap();
    let mut ids: Vec<String> = store
        .list_messages(MessageFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    ids.sort();
    ids
}

/// The same operations write the same outbox events (type, subject, instant, payload bytes) in
/// the same order, and the same message history, on PostgreSQL as on SQLite. The events are
/// read from PostgreSQL's table directly: numbering them is the outbox's business, not this
/// family's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writes_the_events_and_history_sqlite_writes() {
    let Some(cluster) = crate::pg::shared() else {
        return;
    };
    let url = cluster.create_database();
    let pg = crate::postgres_node(&url, "node-a").await;
    let (lite, _guard) = crate::sqlite();
    let ids = every_path(&lite).await;
    assert_eq!(every_path(&pg).await, ids);
    assert_eq!(ids.len(), 12);

    let want: Vec<(String, String, Millis, String)> = lite
        .events_after(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.subject, e.at, e.data))
        .collect();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let got: Vec<(String, String, Millis, String)> = client
        .query(
            "SELECT type, subject, at, data FROM events ORDER BY insert_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(want.len(), 25, "{want:#?}");
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w, g, "event {i}");
    }
    assert_eq!(want.len(), got.len());

    for id in &ids {
        assert_eq!(
            pg.message_events(id).await.unwrap(),
            lite.message_events(id).await.unwrap(),
            "history of {id}"
        );
        assert_eq!(
            pg.get_message(id).await.unwrap(),
            lite.get_message(id).await.unwrap()
        );
        assert_eq!(
            pg.message_origin(id).await.unwrap(),
            lite.message_origin(id).await.unwrap()
        );
    }
    for i in 1..=8 {
        let id = format!("otp_{i}");
        assert_eq!(
            pg.get_otp(&id).await.unwrap(),
            lite.get_otp(&id).await.unwrap(),
            "{id}"
        );
        assert_eq!(
            pg.otp_wording(&id).await.unwrap(),
            lite.otp_wording(&id).await.unwrap()
        );
    }
    assert_eq!(
        pg.status_counts().await.unwrap(),
        lite.status_counts().await.unwrap()
    );
    assert_eq!(
        pg.queue_depth().await.unwrap(),
        lite.queue_depth().await.unwrap()
    );
}
