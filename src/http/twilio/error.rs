//! Errors in Twilio's JSON shape, `{code, message, more_info, status}`, with Twilio's own error
//! numbers (each checked against twilio.com/docs/api/errors), never problem+json: the official
//! SDKs raise a different exception class for an RFC 9457 body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::limits::LimitName;
use crate::model::OtpStatus;
use crate::service::ServiceError;

/// Twilio error numbers used on these routes (see docs/twilio.md).
pub mod code {
    /// "Authenticate": bad or missing credentials (HTTP 401).
    pub const AUTHENTICATE: u32 = 20003;
    /// "Method not allowed" (HTTP 405).
    pub const METHOD_NOT_ALLOWED: u32 = 20004;
    /// "The requested resource was not found" (HTTP 404).
    pub const NOT_FOUND: u32 = 20404;
    /// "Too many requests" (HTTP 429).
    pub const TOO_MANY_REQUESTS: u32 = 20429;
    /// "Invalid 'To' Phone Number".
    pub const INVALID_TO: u32 = 21211;
    /// "Permission to send an SMS has not been enabled for the region indicated by the 'To'
    /// number": our `limits.deny_prefixes` / `allow_prefixes`.
    pub const REGION_NOT_ENABLED: u32 = 21408;
    /// "Message body is required".
    pub const BODY_REQUIRED: u32 = 21602;
    /// "A 'From' or 'MessagingServiceSid' parameter is required to send a message".
    pub const FROM_REQUIRED: u32 = 21603;
    /// "'To' phone number is required to send a Message".
    pub const TO_REQUIRED: u32 = 21604;
    /// "The 'From' phone number provided is not a valid message-capable Twilio phone number for
    /// this destination/account": a `From` outside `twilio.from`.
    pub const FROM_NOT_VALID: u32 = 21606;
    /// "This 'From' number has exceeded the maximum number of queued messages": `queue_max`.
    pub const QUEUE_FULL: u32 = 21611;
    /// "The concatenated message body exceeds the 1600 character limit": more parts than
    /// simgate sends.
    pub const BODY_TOO_LONG: u32 = 21617;
    /// "Invalid media URL(s)": simgate sends SMS only.
    pub const INVALID_MEDIA: u32 = 21620;
    /// "Invalid 'StatusCallback'" (twilio.com/docs/api/errors/21609).
    pub const INVALID_STATUS_CALLBACK: u32 = 21609;
    /// Verify's "Invalid parameter" (HTTP 400).
    pub const INVALID_PARAMETER: u32 = 60200;
    /// Verify's "Max check attempts reached" (HTTP 429): `limits.verify_per_number`.
    pub const MAX_CHECK_ATTEMPTS: u32 = 60202;
    /// Verify's "Max send attempts reached" (HTTP 429): `otp.max_resends` and the per-number
    /// send limits.
    pub const MAX_SEND_ATTEMPTS: u32 = 60203;
    /// Message `error_code` of a text never sent: "Queue overflow" (queued past its validity).
    pub const QUEUE_OVERFLOW: u32 = 30001;
    /// Message `error_code` of a failed text: "Unknown error".
    pub const UNKNOWN_ERROR: u32 = 30008;
}

/// One error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TwilioError {
    /// HTTP status (repeated in the body, as Twilio does).
    pub status: StatusCode,
    /// Twilio's error number.
    pub code: u32,
    /// What went wrong, in words naming the parameter or the config key.
    pub message: String,
    /// Seconds for `Retry-After` on a 429 or 503.
    pub retry_after: Option<u64>,
}

