//! Every setting, read and validated once at start-up.
//!
//! Settings come from the environment (Function App settings in Azure). [`Config::from_lookup`]
//! takes any lookup function so tests build configurations without touching the process
//! environment. A bad value is a [`ConfigError`] naming the setting and the problem; `main`
//! prints it as one line and exits non-zero.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use thiserror::Error;

/// A setting that could not be used, with the reason.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid setting {setting}: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(setting: &'static str, problem: impl Into<String>) -> Self {
        Self {
            setting,
            problem: problem.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub port: u16,
    /// Running in Azure (`WEBSITE_INSTANCE_ID` set): development conveniences are refused.
    pub in_azure: bool,
    /// Application Insights export and this process's cloud role name and instance.
    pub telemetry: crate::telemetry::TelemetryConfig,
    pub request_timeout: Duration,
    pub body_timeout: Duration,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub fault_injection: bool,
    /// In-flight requests beyond which new ones are shed with 503.
    pub max_concurrency: usize,
    /// Requests per minute per caller (429 beyond).
    pub rate_limit_per_minute: u32,
    /// Callers tracked by the rate limiter at most (bounds its memory).
    pub rate_limit_max_callers: usize,
    /// Time allowed for a request's headers, and for an idle keep-alive connection.
    pub header_timeout: Duration,
    /// How bearer tokens are checked (`ORDERS_AUTH_*`).
    pub auth: AuthSettings,
    /// Where orders and exports live (`AzureWebJobsStorage`; unset = in memory).
    pub storage: crate::store::settings::StorageSettings,
}

/// The Functions front end cuts HTTP responses at 230 s; our deadline must fire first so the
/// client gets our 504 rather than the load balancer's.
const FRONT_END_TIMEOUT_MS: u64 = 230_000;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());

        let port = match get("FUNCTIONS_CUSTOMHANDLER_PORT") {
            Some(value) => parse_port("FUNCTIONS_CUSTOMHANDLER_PORT", &value)?,
            None => match get("PORT") {
                Some(value) => parse_port("PORT", &value)?,
                None => 7071,
            },
        };
        let bind = match get("ORDERS_BIND") {
            Some(value) => value.trim().parse().map_err(|_| {
                ConfigError::new("ORDERS_BIND", format!("'{value}' is not an IP address"))
            })?,
            None => IpAddr::from([127, 0, 0, 1]),
        };
        let in_azure = get("WEBSITE_INSTANCE_ID").is_some();
        let telemetry = crate::telemetry::TelemetryConfig::from_lookup(get)?;

        let request_timeout_ms = parse_number(&get, "ORDERS_REQUEST_TIMEOUT_MS", 25_000, 1)?;
        if request_timeout_ms >= FRONT_END_TIMEOUT_MS {
            return Err(ConfigError::new(
                "ORDERS_REQUEST_TIMEOUT_MS",
                format!(
                    "{request_timeout_ms} must be below {FRONT_END_TIMEOUT_MS} (the Functions front end's limit)"
                ),
            ));
        }
        let body_timeout_ms = parse_number(&get, "ORDERS_BODY_TIMEOUT_MS", 10_000, 1)?;
        let max_body_bytes = parse_number(&get, "ORDERS_MAX_BODY_BYTES", 65_536, 2)?;
        let shutdown_grace_ms = parse_number(&get, "ORDERS_SHUTDOWN_GRACE_MS", 10_000, 0)?;

        let log_format = match get("ORDERS_LOG_FORMAT").as_deref().map(str::trim) {
            None if in_azure => LogFormat::Json,
            None => LogFormat::Text,
            Some(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            Some(v) if v.eq_ignore_ascii_case("text") => LogFormat::Text,
            Some(other) => {
                return Err(ConfigError::new(
                    "ORDERS_LOG_FORMAT",
                    format!("'{other}' is not one of json, text"),
                ));
            }
        };
        let fault_injection = parse_bool(&get, "ORDERS_FAULT_INJECTION")?;
        if fault_injection && in_azure {
            return Err(ConfigError::new(
                "ORDERS_FAULT_INJECTION",
                "fault injection is refused when running in Azure (WEBSITE_INSTANCE_ID is set)",
            ));
        }

        let auth = parse_auth(&get, in_azure)?;
        let storage = crate::store::settings::StorageSettings::from_lookup(&get)?;
        let max_concurrency = parse_number(&get, "ORDERS_MAX_CONCURRENCY", 512, 1)?;
        let rate_limit_per_minute = parse_number(&get, "ORDERS_RATE_LIMIT_PER_MINUTE", 600, 1)?;
        let rate_limit_max_callers =
            parse_number(&get, "ORDERS_RATE_LIMIT_MAX_CALLERS", 100_000, 1)?;
        let header_timeout_ms = parse_number(&get, "ORDERS_HEADER_TIMEOUT_MS", 10_000, 1)?;

        Ok(Self {
            bind,
            port,
            in_azure,
            telemetry,
            request_timeout: Duration::from_millis(request_timeout_ms),
            body_timeout: Duration::from_millis(body_timeout_ms),
            max_body_bytes: usize::try_from(max_body_bytes).map_err(|_| {
                ConfigError::new(
                    "ORDERS_MAX_BODY_BYTES",
                    "is larger than this platform allows",
                )
            })?,
            shutdown_grace: Duration::from_millis(shutdown_grace_ms),
            log_format,
            fault_injection,
            max_concurrency: usize::try_from(max_concurrency).unwrap_or(usize::MAX),
            rate_limit_per_minute: u32::try_from(rate_limit_per_minute).map_err(|_| {
                ConfigError::new("ORDERS_RATE_LIMIT_PER_MINUTE", "is larger than 4294967295")
            })?,
            rate_limit_max_callers: usize::try_from(rate_limit_max_callers).unwrap_or(usize::MAX),
            header_timeout: Duration::from_millis(header_timeout_ms),
            auth,
            storage,
        })
    }

    /// Defaults only, as if no setting were present.
    pub fn defaults() -> Self {
        // The defaults are valid by construction, which a unit test checks.
        Self::from_lookup(|_| None).expect("default settings are valid") // infallible
    }
}

