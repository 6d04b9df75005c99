//! Plain texts: validating and queueing `POST /v1/messages`.
//!
//! **Invariant:** a text is refused before it is queued if it could not be sent in at most
//! `max_text_parts` parts or could never fit the global budget.

use std::convert::Infallible;

use crate::model::{MessageId, MessageKind, MessageStatus, PublicId};
use crate::pdu;
use crate::store::Body;

use super::enqueue::{Enqueue, Outgoing};
use super::idempotency::{check_idempotency_key, request_digest};
use super::{Answer, IdempotencyKey, Service, ServiceError, invalid, ms, parts_u32, store_err};

/// A request to send a plain text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendText {
    /// Recipient, expected in E.164.
    pub to: String,
    /// The text; long texts go as concatenated parts.
    pub text: String,
    /// How long it may wait in the queue, when shorter than `dispatch.text_max_age` (Twilio's
    /// `ValidityPeriod`); `None`: `dispatch.text_max_age`.
    pub valid_for: Option<std::time::Duration>,
    /// What the client said beyond recipient and body (Twilio's `From` and `StatusCallback`),
    /// stored with the message.
    pub origin: Option<crate::model::MessageOrigin>,
}

/// The answer to a queued plain text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextQueued {
    /// The message id.
    pub id: String,
    /// Always `queued`.
    pub status: MessageStatus,
    /// SMS parts of the text.
    pub parts: u32,
    /// Things the client should know (e.g. UCS-2 encoding).
    pub warnings: Vec<String>,
}

pub(super) fn warnings_for(text: &str, parts: usize) -> Vec<String> {
    let mut w = Vec::new();
    let plan = pdu::plan(text);
    if parts > 1 {
        w.push(format!(
            "the text needs {parts} SMS parts{}",
            if plan.encoding == pdu::Encoding::Ucs2 {
                " (it has characters outside the GSM 7-bit alphabet, so it is sent as UCS-2 \
                 with 67 characters per part)"
            } else {
                ""
            }
        ));
    }
    w
}

impl Service {
    /// Queues a plain text.
    pub async fn send_text(
        &self,
        req: SendText,
        idempotency: Option<IdempotencyKey>,
        render: impl FnOnce(&TextQueued) -> String,
    ) -> Result<Answer<TextQueued>, ServiceError> {
        let to = self.recipient(&req.to)?;
        if req.text.trim().is_empty() {
            return Err(invalid("text", "is empty; give the text to send"));
        }
        if req.text.contains('\u{0}') {
            return Err(invalid("text", "contains a NUL character"));
        }
        let parts = pdu::plan(&req.text).parts;
        if parts > self.settings.max_text_parts {
            return Err(invalid(
                "text",
                format!(
                    "too long: it needs {parts} SMS parts, at most {} are allowed",
                    self.settings.max_text_parts
                ),
            ));
        }
        if let Some(k) = &idempotency {
            check_idempotency_key(k)?;
        }
        let digest = request_digest("text", &[Some(to.as_str()), Some(&req.text)]);
        if let Some(seen) = self.cached_replay(idempotency.as_ref(), &digest) {
            return seen.map(Answer::Replay);
        }
        self.check_global(parts, "text")?;
        let now = self.clock.now_ms();
        let id = MessageId::random().into_string();
        let queued = TextQueued {
            id: id.clone(),
            status: MessageStatus::Queued,
            parts: parts_u32(parts),
            warnings: warnings_for(&req.text, parts),
        };
        let e = Enqueue {
            to: &to,
            key: idempotency.as_ref(),
            digest: &digest,
            now,
        };
        let msg = Outgoing {
            id,
            kind: MessageKind::Text,
            log_text: req.text.clone(),
            body: Body::Clear(req.text),
            parts,
            deadline: now.saturating_add(ms(req
                .valid_for
                .map_or(self.settings.text_max_age, |v| {
                    v.min(self.settings.text_max_age)
                }))),
        };
        let msg_id = queued.id.clone();
        // Plain texts have no daily cap; the store reports one only for OTPs.
        let origin = req.origin;
        let transaction = |row, idem| async move {
            let outcome = match origin {
                None => {
                    self.store
                        .enqueue_text(row, idem, self.settings.queue_max)
                        .await
                }
                Some(o) => {
                    self.store
                        .enqueue_text_from(row, idem, self.settings.queue_max, o)
                        .await
                }
            }
            .map_err(store_err)?;
            Ok(Ok::<_, Infallible>(outcome))
        };
        let Ok(settled) = self.enqueue(&e, msg, queued, render, transaction).await?;
        if matches!(settled, Answer::New(_)) {
            tracing::info!(message = %msg_id, parts, "text queued");
        }
        Ok(settled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_for_long_texts() {
        assert!(warnings_for("short", 1).is_empty());
        let w = warnings_for(&"x".repeat(200), 2);
        assert_eq!(w, vec!["the text needs 2 SMS parts".to_owned()]);
    }
}
