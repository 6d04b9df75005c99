//! The OTP use cases: create, verify (by id or by number), read, resend and cancel.
//!
//! **Invariant:** a code exists in clear only between drawing and sealing (rendered, sealed,
//! HMACed, then dropped); what the store and the log get is the masked text.

use std::convert::Infallible;
use std::time::Duration;

use crate::limits::LimitName;
use crate::model::{Message, MessageId, MessageKind, Millis, Msisdn, OtpId, OtpStatus, PublicId};
use crate::otp::{self, AppHash, OnPending, Origin};
use crate::pdu;
use crate::store::{
    self, AddTextOutcome, Body, CreateOtpOutcome, CreateOutcome, NewOtp, NewOtpText, Otp,
    OtpWording,
};

use super::budgets::retry_secs;
use super::enqueue::{Enqueue, Outgoing};
use super::errors::{in_range, otp_error};
use super::idempotency::{check_idempotency_key, request_digest};
use super::texts::warnings_for;
use super::wording::TextInputs;
use super::{
    Answer, IdempotencyKey, Service, ServiceError, invalid, ms, parse_id, parts_u32, shorten,
    store_err,
};

/// A request to send an OTP, as the client gave it (validated by [`Service::create_otp`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOtp {
    /// Recipient, expected in E.164.
    pub to: String,
    /// Lifetime in seconds; signed so a negative value gets a range message, not a type error.
    pub ttl_seconds: Option<i64>,
    /// Digits of the code; signed for the same reason.
    pub code_length: Option<i64>,
    /// Text template with `{code}` and optionally `{minutes}`.
    pub template: Option<String>,
    /// Host for the WebOTP line `@<origin> #<code>`.
    pub origin: Option<String>,
    /// Android SMS Retriever app hash, appended as the last line.
    pub app_hash: Option<String>,
    /// `reuse` or `supersede`: what to do when the number has a pending OTP (default
    /// `otp.on_pending`).
    pub on_pending: Option<String>,
}

/// The answer to a created (or resent) OTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpCreated {
    /// The OTP id.
    pub id: String,
    /// The recipient.
    pub to: Msisdn,
    /// Always `pending` for a fresh OTP.
    pub status: OtpStatus,
    /// The message carrying this code.
    pub message_id: String,
    /// When every code of this OTP stops verifying.
    pub expires_at: Millis,
    /// SMS parts of the text.
    pub parts: u32,
    /// Things the client should know but that did not stop the send (e.g. a multi-part text).
    pub warnings: Vec<String>,
}

/// The answer to a verify attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Status after the attempt.
    pub status: OtpStatus,
    /// True only for the attempt that approved the OTP.
    pub verified: bool,
    /// Wrong attempts still allowed.
    pub attempts_remaining: u32,
}

/// An OTP as `GET /v1/otp/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtpView {
    /// The OTP id.
    pub id: String,
    /// The recipient.
    pub to: String,
    /// Status, with `expired` shown as soon as the time has run out.
    pub status: OtpStatus,
    /// Wrong attempts still allowed.
    pub attempts_remaining: u32,
    /// When every code stops verifying.
    pub expires_at: Millis,
    /// When the OTP was created.
    pub created_at: Millis,
    /// The newest text carrying one of its codes.
    pub message: Option<Message>,
    /// How many texts were sent for it (1 + resends).
    pub texts: usize,
}

/// The warning of a `POST /v1/otp` that reused the number's pending OTP.
fn reuse_note(otp_id: &str, req: &CreateOtp) -> String {
    let ignored: Vec<&str> = [
        ("ttl_seconds", req.ttl_seconds.is_some()),
        ("code_length", req.code_length.is_some()),
        ("template", req.template.is_some()),
        ("origin", req.origin.is_some()),
        ("app_hash", req.app_hash.is_some()),
    ]
    .into_iter()
    .filter_map(|(f, given)| given.then_some(f))
    .collect();
    let mut note = format!(
        "the number has a pending OTP, so {otp_id} was reused (on_pending = reuse): a new text \
         with a fresh code, the same expiry, and the codes sent before stay valid"
    );
    if !ignored.is_empty() {
        note.push_str(&format!(
            "; {} of this request did not apply (the first text's wording is kept); send \
             \"on_pending\": \"supersede\" to start a new OTP",
            ignored.join(", ")
        ));
    }
    note
}

