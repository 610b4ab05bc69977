//! How bearer tokens are checked: `ORDERS_AUTH_ISSUER`, `ORDERS_AUTH_AUDIENCE`,
//! `ORDERS_AUTH_JWKS_URI`, `ORDERS_AUTH_ALGORITHMS`, `ORDERS_AUTH_DEV_SECRET` and
//! `ORDERS_AUTH_VERIFIED_TOKEN_CACHE`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::{ConfigError, parse_number};

/// How bearer tokens are checked.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub mode: AuthMode,
    /// `ORDERS_AUTH_ALGORITHMS`: the only signing algorithms accepted in production mode. The
    /// token's own `alg` header is checked against this list, never trusted.
    pub algorithms: Vec<Algorithm>,
    /// When the identity provider's keys are fetched again.
    pub key_refresh: KeyRefresh,
    /// Most tokens kept as already verified, so repeated calls skip the signature check.
    pub verified_token_cache: usize,
}

/// Where tokens come from.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// `ORDERS_AUTH_ISSUER` and `ORDERS_AUTH_AUDIENCE` set: tokens from a real identity provider,
    /// verified with its published keys.
    Production {
        /// The exact `iss` tokens must carry; also the base of OpenID discovery.
        issuer: String,
        /// Accepted `aud` values (`ORDERS_AUTH_AUDIENCE`, comma-separated).
        audiences: Vec<String>,
        /// `ORDERS_AUTH_JWKS_URI`; `None` = discovered from the issuer.
        jwks_uri: Option<String>,
    },
    /// No issuer configured: HS256 tokens signed with a development key, as `handler token`
    /// issues them. Refused in Azure.
    Development {
        secret: Secret,
        /// `ORDERS_AUTH_DEV_SECRET` was not set: the key is the built-in, publicly known one.
        built_in: bool,
    },
}

/// Timing of identity-provider key fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRefresh {
    /// Least time between fetches while keys are cached, however many tokens name an unknown
    /// `kid`: a flood of random key ids cannot hammer the identity provider.
    pub min_interval: Duration,
    /// Least time between fetches while no keys could be loaded yet (requests get 503 meanwhile).
    pub retry_interval: Duration,
    /// Routine refresh in the background, so rotated keys are known before tokens use them.
    pub background_interval: Duration,
    /// Deadline of one call to the identity provider (discovery and JWKS are one call each).
    pub fetch_timeout: Duration,
}

