//! `Idempotency-Key`: the request digest, the record the store keeps, and the in-memory replay
//! cache that answers a retry before the rate limits.
//!
//! **Invariant:** a key with the same digest gets the first answer byte for byte; with another
//! digest it gets [`ServiceError::IdempotencyMismatch`]; the store stays the authority.

use sha2::{Digest, Sha256};

use crate::model::Millis;
use crate::store::{DAY_MS, Idempotency};

use super::{Service, ServiceError, invalid};

/// An `Idempotency-Key` with the identity that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The authenticated token's id: keys of different clients never collide.
    pub scope: String,
    /// The header's value.
    pub key: String,
}

/// A fresh answer, or the stored answer of an earlier request with the same idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// Newly created.
    New(T),
    /// The exact answer given the first time, as the HTTP layer rendered it then.
    Replay(String),
}

/// Longest `Idempotency-Key` accepted (the IETF draft suggests UUIDs; 255 leaves room).
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// Digest of a request for idempotency: the same key with a different digest is a conflict.
/// Length-prefixed fields, so no two different requests encode alike.
pub(super) fn request_digest(kind: &str, fields: &[Option<&str>]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    for f in fields {
        match f {
            None => h.update([0u8]),
            Some(s) => {
                h.update([1u8]);
                h.update((s.len() as u64).to_be_bytes());
                h.update(s.as_bytes());
            }
        }
    }
    h.finalize().to_vec()
}

pub(super) fn check_idempotency_key(k: &IdempotencyKey) -> Result<(), ServiceError> {
    if k.key.is_empty()
        || k.key.len() > MAX_IDEMPOTENCY_KEY
        || !k.key.bytes().all(|b| (0x21..=0x7e).contains(&b))
    {
        return Err(invalid(
            "Idempotency-Key",
            format!(
                "must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters without spaces, \
                 e.g. a UUID"
            ),
        ));
    }
    Ok(())
}

/// What the store keeps for an `Idempotency-Key`: the request's digest and the answer to
/// replay. The answer is rendered only when a key was given.
pub(super) fn idempotency_record(
    key: Option<&IdempotencyKey>,
    digest: &[u8],
    render: impl FnOnce() -> String,
) -> Option<Idempotency> {
    key.map(|k| Idempotency {
        scope: k.scope.clone(),
        key: k.key.clone(),
        request_hash: digest.to_vec(),
        response: render(),
    })
}

/// Recent answers given under an idempotency key, by `(scope, key)`.
///
/// The store is the authority on replays (it survives restarts), but it is asked only after the
/// rate limits, and a retry must not be refused by a limit its first attempt already passed: a
/// client retrying after a timeout would get 429 instead of its answer, and each retry would
/// spend another cell of the number's budget. The limiters live in memory and start empty after
/// a restart, so a cache that also lives in memory covers exactly the retries they could refuse.
#[derive(Debug, Default)]
pub(super) struct ReplayCache {
    /// `(scope, key)` → (request digest, answer, when it was stored).
    entries: std::collections::HashMap<(String, String), (Vec<u8>, String, Millis)>,
    /// Insertion order, for evicting the oldest beyond [`REPLAY_CACHE_MAX`].
    order: std::collections::VecDeque<(String, String)>,
}

/// Most answers kept in memory; older retries still get their answer from the store.
const REPLAY_CACHE_MAX: usize = 10_000;

impl ReplayCache {
    /// The cached outcome for a key, if it is younger than the store keeps keys (one day).
    fn lookup(
        &self,
        k: &IdempotencyKey,
        digest: &[u8],
        now: Millis,
    ) -> Option<Result<String, ServiceError>> {
        let (d, answer, at) = self.entries.get(&(k.scope.clone(), k.key.clone()))?;
        if now - at >= DAY_MS {
            return None;
        }
        Some(if d == digest {
            Ok(answer.clone())
        } else {
            Err(ServiceError::IdempotencyMismatch)
        })
    }

    fn insert(&mut self, k: &IdempotencyKey, digest: Vec<u8>, answer: String, now: Millis) {
        let id = (k.scope.clone(), k.key.clone());
        if self
            .entries
            .insert(id.clone(), (digest, answer, now))
            .is_none()
        {
            self.order.push_back(id);
        }
        while self.order.len() > REPLAY_CACHE_MAX {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }
}

impl Service {
    pub(super) fn cached_replay(
        &self,
        k: Option<&IdempotencyKey>,
        digest: &[u8],
    ) -> Option<Result<String, ServiceError>> {
        let k = k?;
        let now = self.clock.now_ms();
        self.replays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lookup(k, digest, now)
    }

    pub(super) fn remember(&self, k: Option<&IdempotencyKey>, digest: Vec<u8>, answer: &str) {
        if let Some(k) = k {
            let now = self.clock.now_ms();
            self.replays
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(k, digest, answer.to_owned(), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_separate_fields() {
        let a = request_digest("otp", &[Some("ab"), Some("c")]);
        let b = request_digest("otp", &[Some("a"), Some("bc")]);
        let c = request_digest("otp", &[Some("ab"), None]);
        let d = request_digest("text", &[Some("ab"), Some("c")]);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(a, request_digest("otp", &[Some("ab"), Some("c")]));
    }

    #[test]
    fn replay_cache_answers_mismatches_expires_and_evicts() {
        let mut c = ReplayCache::default();
        let k = |key: &str| IdempotencyKey {
            scope: "t".into(),
            key: key.into(),
        };
        c.insert(&k("a"), vec![1], "answer".into(), 1_000);
        assert_eq!(c.lookup(&k("a"), &[1], 2_000), Some(Ok("answer".into())));
        assert_eq!(
            c.lookup(&k("a"), &[2], 2_000),
            Some(Err(ServiceError::IdempotencyMismatch))
        );
        assert_eq!(c.lookup(&k("b"), &[1], 2_000), None);
        assert_eq!(c.lookup(&k("a"), &[1], 1_000 + DAY_MS), None);
        let other_scope = IdempotencyKey {
            scope: "u".into(),
            key: "a".into(),
        };
        assert_eq!(c.lookup(&other_scope, &[1], 2_000), None);
        for i in 0..REPLAY_CACHE_MAX {
            c.insert(&k(&format!("k{i}")), vec![0], String::new(), 3_000);
        }
        assert_eq!(c.entries.len(), REPLAY_CACHE_MAX);
        assert_eq!(c.lookup(&k("a"), &[1], 3_000), None, "oldest evicted");
    }
}
