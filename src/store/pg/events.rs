//! PostgreSQL: events.

use super::Postgres;
use crate::store::*;

impl Postgres {
    pub(crate) async fn record_modem_state(&self, modem_id: &str, from: Option<&str>, to: &str, detail: Option<&str>, at: Millis,) -> Result<i64, StoreError> {
        let _ = (modem_id, from, to, detail, at);
        Err(StoreError::Postgres("record_modem_state: not built yet".into()))
    }

    pub(crate) async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let _ = (after, limit);
        Err(StoreError::Postgres("events_after: not built yet".into()))
    }

    pub(crate) async fn register_endpoints(&self, endpoints: Vec<(String, String)>,) -> Result<(), StoreError> {
        let _ = endpoints;
        Err(StoreError::Postgres("register_endpoints: not built yet".into()))
    }

    pub(crate) async fn endpoint_state(&self, url: &str) -> Result<Option<EndpointState>, StoreError> {
        let _ = url;
        Err(StoreError::Postgres("endpoint_state: not built yet".into()))
    }

    pub(crate) async fn endpoint_states(&self) -> Result<Vec<(String, EndpointState)>, StoreError> {
        Err(StoreError::Postgres("endpoint_states: not built yet".into()))
    }

    pub(crate) async fn last_event_seq(&self) -> Result<i64, StoreError> {
        Err(StoreError::Postgres("last_event_seq: not built yet".into()))
    }

    pub(crate) async fn record_attempt(&self, url: &str, seq: i64, result: AttemptResult, now: Millis,) -> Result<(), StoreError> {
        let _ = (url, seq, result, now);
        Err(StoreError::Postgres("record_attempt: not built yet".into()))
    }

    pub(crate) async fn skip_events(&self, url: &str, up_to: i64) -> Result<(), StoreError> {
        let _ = (url, up_to);
        Err(StoreError::Postgres("skip_events: not built yet".into()))
    }

    pub(crate) async fn prune_events(&self, cutoff: Millis) -> Result<u64, StoreError> {
        let _ = cutoff;
        Err(StoreError::Postgres("prune_events: not built yet".into()))
    }
}
