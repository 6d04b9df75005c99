//! Rate limits every node shares: GCRA (the same algorithm governor runs in memory for one
//! node) on one `rate_limits` row per key, so a phone number's budget is one budget however
//! many nodes its requests reach.

use deadpool_postgres::GenericClient;

use super::Postgres;
use crate::model::Millis;
use crate::store::StoreError;

impl Postgres {
    /// Spends `cells` of the budget `key` (`count` cells per `period_ms`, all of them available
    /// at once, one back every `period_ms / count`). `Ok(Ok(()))` when they were spent,
    /// `Ok(Err(wait_ms))` when not, with how long until they would be. The caller refuses
    /// `cells > count` itself: no wait helps that.
    ///
    /// One statement: the upsert locks the key's row, so two nodes spending the last cell at
    /// once cannot both have it. It runs outside any transaction that has to be durable: a
    /// budget lost with a crash of the database only gives a number its cells back early.
    pub async fn take_rate(
        &self,
        key: &str,
        count: u32,
        period_ms: Millis,
        cells: u32,
        now: Millis,
    ) -> Result<Result<(), Millis>, StoreError> {
        let interval = (period_ms / Millis::from(count.max(1))).max(1);
        let cost = interval * Millis::from(cells);
        let tolerance = interval * Millis::from(count);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "WITH spent AS (
                     INSERT INTO rate_limits AS r (key, tat) VALUES ($1, $2::bigint + $3::bigint)
                     ON CONFLICT (key) DO UPDATE SET tat = GREATEST(r.tat, $2::bigint) + $3::bigint
                         WHERE GREATEST(r.tat, $2::bigint) + $3::bigint - $2::bigint <= $4::bigint
                     RETURNING tat)
                 SELECT (SELECT tat FROM spent), (SELECT tat FROM rate_limits WHERE key = $1)",
            )
            .await?;
        let row = client
            .query_one(&stmt, &[&key, &now, &cost, &tolerance])
            .await?;
        let spent: Option<Millis> = row.try_get(0)?;
        if spent.is_some() {
            return Ok(Ok(()));
        }
        // Refused: the row was there and stays as it was.
        let tat: Millis = row.try_get::<_, Option<Millis>>(1)?.unwrap_or(now);
        Ok(Err((tat.max(now) + cost - now - tolerance).max(1)))
    }

    /// Forgets budgets that are full again (their theoretical arrival time has passed), so
    /// the table tracks active numbers only.
    pub async fn prune_rates(&self, now: Millis) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute("DELETE FROM rate_limits WHERE tat < $1", &[&now])
            .await?)
    }
}
