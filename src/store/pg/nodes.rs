//! The nodes of a cluster as the others see them: each node publishes its modems (the
//! objects `GET /v1/modems` shows) with its lease renewals, so any node can answer for the
//! whole cluster. A node whose `last_seen` is older than the lease is not live: its modems
//! are not listed, since nothing it claimed is still its own.

use super::Postgres;
use crate::model::Millis;
use crate::store::StoreError;

/// One live node's published modems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeModems {
    /// The node.
    pub node_id: String,
    /// When it last renewed.
    pub last_seen: Millis,
    /// Its modems as a JSON array of `GET /v1/modems` objects, as it published them.
    pub modems_json: String,
}

impl Postgres {
    /// Publishes this node's modems (a JSON array) and marks it alive.
    pub async fn publish_modems(&self, modems_json: &str, now: Millis) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO nodes (node_id, started_at, last_seen, modems) VALUES ($1, $2, $2, $3)
                 ON CONFLICT (node_id) DO UPDATE
                     SET last_seen = EXCLUDED.last_seen, modems = EXCLUDED.modems",
                &[&self.inner.node_id, &now, &modems_json],
            )
            .await?;
        Ok(())
    }

    /// Every other node that renewed within the lease, with its modems.
    pub async fn other_live_nodes(&self, now: Millis) -> Result<Vec<NodeModems>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT node_id, last_seen, modems FROM nodes
                 WHERE node_id <> $1 AND last_seen >= $2 ORDER BY node_id",
                &[&self.inner.node_id, &(now - self.inner.lease_ms)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeModems {
                    node_id: r.try_get(0)?,
                    last_seen: r.try_get(1)?,
                    modems_json: r.try_get(2)?,
                })
            })
            .collect()
    }
}
