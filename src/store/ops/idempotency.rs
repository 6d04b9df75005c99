//! Idempotency keys: the stored answer for a repeated key, or a conflict when the same key
//! comes with another request. Shared by every enqueue path, so it lives apart from them.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{CreateOutcome, DAY_MS, Idempotency, Millis, StoreError};

/// The stored answer for a repeated key, or a conflict. Keys live one day.
pub(super) fn check_idempotency(
    c: &Connection,
    idem: Option<&Idempotency>,
    now: Millis,
) -> Result<Option<CreateOutcome>, StoreError> {
    let Some(idem) = idem else { return Ok(None) };
    let row: Option<(Vec<u8>, String)> = c
        .prepare_cached(
            "SELECT request_hash, response FROM idempotency
             WHERE scope = ?1 AND key = ?2 AND created_at > ?3",
        )?
        .query_row(params![idem.scope, idem.key, now - DAY_MS], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(row.map(|(hash, response)| {
        if hash == idem.request_hash {
            CreateOutcome::Replay(response)
        } else {
            CreateOutcome::IdempotencyConflict
        }
    }))
}

pub(super) fn save_idempotency(
    c: &Connection,
    idem: Option<&Idempotency>,
    now: Millis,
) -> Result<(), StoreError> {
    if let Some(idem) = idem {
        // REPLACE: a key older than its day may be reused for a new request.
        c.prepare_cached(
            "INSERT OR REPLACE INTO idempotency (scope, key, request_hash, response, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            idem.scope,
            idem.key,
            idem.request_hash,
            idem.response,
            now
        ])?;
    }
    Ok(())
}