/// The effective status: a pending OTP whose time ran out is expired even before the store
/// notices.
fn effective_status(otp: &Otp, now: Millis) -> OtpStatus {
    if otp.status == OtpStatus::Pending && now >= otp.expires_at {
        OtpStatus::Expired
    } else {
        otp.status
    }
}

fn hmacs(otp: &Otp) -> Vec<[u8; 32]> {
    otp.code_hmacs
        .iter()
        .filter_map(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
        .collect()
}

/// Checks the shape of a code typed by a user. Non-digits can never match, and refusing them
/// (422, not counted) tells a client about its bug instead of burning an attempt.
fn check_code(code: &str) -> Result<(), ServiceError> {
    if code.is_empty() {
        return Err(invalid("code", "is empty; give the code the user received"));
    }
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            "code",
            "must be digits only (strip spaces and dashes the user may have typed)",
        ));
    }
    if !(otp::MIN_CODE_LENGTH..=otp::MAX_CODE_LENGTH).contains(&code.len()) {
        return Err(invalid(
            "code",
            format!(
                "must have {} to {} digits, got {}",
                otp::MIN_CODE_LENGTH,
                otp::MAX_CODE_LENGTH,
                code.len()
            ),
        ));
    }
    Ok(())
}

/// The queued row of an OTP text: the log keeps the masked text, the modem gets the sealed one.
fn otp_text(
    id: String,
    masked: String,
    sealed: Vec<u8>,
    parts: usize,
    deadline: Millis,
) -> Outgoing {
    Outgoing {
        id,
        kind: MessageKind::Otp,
        log_text: masked,
        body: Body::Sealed(sealed),
        parts,
        deadline,
    }
}

