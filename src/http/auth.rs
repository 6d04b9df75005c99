//! Bearer-token authentication (RFC 6750 §2.1) for every `/v1` route.
//!
//! Tokens are compared in constant time: both sides are hashed to 32 bytes first (so the length of
//! a configured token does not leak through timing either) and every configured token is compared,
//! without stopping at the first match.

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::problem::Problem;

/// What every bearer token must be, from `api.tokens` or from `<data_dir>/api-token`: long
/// enough that guessing is hopeless within any rate limit, and free of spaces and control
/// characters so that it survives a header, a shell and a config file unchanged. Never contains
/// the token, so it can be shown in any error.
pub const TOKEN_RULE: &str =
    "a token must be at least 16 printable ASCII characters without spaces";

/// The shortest token [`TOKEN_RULE`] allows.
pub const MIN_TOKEN_LEN: usize = 16;

/// Whether `token` follows [`TOKEN_RULE`].
pub fn token_follows_rule(token: &str) -> bool {
    token.len() >= MIN_TOKEN_LEN && token.bytes().all(|b| b.is_ascii_graphic())
}

/// Which configured token authenticated a request. Idempotency keys and per-token limits are
/// scoped by it. It is derived from the token's hash, never the token itself, so it can be stored
/// and logged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenId(pub String);

/// The accepted bearer tokens.
#[derive(Clone)]
pub struct Tokens {
    /// SHA-256 of each accepted token; the tokens themselves are not kept.
    hashes: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Even hashes of weak tokens could be brute-forced from a log; print only the count.
        write!(f, "Tokens({} configured)", self.hashes.len())
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&Sha256::digest(token));
    out
}

impl Tokens {
    /// The set of accepted tokens. Empty tokens are ignored: an empty bearer must never match.
    pub fn new<I, S>(tokens: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Tokens {
            hashes: tokens
                .into_iter()
                .filter(|t| !t.as_ref().is_empty())
                .map(|t| digest(t.as_ref().as_bytes()))
                .collect(),
        }
    }

    /// Number of accepted tokens.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether no token is accepted (every `/v1` request is then refused).
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The id of the token that matches `presented`, if any, in time independent of which (or
    /// whether one) matched.
    pub fn check(&self, presented: &str) -> Option<TokenId> {
        let h = digest(presented.as_bytes());
        let mut found = Choice::from(0);
        let mut index = 0usize;
        for (i, known) in self.hashes.iter().enumerate() {
            let eq = known.ct_eq(&h);
            // Select without branching on the secret-dependent comparison.
            index = usize::conditional_select_index(index, i, eq);
            found |= eq;
        }
        if bool::from(found) {
            Some(TokenId(hex::encode(&self.hashes[index][..8])))
        } else {
            None
        }
    }

    /// Checks an `Authorization` header value and answers the 401 problem when it fails.
    pub fn authorize(&self, header: Option<&str>) -> Result<TokenId, Problem> {
        let Some(value) = header else {
            return Err(Problem::unauthorized(
                "this route needs the header Authorization: Bearer <token>; the token is in the \
                 config (api.tokens) or in <data_dir>/api-token",
            ));
        };
        let mut it = value.trim().splitn(2, ' ');
        let scheme = it.next().unwrap_or("");
        let token = it.next().unwrap_or("").trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(Problem::unauthorized(
                "the Authorization header must be `Bearer <token>`",
            ));
        }
        self.check(token)
            .ok_or_else(|| Problem::unauthorized("the bearer token is not accepted"))
    }
}

/// Constant-time selection of an index, since `subtle` implements `ConditionallySelectable` for
/// fixed-width integers but not for `usize`.
trait SelectIndex {
    fn conditional_select_index(a: usize, b: usize, choice: Choice) -> usize;
}

impl SelectIndex for usize {
    fn conditional_select_index(a: usize, b: usize, choice: Choice) -> usize {
        use subtle::ConditionallySelectable;
        u64::conditional_select(&(a as u64), &(b as u64), choice) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_any_configured_token_and_names_it() {
        let t = Tokens::new(["alpha", "", "beta"]);
        assert_eq!(t.len(), 2);
        let a = t.check("alpha").unwrap();
        let b = t.check("beta").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.0.len(), 16);
        assert!(t.check("gamma").is_none());
        assert!(t.check("").is_none());
        assert!(t.check("alph").is_none());
    }

    #[test]
    fn header_parsing() {
        let t = Tokens::new(["s3cret"]);
        assert!(t.authorize(Some("Bearer s3cret")).is_ok());
        assert!(t.authorize(Some("bearer  s3cret ")).is_ok());
        for bad in [
            None,
            Some("s3cret"),
            Some("Basic s3cret"),
            Some("Bearer"),
            Some("Bearer x"),
        ] {
            let p = t.authorize(bad).unwrap_err();
            assert_eq!(p.status.as_u16(), 401);
            assert!(p.bearer_challenge);
            assert!(!p.detail.contains("s3cret"));
        }
    }

    #[test]
    fn empty_set_accepts_nothing() {
        let t = Tokens::new(Vec::<String>::new());
        assert!(t.is_empty());
        assert!(t.authorize(Some("Bearer anything")).is_err());
    }
}
