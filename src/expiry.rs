//! OTPs leave `pending` when their TTL ends, not when someone next asks: the `otp.expired`
//! event (webhooks, `GET /v1/events`) is then recorded at that moment. Verification already
//! treats an OTP past its TTL as expired whether or not this task has run, so it only decides
//! *when* the event is written, never whether a code is accepted.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use crate::clock::Clock;
use crate::store::Store;

/// OTPs expired per write, so one sweep after a long stop does not hold the writer.
const PER_WRITE: u32 = 500;

/// Sweeps expired OTPs until `shutdown`. `min_ttl` is the shortest TTL any new OTP can get: an
/// OTP created after a look at the next expiry expires no sooner than that, so sleeping at most
/// `min_ttl` catches it on time without a wake-up per request.
pub async fn run(
    store: Store,
    min_ttl: Duration,
    clock: Clock,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = pin!(shutdown);
    let longest = min_ttl.clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let now = clock.now_ms();
        // Read first and write only when an OTP is due: an idle daemon must not commit (and
        // sync the WAL of an SD card) every `min_ttl`.
        let wait = match store.next_otp_expiry().await {
            Ok(Some(at)) if at <= now => match store.expire_due_otps(now, PER_WRITE).await {
                Ok(0) => {
                    // Due by the read, not by the write (a clock step between them): look
                    // again shortly rather than spin.
                    Duration::from_millis(100)
                }
                Ok(n) => {
                    tracing::debug!(expired = n, "OTPs expired");
                    Duration::ZERO
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot expire OTPs; trying again");
                    longest
                }
            },
            Ok(Some(at)) => Duration::from_millis((at - now) as u64),
            Ok(None) => longest,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the next OTP expiry");
                longest
            }
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(wait.min(longest)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Body, MessageKind, NewMessage, NewOtp, StoreOptions};

    #[tokio::test]
    async fn a_pending_otp_is_expired_when_its_ttl_ends_with_its_event() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), StoreOptions::default()).unwrap();
        let clock = Clock::system();
        let now = clock.now_ms();
        let otp = NewOtp {
            id: "otp_1".into(),
            to: crate::model::Msisdn::parse("+15551234567").unwrap(),
            code_hmac: b"hmac".to_vec(),
            max_attempts: 5,
            expires_at: now + 300,
            created_at: now,
        };
        let msg = NewMessage {
            id: "msg_1".into(),
            to: crate::model::Msisdn::parse("+15551234567").unwrap(),
            kind: MessageKind::Otp,
            log_text: "Your code is ******.".into(),
            body: Body::Sealed(vec![1]),
            parts: 1,
            created_at: now,
            deadline: now + 300,
        };
        store.create_otp(otp, msg, None, 0, 0).await.unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(
            store.clone(),
            Duration::from_secs(30),
            clock,
            async move {
                let _ = stop_rx.await;
            },
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let expired = loop {
            let events = store.events_after(0, 10).await.unwrap();
            if let Some(e) = events.iter().find(|e| e.kind == "otp.expired") {
                break e.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never expired: {events:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(expired.subject, "otp_1");
        assert!(expired.at >= now + 300, "expired before its TTL ended");
        assert_eq!(store.next_otp_expiry().await.unwrap(), None);
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }
}
