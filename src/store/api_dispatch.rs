//! `Store` methods for the dispatcher: claim the next message, record its outcome, apply status
//! reports, recover after a crash, the timers it sleeps on, the concatenation reference, and
//! retention.

#[cfg(doc)]
use super::REPORT_WINDOW_MS;
use super::{
    Claimed, MessageStatus, Millis, PruneStats, ReportEffect, Sqlite, StatusReport, StoreError,
    UnknownOutcomeRule, ops, read,
};

impl Sqlite {
    /// Claims the oldest queued message whose `next_attempt_at` has come: marks it `sending`,
    /// counts the attempt and returns what is needed to send it. Queued messages whose deadline
    /// has passed are marked `expired` in the same transaction, so they are never returned.
    pub async fn claim_next(&self, now: Millis) -> Result<Option<Claimed>, StoreError> {
        self.write(move |c| ops::claim_next(c, now)).await
    }

    /// Every part was accepted: `sent`, with the modem and the TP-MR of each part (whose count
    /// becomes the message's `parts`). The sealed body is wiped: nothing will be sent again.
    pub async fn mark_sent(
        &self,
        id: &str,
        modem_id: &str,
        mrs: Vec<u8>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (id, modem_id) = (id.to_owned(), modem_id.to_owned());
        self.write(move |c| ops::mark_sent(c, &id, &modem_id, &mrs, now))
            .await
    }

    /// A temporary failure: back to `queued` until `next_attempt_at`.
    pub async fn mark_retry(
        &self,
        id: &str,
        reason: &str,
        next_attempt_at: Millis,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (id, reason) = (id.to_owned(), reason.to_owned());
        self.write(move |c| ops::mark_retry(c, &id, &reason, next_attempt_at, now))
            .await
    }

    /// A permanent failure with the modem's reason.
    pub async fn mark_failed(&self, id: &str, reason: &str, now: Millis) -> Result<(), StoreError> {
        let (id, reason) = (id.to_owned(), reason.to_owned());
        self.write(move |c| ops::finish(c, &id, MessageStatus::Failed, Some(&reason), now))
            .await
    }

    /// The deadline passed before the message could be sent (`reason` says what held it up).
    pub async fn mark_expired(
        &self,
        id: &str,
        reason: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (id, reason) = (id.to_owned(), reason.to_owned());
        self.write(move |c| ops::finish(c, &id, MessageStatus::Expired, Some(&reason), now))
            .await
    }

    /// The PDU may have reached the network but no answer came. Counts and notes it, then
    /// requeues (resent after the rule's backoff) or fails the message per `rule`; a message
    /// whose unknown outcomes or attempts reach the rule's caps fails with the reason.
    pub async fn mark_unknown_outcome(
        &self,
        id: &str,
        reason: &str,
        rule: impl Into<UnknownOutcomeRule>,
        now: Millis,
    ) -> Result<MessageStatus, StoreError> {
        let (id, reason, rule) = (id.to_owned(), reason.to_owned(), rule.into());
        self.write(move |c| ops::mark_unknown_outcome(c, &id, &reason, &rule, now))
            .await
    }

    /// The modem could not take the message at all (not ready): back to `queued` at once, and
    /// the attempt the claim counted is taken back, since no modem was handed the text.
    pub async fn mark_not_taken(
        &self,
        id: &str,
        reason: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (id, reason) = (id.to_owned(), reason.to_owned());
        self.write(move |c| ops::mark_not_taken(c, &id, &reason, now))
            .await
    }

    /// Some parts of a multi-part text were accepted (TP-MRs `accepted`, in part order) before
    /// a later part failed. Records those parts, so their status reports still match, and counts
    /// the partial send; returns how many partial sends the message has had, this one included.
    pub async fn record_partial_send(
        &self,
        id: &str,
        modem_id: &str,
        accepted: Vec<u8>,
        now: Millis,
    ) -> Result<u32, StoreError> {
        let (id, modem_id) = (id.to_owned(), modem_id.to_owned());
        self.write(move |c| ops::record_partial_send(c, &id, &modem_id, &accepted, now))
            .await
    }

    /// Applies a status report to the part it belongs to (same modem, same TP-MR, same recipient,
    /// most recent send within [`REPORT_WINDOW_MS`]). `None` if no part matches.
    pub async fn record_status_report(
        &self,
        report: StatusReport,
    ) -> Result<Option<ReportEffect>, StoreError> {
        self.write(move |c| ops::record_status_report(c, &report))
            .await
    }

    /// At start-up: every message left `sending` by a previous process had an unknown outcome;
    /// counts, notes and requeues or fails it per `rule`. Returns how many were found.
    pub async fn recover_interrupted(
        &self,
        rule: impl Into<UnknownOutcomeRule>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let rule = rule.into();
        self.write(move |c| ops::recover_interrupted(c, &rule, now))
            .await
    }

    /// The earliest instant at which a queued message becomes due or expires; the dispatcher
    /// sleeps until then when it has nothing to claim.
    /// One node: no other node holds claims.
    pub async fn next_foreign_lease_expiry(&self) -> Result<Option<Millis>, StoreError> {
        Ok(None)
    }

    /// One node: nothing is abandoned by another while this one runs.
    pub async fn recover_abandoned(
        &self,
        _rule: impl Into<UnknownOutcomeRule>,
        _now: Millis,
    ) -> Result<u64, StoreError> {
        Ok(0)
    }

    pub async fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        self.read(read::next_due).await
    }

    /// The earliest deadline among queued messages: when one of them must become `expired`.
    pub async fn next_expiry(&self) -> Result<Option<Millis>, StoreError> {
        self.read(read::next_expiry).await
    }

    /// Marks `expired` every queued message whose deadline has passed; returns how many. The
    /// dispatcher calls it when no modem is free, so expiry does not wait for a modem.
    pub async fn expire_overdue(&self, now: Millis) -> Result<u64, StoreError> {
        self.write(move |c| ops::expire_overdue(c, now)).await
    }

    /// The next concatenation reference (TS 23.040 §9.2.3.24.1), a persisted rotating octet, so
    /// parts of consecutive messages never share a reference, even across restarts.
    pub async fn next_concat_reference(&self) -> Result<u8, StoreError> {
        self.write(ops::next_concat_reference).await
    }

    /// Retention: deletes messages no longer in flight (and ended OTPs) created before
    /// `now - retention_ms`, masks phone numbers of such rows created before
    /// `now - mask_after_ms`, drops idempotency records older than a day. `None` disables either
    /// step. `mask_after_ms` should exceed [`REPORT_WINDOW_MS`] so that late status reports still
    /// find their (unmasked) recipient.
    pub async fn prune(
        &self,
        now: Millis,
        retention_ms: Option<Millis>,
        mask_after_ms: Option<Millis>,
    ) -> Result<PruneStats, StoreError> {
        self.write(move |c| ops::prune(c, now, retention_ms, mask_after_ms))
            .await
    }
}
