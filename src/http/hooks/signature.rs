//! The two signature schemes, pure: headers, body, keys and the time in; a verdict out.
//!
//! - **Standard Webhooks** (Supabase Auth's hooks): `webhook-id`, `webhook-timestamp` (unix
//!   seconds) and `webhook-signature`, a space-separated list of `v1,<base64 HMAC-SHA256>` over
//!   `<id>.<timestamp>.<body>`. Supabase joins one signature per configured secret with `", "`,
//!   so a trailing comma on an entry is tolerated.
//! - **Zitadel** (`pkg/actions/signing.go`): `ZITADEL-Signature: t=<unix seconds>,v1=<hex
//!   HMAC-SHA256>[,v1=…]` over `<t>.<body>`, keyed by the signing key's bytes.
//!
//! Both compare in constant time, and both refuse a timestamp more than [`TOLERANCE_SECS`] away
//! from now in either direction (Standard Webhooks' own rule; Zitadel's verifier checks only the
//! past, but a future timestamp is no more trustworthy).

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How far a signed timestamp may be from now: both projects' verifiers use five minutes.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a request is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A required header is missing or empty.
    Missing(&'static str),
    /// A header is present but cannot be read.
    Malformed(&'static str),
    /// No signature matched any key.
    BadSignature,
    /// The timestamp is further than the tolerance from now; the value is the distance.
    Stale(i64),
    /// The same signed request was seen before.
    Replayed,
}

impl Refusal {
    /// What the 401 says; never a key, a signature or the body.
    pub fn detail(&self, scheme: &str) -> String {
        match self {
            Refusal::Missing(h) => {
                format!("the {h} header is missing: {scheme} signs every request")
            }
            Refusal::Malformed(h) => format!("the {h} header cannot be read"),
            Refusal::BadSignature => format!(
                "no {scheme} signature matches: is the key in simgate's config the one the \
                 sender signs with?"
            ),
            Refusal::Stale(d) => format!(
                "the signed timestamp is {d} s from now, more than the {TOLERANCE_SECS} s \
                 allowed: a delayed or replayed request, or a clock off on one side"
            ),
            Refusal::Replayed => {
                "this signed request was already received: a replay is refused".to_owned()
            }
        }
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn check_time(ts: i64, now: i64) -> Result<(), Refusal> {
    let d = (now - ts).abs();
    if d > TOLERANCE_SECS {
        return Err(Refusal::Stale(d));
    }
    Ok(())
}

/// What a verified Standard Webhooks request identifies itself by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The value a replay repeats (`webhook-id`; Zitadel's timestamp and signature).
    pub replay_key: String,
    /// The signed timestamp, unix seconds.
    pub timestamp: i64,
}

/// Verifies a Standard Webhooks request against any of `keys` at `now` (unix seconds).
pub fn standard_webhooks(
    keys: &[Vec<u8>],
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<Verified, Refusal> {
    let id = id
        .filter(|s| !s.is_empty())
        .ok_or(Refusal::Missing("webhook-id"))?;
    let ts_text = timestamp
        .filter(|s| !s.is_empty())
        .ok_or(Refusal::Missing("webhook-timestamp"))?;
    let signature = signature
        .filter(|s| !s.is_empty())
        .ok_or(Refusal::Missing("webhook-signature"))?;
    let ts: i64 = ts_text
        .parse()
        .map_err(|_| Refusal::Malformed("webhook-timestamp"))?;
    let given: Vec<Vec<u8>> = signature
        .split_ascii_whitespace()
        .map(|s| s.trim_end_matches(','))
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .collect();
    if given.is_empty() {
        return Err(Refusal::Malformed("webhook-signature"));
    }
    let matched = keys.iter().any(|k| {
        let want = mac(k, &[id.as_bytes(), b".", ts_text.as_bytes(), b".", body]);
        given.iter().any(|g| bool::from(g.as_slice().ct_eq(&want)))
    });
    if !matched {
        return Err(Refusal::BadSignature);
    }
    check_time(ts, now)?;
    Ok(Verified {
        replay_key: id.to_owned(),
        timestamp: ts,
    })
}

/// Verifies a `ZITADEL-Signature` header against `key` at `now` (unix seconds).
pub fn zitadel(
    key: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<Verified, Refusal> {
    let header = header
        .filter(|s| !s.is_empty())
        .ok_or(Refusal::Missing("ZITADEL-Signature"))?;
    let mut ts_text = None;
    let mut given = Vec::new();
    for pair in header.split(',') {
        let (k, v) = pair
            .trim()
            .split_once('=')
            .ok_or(Refusal::Malformed("ZITADEL-Signature"))?;
        match k {
            "t" => ts_text = Some(v),
            // An entry that is not hex is skipped, as Zitadel's own verifier does.
            "v1" => given.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let ts_text = ts_text.ok_or(Refusal::Malformed("ZITADEL-Signature"))?;
    let ts: i64 = ts_text
        .parse()
        .map_err(|_| Refusal::Malformed("ZITADEL-Signature"))?;
    if given.is_empty() {
        return Err(Refusal::BadSignature);
    }
    // Zitadel signs the decimal timestamp it put in the header, then `.`, then the body.
    let want = mac(key, &[ts.to_string().as_bytes(), b".", body]);
    if !given.iter().any(|g| bool::from(g.as_slice().ct_eq(&want))) {
        return Err(Refusal::BadSignature);
    }
    check_time(ts, now)?;
    // The timestamp and the signature that matched, not the header's text: a replay with its
    // entries reordered or a junk entry added is the same request.
    Ok(Verified {
        replay_key: format!("{ts}.{}", hex::encode(want)),
        timestamp: ts,
    })
}

/// A keyed digest of a body, for de-duplicating requests that carry no id of their own; keyed
/// because the body holds a code, and a plain hash of it could be reversed by trying codes.
pub fn body_digest(key: &[u8], body: &[u8]) -> String {
    hex::encode(&mac(key, &[b"simgate-dedupe.", body])[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn sw_sign(key: &[u8], id: &str, ts: i64, body: &[u8]) -> String {
        let sig = mac(
            key,
            &[id.as_bytes(), b".", ts.to_string().as_bytes(), b".", body],
        );
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(sig)
        )
    }

    #[test]
    fn standard_webhooks_cases() {
        let k = vec![9u8; 32];
        let other = vec![8u8; 32];
        let body = br#"{"sms":{"otp":"123456"}}"#;
        let good = sw_sign(&k, "msg_1", NOW, body);
        let check = |keys: &[Vec<u8>], id, ts: &str, sig: &str, body: &[u8]| {
            standard_webhooks(keys, id, Some(ts), Some(sig), body, NOW)
        };
        let ts = NOW.to_string();
        assert_eq!(
            check(std::slice::from_ref(&k), Some("msg_1"), &ts, &good, body),
            Ok(Verified {
                replay_key: "msg_1".into(),
                timestamp: NOW
            })
        );
        // A rotation: the second key matches; Supabase's ", " join of two signatures.
        let both = format!("{}, {good}", sw_sign(&other, "msg_1", NOW, body));
        assert!(check(&[other.clone(), k.clone()], Some("msg_1"), &ts, &both, body).is_ok());
        assert!(check(std::slice::from_ref(&k), Some("msg_1"), &ts, &both, body).is_ok());
        assert_eq!(
            check(
                std::slice::from_ref(&other),
                Some("msg_1"),
                &ts,
                &good,
                body
            ),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            check(std::slice::from_ref(&k), Some("msg_2"), &ts, &good, body),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            check(std::slice::from_ref(&k), Some("msg_1"), &ts, &good, b"{}"),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            check(std::slice::from_ref(&k), None, &ts, &good, body),
            Err(Refusal::Missing("webhook-id"))
        );
        assert_eq!(
            check(std::slice::from_ref(&k), Some("msg_1"), "soon", &good, body),
            Err(Refusal::Malformed("webhook-timestamp"))
        );
        assert_eq!(
            check(std::slice::from_ref(&k), Some("msg_1"), &ts, "v2,abc", body),
            Err(Refusal::Malformed("webhook-signature"))
        );
        for off in [-301, 301, -100_000] {
            let t = NOW + off;
            let sig = sw_sign(&k, "msg_1", t, body);
            assert_eq!(
                check(
                    std::slice::from_ref(&k),
                    Some("msg_1"),
                    &t.to_string(),
                    &sig,
                    body
                ),
                Err(Refusal::Stale(off.abs()))
            );
        }
        let t = NOW - 299;
        let sig = sw_sign(&k, "msg_1", t, body);
        assert!(
            check(
                std::slice::from_ref(&k),
                Some("msg_1"),
                &t.to_string(),
                &sig,
                body
            )
            .is_ok()
        );
    }

    fn z_sign(key: &[u8], ts: i64, body: &[u8]) -> String {
        format!(
            "t={ts},v1={}",
            hex::encode(mac(key, &[ts.to_string().as_bytes(), b".", body]))
        )
    }

    #[test]
    fn zitadel_cases() {
        let k = b"zitadel-signing-key-0123456789".to_vec();
        let body = br#"{"contextInfo":{}}"#;
        let good = z_sign(&k, NOW, body);
        let v = zitadel(&k, Some(&good), body, NOW).unwrap();
        assert_eq!(v.timestamp, NOW);
        assert_eq!(v.replay_key, good.replace(",v1=", ".").replace("t=", ""));
        // Several v1 entries (Zitadel signs once per key) and junk entries are fine, and are
        // the same request for replay purposes.
        let multi = format!(
            "t={NOW},v1=zz,v1={},{}",
            "00".repeat(32),
            &good[good.find("v1=").unwrap()..]
        );
        assert_eq!(
            zitadel(&k, Some(&multi), body, NOW).unwrap().replay_key,
            v.replay_key
        );
        assert_eq!(
            zitadel(b"another-key-0123456789", Some(&good), body, NOW),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            zitadel(&k, Some(&good), b"{}", NOW),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            zitadel(&k, None, body, NOW),
            Err(Refusal::Missing("ZITADEL-Signature"))
        );
        assert_eq!(
            zitadel(&k, Some("v1=00"), body, NOW),
            Err(Refusal::Malformed("ZITADEL-Signature"))
        );
        assert_eq!(
            zitadel(&k, Some("t=1,v1"), body, NOW),
            Err(Refusal::Malformed("ZITADEL-Signature"))
        );
        assert_eq!(
            zitadel(&k, Some(&format!("t={NOW}")), body, NOW),
            Err(Refusal::BadSignature)
        );
        let old = z_sign(&k, NOW - 301, body);
        assert_eq!(zitadel(&k, Some(&old), body, NOW), Err(Refusal::Stale(301)));
    }

    #[test]
    fn body_digest_is_keyed() {
        assert_ne!(body_digest(b"a", b"x"), body_digest(b"b", b"x"));
        assert_eq!(body_digest(b"a", b"x"), body_digest(b"a", b"x"));
        assert_eq!(body_digest(b"a", b"x").len(), 32);
    }
}
