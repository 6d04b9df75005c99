//! `Store` methods for texts and the delivery log: enqueue (plain, with origin, relayed OTP),
//! a message, its history, lists and counts.

use super::{
    CreateOutcome, Idempotency, Message, MessageEvent, MessageFilter, MessageOrigin, MessageStatus,
    NewMessage, Sqlite, StoreError, ops, read,
};

impl Sqlite {
    /// Queues a plain text: idempotency check, queue bound (0 = off), insert, idempotent answer.
    pub async fn enqueue_text(
        &self,
        msg: NewMessage,
        idem: Option<Idempotency>,
        queue_max: u64,
    ) -> Result<CreateOutcome, StoreError> {
        self.client_write(move |c| ops::enqueue_text(c, &msg, idem.as_ref(), queue_max, None))
            .await
    }

    /// [`Store::enqueue_text`] with what the client said about the text beyond recipient and
    /// body, written in the same transaction.
    pub async fn enqueue_text_from(
        &self,
        msg: NewMessage,
        idem: Option<Idempotency>,
        queue_max: u64,
        origin: MessageOrigin,
    ) -> Result<CreateOutcome, StoreError> {
        self.client_write(move |c| {
            ops::enqueue_text(c, &msg, idem.as_ref(), queue_max, Some(&origin))
        })
        .await
    }

    /// Queues an OTP text whose code was drawn elsewhere (an identity server's): as
    /// [`Store::enqueue_text`], plus the per-number daily cap of OTP texts (0 = off).
    pub async fn enqueue_relayed_otp_text(
        &self,
        msg: NewMessage,
        idem: Option<Idempotency>,
        daily_cap: u32,
        queue_max: u64,
    ) -> Result<CreateOutcome, StoreError> {
        self.client_write(move |c| {
            ops::enqueue_relayed_otp_text(c, &msg, idem.as_ref(), daily_cap, queue_max)
        })
        .await
    }

    /// What the client said about message `id` beyond recipient and body (`None`: nothing).
    pub async fn message_origin(&self, id: &str) -> Result<Option<MessageOrigin>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| read::message_origin(c, &id)).await
    }

    /// One message of the delivery log.
    pub async fn get_message(&self, id: &str) -> Result<Option<Message>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| read::get_message(c, &id)).await
    }

    /// A message's status history, oldest first.
    pub async fn message_events(&self, id: &str) -> Result<Vec<MessageEvent>, StoreError> {
        let id = id.to_owned();
        self.read(move |c| read::message_events(c, &id)).await
    }

    /// Messages newest first.
    pub async fn list_messages(&self, filter: MessageFilter) -> Result<Vec<Message>, StoreError> {
        self.read(move |c| read::list_messages(c, &filter)).await
    }

    /// Messages waiting in the queue (status `queued`).
    pub async fn queue_depth(&self) -> Result<u64, StoreError> {
        self.read(read::queue_depth).await
    }

    /// How many messages are in each status (for metrics).
    pub async fn status_counts(&self) -> Result<Vec<(MessageStatus, u64)>, StoreError> {
        self.read(read::status_counts).await
    }
}
