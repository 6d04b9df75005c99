//! PostgreSQL: queue.

use super::Postgres;
use crate::store::*;

impl Postgres {
    pub(crate) async fn claim_next(&self, now: Millis) -> Result<Option<Claimed>, StoreError> {
        let _ = now;
        Err(StoreError::Postgres("claim_next: not built yet".into()))
    }

    pub(crate) async fn mark_sent(&self, id: &str, modem_id: &str, mrs: Vec<u8>, now: Millis,) -> Result<(), StoreError> {
        let _ = (id, modem_id, mrs, now);
        Err(StoreError::Postgres("mark_sent: not built yet".into()))
    }

    pub(crate) async fn mark_retry(&self, id: &str, reason: &str, next_attempt_at: Millis, now: Millis,) -> Result<(), StoreError> {
        let _ = (id, reason, next_attempt_at, now);
        Err(StoreError::Postgres("mark_retry: not built yet".into()))
    }

    pub(crate) async fn mark_failed(&self, id: &str, reason: &str, now: Millis) -> Result<(), StoreError> {
        let _ = (id, reason, now);
        Err(StoreError::Postgres("mark_failed: not built yet".into()))
    }

    pub(crate) async fn mark_expired(&self, id: &str, reason: &str, now: Millis) -> Result<(), StoreError> {
        let _ = (id, reason, now);
        Err(StoreError::Postgres("mark_expired: not built yet".into()))
    }

    pub(crate) async fn mark_unknown_outcome(&self, id: &str, reason: &str, rule: impl Into<UnknownOutcomeRule> + Send, now: Millis,) -> Result<MessageStatus, StoreError> {
        let _ = (id, reason, rule, now);
        Err(StoreError::Postgres("mark_unknown_outcome: not built yet".into()))
    }

    pub(crate) async fn mark_not_taken(&self, id: &str, reason: &str, now: Millis) -> Result<(), StoreError> {
        let _ = (id, reason, now);
        Err(StoreError::Postgres("mark_not_taken: not built yet".into()))
    }

    pub(crate) async fn record_partial_send(&self, id: &str, modem_id: &str, accepted: Vec<u8>, now: Millis,) -> Result<u32, StoreError> {
        let _ = (id, modem_id, accepted, now);
        Err(StoreError::Postgres("record_partial_send: not built yet".into()))
    }

    pub(crate) async fn record_status_report(&self, report: StatusReport,) -> Result<Option<ReportEffect>, StoreError> {
        let _ = report;
        Err(StoreError::Postgres("record_status_report: not built yet".into()))
    }

    pub(crate) async fn recover_interrupted(&self, rule: impl Into<UnknownOutcomeRule> + Send, now: Millis,) -> Result<u64, StoreError> {
        let _ = (rule, now);
        Err(StoreError::Postgres("recover_interrupted: not built yet".into()))
    }

    pub(crate) async fn recover_abandoned(&self, rule: impl Into<UnknownOutcomeRule> + Send, now: Millis,) -> Result<u64, StoreError> {
        let _ = (rule, now);
        Err(StoreError::Postgres("recover_abandoned: not built yet".into()))
    }

    pub(crate) async fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        Err(StoreError::Postgres("next_due: not built yet".into()))
    }

    pub(crate) async fn next_expiry(&self) -> Result<Option<Millis>, StoreError> {
        Err(StoreError::Postgres("next_expiry: not built yet".into()))
    }

    pub(crate) async fn expire_overdue(&self, now: Millis) -> Result<u64, StoreError> {
        let _ = now;
        Err(StoreError::Postgres("expire_overdue: not built yet".into()))
    }

    pub(crate) async fn next_concat_reference(&self) -> Result<u8, StoreError> {
        Err(StoreError::Postgres("next_concat_reference: not built yet".into()))
    }

    pub(crate) async fn prune(&self, now: Millis, retention_ms: Option<Millis>, mask_after_ms: Option<Millis>,) -> Result<PruneStats, StoreError> {
        let _ = (now, retention_ms, mask_after_ms);
        Err(StoreError::Postgres("prune: not built yet".into()))
    }

    pub(crate) async fn hourly_outcomes(&self, since: Millis) -> Result<Vec<HourCount>, StoreError> {
        let _ = since;
        Err(StoreError::Postgres("hourly_outcomes: not built yet".into()))
    }

    pub(crate) async fn delivery_latencies(&self, since: Millis) -> Result<Vec<Latency>, StoreError> {
        let _ = since;
        Err(StoreError::Postgres("delivery_latencies: not built yet".into()))
    }

    pub(crate) async fn oldest_queued(&self) -> Result<Option<Millis>, StoreError> {
        Err(StoreError::Postgres("oldest_queued: not built yet".into()))
    }

    /// Extends the leases of this node's sends in flight and records that the node is alive.
    pub(super) async fn renew_leases(&self, now: Millis) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = self.begin_bookkeeping(&mut client).await?;
        let renew = tx
            .prepare_cached(
                "UPDATE messages SET lease_until = $2
                 WHERE status = 'sending' AND node_id = $1",
            )
            .await?;
        tx.execute(&renew, &[&self.inner.node_id, &(now + self.inner.lease_ms)])
            .await?;
        let alive = tx
            .prepare_cached(
                "INSERT INTO nodes (node_id, started_at, last_seen) VALUES ($1, $2, $2)
                 ON CONFLICT (node_id) DO UPDATE SET last_seen = EXCLUDED.last_seen",
            )
            .await?;
        tx.execute(&alive, &[&self.inner.node_id, &now]).await?;
        tx.commit().await?;
        Ok(())
    }
}
