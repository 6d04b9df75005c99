//! PostgreSQL: messages.

use super::Postgres;
use crate::store::*;

impl Postgres {
    pub(crate) async fn enqueue_text(&self, msg: NewMessage, idem: Option<Idempotency>, queue_max: u64,) -> Result<CreateOutcome, StoreError> {
        let _ = (msg, idem, queue_max);
        Err(StoreError::Postgres("enqueue_text: not built yet".into()))
    }

    pub(crate) async fn enqueue_text_from(&self, msg: NewMessage, idem: Option<Idempotency>, queue_max: u64, origin: MessageOrigin,) -> Result<CreateOutcome, StoreError> {
        let _ = (msg, idem, queue_max, origin);
        Err(StoreError::Postgres("enqueue_text_from: not built yet".into()))
    }

    pub(crate) async fn enqueue_relayed_otp_text(&self, msg: NewMessage, idem: Option<Idempotency>, daily_cap: u32, queue_max: u64,) -> Result<CreateOutcome, StoreError> {
        let _ = (msg, idem, daily_cap, queue_max);
        Err(StoreError::Postgres("enqueue_relayed_otp_text: not built yet".into()))
    }

    pub(crate) async fn message_origin(&self, id: &str) -> Result<Option<MessageOrigin>, StoreError> {
        let _ = id;
        Err(StoreError::Postgres("message_origin: not built yet".into()))
    }

    pub(crate) async fn get_message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        let _ = id;
        Err(StoreError::Postgres("get_message: not built yet".into()))
    }

    pub(crate) async fn message_events(&self, id: &str) -> Result<Vec<MessageEvent>, StoreError> {
        let _ = id;
        Err(StoreError::Postgres("message_events: not built yet".into()))
    }

    pub(crate) async fn list_messages(&self, filter: MessageFilter) -> Result<Vec<Message>, StoreError> {
        let _ = filter;
        Err(StoreError::Postgres("list_messages: not built yet".into()))
    }

    pub(crate) async fn queue_depth(&self) -> Result<u64, StoreError> {
        Err(StoreError::Postgres("queue_depth: not built yet".into()))
    }

    pub(crate) async fn status_counts(&self) -> Result<Vec<(MessageStatus, u64)>, StoreError> {
        Err(StoreError::Postgres("status_counts: not built yet".into()))
    }
}