impl Default for KeyRefresh {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(60),
            retry_interval: Duration::from_secs(5),
            background_interval: Duration::from_secs(12 * 60 * 60),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

impl AuthSettings {
    pub fn is_development(&self) -> bool {
        matches!(self.mode, AuthMode::Development { .. })
    }
}

/// A secret setting: its `Debug` output never shows the value, so configurations can be logged.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// The development signing key used when `ORDERS_AUTH_DEV_SECRET` is not set. It is public, so
/// development mode is refused in Azure.
pub const BUILT_IN_DEV_SECRET: &str = "orders-api-development-key-not-a-secret-0001";

/// HMAC keys shorter than the hash output are weak (RFC 7518 section 3.2).
const MIN_DEV_SECRET_BYTES: usize = 32;

pub(super) fn parse(
    get: &impl Fn(&str) -> Option<String>,
    in_azure: bool,
) -> Result<AuthSettings, ConfigError> {
    let algorithms = match get("ORDERS_AUTH_ALGORITHMS") {
        Some(value) => parse_algorithms(&value)?,
        None => vec![Algorithm::RS256],
    };
    let issuer = get("ORDERS_AUTH_ISSUER").map(|v| v.trim().to_owned());
    let audience = get("ORDERS_AUTH_AUDIENCE");
    let jwks_uri = get("ORDERS_AUTH_JWKS_URI").map(|v| v.trim().to_owned());

    let mode = match (issuer, audience) {
        (Some(issuer), Some(audience)) => {
            check_url("ORDERS_AUTH_ISSUER", &issuer, in_azure)?;
            if let Some(uri) = &jwks_uri {
                check_url("ORDERS_AUTH_JWKS_URI", uri, in_azure)?;
            }
            let audiences: Vec<String> = audience
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect();
            if audiences.is_empty() {
                return Err(ConfigError::new(
                    "ORDERS_AUTH_AUDIENCE",
                    "lists no audience",
                ));
            }
            AuthMode::Production {
                issuer,
                audiences,
                jwks_uri,
            }
        }
        (Some(_), None) => {
            return Err(ConfigError::new(
                "ORDERS_AUTH_AUDIENCE",
                "must be set when ORDERS_AUTH_ISSUER is set",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "ORDERS_AUTH_ISSUER",
                "must be set when ORDERS_AUTH_AUDIENCE is set",
            ));
        }
        (None, None) => {
            if jwks_uri.is_some() {
                return Err(ConfigError::new(
                    "ORDERS_AUTH_JWKS_URI",
                    "needs ORDERS_AUTH_ISSUER and ORDERS_AUTH_AUDIENCE",
                ));
            }
            if in_azure {
                return Err(ConfigError::new(
                    "ORDERS_AUTH_ISSUER",
                    "is required when running in Azure (WEBSITE_INSTANCE_ID is set): development-mode tokens are refused; set ORDERS_AUTH_ISSUER and ORDERS_AUTH_AUDIENCE",
                ));
            }
            match get("ORDERS_AUTH_DEV_SECRET") {
                Some(secret) if secret.len() < MIN_DEV_SECRET_BYTES => {
                    return Err(ConfigError::new(
                        "ORDERS_AUTH_DEV_SECRET",
                        format!("must be at least {MIN_DEV_SECRET_BYTES} bytes long"),
                    ));
                }
                Some(secret) => AuthMode::Development {
                    secret: Secret::new(secret),
                    built_in: false,
                },
                None => AuthMode::Development {
                    secret: Secret::new(BUILT_IN_DEV_SECRET),
                    built_in: true,
                },
            }
        }
    };
    // 0 turns the cache off (every request verifies its token's signature), for measurement.
    let verified_token_cache = usize::try_from(parse_number(
        get,
        "ORDERS_AUTH_VERIFIED_TOKEN_CACHE",
        10_000,
        0,
    )?)
    .unwrap_or(usize::MAX);
    Ok(AuthSettings {
        mode,
        algorithms,
        key_refresh: KeyRefresh::default(),
        verified_token_cache,
    })
}

/// `RS256`, `RS256,ES256` or `RS256 PS256`: asymmetric algorithms only, because the keys come
/// from a published key set; HMAC would need a shared secret and is how algorithm-confusion
/// attacks work.
fn parse_algorithms(value: &str) -> Result<Vec<Algorithm>, ConfigError> {
    let setting = "ORDERS_AUTH_ALGORITHMS";
    let mut algorithms = Vec::new();
    for name in value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|n| !n.is_empty())
    {
        let algorithm = Algorithm::from_str(name).map_err(|_| {
            ConfigError::new(setting, format!("'{name}' is not a JWS signing algorithm"))
        })?;
        if matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(ConfigError::new(
                setting,
                format!("'{name}' needs a shared secret; only public-key algorithms are accepted"),
            ));
        }
        if !algorithms.contains(&algorithm) {
            algorithms.push(algorithm);
        }
    }
    if algorithms.is_empty() {
        return Err(ConfigError::new(setting, "lists no algorithm"));
    }
    Ok(algorithms)
}

/// An absolute http(s) URL with a host; https only in Azure, where keys must not be fetched in
/// the clear.
fn check_url(setting: &'static str, value: &str, in_azure: bool) -> Result<(), ConfigError> {
    let Some((scheme, rest)) = value.split_once("://") else {
        return Err(ConfigError::new(
            setting,
            format!("'{value}' is not an absolute URL"),
        ));
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let scheme = scheme.to_ascii_lowercase();
    if host.is_empty() || !(scheme == "https" || scheme == "http") {
        return Err(ConfigError::new(
            setting,
            format!("'{value}' is not an http(s) URL with a host"),
        ));
    }
    if in_azure && scheme != "https" {
        return Err(ConfigError::new(
            setting,
            "must use https when running in Azure",
        ));
    }
    Ok(())
}
