//! The domain's vocabulary: the values every layer passes around, parsed once at the edge and
//! carried typed from there on.
//!
//! **Invariant:** a leaf: it imports nothing of the crate. The store maps these types to
//! columns and `http` maps them to JSON; neither owns them. A [`Msisdn`] always holds strict
//! E.164; the status names are the ones SPEC.md gives and the API shows.

use std::fmt;

/// Unix time in milliseconds.
pub type Millis = i64;

/// A phone number in E.164 form: `+`, then 8 to 15 digits, the first not 0 (ITU-T E.164 §6).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Msisdn(String);

/// Fewest digits accepted. E.164 allows shorter numbers in a few small countries, but below 8
/// digits (country code included) a mobile number is almost surely missing its country code.
pub const MIN_E164_DIGITS: usize = 8;

/// Most digits E.164 allows (ITU-T E.164 §6.1).
pub const MAX_E164_DIGITS: usize = 15;

impl Msisdn {
    /// Parses strictly, and says how to fix what it refuses.
    pub fn parse(s: &str) -> Result<Msisdn, String> {
        const EXAMPLE: &str = "e.g. +15551234567";
        if s.is_empty() {
            return Err(format!(
                "is empty; give the number in E.164 form, {EXAMPLE}"
            ));
        }
        if s.trim() != s
            || s.chars()
                .any(|c| matches!(c, ' ' | '-' | '.' | '(' | ')' | '/'))
        {
            return Err(format!(
                "remove spaces, dashes, dots and brackets: E.164 is + followed by digits only, \
                 {EXAMPLE}"
            ));
        }
        let digits = match s.strip_prefix('+') {
            Some(d) => d,
            None if s.starts_with("00") && s.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(format!(
                    "replace the international prefix 00 with +, i.e. +{}",
                    &s[2..]
                ));
            }
            None if s.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(format!(
                    "add the country code with a leading +: E.164 numbers start with +, {EXAMPLE}"
                ));
            }
            None => {
                return Err(format!(
                    "is not a phone number: E.164 is + followed by digits only, {EXAMPLE}"
                ));
            }
        };
        if let Some(c) = digits.chars().find(|c| !c.is_ascii_digit()) {
            return Err(if c == '+' {
                "has more than one +".to_owned()
            } else {
                format!("contains {c:?}; only digits may follow the +, {EXAMPLE}")
            });
        }
        if digits.starts_with('0') {
            return Err(
                "no country code starts with 0: drop the trunk prefix 0 and put the country \
                 code after the +"
                    .to_owned(),
            );
        }
        if digits.len() < MIN_E164_DIGITS {
            return Err(format!(
                "too short: {} digits, but an E.164 mobile number has at least {MIN_E164_DIGITS} \
                 including the country code",
                digits.len()
            ));
        }
        if digits.len() > MAX_E164_DIGITS {
            return Err(format!(
                "too long: {} digits, but E.164 numbers have at most {MAX_E164_DIGITS}",
                digits.len()
            ));
        }
        Ok(Msisdn(s.to_owned()))
    }

    /// The number with its leading `+`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Msisdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A public id: a fixed prefix and 32 lowercase hex digits (a random UUID), so a typo can be told
/// apart from an unknown id before any lookup.
pub trait PublicId: Sized {
    /// What every id of this kind starts with.
    const PREFIX: &'static str;
    /// What the id names, with its article, for error details ("an OTP").
    const NOUN: &'static str;

    /// A fresh random id.
    fn random() -> Self;

    /// The id, if `s` has the shape of one.
    fn parse(s: &str) -> Option<Self>;
}

fn well_formed(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

macro_rules! public_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $noun:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl PublicId for $name {
            const PREFIX: &'static str = $prefix;
            const NOUN: &'static str = $noun;

            fn random() -> Self {
                $name(format!("{}{}", $prefix, uuid::Uuid::new_v4().simple()))
            }

            fn parse(s: &str) -> Option<Self> {
                well_formed($prefix, s).then(|| $name(s.to_owned()))
            }
        }

        impl $name {
            /// The id as the API shows it.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as the API shows it, for a column or a JSON field.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

public_id!(
    /// The public id of an OTP: `otp_` and 32 lowercase hex digits.
    OtpId,
    "otp_",
    "an OTP"
);

public_id!(
    /// The public id of a message: `msg_` and 32 lowercase hex digits.
    MessageId,
    "msg_",
    "a message"
);

/// What a message is, which decides how its body is stored and what the log shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A text carrying an OTP code: body sealed, log text masked.
    Otp,
    /// A plain text sent through `POST /v1/messages`.
    Text,
}

impl MessageKind {
    /// The value stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Otp => "otp",
            MessageKind::Text => "text",
        }
    }

    /// Inverse of [`MessageKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "otp" => Some(MessageKind::Otp),
            "text" => Some(MessageKind::Text),
            _ => None,
        }
    }
}

