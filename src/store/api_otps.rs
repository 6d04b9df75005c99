//! `Store` methods for OTPs: create (plain or worded), add a text, resend, verify, cancel, read
//! back and expire. Each wraps one `ops` write or one `read` query.

use super::{
    AddTextOutcome, CreateOtpOutcome, CreateOutcome, Idempotency, Millis, NewMessage, NewOtp,
    NewOtpText, OnPending, Otp, OtpStatus, OtpWording, ResendOutcome, Sqlite, StoreError,
    VerifyResult, ops, read,
};

impl Sqlite {
    /// Creates an OTP and queues its first text in one transaction: idempotency check, daily cap
    /// (`daily_cap` OTP texts per number per 24 h; 0 = off), queue bound (`queue_max`; 0 = off),
    /// cancellation of the number's pending OTPs and their still-queued texts, inserts, and the
    /// idempotent answer.
    pub async fn create_otp(
        &self,
        otp: NewOtp,
        msg: NewMessage,
        idem: Option<Idempotency>,
        daily_cap: u32,
        queue_max: u64,
    ) -> Result<CreateOutcome, StoreError> {
        self.client_write(move |c| {
            ops::create_otp(c, &otp, &msg, idem.as_ref(), daily_cap, queue_max)
        })
        .await
    }

    /// [`Store::create_otp`] that also records where the code sits in the first text, and that
    /// with [`OnPending::Keep`] leaves a pending, unexpired OTP of the number alone and names it
    /// (after the idempotency check, so a retry still gets its answer).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_otp_worded(
        &self,
        otp: NewOtp,
        msg: NewMessage,
        wording: OtpWording,
        on_pending: OnPending,
        idem: Option<Idempotency>,
        daily_cap: u32,
        queue_max: u64,
    ) -> Result<CreateOtpOutcome, StoreError> {
        self.client_write(move |c| {
            ops::create_otp_worded(
                c,
                &otp,
                &msg,
                &wording,
                on_pending,
                idem.as_ref(),
                daily_cap,
                queue_max,
            )
        })
        .await
    }

    /// Adds a code (its HMAC) and a text to a pending OTP, in one transaction with the
    /// idempotency check, the per-OTP text cap, the daily cap and the queue bound.
    pub async fn add_otp_text(&self, t: NewOtpText) -> Result<AddTextOutcome, StoreError> {
        self.client_write(move |c| ops::add_otp_text(c, &t)).await
    }

    /// Where the code sits in the OTP's first text; `None` for OTPs created before schema 3.
    pub async fn otp_wording(&self, otp_id: &str) -> Result<Option<OtpWording>, StoreError> {
        let otp_id = otp_id.to_owned();
        self.read(move |c| read::otp_wording(c, &otp_id)).await
    }

    /// Adds a code (its HMAC) and a text to a pending OTP; earlier codes stay valid. Counts
    /// against the daily cap and the queue bound like a new OTP.
    pub async fn resend_otp(
        &self,
        otp_id: &str,
        code_hmac: Vec<u8>,
        msg: NewMessage,
        daily_cap: u32,
        queue_max: u64,
    ) -> Result<ResendOutcome, StoreError> {
        let otp_id = otp_id.to_owned();
        self.client_write(move |c| {
            ops::resend_otp(c, &otp_id, &code_hmac, &msg, daily_cap, queue_max)
        })
        .await
    }

    /// Records one verification attempt; `matched` is whether the code matched one of the OTP's
    /// HMACs. Exactly one of any number of concurrent matching attempts sees `verified = true`.
    /// `None` if the id is unknown.
    pub async fn record_verify(
        &self,
        otp_id: &str,
        matched: bool,
        now: Millis,
    ) -> Result<Option<VerifyResult>, StoreError> {
        let otp_id = otp_id.to_owned();
        self.client_write(move |c| ops::record_verify(c, &otp_id, matched, now))
            .await
    }

    /// Cancels a pending OTP and its still-queued texts. Returns the status afterwards (a final
    /// status other than `canceled` means it had already ended), `None` if the id is unknown.
    pub async fn cancel_otp(
        &self,
        otp_id: &str,
        now: Millis,
    ) -> Result<Option<OtpStatus>, StoreError> {
        let otp_id = otp_id.to_owned();
        self.client_write(move |c| ops::cancel_otp(c, &otp_id, now))
            .await
    }

    /// One OTP with its code HMACs and message ids.
    pub async fn get_otp(&self, otp_id: &str) -> Result<Option<Otp>, StoreError> {
        let otp_id = otp_id.to_owned();
        self.read(move |c| read::get_otp(c, &otp_id)).await
    }

    /// The newest `pending` OTP for a number that has not expired at `now`.
    pub async fn newest_pending_otp(
        &self,
        to: &str,
        now: Millis,
    ) -> Result<Option<Otp>, StoreError> {
        let to = to.to_owned();
        self.read(move |c| read::newest_pending_otp(c, &to, now))
            .await
    }

    /// Marks `expired` up to `limit` pending OTPs whose TTL has ended (see
    /// [`crate::expiry`]); returns how many.
    pub async fn expire_due_otps(&self, now: Millis, limit: u32) -> Result<u64, StoreError> {
        self.write(move |c| ops::expire_due_otps(c, now, limit))
            .await
    }

    /// When the next pending OTP's TTL ends, if any is pending.
    pub async fn next_otp_expiry(&self) -> Result<Option<Millis>, StoreError> {
        self.read(ops::next_otp_expiry).await
    }
}
