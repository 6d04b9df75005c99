//! Twilio's `StatusCallback`: each status change of a message created through the Messaging
//! route with a `StatusCallback` is POSTed there, form-encoded as Twilio does, and signed with
//! `X-Twilio-Signature` so the app's existing `RequestValidator` check passes.
//!
//! The callbacks come from the durable event outbox (`crate::webhook::deliver` walks it with its
//! own cursor, like a `[[webhook]]`): a status change commits with its event, and a crash
//! delays a callback rather than losing it. One callback is in flight at a time, in event order,
//! so an app sees `sent` before `delivered`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::messaging::{error_code, status};
use super::sid_of;
use crate::model::MessageStatus;
use crate::model::{EVENT_TYPES, StoredEvent};
use crate::service::Service;
use crate::webhook::deliver::{Endpoint, Request, RequestFuture, Route};
use crate::webhook::sign::Rendered;

/// The outbox cursor's row in the store.
pub const ENDPOINT_KEY: &str = "twilio:status-callbacks";
/// One callback attempt's limit (Twilio's own webhook timeout is 15 s).
const TIMEOUT: Duration = Duration::from_secs(15);
/// How long one callback is retried before it is given up: short, since callbacks to all of the
/// app's URLs wait behind it (Twilio itself does not retry a failed status callback).
const RETRY_PERIOD: Duration = Duration::from_secs(60);

/// Renders and signs the callbacks of one account.
pub struct StatusCallbacks {
    service: Arc<Service>,
    account_sid: String,
    token: String,
}

impl StatusCallbacks {
    /// The outbox endpoint delivering `account_sid`'s callbacks, signed with `token`.
    pub fn endpoint(service: Arc<Service>, account_sid: &str, token: &str) -> Endpoint {
        // A new token re-enables nothing (callbacks never disable the endpoint), but keeps the
        // row's fingerprint honest about what signs.
        let mut h = Sha256::new();
        h.update(account_sid.as_bytes());
        h.update([0]);
        h.update(token.as_bytes());
        let fingerprint = hex::encode(h.finalize());
        let route = StatusCallbacks {
            service,
            account_sid: account_sid.to_owned(),
            token: token.to_owned(),
        };
        Endpoint::routed(
            ENDPOINT_KEY,
            // Every message event becomes a callback; OTP, inbound and modem events do not.
            EVENT_TYPES
                .iter()
                .filter(|e| e.starts_with("message."))
                .map(|e| (*e).to_owned())
                .collect(),
            Arc::new(route),
            fingerprint,
            TIMEOUT,
            RETRY_PERIOD,
        )
    }

    async fn render(&self, event: &StoredEvent) -> Result<Option<Request>, String> {
        let origin = match self.service.message_origin(&event.subject).await {
            Ok(o) => o,
            // Pruned since: nothing to call back about.
            Err(crate::service::ServiceError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let Some(origin) = origin else {
            return Ok(None);
        };
        let Some(url) = origin.status_callback else {
            return Ok(None);
        };
        let mut message = match self.service.get_message(&event.subject).await {
            Ok(m) => m,
            Err(crate::service::ServiceError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        // The status this event is about, not the message's status now (a `sent` callback is
        // still `sent` when the report has arrived meanwhile).
        let data: serde_json::Value = serde_json::from_str(&event.data).unwrap_or_default();
        if let Some(s) = data["status"].as_str().and_then(MessageStatus::parse) {
            message.status = s;
        }
        let sid = sid_of("SM", &message.id);
        let twilio_status = status(&message);
        let mut params: Vec<(&str, String)> = vec![
            ("AccountSid", self.account_sid.clone()),
            ("ApiVersion", "2010-04-01".to_owned()),
            ("MessageSid", sid.clone()),
            ("MessageStatus", twilio_status.to_owned()),
            ("SmsSid", sid),
            ("SmsStatus", twilio_status.to_owned()),
            ("To", message.to.clone()),
            ("NumSegments", message.parts.to_string()),
        ];
        if let Some(from) = &origin.sender {
            params.push(("From", from.clone()));
        }
        if let Some(code) = error_code(&message).as_u64() {
            params.push(("ErrorCode", code.to_string()));
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let signature = signature(&self.token, &url, &params);
        Ok(Some(Request {
            url,
            rendered: Rendered {
                content_type: "application/x-www-form-urlencoded",
                headers: vec![("X-Twilio-Signature", signature)],
                body: body.into_bytes(),
            },
        }))
    }
}

impl Route for StatusCallbacks {
    fn request<'a>(&'a self, event: &'a StoredEvent, _now_secs: i64) -> RequestFuture<'a> {
        Box::pin(self.render(event))
    }
}

/// `X-Twilio-Signature`: base64 of HMAC-SHA1, keyed with the auth token, over the URL followed
/// by each parameter's name and value, sorted by name (Twilio's "Webhooks security").
pub fn signature(token: &str, url: &str, params: &[(&str, String)]) -> String {
    let mut sorted: Vec<&(&str, String)> = params.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0).then_with(|| a.1.cmp(&b.1)));
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(token.as_bytes()).expect("any key");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_twilios_documented_example() {
        // The example of Twilio's "Webhooks security" page: auth token 12345, this URL and
        // these parameters sign to 0/KCTR6DLpKmkAf8muzZqo1nDgQ=.
        let params: Vec<(&str, String)> = vec![
            ("CallSid", "CA1234567890ABCDE".into()),
            ("Caller", "+12349013030".into()),
            ("Digits", "1234".into()),
            ("From", "+12349013030".into()),
            ("To", "+18005551212".into()),
        ];
        assert_eq!(
            signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }
}
