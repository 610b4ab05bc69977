//! The identity provider's signing keys: found by OpenID discovery (or a configured JWKS URI),
//! fetched, cached and refreshed.
//!
//! - Start-up never waits: a background task fetches the keys, then refreshes them every
//!   `background_interval` (12 h).
//! - A token naming an unknown `kid` triggers a refresh, at most one per `min_interval` (60 s)
//!   however many such tokens arrive; concurrent requests share one fetch.
//! - While no keys could be loaded yet, requests get the provider's failure (503 with
//!   Retry-After when it is unreachable, 502 when it answers garbage), retried at most once per
//!   `retry_interval`.
//! - A refresh replaces the whole set: keys the provider no longer publishes stop verifying.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::config::KeyRefresh;
use crate::error::ApiError;

/// Largest discovery document or key set read. Entra ID's key set is about 10 KiB.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Why the keys could not be fetched. The text is for logs and telemetry only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// No usable connection, or the provider said it is overloaded (429, 503).
    Unreachable(String),
    /// No answer within the fetch deadline.
    Timeout(String),
    /// An answer the service cannot use: an error status, not JSON, no usable keys.
    BadResponse(String),
    /// The HTTP client could not be set up.
    Internal(String),
}

impl FetchError {
    pub fn detail(&self) -> &str {
        match self {
            Self::Unreachable(d) | Self::Timeout(d) | Self::BadResponse(d) | Self::Internal(d) => d,
        }
    }

    /// 503 with Retry-After, 504, 502 or 500; the client sees only the generic message.
    pub fn to_api_error(&self, retry_after: Duration) -> ApiError {
        let detail = format!("identity provider: {}", self.detail());
        match self {
            Self::Unreachable(_) => ApiError::unavailable(
                "The identity provider is unavailable; retry later.",
                retry_after.as_secs().max(1),
            )
            .with_internal(detail),
            Self::Timeout(_) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "The identity provider did not answer in time.",
            )
            .with_internal(detail),
            Self::BadResponse(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "The identity provider answered unexpectedly.",
            )
            .with_internal(detail),
            Self::Internal(_) => ApiError::internal(detail),
        }
    }
}

/// Why no key could be chosen for a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Keys are cached, and the token's is not among them even after a refresh (or a refresh
    /// was not allowed yet).
    Unknown,
    /// The token names no `kid` and several keys could have signed it.
    Ambiguous,
    /// The named key cannot verify the token's algorithm (an RSA key with `ES256`, ...).
    Incompatible,
    /// No keys could be loaded at all.
    Provider {
        error: FetchError,
        retry_after: Duration,
    },
}

/// One published signing key.
struct PublishedKey {
    kid: Option<String>,
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
struct KeySet {
    keys: Vec<PublishedKey>,
    /// 0 until keys were loaded; grows by one whenever the published keys change.
    generation: u64,
    fingerprint: [u8; 32],
}

impl KeySet {
    fn is_loaded(&self) -> bool {
        self.generation > 0
    }

