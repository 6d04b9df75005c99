//! Codes drawn elsewhere: an identity server (Supabase Auth, Zitadel) makes and checks its own
//! one-time codes and asks simgate only to deliver them.
//!
//! Such a text is an OTP text in everything but its origin: it is sealed at rest, the delivery
//! log keeps it with the code masked, it is charged to the per-number and per-range OTP budgets
//! and to the per-number daily cap, and it is never sent after the code's lifetime. There is no OTP object behind it (simgate
//! cannot verify a code it did not draw), so `/v1/otp` never sees it.
//!
//! **Invariant:** the code is in clear only in the request; the store gets the sealed text, the
//! masked text, and a keyed HMAC of the text as the de-duplication digest (a plain hash of a
//! six-digit code could be reversed by trying every code).

use std::convert::Infallible;
use std::time::Duration;

use crate::model::{MessageId, MessageKind, MessageStatus, PublicId};
use crate::otp;
use crate::pdu;
use crate::store::Body;

use super::enqueue::{Enqueue, Outgoing};
use super::errors::otp_error;
use super::idempotency::{check_idempotency_key, request_digest};
use super::{Answer, IdempotencyKey, Service, ServiceError, invalid, ms, parts_u32, store_err};

/// Shortest code accepted: shorter "codes" would mask ordinary letters of the text.
pub const MIN_RELAYED_CODE: usize = 4;
/// Longest code accepted (Zitadel's init codes are letters and digits; none is this long).
pub const MAX_RELAYED_CODE: usize = 32;

/// A code to deliver, drawn and verified by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayCode {
    /// Recipient, expected in E.164.
    pub to: String,
    /// The code; every occurrence is masked in the delivery log.
    pub code: String,
    /// The text that carries the code, as the caller worded it; `None`: `otp.template`.
    pub text: Option<String>,
    /// How long the code is valid: `{minutes}` of the template, and the text is never sent
    /// later than this.
    pub lifetime: Duration,
    /// What identifies the request across the caller's retries; a second request under it is
    /// answered with the first answer and sends nothing.
    pub dedupe: IdempotencyKey,
}

/// A relayed code, queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRelayed {
    /// The message carrying it.
    pub message_id: String,
    /// Always `queued`.
    pub status: MessageStatus,
    /// SMS parts of the text.
    pub parts: u32,
}

fn check_code(code: &str) -> Result<(), ServiceError> {
    if !(MIN_RELAYED_CODE..=MAX_RELAYED_CODE).contains(&code.len())
        || !code.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(invalid(
            "code",
            format!(
                "must be {MIN_RELAYED_CODE} to {MAX_RELAYED_CODE} ASCII letters or digits, got \
                 {} characters",
                code.chars().count()
            ),
        ));
    }
    Ok(())
}

/// The text with every occurrence of `code` replaced by `*` of equal length.
fn mask(text: &str, code: &str) -> String {
    text.replace(code, &"*".repeat(code.len()))
}

impl Service {
    /// Queues a text carrying a code drawn by the caller, once per `dedupe` key.
    pub async fn relay_code(
        &self,
        req: RelayCode,
        render: impl FnOnce(&CodeRelayed) -> String,
    ) -> Result<Answer<CodeRelayed>, ServiceError> {
        let to = self.recipient(&req.to)?;
        check_code(&req.code)?;
        check_idempotency_key(&req.dedupe)?;
        let (text, masked) = match req.text {
            Some(t) => {
                if t.contains('\u{0}') {
                    return Err(invalid("text", "contains a NUL character"));
                }
                if !t.contains(&req.code) {
                    // Sending it would put a secret-free text in the OTP budget, or worse, a
                    // code we cannot find in clear in the delivery log.
                    return Err(invalid(
                        "text",
                        "does not contain the code, so it could not be masked in the delivery \
                         log; keep the code in the text",
                    ));
                }
                let masked = mask(&t, &req.code);
                (t, masked)
            }
            None => {
                let r = otp::render(
                    &self.settings.template,
                    &req.code,
                    req.lifetime,
                    None,
                    self.settings.app_hash.as_ref(),
                )
                .map_err(|e| otp_error("template", e))?;
                (r.text, r.masked)
            }
        };
        let parts = pdu::plan(&masked).parts;
        if parts > self.settings.max_otp_parts {
            return Err(invalid(
                "text",
                format!(
                    "too long: it needs {parts} SMS parts, at most {} are allowed for a code \
                     (otp.max_parts)",
                    self.settings.max_otp_parts
                ),
            ));
        }
        let text_mac = self.keys.code_hmac(&req.dedupe.key, &text);
        let text_mac = hex::encode(text_mac);
        let digest = request_digest("relay", &[Some(to.as_str()), Some(&text_mac)]);
        // A retry is answered before the limits: its first attempt already paid for it.
        if let Some(seen) = self.cached_replay(Some(&req.dedupe), &digest) {
            return seen.map(Answer::Replay);
        }
        self.check_send_limits(&to, parts, "text").await?;
        let now = self.clock.now_ms();
        let id = MessageId::random().into_string();
        let queued = CodeRelayed {
            message_id: id.clone(),
            status: MessageStatus::Queued,
            parts: parts_u32(parts),
        };
        let e = Enqueue {
            to: &to,
            key: Some(&req.dedupe),
            digest: &digest,
            now,
        };
        let sealed = self.keys.seal(&text);
        drop(text);
        let msg = Outgoing {
            id: id.clone(),
            kind: MessageKind::Otp,
            log_text: masked,
            body: Body::Sealed(sealed),
            parts,
            deadline: now.saturating_add(ms(req.lifetime)),
        };
        let transaction = |row, idem| async move {
            let outcome = self
                .store
                .enqueue_relayed_otp_text(
                    row,
                    idem,
                    self.settings.otp_per_number_per_day,
                    self.settings.queue_max,
                )
                .await
                .map_err(store_err)?;
            Ok(Ok::<_, Infallible>(outcome))
        };
        let Ok(settled) = self.enqueue(&e, msg, queued, render, transaction).await?;
        if matches!(settled, Answer::New(_)) {
            tracing::info!(message = %id, parts, scope = %req.dedupe.scope, "relayed code queued");
        }
        Ok(settled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_masked_wherever_they_appear() {
        assert_eq!(
            mask("Code 123456. @x.com #123456", "123456"),
            "Code ******. @x.com #******"
        );
        assert_eq!(mask("no code here", "123456"), "no code here");
    }

    #[test]
    fn code_shape() {
        assert!(check_code("123456").is_ok());
        assert!(check_code("0M53RF").is_ok());
        for bad in ["", "123", "12 34", "12-34", &"1".repeat(33), "äöüß"] {
            assert!(check_code(bad).is_err(), "{bad:?}");
        }
    }
}