/// The life of a message, as SPEC.md names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageStatus {
    /// Waiting for a modem (possibly until `next_attempt_at` after a temporary error).
    Queued,
    /// Claimed by the dispatcher and being handed to a modem.
    Sending,
    /// Accepted by the network (`+CMGS` answered for every part).
    Sent,
    /// Every part's status report said delivered.
    Delivered,
    /// A permanent error, or retries ran out of time, or a failed status report.
    Failed,
    /// Its deadline passed before it could be sent (an OTP code is never sent after expiry).
    Expired,
    /// Its OTP was canceled or replaced while it was still queued.
    Canceled,
}

impl MessageStatus {
    /// Every status, for metrics that report a count per status.
    pub const ALL: [MessageStatus; 7] = [
        MessageStatus::Queued,
        MessageStatus::Sending,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Failed,
        MessageStatus::Expired,
        MessageStatus::Canceled,
    ];

    /// The value stored in the `status` column and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Sending => "sending",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Failed => "failed",
            MessageStatus::Expired => "expired",
            MessageStatus::Canceled => "canceled",
        }
    }

    /// Inverse of [`MessageStatus::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        MessageStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// No further transition is possible except a late status report on `Sent`.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            MessageStatus::Delivered
                | MessageStatus::Failed
                | MessageStatus::Expired
                | MessageStatus::Canceled
        )
    }
}

/// The life of an OTP, as SPEC.md names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OtpStatus {
    /// Waiting for the right code.
    Pending,
    /// A code matched; it can never be used again.
    Approved,
    /// Its time ran out.
    Expired,
    /// Too many wrong codes.
    MaxAttemptsReached,
    /// Canceled by the client or replaced by a newer OTP for the same number.
    Canceled,
}

impl OtpStatus {
    /// The value stored in the `status` column and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            OtpStatus::Pending => "pending",
            OtpStatus::Approved => "approved",
            OtpStatus::Expired => "expired",
            OtpStatus::MaxAttemptsReached => "max_attempts_reached",
            OtpStatus::Canceled => "canceled",
        }
    }

    /// Inverse of [`OtpStatus::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            OtpStatus::Pending,
            OtpStatus::Approved,
            OtpStatus::Expired,
            OtpStatus::MaxAttemptsReached,
            OtpStatus::Canceled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// What a client said about a text beyond its recipient and body, kept beside the message: the
/// sender it named (Twilio's `From`) and where it wants status changes posted (Twilio's
/// `StatusCallback`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageOrigin {
    /// The `From` the client gave.
    pub sender: Option<String>,
    /// An absolute `http(s)://` URL for status callbacks.
    pub status_callback: Option<String>,
}

/// A message as the delivery log shows it (never the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Public id.
    pub id: String,
    /// The OTP this text belongs to, if any.
    pub otp_id: Option<String>,
    /// Recipient in E.164 (masked after the retention's masking age).
    pub to: String,
    /// OTP or plain text.
    pub kind: MessageKind,
    /// The text with any code masked.
    pub log_text: String,
    /// SMS parts.
    pub parts: u32,
    /// Current status.
    pub status: MessageStatus,
    /// Times a modem was handed this message.
    pub attempts: u32,
    /// The last error or reason for the current status.
    pub error: Option<String>,
    /// When it was queued.
    pub created_at: Millis,
    /// When every part was accepted by the network.
    pub sent_at: Option<Millis>,
    /// When the last part's delivery was reported.
    pub delivered_at: Option<Millis>,
    /// Never sent after this instant.
    pub deadline: Millis,
    /// Not picked up before this instant (retry backoff).
    pub next_attempt_at: Millis,
    /// The modem that sent (or is sending) it.
    pub modem_id: Option<String>,
}

public_id!(
    /// The public id of an inbound text: `in_` and 32 lowercase hex digits.
    InboundId,
    "in_",
    "an inbound text"
);

