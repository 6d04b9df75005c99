//! The API's JSON: request bodies (strict: unknown fields are refused) and answers.
//!
//! Domain types do not derive serde; these twins convert at the edge, so the wire format can stay
//! stable while the inside changes.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::{Message, Millis, OtpStatus};
use crate::service::{self, OtpCreated, OtpView, TextQueued, Verified};

/// RFC 3339 in UTC with always three fractional digits, the form every timestamp of the API
/// takes: a fixed width keeps columns aligned and sorts as text (`Rfc3339` drops trailing zeros).
pub fn rfc3339(ms: Millis) -> String {
    const MILLIS_UTC: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(MILLIS_UTC).ok())
        .unwrap_or_default()
}

/// `POST /v1/otp`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOtpBody {
    /// Recipient in E.164.
    pub to: String,
    /// Lifetime of the code; signed so a negative value gets a range message.
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
    /// Digits of the code.
    #[serde(default)]
    pub code_length: Option<i64>,
    /// Text template with `{code}`.
    #[serde(default)]
    pub template: Option<String>,
    /// WebOTP origin host.
    #[serde(default)]
    pub origin: Option<String>,
    /// Android SMS Retriever app hash.
    #[serde(default)]
    pub app_hash: Option<String>,
    /// `reuse` or `supersede` a pending OTP of the number.
    #[serde(default)]
    pub on_pending: Option<String>,
}

impl From<CreateOtpBody> for service::CreateOtp {
    fn from(b: CreateOtpBody) -> Self {
        service::CreateOtp {
            to: b.to,
            ttl_seconds: b.ttl_seconds,
            code_length: b.code_length,
            template: b.template,
            origin: b.origin,
            app_hash: b.app_hash,
            on_pending: b.on_pending,
        }
    }
}

/// `POST /v1/otp/{id}/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// The code the user typed; a string, because leading zeros matter.
    pub code: String,
}

/// `POST /v1/otp/verify`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyByNumberBody {
    /// The number the code was sent to.
    pub to: String,
    /// The code the user typed.
    pub code: String,
}

/// `POST /v1/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendTextBody {
    /// Recipient in E.164.
    pub to: String,
    /// The text.
    pub text: String,
}

/// `GET /v1/messages` query parameters; all strings so the service can name a bad one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this recipient.
    #[serde(default)]
    pub to: Option<String>,
    /// Only this status.
    #[serde(default)]
    pub status: Option<String>,
    /// Page size.
    #[serde(default)]
    pub limit: Option<String>,
    /// Older than this message id or instant.
    #[serde(default)]
    pub before: Option<String>,
}

/// Answer of `POST /v1/otp` and `POST /v1/otp/{id}/resend`.
#[derive(Debug, Serialize)]
pub struct OtpCreatedJson {
    /// OTP id.
    pub id: String,
    /// Recipient.
    pub to: String,
    /// `pending`.
    pub status: &'static str,
    /// The message carrying the code.
    pub message_id: String,
    /// When the code stops verifying.
    pub expires_at: String,
    /// SMS parts of the text.
    pub parts: u32,
    /// Present when something deserves the client's attention.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl From<&OtpCreated> for OtpCreatedJson {
    fn from(c: &OtpCreated) -> Self {
        OtpCreatedJson {
            id: c.id.clone(),
            to: c.to.as_str().to_owned(),
            status: c.status.as_str(),
            message_id: c.message_id.clone(),
            expires_at: rfc3339(c.expires_at),
            parts: c.parts,
            warnings: c.warnings.clone(),
        }
    }
}

/// Answer of the verify routes.
#[derive(Debug, Serialize)]
pub struct VerifyJson {
    /// OTP id.
    pub id: String,
    /// Status after the attempt.
    pub status: &'static str,
    /// True only for the attempt that approved.
    pub verified: bool,
    /// Wrong attempts still allowed.
    pub attempts_remaining: u32,
}

impl VerifyJson {
    /// Pairs a result with the OTP id.
    pub fn new(id: String, v: Verified) -> Self {
        VerifyJson {
            id,
            status: v.status.as_str(),
            verified: v.verified,
            attempts_remaining: v.attempts_remaining,
        }
    }
}

/// A message of the delivery log.
#[derive(Debug, Serialize)]
pub struct MessageJson {
    /// Message id.
    pub id: String,
    /// Recipient.
    pub to: String,
    /// `otp` or `text`.
    pub kind: &'static str,
    /// The OTP it carries a code for.
    pub otp_id: Option<String>,
    /// Current status.
    pub status: &'static str,
    /// The text, with an OTP code masked.
    pub text: String,
    /// SMS parts.
    pub parts: u32,
    /// Times a modem was handed it.
    pub attempts: u32,
    /// When it was queued.
    pub created_at: String,
    /// When every part was accepted by the network.
    pub sent_at: Option<String>,
    /// When the last part was reported delivered.
    pub delivered_at: Option<String>,
    /// The last error or reason for the status.
    pub error: Option<String>,
    /// The modem that sent it.
    pub modem: Option<String>,
}

