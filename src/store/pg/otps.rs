//! PostgreSQL: otps.

use super::Postgres;
use crate::store::*;

impl Postgres {
    pub(crate) async fn create_otp(&self, otp: NewOtp, msg: NewMessage, idem: Option<Idempotency>, daily_cap: u32, queue_max: u64,) -> Result<CreateOutcome, StoreError> {
        let _ = (otp, msg, idem, daily_cap, queue_max);
        Err(StoreError::Postgres("create_otp: not built yet".into()))
    }

    pub(crate) async fn create_otp_worded(&self, otp: NewOtp, msg: NewMessage, wording: OtpWording, on_pending: OnPending, idem: Option<Idempotency>, daily_cap: u32, queue_max: u64,) -> Result<CreateOtpOutcome, StoreError> {
        let _ = (otp, msg, wording, on_pending, idem, daily_cap, queue_max);
        Err(StoreError::Postgres("create_otp_worded: not built yet".into()))
    }

    pub(crate) async fn add_otp_text(&self, t: NewOtpText) -> Result<AddTextOutcome, StoreError> {
        let _ = t;
        Err(StoreError::Postgres("add_otp_text: not built yet".into()))
    }

    pub(crate) async fn otp_wording(&self, otp_id: &str) -> Result<Option<OtpWording>, StoreError> {
        let _ = otp_id;
        Err(StoreError::Postgres("otp_wording: not built yet".into()))
    }

    pub(crate) async fn resend_otp(&self, otp_id: &str, code_hmac: Vec<u8>, msg: NewMessage, daily_cap: u32, queue_max: u64,) -> Result<ResendOutcome, StoreError> {
        let _ = (otp_id, code_hmac, msg, daily_cap, queue_max);
        Err(StoreError::Postgres("resend_otp: not built yet".into()))
    }

    pub(crate) async fn record_verify(&self, otp_id: &str, matched: bool, now: Millis,) -> Result<Option<VerifyResult>, StoreError> {
        let _ = (otp_id, matched, now);
        Err(StoreError::Postgres("record_verify: not built yet".into()))
    }

    pub(crate) async fn cancel_otp(&self, otp_id: &str, now: Millis) -> Result<Option<OtpStatus>, StoreError> {
        let _ = (otp_id, now);
        Err(StoreError::Postgres("cancel_otp: not built yet".into()))
    }

    pub(crate) async fn get_otp(&self, otp_id: &str) -> Result<Option<Otp>, StoreError> {
        let _ = otp_id;
        Err(StoreError::Postgres("get_otp: not built yet".into()))
    }

    pub(crate) async fn newest_pending_otp(&self, to: &str, now: Millis) -> Result<Option<Otp>, StoreError> {
        let _ = (to, now);
        Err(StoreError::Postgres("newest_pending_otp: not built yet".into()))
    }

    pub(crate) async fn expire_due_otps(&self, now: Millis, limit: u32) -> Result<u64, StoreError> {
        let _ = (now, limit);
        Err(StoreError::Postgres("expire_due_otps: not built yet".into()))
    }

    pub(crate) async fn next_otp_expiry(&self) -> Result<Option<Millis>, StoreError> {
        Err(StoreError::Postgres("next_otp_expiry: not built yet".into()))
    }
}
