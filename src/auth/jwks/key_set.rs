//! The signing keys of a JWKS document, as this service can use them: which key verifies which
//! algorithm, and how a token's `kid` picks one.

use std::str::FromStr;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::KeyError;

/// One published signing key.
pub(super) struct PublishedKey {
    pub(super) kid: Option<String>,
    /// The only algorithm it verifies when the key set says so (or the curve implies it);
    /// otherwise any of its family's.
    algorithm: Option<Algorithm>,
    family: AlgorithmFamily,
    key: Arc<DecodingKey>,
}

impl PublishedKey {
    fn verifies(&self, algorithm: Algorithm) -> bool {
        self.family == algorithm.family() && self.algorithm.is_none_or(|a| a == algorithm)
    }
}

/// The keys as last fetched.
pub(super) struct KeySet {
    pub(super) keys: Vec<PublishedKey>,
    /// 0 until keys were loaded; grows by one whenever the published keys change.
    pub(super) generation: u64,
    pub(super) fingerprint: [u8; 32],
}

impl KeySet {
    pub(super) fn is_loaded(&self) -> bool {
        self.generation > 0
    }

    pub(super) fn find(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<Option<Arc<DecodingKey>>, KeyError> {
        match kid {
            Some(kid) => {
                let mut named = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
                let Some(first) = named.next() else {
                    return Ok(None);
                };
                std::iter::once(first)
                    .chain(named)
                    .find(|k| k.verifies(algorithm))
                    .map(|k| Some(Arc::clone(&k.key)))
                    .ok_or(KeyError::Incompatible)
            }
            None => {
                let mut candidates = self.keys.iter().filter(|k| k.verifies(algorithm));
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Ok(Some(Arc::clone(&only.key))),
                    (Some(_), Some(_)) => Err(KeyError::Ambiguous),
                    (None, _) => Ok(None),
                }
            }
        }
    }
}

/// The signing keys of a JWKS document. Keys this service cannot use (encryption keys, unknown
/// types, symmetric keys, which have no place in a published set) are skipped; a set with none
/// left is an error.
pub(super) fn parse_key_set(body: &[u8]) -> Result<(Vec<PublishedKey>, [u8; 32]), String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet =
        serde_json::from_slice(body).map_err(|e| format!("not a JSON key set: {e}"))?;
    let mut keys = Vec::new();
    let mut fingerprint = Sha256::new();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value.clone()) else {
            continue;
        };
        let Some(key) = published_key(&jwk) else {
            continue;
        };
        fingerprint.update(value.to_string().as_bytes());
        fingerprint.update([0]);
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("no usable signing keys".to_owned());
    }
    Ok((keys, fingerprint.finalize().into()))
}

fn published_key(jwk: &Jwk) -> Option<PublishedKey> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    // An `alg` that is not a JWS algorithm (RSA-OAEP, ...) marks an encryption key.
    let declared = match &jwk.common.key_algorithm {
        Some(alg) => Some(Algorithm::from_str(&alg.to_string()).ok()?),
        None => None,
    };
    let (family, implied) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (AlgorithmFamily::Rsa, None),
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => (AlgorithmFamily::Ec, Some(Algorithm::ES256)),
            EllipticCurve::P384 => (AlgorithmFamily::Ec, Some(Algorithm::ES384)),
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(params) if params.curve == EllipticCurve::Ed25519 => {
            (AlgorithmFamily::Ed, Some(Algorithm::EdDSA))
        }
        _ => return None,
    };
    let algorithm = match (declared, implied) {
        (Some(d), Some(i)) if d != i => return None,
        (Some(d), _) if d.family() != family => return None,
        (d, i) => d.or(i),
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(PublishedKey {
        kid: jwk.common.key_id.clone(),
        algorithm,
        family,
        key: Arc::new(key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    #[test]
    fn signing_keys_are_kept_and_others_skipped() {
        let body = serde_json::json!({"keys": [
            {"kty": "RSA", "use": "sig", "kid": "r1", "n": RSA_N, "e": "AQAB", "x5t": "x", "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0"},
            {"kty": "RSA", "use": "enc", "kid": "r2", "n": RSA_N, "e": "AQAB"},
            {"kty": "RSA", "alg": "RSA-OAEP", "kid": "r3", "n": RSA_N, "e": "AQAB"},
            {"kty": "oct", "kid": "h1", "k": "c2VjcmV0"},
            {"kty": "weird", "kid": "w1"},
        ]});
        let (keys, _) = parse_key_set(body.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("r1"));
        assert!(keys[0].verifies(Algorithm::RS256));
        assert!(!keys[0].verifies(Algorithm::ES256));
        assert!(!keys[0].verifies(Algorithm::HS256));
    }

    #[test]
    fn garbage_and_empty_sets_are_errors() {
        assert!(parse_key_set(b"<html>").is_err());
        assert!(parse_key_set(br#"{"keys": []}"#).is_err());
        assert!(parse_key_set(br#"{"nokeys": 1}"#).is_err());
    }

    #[test]
    fn keys_are_chosen_by_kid_or_by_being_the_only_candidate() {
        let body = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "a", "n": RSA_N, "e": "AQAB", "alg": "RS256"},
            {"kty": "RSA", "kid": "b", "n": RSA_N, "e": "AQAB"},
        ]});
        let (keys, fingerprint) = parse_key_set(body.to_string().as_bytes()).unwrap();
        let set = KeySet {
            keys,
            generation: 1,
            fingerprint,
        };
        assert!(set.find(Some("a"), Algorithm::RS256).unwrap().is_some());
        assert_eq!(
            set.find(Some("a"), Algorithm::PS256).err(),
            Some(KeyError::Incompatible)
        );
        assert!(set.find(Some("b"), Algorithm::PS256).unwrap().is_some());
        assert!(set.find(Some("zzz"), Algorithm::RS256).unwrap().is_none());
        assert_eq!(
            set.find(None, Algorithm::RS256).err(),
            Some(KeyError::Ambiguous)
        );
        assert!(
            set.find(None, Algorithm::PS256).unwrap().is_some(),
            "only b allows PS256"
        );
    }
}