impl Service {
    /// Creates an OTP and queues its text. `render` turns the answer into the bytes an
    /// idempotent retry must get back verbatim; it is stored in the same transaction.
    ///
    /// With `on_pending = reuse` (the default) a number that has a pending OTP gets that OTP
    /// back with one more text, exactly as [`Service::resend`] sends it.
    pub async fn create_otp(
        &self,
        req: CreateOtp,
        idempotency: Option<IdempotencyKey>,
        render: impl Fn(&OtpCreated) -> String,
    ) -> Result<Answer<OtpCreated>, ServiceError> {
        let to = self.recipient(&req.to)?;
        let len = match req.code_length {
            None => self.settings.code_length,
            Some(v) => {
                let v = in_range(
                    "code_length",
                    v,
                    otp::MIN_CODE_LENGTH as u64,
                    otp::MAX_CODE_LENGTH as u64,
                    " digits",
                )?;
                otp::validate_code_length(v as usize).map_err(|e| otp_error("code_length", e))?
            }
        };
        let ttl = match req.ttl_seconds {
            None => self.settings.ttl,
            Some(v) => Duration::from_secs(in_range(
                "ttl_seconds",
                v,
                self.settings.min_ttl.as_secs(),
                self.settings.max_ttl.as_secs(),
                " seconds",
            )?),
        };
        let template = match &req.template {
            None => self.settings.template.as_str(),
            Some(t) => {
                otp::validate_template(t).map_err(|e| otp_error("template", e))?;
                t.as_str()
            }
        };
        let origin = match &req.origin {
            None => None,
            Some(o) => Some(Origin::parse(o).map_err(|e| otp_error("origin", e))?),
        };
        let app_hash = match &req.app_hash {
            Some(h) => Some(AppHash::parse(h).map_err(|e| otp_error("app_hash", e))?),
            // The configured hash applies only where it can: WebOTP's origin line must be last.
            None if origin.is_none() => self.settings.app_hash.clone(),
            None => None,
        };
        let on_pending = match &req.on_pending {
            None => self.settings.on_pending,
            Some(p) => OnPending::parse(p).ok_or_else(|| {
                invalid(
                    "on_pending",
                    format!("{:?} is neither \"reuse\" nor \"supersede\"", shorten(p)),
                )
            })?,
        };
        if let Some(k) = &idempotency {
            check_idempotency_key(k)?;
        }
        let ttl_text = req.ttl_seconds.map(|v| v.to_string());
        let len_text = req.code_length.map(|v| v.to_string());
        let digest = request_digest(
            "otp",
            &[
                Some(to.as_str()),
                ttl_text.as_deref(),
                len_text.as_deref(),
                req.template.as_deref(),
                req.origin.as_deref(),
                req.app_hash.as_deref(),
                req.on_pending.as_deref(),
            ],
        );

        if let Some(seen) = self.cached_replay(idempotency.as_ref(), &digest) {
            return seen.map(Answer::Replay);
        }
        // Whether the number has a pending OTP to reuse is decided inside the store's
        // transaction, not read first: most numbers have none, and a read per request would
        // cost every one of them a round trip.
        let now = self.clock.now_ms();
        let id = OtpId::random().into_string();
        let message_id = MessageId::random().into_string();
        let code = (self.codes)(len);
        let rendered = otp::render(template, &code, ttl, origin.as_ref(), app_hash.as_ref())
            .map_err(|e| otp_error("template", e))?;
        let code_hmac = self.keys.code_hmac(&id, &code).to_vec();
        drop(code);
        let parts = pdu::plan(&rendered.masked).parts;
        let inputs = TextInputs {
            template,
            template_requested: req.template.is_some(),
            len,
            len_requested: req.code_length.is_some(),
            ttl,
            origin: origin.as_ref(),
            app_hash: app_hash.as_ref(),
            app_hash_requested: req.app_hash.is_some(),
        };
        if parts > self.settings.max_otp_parts {
            return Err(self.too_many_parts(parts, &rendered.masked, &inputs));
        }
        if let Err(e) = self
            .check_send_limits(&to, parts, self.blame(&inputs))
            .await
        {
            // A number whose pending OTP has all its texts is better told so than sent to a
            // per-number wait it would only meet again; the read is paid on refusals only.
            if on_pending == OnPending::Reuse
                && matches!(e, ServiceError::RateLimited { .. })
                && let Some(p) = self
                    .store
                    .newest_pending_otp(to.as_str(), now)
                    .await
                    .map_err(store_err)?
                && p.message_ids.len() as u64 > u64::from(self.settings.max_resends)
            {
                return Err(self.resend_cap(&p, now));
            }
            return Err(e);
        }

        let sealed = self.keys.seal(&rendered.text);
        drop(rendered.text);
        let expires_at = now.saturating_add(ms(ttl));
        let created = OtpCreated {
            id: id.clone(),
            to: to.clone(),
            status: OtpStatus::Pending,
            message_id: message_id.clone(),
            expires_at,
            parts: parts_u32(parts),
            warnings: warnings_for(&rendered.masked, parts),
        };
        let (otp_id, msg_id) = (created.id.clone(), created.message_id.clone());
        let otp_row = NewOtp {
            id,
            to: to.clone(),
            code_hmac,
            max_attempts: self.settings.max_attempts,
            expires_at,
            created_at: now,
        };
        let wording = OtpWording {
            code_length: len.get() as u32,
            code_offsets: rendered.code_offsets,
        };
        let keep = match on_pending {
            OnPending::Reuse => store::OnPending::Keep,
            OnPending::Supersede => store::OnPending::Supersede,
        };
        let e = Enqueue {
            to: &to,
            key: idempotency.as_ref(),
            digest: &digest,
            now,
        };
        let msg = otp_text(message_id, rendered.masked, sealed, parts, expires_at);
        let queued = self
            .enqueue(&e, msg, created, &render, |row, idem| async move {
                let outcome = self
                    .store
                    .create_otp_worded(
                        otp_row,
                        row,
                        wording,
                        keep,
                        idem,
                        self.settings.otp_per_number_per_day,
                        self.settings.queue_max,
                    )
                    .await
                    .map_err(store_err)?;
                Ok(match outcome {
                    CreateOtpOutcome::Done(o) => Ok(o),
                    CreateOtpOutcome::PendingExists { otp_id } => Err(otp_id),
                })
            })
            .await?;
        match queued {
            Ok(settled) => {
                if matches!(settled, Answer::New(_)) {
                    tracing::info!(otp = %otp_id, message = %msg_id, parts, "OTP queued");
                }
                Ok(settled)
            }
            // The number has a pending OTP: add a text to it instead. This request's cells
            // are spent already, so the reused text is not charged again.
            Err(pending_id) => {
                let pending = self.load_otp(&pending_id).await?;
                let note = reuse_note(&pending_id, &req);
                self.add_text(
                    pending,
                    idempotency.as_ref(),
                    &digest,
                    &render,
                    Some(note),
                    false,
                )
                .await
            }
        }
    }

