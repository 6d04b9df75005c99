//! Retention: masking phone numbers in old rows and pruning old messages, OTPs, idempotency
//! keys and outbox events.

use rusqlite::{Connection, params};

use crate::store::{DAY_MS, Millis, PruneStats, StoreError};

/// SQL expression masking a phone number column: keeps the `+`, the first two digits (country
/// code, enough for statistics) and the last two (enough for a human to tell rows apart).
pub(crate) fn mask_sql(col: &str) -> String {
    format!("substr({col}, 1, 3) || '*****' || substr({col}, -2)")
}

/// How long outbox events are kept at most (see [`prune`]).
const EVENTS_KEPT_MS: Millis = 7 * DAY_MS;

pub(crate) fn prune(
    c: &Connection,
    now: Millis,
    retention_ms: Option<Millis>,
    mask_after_ms: Option<Millis>,
) -> Result<PruneStats, StoreError> {
    let (mut messages_deleted, mut otps_deleted) = (0, 0);
    if let Some(retention) = retention_ms {
        let cutoff = now - retention;
        // Only messages no longer in flight; parts and history go with them (ON DELETE CASCADE).
        messages_deleted = c.execute(
            "DELETE FROM messages WHERE created_at < ?1 AND status NOT IN ('queued', 'sending')",
            params![cutoff],
        )? as u64;
        otps_deleted = c.execute(
            "DELETE FROM otps WHERE created_at < ?1 AND (status <> 'pending' OR expires_at < ?2)",
            params![cutoff, now],
        )? as u64;
    }
    let mut numbers_masked = 0;
    if let Some(mask_after) = mask_after_ms {
        let mask_cutoff = now - mask_after;
        // `instr(..., '*') = 0` skips rows masked by an earlier run; rows still in flight keep
        // their number because the modem still needs it.
        let messages = format!(
            "UPDATE messages SET to_number = {} WHERE created_at < ?1
               AND instr(to_number, '*') = 0 AND status NOT IN ('queued', 'sending')",
            mask_sql("to_number")
        );
        numbers_masked += c.execute(&messages, params![mask_cutoff])? as u64;
        let otps = format!(
            "UPDATE otps SET to_number = {} WHERE created_at < ?1
               AND instr(to_number, '*') = 0 AND (status <> 'pending' OR expires_at < ?2)",
            mask_sql("to_number")
        );
        numbers_masked += c.execute(&otps, params![mask_cutoff, now])? as u64;
        let parts = format!(
            "UPDATE message_parts SET recipient = {} WHERE sent_at < ?1
               AND instr(recipient, '*') = 0",
            mask_sql("recipient")
        );
        numbers_masked += c.execute(&parts, params![mask_cutoff])? as u64;
    }
    let idempotency_deleted = c.execute(
        "DELETE FROM idempotency WHERE created_at <= ?1",
        params![now - DAY_MS],
    )? as u64;
    // The outbox is for delivery and catch-up, not a second log: its rows carry recipients, so
    // they go no later than the numbers are masked or the messages deleted, and at most after a
    // week (well past the default one-day retry period of an endpoint). Events an endpoint has
    // not yet had stay whatever their age (`events::prune_events`).
    let events_kept_ms = [retention_ms, mask_after_ms, Some(EVENTS_KEPT_MS)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(EVENTS_KEPT_MS);
    let events_deleted = crate::store::events::prune_events(c, now - events_kept_ms)?;
    Ok(PruneStats {
        messages_deleted,
        otps_deleted,
        numbers_masked,
        idempotency_deleted,
        events_deleted,
    })
}
