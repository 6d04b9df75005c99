//! PostgreSQL: inbound.

use super::Postgres;
use crate::store::*;

impl Postgres {
    pub(crate) async fn record_inbound_part(&self, part: InboundPart) -> Result<InboundRecord, StoreError> {
        let _ = part;
        Err(StoreError::Postgres("record_inbound_part: not built yet".into()))
    }

    pub(crate) async fn expire_inbound(&self, now: Millis, timeout_ms: Millis,) -> Result<Vec<InboundText>, StoreError> {
        let _ = (now, timeout_ms);
        Err(StoreError::Postgres("expire_inbound: not built yet".into()))
    }

    pub(crate) async fn get_inbound(&self, id: &str) -> Result<Option<InboundText>, StoreError> {
        let _ = id;
        Err(StoreError::Postgres("get_inbound: not built yet".into()))
    }

    pub(crate) async fn list_inbound(&self, f: InboundFilter) -> Result<Vec<InboundText>, StoreError> {
        let _ = f;
        Err(StoreError::Postgres("list_inbound: not built yet".into()))
    }

    pub(crate) async fn prune_inbound(&self, now: Millis, retention_ms: Option<Millis>, mask_after_ms: Option<Millis>,) -> Result<InboundPruneStats, StoreError> {
        let _ = (now, retention_ms, mask_after_ms);
        Err(StoreError::Postgres("prune_inbound: not built yet".into()))
    }

    pub(crate) async fn next_inbound_expiry(&self, timeout_ms: Millis) -> Result<Option<Millis>, StoreError> {
        let _ = timeout_ms;
        Err(StoreError::Postgres("next_inbound_expiry: not built yet".into()))
    }
}
