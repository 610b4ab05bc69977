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

mod http;
mod key_set;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::config::KeyRefresh;
use crate::error::ApiError;
use http::{error_chain, get};
use key_set::{KeySet, PublishedKey, parse_key_set};

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