impl TwilioError {
    /// An error with a status, a Twilio number and a message.
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> TwilioError {
        TwilioError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 with a code.
    pub fn bad(code: u32, message: impl Into<String>) -> TwilioError {
        TwilioError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 20003.
    pub fn authenticate(why: &str) -> TwilioError {
        TwilioError::new(
            StatusCode::UNAUTHORIZED,
            code::AUTHENTICATE,
            format!("Authenticate: {why}"),
        )
    }

    /// 404 20404 naming what was asked for.
    pub fn not_found(what: impl std::fmt::Display) -> TwilioError {
        TwilioError::new(
            StatusCode::NOT_FOUND,
            code::NOT_FOUND,
            format!("The requested resource {what} was not found"),
        )
    }

    /// Verify's 60200 naming the parameter, as Twilio words it, with our reason after it.
    pub fn invalid_parameter(name: &str, why: impl std::fmt::Display) -> TwilioError {
        TwilioError::bad(
            code::INVALID_PARAMETER,
            format!("Invalid parameter: {name}: {why}"),
        )
    }

    fn with_retry_after(mut self, secs: u64) -> TwilioError {
        self.retry_after = Some(secs.max(1));
        self
    }
}

impl IntoResponse for TwilioError {
    fn into_response(self) -> Response {
        let body = json!({
            "code": self.code,
            "message": self.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", self.code),
            "status": self.status.as_u16(),
        });
        let mut resp = (self.status, body.to_string()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"Twilio API\""),
            );
        }
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// Which API a service error is answered for: the two number their errors differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Programmable Messaging (`/2010-04-01`).
    Messaging,
    /// Verify v2 (`/v2`).
    Verify,
}

/// The Twilio twin of a service error. The request's parameter names are Twilio's (`To`,
/// `Body`, `CodeLength`), so a validation error names the parameter the app sent.
pub fn from_service(e: ServiceError, api: Api) -> TwilioError {
    match e {
        ServiceError::Validation { field, detail } => validation(field, &detail, api),
        ServiceError::NotAllowed { detail } => match api {
            Api::Messaging => TwilioError::bad(code::REGION_NOT_ENABLED, detail),
            Api::Verify => TwilioError::invalid_parameter("To", detail),
        },
        ServiceError::NotFound { what, id } => TwilioError::not_found(format!("{what} {id}")),
        ServiceError::MalformedId { detail } => TwilioError::not_found(detail),
        e @ ServiceError::NoPendingOtp { .. } => TwilioError::not_found(format!(
            "(verification): {e}; approved, expired and canceled verifications are removed, \
             as on Twilio"
        )),
        // Twilio deletes a verification once it ends, so whatever is asked of it is a 404.
        ServiceError::OtpEnded { id, status, .. } => TwilioError::not_found(format!(
            "(verification of {id}): it is {}{}",
            status.as_str(),
            if status == OtpStatus::Approved {
                "; a code verifies once"
            } else {
                "; start a new verification"
            }
        )),
        ServiceError::Conflict(detail) => TwilioError::not_found(detail),
        ServiceError::IdempotencyMismatch => TwilioError::bad(
            code::INVALID_PARAMETER,
            "an idempotency key was reused with a different request",
        ),
        ServiceError::RateLimited {
            name,
            limit,
            retry_after,
        } => {
            let c = match (api, name) {
                (
                    Api::Verify,
                    LimitName::MaxResends
                    | LimitName::OtpPerNumber
                    | LimitName::OtpPerNumberPerDay
                    | LimitName::OtpPerPrefix,
                ) => code::MAX_SEND_ATTEMPTS,
                (Api::Verify, LimitName::VerifyPerNumber) => code::MAX_CHECK_ATTEMPTS,
                _ => code::TOO_MANY_REQUESTS,
            };
            TwilioError::new(
                StatusCode::TOO_MANY_REQUESTS,
                c,
                format!("{limit}; retry in {retry_after} s"),
            )
            .with_retry_after(retry_after)
        }
        ServiceError::QueueFull { retry_after } => TwilioError::new(
            StatusCode::TOO_MANY_REQUESTS,
            match api {
                Api::Messaging => code::QUEUE_FULL,
                Api::Verify => code::TOO_MANY_REQUESTS,
            },
            format!(
                "the send queue holds limits.queue_max messages already; retry in {retry_after} s"
            ),
        )
        .with_retry_after(retry_after),
        ServiceError::Unavailable(detail) => TwilioError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::TOO_MANY_REQUESTS,
            format!("service unavailable: {detail}"),
        )
        .with_retry_after(5),
        ServiceError::Internal(detail) => {
            tracing::error!(error = %detail, "twilio request failed");
            TwilioError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                code::UNKNOWN_ERROR,
                "internal error (see the daemon's log)",
            )
        }
    }
}

fn validation(field: &str, detail: &str, api: Api) -> TwilioError {
    match (api, field) {
        (Api::Messaging, "to") => TwilioError::bad(
            code::INVALID_TO,
            format!("Invalid 'To' Phone Number: {detail}"),
        ),
        (Api::Messaging, "text") if detail.starts_with("too long") => {
            TwilioError::bad(code::BODY_TOO_LONG, format!("Body: {detail}"))
        }
        (Api::Messaging, "text") => {
            TwilioError::bad(code::BODY_REQUIRED, format!("Body: {detail}"))
        }
        (Api::Messaging, other) => {
            TwilioError::bad(code::INVALID_PARAMETER, format!("{other}: {detail}"))
        }
        (Api::Verify, f) => TwilioError::invalid_parameter(verify_param(f), detail),
    }
}

/// The Verify parameter a service field came from.
fn verify_param(field: &str) -> &str {
    match field {
        "to" => "To",
        "code" => "Code",
        "code_length" => "CodeLength",
        "template" => "CustomFriendlyName",
        "ttl_seconds" => "TTL",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(e: ServiceError, api: Api, status: u16, c: u32) {
        let t = from_service(e.clone(), api);
        assert_eq!((t.status.as_u16(), t.code), (status, c), "{e:?}");
    }

    #[test]
    fn service_errors_map_to_twilio_numbers() {
        let v = |field: &'static str, detail: &str| ServiceError::Validation {
            field,
            detail: detail.into(),
        };
        let rl = |name| ServiceError::RateLimited {
            name,
            limit: "x".into(),
            retry_after: 3,
        };
        check(v("to", "bad"), Api::Messaging, 400, code::INVALID_TO);
        check(
            v("text", "is empty"),
            Api::Messaging,
            400,
            code::BODY_REQUIRED,
        );
        check(
            v("text", "too long: 12 parts"),
            Api::Messaging,
            400,
            code::BODY_TOO_LONG,
        );
        check(
            v("code", "digits"),
            Api::Verify,
            400,
            code::INVALID_PARAMETER,
        );
        check(
            rl(LimitName::MaxResends),
            Api::Verify,
            429,
            code::MAX_SEND_ATTEMPTS,
        );
        check(
            rl(LimitName::VerifyPerNumber),
            Api::Verify,
            429,
            code::MAX_CHECK_ATTEMPTS,
        );
        check(
            rl(LimitName::SendsGlobal),
            Api::Messaging,
            429,
            code::TOO_MANY_REQUESTS,
        );
        check(
            ServiceError::OtpEnded {
                id: "otp_x".into(),
                status: OtpStatus::MaxAttemptsReached,
                attempts_remaining: 0,
            },
            Api::Verify,
            404,
            code::NOT_FOUND,
        );
    }

    #[test]
    fn the_body_has_twilios_four_fields_and_no_problem_fields() {
        let r = TwilioError::authenticate("no credentials").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