    /// Checks a code against one OTP. An OTP that has already ended answers
    /// [`ServiceError::OtpEnded`] without counting anything.
    pub async fn verify(&self, id: &str, code: &str) -> Result<Verified, ServiceError> {
        parse_id::<OtpId>(id)?;
        check_code(code)?;
        let otp = self.load_otp(id).await?;
        self.verify_loaded(otp, code).await
    }

    /// Checks a code against the newest pending OTP of a number.
    pub async fn verify_by_number(
        &self,
        to: &str,
        code: &str,
    ) -> Result<(String, Verified), ServiceError> {
        let to = Msisdn::parse(to).map_err(|d| invalid("to", d))?;
        check_code(code)?;
        let now = self.clock.now_ms();
        let otp = self
            .store
            .newest_pending_otp(to.as_str(), now)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ServiceError::NoPendingOtp { to: to.clone() })?;
        let id = otp.id.clone();
        Ok((id, self.verify_loaded(otp, code).await?))
    }

    async fn verify_loaded(&self, otp: Otp, code: &str) -> Result<Verified, ServiceError> {
        let now = self.clock.now_ms();
        let ended = |status: OtpStatus, attempts_remaining: u32| ServiceError::OtpEnded {
            id: otp.id.clone(),
            status,
            attempts_remaining,
        };
        let status = effective_status(&otp, now);
        if status != OtpStatus::Pending {
            return Err(ended(status, otp.max_attempts.saturating_sub(otp.attempts)));
        }
        // Only attempts that can still change the outcome spend the number's verify budget.
        self.limits.check_verify(&otp.to).map_err(|ra| {
            self.rejected(
                LimitName::VerifyPerNumber,
                format!("verify_per_number: too many attempts for {}", otp.to),
                ra.seconds(),
            )
        })?;
        self.check_shared_verify(&otp.to).await?;
        let matched = self.keys.verify(&otp.id, code, &hmacs(&otp));
        let r = self
            .store
            .record_verify(&otp.id, matched, now)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ServiceError::NotFound {
                what: "OTP",
                id: otp.id.clone(),
            })?;
        // The OTP ended between the read above and this attempt (another request approved or
        // canceled it, or its time ran out): nothing was counted. An OTP that reached
        // max_attempts_reached may have been ended by this very attempt, so that one answers 200.
        if !r.verified
            && matches!(
                r.status,
                OtpStatus::Approved | OtpStatus::Canceled | OtpStatus::Expired
            )
        {
            return Err(ended(r.status, r.attempts_remaining));
        }
        Ok(Verified {
            status: r.status,
            verified: r.verified,
            attempts_remaining: r.attempts_remaining,
        })
    }

    async fn load_otp(&self, id: &str) -> Result<Otp, ServiceError> {
        self.store
            .get_otp(id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| ServiceError::NotFound {
                what: "OTP",
                id: id.to_owned(),
            })
    }

    /// One OTP and its newest text.
    pub async fn get_otp(&self, id: &str) -> Result<OtpView, ServiceError> {
        parse_id::<OtpId>(id)?;
        let otp = self.load_otp(id).await?;
        let message = match otp.message_ids.last() {
            Some(m) => self.store.get_message(m).await.map_err(store_err)?,
            None => None,
        };
        let now = self.clock.now_ms();
        Ok(OtpView {
            status: effective_status(&otp, now),
            attempts_remaining: otp.max_attempts.saturating_sub(otp.attempts),
            id: otp.id,
            to: otp.to,
            expires_at: otp.expires_at,
            created_at: otp.created_at,
            message,
            texts: otp.message_ids.len(),
        })
    }

    /// Sends a fresh code for a pending OTP; earlier codes stay valid until it expires.
    ///
    /// The new text is the first text with only the code changed: same template, code length,
    /// origin line and stated lifetime (the expiry instant is unchanged). At most
    /// `otp.max_resends` resends per OTP.
    pub async fn resend(&self, id: &str) -> Result<OtpCreated, ServiceError> {
        parse_id::<OtpId>(id)?;
        let otp = self.load_otp(id).await?;
        match self
            .add_text(otp, None, &[], |_| String::new(), None, true)
            .await?
        {
            Answer::New(c) => Ok(c),
            // Without an idempotency key nothing can be replayed.
            Answer::Replay(_) => Err(ServiceError::Internal(
                "a resend without a key was answered as a replay".into(),
            )),
        }
    }

    /// One more text with a fresh code for a pending OTP: the body of a resend, and of a
    /// `POST /v1/otp` that reuses a pending OTP (`note` then says so in the warnings).
    /// `charge` is false only when this request's cells were already spent on the same number.
    async fn add_text(
        &self,
        otp: Otp,
        idempotency: Option<&IdempotencyKey>,
        digest: &[u8],
        render: impl Fn(&OtpCreated) -> String,
        note: Option<String>,
        charge: bool,
    ) -> Result<Answer<OtpCreated>, ServiceError> {
        let id = otp.id.clone();
        let now = self.clock.now_ms();
        let not_pending = |st: OtpStatus| {
            ServiceError::Conflict(format!(
                "OTP {id} is {}; only a pending OTP can be resent (create a new one instead)",
                st.as_str()
            ))
        };
        let status = effective_status(&otp, now);
        if status != OtpStatus::Pending {
            return Err(not_pending(status));
        }
        let max_texts = self.settings.max_resends.saturating_add(1);
        if otp.message_ids.len() as u64 >= u64::from(max_texts) {
            return Err(self.resend_cap(&otp, now));
        }
        let to = Msisdn::parse(&otp.to)
            .map_err(|_| ServiceError::Internal(format!("OTP {id} has a bad stored number")))?;
        let first = match otp.message_ids.first() {
            Some(m) => self.store.get_message(m).await.map_err(store_err)?,
            None => None,
        };
        let recorded = self.store.otp_wording(&otp.id).await.map_err(store_err)?;
        let (wording, masked, len) = self.reword(first.as_ref(), recorded, otp.expires_at - now);
        let parts = pdu::plan(&masked).parts;
        if charge {
            self.check_send_limits(&to, parts, "template").await?;
        }
        let code = (self.codes)(len);
        let text = wording.replace_code(&code);
        let code_hmac = self.keys.code_hmac(&otp.id, &code).to_vec();
        drop(code);
        let sealed = self.keys.seal(&text);
        drop(text);
        let message_id = MessageId::random().into_string();
        let mut warnings = warnings_for(&masked, parts);
        warnings.extend(note);
        let created = OtpCreated {
            id: otp.id.clone(),
            to: to.clone(),
            status: OtpStatus::Pending,
            message_id: message_id.clone(),
            expires_at: otp.expires_at,
            parts: parts_u32(parts),
            warnings,
        };
        let e = Enqueue {
            to: &to,
            key: idempotency,
            digest,
            now,
        };
        let msg = otp_text(message_id.clone(), masked, sealed, parts, otp.expires_at);
        let transaction = |row, idem| async {
            let outcome = self
                .store
                .add_otp_text(NewOtpText {
                    otp_id: otp.id.clone(),
                    code_hmac,
                    msg: row,
                    idem,
                    max_texts,
                    daily_cap: self.settings.otp_per_number_per_day,
                    queue_max: self.settings.queue_max,
                })
                .await
                .map_err(store_err)?;
            Ok(Ok::<_, Infallible>(match outcome {
                AddTextOutcome::Added => CreateOutcome::Created,
                AddTextOutcome::Replay(stored) => CreateOutcome::Replay(stored),
                AddTextOutcome::IdempotencyConflict => CreateOutcome::IdempotencyConflict,
                AddTextOutcome::DailyLimit { retry_after_ms } => {
                    CreateOutcome::DailyLimit { retry_after_ms }
                }
                AddTextOutcome::QueueFull => CreateOutcome::QueueFull,
                AddTextOutcome::NotFound => {
                    return Err(ServiceError::NotFound {
                        what: "OTP",
                        id: id.clone(),
                    });
                }
                AddTextOutcome::NotPending(st) => return Err(not_pending(st)),
                AddTextOutcome::TextCap { .. } => return Err(self.resend_cap(&otp, now)),
            }))
        };
        let Ok(settled) = self.enqueue(&e, msg, created, render, transaction).await?;
        if matches!(settled, Answer::New(_)) {
            tracing::info!(otp = %otp.id, message = %message_id, parts, "OTP text added");
        }
        Ok(settled)
    }

    /// 429 for an OTP that has all the texts `otp.max_resends` allows; a new code can be asked
    /// for once it expires (or at once with `on_pending = "supersede"`).
    fn resend_cap(&self, otp: &Otp, now: Millis) -> ServiceError {
        let max = self.settings.max_resends;
        self.rejected(
            LimitName::MaxResends,
            format!(
                "max_resends: OTP {} has had {} (the first and otp.max_resends = {max}); every \
                 code sent stays valid until it expires, so each resend raises the odds of a \
                 guess; ask the user for a code already sent, or wait for the expiry (or create \
                 the OTP again with \"on_pending\": \"supersede\")",
                otp.id,
                otp::count_noun(u64::from(max) + 1, "text"),
            ),
            retry_secs(otp.expires_at - now),
        )
    }

    /// Cancels a pending OTP (its queued texts are not sent).
    pub async fn cancel(&self, id: &str) -> Result<OtpStatus, ServiceError> {
        parse_id::<OtpId>(id)?;
        let now = self.clock.now_ms();
        match self.store.cancel_otp(id, now).await.map_err(store_err)? {
            None => Err(ServiceError::NotFound {
                what: "OTP",
                id: id.to_owned(),
            }),
            Some(OtpStatus::Canceled) => Ok(OtpStatus::Canceled),
            Some(other) => Err(ServiceError::Conflict(format!(
                "OTP {id} is already {}; it cannot be canceled",
                other.as_str()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_checked_for_shape() {
        assert!(check_code("123456").is_ok());
        for bad in ["", "12 34", "abcdef", "123", "12345678901"] {
            assert!(check_code(bad).is_err(), "{bad:?}");
        }
    }
}