fn parse_port(setting: &'static str, value: &str) -> Result<u16, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| ConfigError::new(setting, format!("'{value}' is not a port number (0-65535)")))
}

fn parse_number(
    get: &impl Fn(&str) -> Option<String>,
    setting: &'static str,
    default: u64,
    min: u64,
) -> Result<u64, ConfigError> {
    let Some(value) = get(setting) else {
        return Ok(default);
    };
    let number: u64 = value
        .trim()
        .parse()
        .map_err(|_| ConfigError::new(setting, format!("'{value}' is not a whole number")))?;
    if number < min {
        return Err(ConfigError::new(
            setting,
            format!("{number} is below the minimum of {min}"),
        ));
    }
    Ok(number)
}

fn parse_bool(
    get: &impl Fn(&str) -> Option<String>,
    setting: &'static str,
) -> Result<bool, ConfigError> {
    match get(setting).as_deref().map(str::trim) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
        Some(other) => Err(ConfigError::new(
            setting,
            format!("'{other}' is not true or false"),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication

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

fn parse_auth(
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::defaults();
        assert_eq!(config.port, 7071);
        assert_eq!(config.bind.to_string(), "127.0.0.1");
        assert_eq!(config.max_body_bytes, 65_536);
        assert_eq!(config.request_timeout, Duration::from_secs(25));
        assert!(!config.fault_injection);
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn functions_port_wins_over_port() {
        let c = config(&[("FUNCTIONS_CUSTOMHANDLER_PORT", "4001"), ("PORT", "4002")]).unwrap();
        assert_eq!(c.port, 4001);
        assert_eq!(config(&[("PORT", "4002")]).unwrap().port, 4002);
    }

    #[test]
    fn bad_values_name_the_setting() {
        let err = config(&[("ORDERS_MAX_BODY_BYTES", "lots")]).unwrap_err();
        assert_eq!(err.setting, "ORDERS_MAX_BODY_BYTES");
        assert_eq!(
            err.to_string(),
            "invalid setting ORDERS_MAX_BODY_BYTES: 'lots' is not a whole number"
        );
        assert_eq!(config(&[("PORT", "70000")]).unwrap_err().setting, "PORT");
        assert_eq!(
            config(&[("ORDERS_REQUEST_TIMEOUT_MS", "230000")])
                .unwrap_err()
                .setting,
            "ORDERS_REQUEST_TIMEOUT_MS"
        );
        assert_eq!(
            config(&[("ORDERS_LOG_FORMAT", "xml")]).unwrap_err().setting,
            "ORDERS_LOG_FORMAT"
        );
    }

    #[test]
    fn fault_injection_is_refused_in_azure() {
        assert!(
            config(&[("ORDERS_FAULT_INJECTION", "true")])
                .unwrap()
                .fault_injection
        );
        let err = config(&[
            ("ORDERS_FAULT_INJECTION", "true"),
            ("WEBSITE_INSTANCE_ID", "abc"),
        ])
        .unwrap_err();
        assert_eq!(err.setting, "ORDERS_FAULT_INJECTION");
    }

    #[test]
    fn azure_defaults_to_json_logs() {
        let c = config(&[
            ("WEBSITE_INSTANCE_ID", "abc"),
            (
                "ORDERS_AUTH_ISSUER",
                "https://login.microsoftonline.com/t/v2.0",
            ),
            ("ORDERS_AUTH_AUDIENCE", "api://orders"),
        ])
        .unwrap();
        assert!(c.in_azure);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn auth_defaults_to_development_mode_with_rs256() {
        let c = Config::defaults();
        assert!(c.auth.is_development());
        assert_eq!(c.auth.algorithms, vec![Algorithm::RS256]);
        assert!(
            !format!("{c:?}").contains(BUILT_IN_DEV_SECRET),
            "secrets stay out of Debug"
        );
    }

    #[test]
    fn production_auth_settings() {
        let c = config(&[
            (
                "ORDERS_AUTH_ISSUER",
                "https://login.microsoftonline.com/t/v2.0",
            ),
            (
                "ORDERS_AUTH_AUDIENCE",
                "api://orders, 11111111-2222-3333-4444-555555555555",
            ),
            ("ORDERS_AUTH_ALGORITHMS", "RS256, ES256"),
        ])
        .unwrap();
        let AuthMode::Production {
            issuer,
            audiences,
            jwks_uri,
        } = &c.auth.mode
        else {
            panic!("production mode expected");
        };
        assert_eq!(issuer, "https://login.microsoftonline.com/t/v2.0");
        assert_eq!(audiences.len(), 2);
        assert!(jwks_uri.is_none());
        assert_eq!(c.auth.algorithms, vec![Algorithm::RS256, Algorithm::ES256]);
    }

    #[test]
    fn bad_auth_settings_name_the_setting() {
        let setting = |pairs: &[(&str, &str)]| config(pairs).unwrap_err().setting;
        assert_eq!(
            setting(&[("ORDERS_AUTH_ISSUER", "https://x")]),
            "ORDERS_AUTH_AUDIENCE"
        );
        assert_eq!(
            setting(&[("ORDERS_AUTH_AUDIENCE", "a")]),
            "ORDERS_AUTH_ISSUER"
        );
        assert_eq!(
            setting(&[
                ("ORDERS_AUTH_ISSUER", "login.example"),
                ("ORDERS_AUTH_AUDIENCE", "a")
            ]),
            "ORDERS_AUTH_ISSUER"
        );
        assert_eq!(
            setting(&[("ORDERS_AUTH_ALGORITHMS", "none")]),
            "ORDERS_AUTH_ALGORITHMS"
        );
        assert_eq!(
            setting(&[("ORDERS_AUTH_ALGORITHMS", "HS256")]),
            "ORDERS_AUTH_ALGORITHMS"
        );
        assert_eq!(
            setting(&[("ORDERS_AUTH_DEV_SECRET", "short")]),
            "ORDERS_AUTH_DEV_SECRET"
        );
        assert_eq!(
            setting(&[("ORDERS_AUTH_JWKS_URI", "https://x/keys")]),
            "ORDERS_AUTH_JWKS_URI"
        );
        assert_eq!(
            setting(&[
                ("WEBSITE_INSTANCE_ID", "abc"),
                ("ORDERS_AUTH_ISSUER", "http://idp.example"),
                ("ORDERS_AUTH_AUDIENCE", "a"),
            ]),
            "ORDERS_AUTH_ISSUER"
        );
    }

    #[test]
    fn development_auth_is_refused_in_azure() {
        let err = config(&[("WEBSITE_INSTANCE_ID", "abc")]).unwrap_err();
        assert_eq!(err.setting, "ORDERS_AUTH_ISSUER");
        assert!(err.to_string().contains("WEBSITE_INSTANCE_ID"));
        assert!(!err.to_string().contains('\n'));
    }
}
