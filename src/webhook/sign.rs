//! What goes on the wire for one event: the body and the headers that sign it.
//!
//! [`Format`] is the seam for other wire formats: the worker only asks a format to render an
//! event into a request. [`StandardWebhooks`] implements <https://www.standardwebhooks.com/>:
//! `webhook-id` (the event's id, the same on every retry, so a receiver de-duplicates by it),
//! `webhook-timestamp` (unix seconds of this attempt) and `webhook-signature`, one
//! `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>` per secret, separated by spaces, so
//! a receiver holding either the old or the new secret verifies during a rotation. A Twilio
//! `StatusCallback` would be a second `Format` (form-encoded body, `X-Twilio-Signature`).

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::config::SigningKey;
use crate::model::StoredEvent;

/// A rendered request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// Headers besides `Content-Type`.
    pub headers: Vec<(&'static str, String)>,
    /// The body, exactly as signed.
    pub body: Vec<u8>,
}

/// A wire format of webhook deliveries.
pub trait Format: Send + Sync + 'static {
    /// The request for `event`, attempted at unix second `now_secs`.
    fn render(&self, event: &StoredEvent, now_secs: i64) -> Rendered;
}

/// The body every format of simgate's own shares: the event as `GET /v1/events` shows it.
/// Built from stored fields only, so every attempt sends the same bytes.
pub fn envelope(event: &StoredEvent) -> String {
    let s = |v: &str| serde_json::Value::from(v).to_string();
    // `data` is a JSON object as stored; it is embedded as is rather than re-serialized.
    format!(
        "{{\"id\":{},\"seq\":{},\"type\":{},\"timestamp\":{},\"subject\":{},\"data\":{}}}",
        s(&event.id),
        event.seq,
        s(&event.kind),
        s(&crate::http::dto::rfc3339(event.at)),
        s(&event.subject),
        event.data
    )
}

/// Standard Webhooks, signed with every key of an endpoint.
pub struct StandardWebhooks {
    /// Newest first, as configured; each signs every delivery.
    keys: Vec<SigningKey>,
}

impl StandardWebhooks {
    /// A format signing with `keys` (at least one).
    pub fn new(keys: Vec<SigningKey>) -> StandardWebhooks {
        StandardWebhooks { keys }
    }
}

/// `v1,<base64>` of HMAC-SHA256(key, "<id>.<timestamp>.<body>").
pub fn signature(key: &SigningKey, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key.0).expect("HMAC takes any key");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag)
    )
}

impl Format for StandardWebhooks {
    fn render(&self, event: &StoredEvent, now_secs: i64) -> Rendered {
        let body = envelope(event).into_bytes();
        let signatures: Vec<String> = self
            .keys
            .iter()
            .map(|k| signature(k, &event.id, now_secs, &body))
            .collect();
        Rendered {
            content_type: "application/json",
            headers: vec![
                ("webhook-id", event.id.clone()),
                ("webhook-timestamp", now_secs.to_string()),
                ("webhook-signature", signatures.join(" ")),
            ],
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::config::parse_secret;

    #[test]
    fn signs_the_standard_webhooks_test_vector() {
        // The example of the Standard Webhooks specification (spec/standard-webhooks.md).
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn every_key_signs_and_the_body_is_stable() {
        let a = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let b = parse_secret("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        let ev = StoredEvent {
            seq: 7,
            id: "evt_1".into(),
            kind: "otp.approved".into(),
            subject: "otp_1".into(),
            at: 0,
            data: r#"{"otp_id":"otp_1"}"#.into(),
        };
        let f = StandardWebhooks::new(vec![a, b]);
        let r1 = f.render(&ev, 100);
        let r2 = f.render(&ev, 200);
        assert_eq!(r1.body, r2.body);
        let body: serde_json::Value = serde_json::from_slice(&r1.body).unwrap();
        assert_eq!(body["seq"], 7);
        assert_eq!(body["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(body["data"]["otp_id"], "otp_1");
        let sig = &r1.headers[2].1;
        assert_eq!(sig.split(' ').count(), 2);
        assert_ne!(r1.headers[2], r2.headers[2]);
        assert_eq!(r1.headers[0], ("webhook-id", "evt_1".to_string()));
    }
}