    fn find(
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

/// Where the key set is.
#[derive(Debug, Clone)]
enum Source {
    /// `{issuer}/.well-known/openid-configuration`, whose `jwks_uri` names the key set.
    Discovery(String),
    /// `ORDERS_AUTH_JWKS_URI`.
    KeySet(String),
}

enum Outcome {
    Fetched,
    Failed(FetchError),
    /// Not fetched: too soon after the last attempt, or another request just fetched.
    Skipped {
        failure: Option<FetchError>,
        retry_after: Duration,
    },
}

struct RefreshState {
    last_attempt: Option<Instant>,
    last_failure: Option<FetchError>,
}

pub struct KeyCache {
    source: Source,
    policy: KeyRefresh,
    client: Result<reqwest::Client, String>,
    current: RwLock<Arc<KeySet>>,
    /// Held for the whole of a fetch: concurrent requests for unknown keys share it.
    refresh: tokio::sync::Mutex<RefreshState>,
    attempts: AtomicU64,
}

impl KeyCache {
    pub fn new(issuer: &str, jwks_uri: Option<&str>, policy: KeyRefresh) -> Self {
        let source = match jwks_uri {
            Some(uri) => Source::KeySet(uri.to_owned()),
            None => Source::Discovery(format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            )),
        };
        let client = reqwest::Client::builder()
            .timeout(policy.fetch_timeout)
            .connect_timeout(policy.fetch_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("orders-api/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| error_chain(&e));
        if let Err(error) = &client {
            tracing::error!(error = %error, "cannot build the HTTP client for the identity provider's keys");
        }
        Self {
            source,
            policy,
            client,
            current: RwLock::new(Arc::new(KeySet {
                keys: Vec::new(),
                generation: 0,
                fingerprint: [0; 32],
            })),
            refresh: tokio::sync::Mutex::new(RefreshState {
                last_attempt: None,
                last_failure: None,
            }),
            attempts: AtomicU64::new(0),
        }
    }

    /// Fetches the keys now and then every `background_interval`, without blocking the caller.
    /// The task ends when the cache is dropped. Without a Tokio runtime nothing is started and
    /// the first request fetches the keys.
    pub fn start_background_refresh(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cache = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let pause = {
                    let Some(cache) = cache.upgrade() else {
                        return;
                    };
                    let healthy = matches!(
                        cache.refresh().await,
                        Outcome::Fetched | Outcome::Skipped { failure: None, .. }
                    );
                    let policy = cache.policy;
                    if healthy && cache.snapshot().is_loaded() {
                        policy.background_interval
                    } else if cache.snapshot().is_loaded() {
                        policy.min_interval
                    } else {
                        policy.retry_interval
                    }
                };
                // Never spin, whatever the configuration says.
                tokio::time::sleep(pause.max(Duration::from_secs(1))).await;
            }
        });
    }

    /// Generation of the current key set: tokens verified under an older one are checked again.
    pub fn generation(&self) -> u64 {
        self.snapshot().generation
    }

    /// The key for a token's `kid` and (already allowed) algorithm, with the generation of the
    /// key set it came from.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<(Arc<DecodingKey>, u64), KeyError> {
        let set = self.snapshot();
        if let Some(key) = set.find(kid, algorithm)? {
            return Ok((key, set.generation));
        }
        let outcome = self.refresh().await;
        let set = self.snapshot();
        if let Some(key) = set.find(kid, algorithm)? {
            return Ok((key, set.generation));
        }
        if set.is_loaded() {
            return Err(KeyError::Unknown);
        }
        match outcome {
            Outcome::Failed(error) => Err(KeyError::Provider {
                error,
                retry_after: self.policy.retry_interval,
            }),
            Outcome::Skipped {
                failure: Some(error),
                retry_after,
            } => Err(KeyError::Provider { error, retry_after }),
            Outcome::Fetched | Outcome::Skipped { failure: None, .. } => Err(KeyError::Unknown),
        }
    }

    fn snapshot(&self) -> Arc<KeySet> {
        // The lock only guards an Arc swap, so a poisoned lock still holds a whole key set.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// One fetch at a time, and at most one per window.
    async fn refresh(&self) -> Outcome {
        let attempts_seen = self.attempts.load(Ordering::Acquire);
        let mut state = self.refresh.lock().await;
        let window = if self.snapshot().is_loaded() {
            self.policy.min_interval
        } else {
            self.policy.retry_interval
        };
        if let Some(last) = state.last_attempt {
            let since = last.elapsed();
            if since < window || self.attempts.load(Ordering::Acquire) != attempts_seen {
                return Outcome::Skipped {
                    failure: state.last_failure.clone(),
                    retry_after: window.saturating_sub(since),
                };
            }
        }
        state.last_attempt = Some(Instant::now());
        self.attempts.fetch_add(1, Ordering::AcqRel);
        match self.fetch().await {
            Ok((keys, fingerprint)) => {
                self.install(keys, fingerprint);
                state.last_failure = None;
                Outcome::Fetched
            }
            Err(error) => {
                tracing::warn!(
                    error = error.detail(),
                    "could not fetch the identity provider's signing keys"
                );
                state.last_failure = Some(error.clone());
                Outcome::Failed(error)
            }
        }
    }

    fn install(&self, keys: Vec<PublishedKey>, fingerprint: [u8; 32]) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.is_loaded() && current.fingerprint == fingerprint {
            // Same keys: tokens verified with them stay verified.
            return;
        }
        let generation = current.generation + 1;
        let kids: Vec<&str> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        tracing::info!(keys = keys.len(), kids = ?kids, generation, "identity provider signing keys loaded");
        *current = Arc::new(KeySet {
            keys,
            generation,
            fingerprint,
        });
    }

