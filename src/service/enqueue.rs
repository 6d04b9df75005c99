//! The one path every text takes into the queue: a new OTP's first text, an added OTP text
//! (resend or reuse) and a plain text.
//!
//! **Invariant:** the answer an idempotent retry must get back is rendered before and stored in
//! the same transaction as the message; a new message wakes the dispatcher exactly once, and
//! every answer given under a key is remembered for in-memory replays.

use std::future::Future;

use crate::model::{MessageKind, Millis, Msisdn};
use crate::store::{Body, CreateOutcome, Idempotency, NewMessage};

use super::idempotency::idempotency_record;
use super::{Answer, IdempotencyKey, Service, ServiceError, parts_u32};

/// Who a text is for and how its answer is remembered.
pub(super) struct Enqueue<'a> {
    /// The recipient.
    pub(super) to: &'a Msisdn,
    /// The request's `Idempotency-Key`, if it gave one.
    pub(super) key: Option<&'a IdempotencyKey>,
    /// The request's digest, compared with the key's first request.
    pub(super) digest: &'a [u8],
    /// When the request came in.
    pub(super) now: Millis,
}

/// The message row of one text, less what [`Enqueue`] already knows.
pub(super) struct Outgoing {
    /// The message id.
    pub(super) id: String,
    /// OTP or plain text.
    pub(super) kind: MessageKind,
    /// What the delivery log shows (an OTP text with its codes masked).
    pub(super) log_text: String,
    /// What the modem sends.
    pub(super) body: Body,
    /// SMS parts of the text.
    pub(super) parts: usize,
    /// When the text is given up as `expired` if not yet sent.
    pub(super) deadline: Millis,
}

impl Service {
    /// Queues one text: renders the answer for the key, lets `transaction` run the store's one
    /// transaction for the use case, and settles its outcome.
    ///
    /// `transaction` answers `Err(x)` when the store took another way (a new OTP for a number
    /// with a pending one); nothing was written then, and `x` goes back to the caller.
    pub(super) async fn enqueue<T, X, Fut>(
        &self,
        e: &Enqueue<'_>,
        msg: Outgoing,
        created: T,
        render: impl FnOnce(&T) -> String,
        transaction: impl FnOnce(NewMessage, Option<Idempotency>) -> Fut,
    ) -> Result<Result<Answer<T>, X>, ServiceError>
    where
        Fut: Future<Output = Result<Result<CreateOutcome, X>, ServiceError>>,
    {
        let idem = idempotency_record(e.key, e.digest, || render(&created));
        let answer = idem.as_ref().map(|i| i.response.clone());
        let row = NewMessage {
            id: msg.id,
            to: e.to.clone(),
            kind: msg.kind,
            log_text: msg.log_text,
            body: msg.body,
            parts: parts_u32(msg.parts),
            created_at: e.now,
            deadline: msg.deadline,
        };
        match transaction(row, idem).await? {
            Ok(outcome) => self.settle(e, outcome, created, answer).map(Ok),
            Err(other) => Ok(Err(other)),
        }
    }

    /// Turns the store's answer to an enqueue into the service's: wakes the dispatcher for a
    /// new message, and remembers the answer for in-memory replays.
    fn settle<T>(
        &self,
        e: &Enqueue<'_>,
        outcome: CreateOutcome,
        created: T,
        answer: Option<String>,
    ) -> Result<Answer<T>, ServiceError> {
        match outcome {
            CreateOutcome::Created => {
                self.wake.notify_one();
                if let Some(a) = answer {
                    self.remember(e.key, e.digest.to_vec(), &a);
                }
                Ok(Answer::New(created))
            }
            CreateOutcome::Replay(stored) => {
                self.remember(e.key, e.digest.to_vec(), &stored);
                Ok(Answer::Replay(stored))
            }
            CreateOutcome::IdempotencyConflict => Err(ServiceError::IdempotencyMismatch),
            CreateOutcome::DailyLimit { retry_after_ms } => {
                Err(self.daily_limited(e.to, retry_after_ms))
            }
            CreateOutcome::QueueFull => Err(self.queue_full()),
        }
    }
}
