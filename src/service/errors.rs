//! The typed failure of every use case, and the helpers that build it.
//!
//! **Invariant:** each [`ServiceError`] variant maps to exactly one HTTP status in `http`; a
//! detail never echoes more than a short prefix of client text ([`shorten`]).

use crate::limits::LimitName;
use crate::model::{Msisdn, OtpStatus};
use crate::otp::OtpError;
use crate::store::StoreError;

/// Why a use case refused or failed. Every variant maps to one HTTP status in `http`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// A field of the request is invalid (422).
    #[error("{field}: {detail}")]
    Validation {
        /// The request field, as the client spelled it (`to`, `ttl_seconds`, …).
        field: &'static str,
        /// What is wrong and how to fix it.
        detail: String,
    },
    /// The number is valid but the operator's allow/deny prefix lists refuse it (403).
    #[error("{detail}")]
    NotAllowed {
        /// Which list refused it.
        detail: String,
    },
    /// No such OTP or message (404).
    #[error("{what} {id} does not exist")]
    NotFound {
        /// `OTP` or `message`.
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// No pending, unexpired OTP exists for the number a code was checked against (404).
    #[error("there is no pending, unexpired OTP for {to}")]
    NoPendingOtp {
        /// The number asked about.
        to: Msisdn,
    },
    /// The request conflicts with the resource's state (409), e.g. resending a finished OTP.
    #[error("{0}")]
    Conflict(String),
    /// A code was checked against an OTP that had already ended (409, or 410 once expired):
    /// nothing was counted, and `GET /v1/otp/{id}` still shows the final state.
    #[error("OTP {id} is already {}", status.as_str())]
    OtpEnded {
        /// The OTP.
        id: String,
        /// Its final status.
        status: OtpStatus,
        /// Wrong attempts it had left when it ended.
        attempts_remaining: u32,
    },
    /// An id in the path does not have the shape of an id (400), as opposed to an unknown one.
    #[error("{detail}")]
    MalformedId {
        /// What the id should look like.
        detail: String,
    },
    /// The same `Idempotency-Key` was used with a different request (422).
    #[error("the Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    /// A rate limit refused the request (429).
    #[error("rate limit {limit} reached")]
    RateLimited {
        /// Which limit, for the metric label.
        name: LimitName,
        /// Which limit and for what, in words naming the config key.
        limit: String,
        /// Whole seconds until a retry can succeed.
        retry_after: u64,
    },
    /// The queue holds `limits.queue_max` messages (503).
    #[error("the send queue is full")]
    QueueFull {
        /// Whole seconds a client should wait.
        retry_after: u64,
    },
    /// A dependency (the store) cannot take requests now (503).
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure (500); the detail goes to the log, not to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

pub(super) fn invalid(field: &'static str, detail: impl Into<String>) -> ServiceError {
    ServiceError::Validation {
        field,
        detail: detail.into(),
    }
}

pub(super) fn store_err(e: StoreError) -> ServiceError {
    match e {
        StoreError::Closed => ServiceError::Unavailable("the store is shut down".into()),
        StoreError::Unavailable(why) => {
            ServiceError::Unavailable(format!("the database cannot be reached: {why}"))
        }
        other => ServiceError::Internal(other.to_string()),
    }
}

pub(super) fn otp_error(field: &'static str, e: OtpError) -> ServiceError {
    invalid(field, e.to_string())
}

/// The i64 value of an optional numeric field within `lo..=hi`.
pub(super) fn in_range(
    field: &'static str,
    v: i64,
    lo: u64,
    hi: u64,
    unit: &str,
) -> Result<u64, ServiceError> {
    match u64::try_from(v) {
        Ok(u) if (lo..=hi).contains(&u) => Ok(u),
        _ => Err(invalid(
            field,
            format!("must be between {lo} and {hi}{unit}, got {v}"),
        )),
    }
}

/// Client text shortened for an error detail, so a detail never echoes a megabyte.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX).collect();
        out.push('…');
        out
    }
}