/// A text the modems received, as the inbound log shows it: one row per message, its
/// concatenated parts (TS 23.040 §9.2.3.24.1 and .8) joined in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundText {
    /// Public id (`in_…`).
    pub id: String,
    /// The modem that received it.
    pub modem_id: String,
    /// TP-OA: the sender's number (`+` and digits, masked after the retention's masking age)
    /// or alphanumeric name.
    pub from: String,
    /// The decoded text; for an incomplete message, the parts that arrived, in order.
    pub text: String,
    /// TP-SCTS of the first part (TS 23.040 §9.2.3.11) in RFC 3339 with the SMSC's own offset.
    pub sc_timestamp: String,
    /// When the message was stored whole (or given up on as incomplete).
    pub received_at: Millis,
    /// Parts the message announced (1 for a single-part text).
    pub parts: u32,
    /// Whether every announced part arrived.
    pub complete: bool,
    /// Numbers (from 1) of the parts that never arrived; empty when complete.
    pub missing: Vec<u32>,
}

/// Types of the event outbox's events (docs/webhooks.md), as they appear in `type` and in a
/// webhook's `events` filter.
pub const EVENT_TYPES: &[&str] = &[
    "message.queued",
    "message.sent",
    "message.delivered",
    "message.failed",
    "message.expired",
    "message.canceled",
    "otp.approved",
    "otp.expired",
    "otp.max_attempts_reached",
    "otp.canceled",
    "inbound.received",
    "modem.state_changed",
];

/// One event of the outbox, as stored (the store writes them in the transaction of the change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Global sequence number: strictly increasing in commit order, never reused.
    pub seq: i64,
    /// `evt_<32 hex>`: random, so ids never collide across databases (a receiver de-duplicates
    /// by it); the same on every delivery of this event.
    pub id: String,
    /// One of [`EVENT_TYPES`].
    pub kind: String,
    /// What changed: a message, OTP or modem id.
    pub subject: String,
    /// When the change happened.
    pub at: Millis,
    /// The event's JSON object (text, exactly as stored).
    pub data: String,
}

/// A webhook endpoint's durable delivery state (the store keeps it; the status page shows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointState {
    /// Every event up to this `seq` is delivered, dead or filtered out.
    pub cursor: i64,
    /// The event the retry state below belongs to (the first undelivered one).
    pub head_seq: Option<i64>,
    /// Failed attempts of `head_seq` so far.
    pub attempts: u32,
    /// When the first attempt of `head_seq` failed: the retry period runs from here.
    pub first_failure_at: Option<Millis>,
    /// When to try `head_seq` again.
    pub next_attempt_at: Option<Millis>,
    /// Why the endpoint is disabled (it answered 410 Gone), until its config changes.
    pub disabled: Option<String>,
    /// Events delivered, ever.
    pub delivered: u64,
    /// Events given up on after the retry period, ever.
    pub dead: u64,
    /// The last failure (status or transport error), until the next delivery succeeds.
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(input: &str, detail_has: Option<&str>) {
        match (Msisdn::parse(input), detail_has) {
            (Ok(m), None) => assert_eq!(m.as_str(), input),
            (Err(d), Some(want)) => assert!(d.contains(want), "{input:?}: {d:?} lacks {want:?}"),
            (r, want) => panic!("{input:?}: got {r:?}, wanted error containing {want:?}"),
        }
    }

    #[test]
    fn e164_validation_explains_itself() {
        e164("+15551234567", None);
        e164("+4915112345678", None);
        e164("+12345678", None);
        e164("+123456789012345", None);
        e164("", Some("empty"));
        e164("+1 555 123 4567", Some("remove spaces"));
        e164("+1-555-123-4567", Some("remove spaces"));
        e164(" +15551234567", Some("remove spaces"));
        e164("5551234567", Some("add the country code"));
        e164("0015551234567", Some("replace the international prefix 00"));
        e164("+05551234567", Some("starts with 0"));
        e164("+1234567", Some("too short"));
        e164(
            "+1234567890123456",
            Some("too long: 16 digits, but E.164 numbers have at most 15"),
        );
        e164("+1555abc4567", Some("only digits"));
        e164("++15551234567", Some("more than one +"));
        e164("hello", Some("not a phone number"));
    }

    #[test]
    fn ids_have_their_prefix_and_shape() {
        let id = OtpId::random();
        assert!(OtpId::parse(id.as_str()).is_some());
        assert!(MessageId::parse(id.as_str()).is_none());
        assert!(OtpId::parse("otp_123").is_none());
        assert!(OtpId::parse(&id.as_str().to_uppercase()).is_none());
        let m = MessageId::random();
        assert!(m.as_str().starts_with(MessageId::PREFIX));
        assert_eq!(MessageId::parse(m.as_str()), Some(m));
    }
}