    async fn fetch(&self) -> Result<(Vec<PublishedKey>, [u8; 32]), FetchError> {
        let client = self
            .client
            .as_ref()
            .map_err(|e| FetchError::Internal(e.clone()))?;
        let key_set_url = match &self.source {
            Source::KeySet(url) => url.clone(),
            Source::Discovery(url) => {
                #[derive(Deserialize)]
                struct Discovery {
                    jwks_uri: String,
                }
                let body = get(client, url).await?;
                let document: Discovery = serde_json::from_slice(&body).map_err(|e| {
                    FetchError::BadResponse(format!(
                        "discovery document {url} has no usable jwks_uri: {e}"
                    ))
                })?;
                // No downgrade from https discovery to a plain-http key set.
                let secure = url.starts_with("https://");
                let allowed = document.jwks_uri.starts_with("https://")
                    || (!secure && document.jwks_uri.starts_with("http://"));
                if !allowed {
                    return Err(FetchError::BadResponse(format!(
                        "discovery document {url} names a jwks_uri that is not an {} URL",
                        if secure { "https" } else { "http(s)" }
                    )));
                }
                document.jwks_uri
            }
        };
        let body = get(client, &key_set_url).await?;
        parse_key_set(&body)
            .map_err(|problem| FetchError::BadResponse(format!("key set {key_set_url}: {problem}")))
    }
}

/// One GET, as a Dependency in telemetry, with the body read up to [`MAX_DOCUMENT_BYTES`].
async fn get(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, FetchError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| FetchError::BadResponse(format!("'{url}' is not a URL: {e}")))?;
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let target = format!("{host}{}", parsed.path());
    let span = crate::telemetry::dependency_span("HTTP", &host, &format!("GET {}", parsed.path()));
    let result = async {
        let mut response = client
            .get(parsed)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| (None, transport_error(&target, e)))?;
        let status = response.status();
        let fail = |error| Err((Some(status.as_u16()), error));
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::SERVICE_UNAVAILABLE
        {
            return fail(FetchError::Unreachable(format!(
                "GET {target} answered {status}"
            )));
        }
        if !status.is_success() {
            return fail(FetchError::BadResponse(format!(
                "GET {target} answered {status}"
            )));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_DOCUMENT_BYTES as u64)
        {
            return fail(FetchError::BadResponse(format!(
                "GET {target}: document too large"
            )));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                        return fail(FetchError::BadResponse(format!(
                            "GET {target}: document too large"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok((status.as_u16(), body)),
                Err(e) => return fail(transport_error(&target, e)),
            }
        }
    }
    .instrument(span.clone())
    .await;
    match result {
        Ok((status, body)) => {
            crate::telemetry::record_dependency_result(&span, Some(status), true);
            Ok(body)
        }
        Err((status, error)) => {
            crate::telemetry::record_dependency_result(&span, status, false);
            Err(error)
        }
    }
}

/// No connection (refused, reset, DNS, or not made in time) is "unreachable"; a connection
/// that then gave no answer in time is a timeout.
fn transport_error(target: &str, error: reqwest::Error) -> FetchError {
    let timeout = error.is_timeout() && !error.is_connect();
    let detail = format!("GET {target}: {}", error_chain(&error.without_url()));
    if timeout {
        FetchError::Timeout(detail)
    } else {
        FetchError::Unreachable(detail)
    }
}

/// "outer: inner: root cause": reqwest's own message rarely says what went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The signing keys of a JWKS document. Keys this service cannot use (encryption keys, unknown
/// types, symmetric keys, which have no place in a published set) are skipped; a set with none
/// left is an error.
fn parse_key_set(body: &[u8]) -> Result<(Vec<PublishedKey>, [u8; 32]), String> {
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