impl From<&Message> for MessageJson {
    fn from(m: &Message) -> Self {
        MessageJson {
            id: m.id.clone(),
            to: m.to.clone(),
            kind: m.kind.as_str(),
            otp_id: m.otp_id.clone(),
            status: m.status.as_str(),
            text: m.log_text.clone(),
            parts: m.parts,
            attempts: m.attempts,
            created_at: rfc3339(m.created_at),
            sent_at: m.sent_at.map(rfc3339),
            delivered_at: m.delivered_at.map(rfc3339),
            error: m.error.clone(),
            modem: m.modem_id.clone(),
        }
    }
}

/// Answer of `GET /v1/otp/{id}`.
#[derive(Debug, Serialize)]
pub struct OtpJson {
    /// OTP id.
    pub id: String,
    /// Recipient.
    pub to: String,
    /// Status (`expired` as soon as the time has run out).
    pub status: &'static str,
    /// Wrong attempts still allowed.
    pub attempts_remaining: u32,
    /// When the codes stop verifying.
    pub expires_at: String,
    /// When it was created.
    pub created_at: String,
    /// Texts sent for it (1 + resends).
    pub texts: usize,
    /// The newest text.
    pub message: Option<MessageJson>,
}

impl From<&OtpView> for OtpJson {
    fn from(o: &OtpView) -> Self {
        OtpJson {
            id: o.id.clone(),
            to: o.to.clone(),
            status: o.status.as_str(),
            attempts_remaining: o.attempts_remaining,
            expires_at: rfc3339(o.expires_at),
            created_at: rfc3339(o.created_at),
            texts: o.texts,
            message: o.message.as_ref().map(MessageJson::from),
        }
    }
}

/// Answer of `DELETE /v1/otp/{id}`.
#[derive(Debug, Serialize)]
pub struct CanceledJson {
    /// OTP id.
    pub id: String,
    /// `canceled`.
    pub status: &'static str,
}

impl CanceledJson {
    /// The answer for a canceled OTP.
    pub fn new(id: String, status: OtpStatus) -> Self {
        CanceledJson {
            id,
            status: status.as_str(),
        }
    }
}

/// Answer of `POST /v1/messages`.
#[derive(Debug, Serialize)]
pub struct TextQueuedJson {
    /// Message id.
    pub id: String,
    /// `queued`.
    pub status: &'static str,
    /// SMS parts.
    pub parts: u32,
    /// Present when something deserves the client's attention.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl From<&TextQueued> for TextQueuedJson {
    fn from(t: &TextQueued) -> Self {
        TextQueuedJson {
            id: t.id.clone(),
            status: t.status.as_str(),
            parts: t.parts,
            warnings: t.warnings.clone(),
        }
    }
}

/// Answer of `GET /v1/messages`.
#[derive(Debug, Serialize)]
pub struct MessagesJson {
    /// Newest first.
    pub messages: Vec<MessageJson>,
    /// Pass as `before` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

/// One modem as `GET /v1/modems` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ModemJson {
    /// The cluster node the modem is plugged into; absent with one node (SQLite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Config id of the modem.
    pub id: String,
    /// Serial device path.
    pub device: String,
    /// Driver state; `ready` means it can send.
    pub state: String,
    /// `+CGMI`.
    pub manufacturer: Option<String>,
    /// `+CGMM`.
    pub model: Option<String>,
    /// `+CGSN`.
    pub imei: Option<String>,
    /// The SIM card's ICCID.
    pub iccid: Option<String>,
    /// `+CIMI`: the subscription; absent while the SIM is locked.
    pub imsi: Option<String>,
    /// `+CSCA`: the service centre; empty when the SIM has none.
    pub smsc: Option<String>,
    /// `+COPS` operator name.
    pub operator: Option<String>,
    /// `+CREG` registration in words (`home`, `roaming`, `searching`, ...).
    pub registration: Option<String>,
    /// Signal strength in dBm from `+CSQ` (TS 27.007 §8.5), absent when unknown.
    pub signal: Option<i32>,
    /// Messages sent through it since start.
    pub sent: u64,
    /// Sends that failed on it since start.
    pub failed: u64,
    /// Why it is not ready (the last open or initialisation failure, in words), so an
    /// operator sees why a modem stays `disconnected` without reading the log.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(1_700_000_000_120), "2023-11-14T22:13:20.120Z");
    }
}
