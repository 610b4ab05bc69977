//! Every setting, read and validated once at start-up.
//!
//! Settings come from the environment (Function App settings in Azure). [`Config::from_lookup`]
//! takes any lookup function so tests build configurations without touching the process
//! environment. A bad value is a [`ConfigError`] naming the setting and the problem; `main`
//! prints it as one line and exits non-zero.

pub mod auth;
pub mod proxies;
pub mod storage;
pub mod telemetry;

use std::net::IpAddr;
use std::time::Duration;

use thiserror::Error;

pub use auth::{AuthMode, AuthSettings, KeyRefresh, Secret};
pub use proxies::TrustedProxies;
pub use storage::StorageSettings;
pub use telemetry::TelemetryConfig;

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
    /// The Functions host runs this process (it sets `FUNCTIONS_CUSTOMHANDLER_PORT`): queue
    /// triggers reach the handler as invocation payloads, and no queue poller runs beside them.
    pub under_functions_host: bool,
    /// Application Insights export and this process's cloud role name and instance.
    pub telemetry: TelemetryConfig,
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
    /// Proxies whose `X-Forwarded-For` names the client (else the socket address does).
    pub trusted_proxies: TrustedProxies,
    /// Open order-change WebSockets at most, in total and per caller.
    pub events_max_connections: usize,
    pub events_max_connections_per_caller: usize,
    /// Time allowed for a request's headers, and for an idle keep-alive connection.
    pub header_timeout: Duration,
    /// How bearer tokens are checked (`ORDERS_AUTH_*`).
    pub auth: AuthSettings,
    /// Where orders and exports live (`AzureWebJobsStorage`; unset = in memory).
    pub storage: StorageSettings,
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
        let under_functions_host = get("FUNCTIONS_CUSTOMHANDLER_PORT").is_some();
        let telemetry = TelemetryConfig::from_lookup(get)?;

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

        let auth = auth::parse(&get, in_azure)?;
        let storage = StorageSettings::from_lookup(&get)?;
        let max_concurrency = parse_number(&get, "ORDERS_MAX_CONCURRENCY", 512, 1)?;
        let rate_limit_per_minute = parse_number(&get, "ORDERS_RATE_LIMIT_PER_MINUTE", 600, 1)?;
        let rate_limit_max_callers =
            parse_number(&get, "ORDERS_RATE_LIMIT_MAX_CALLERS", 100_000, 1)?;
        let header_timeout_ms = parse_number(&get, "ORDERS_HEADER_TIMEOUT_MS", 10_000, 1)?;
        let trusted_proxies = TrustedProxies::from_lookup(&get, under_functions_host)?;
        let events_max_connections = parse_number(&get, "ORDERS_EVENTS_MAX_CONNECTIONS", 1_000, 1)?;
        let events_max_connections_per_caller =
            parse_number(&get, "ORDERS_EVENTS_MAX_CONNECTIONS_PER_CALLER", 5, 1)?;

        Ok(Self {
            bind,
            port,
            in_azure,
            under_functions_host,
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
            trusted_proxies,
            events_max_connections: usize::try_from(events_max_connections).unwrap_or(usize::MAX),
            events_max_connections_per_caller: usize::try_from(events_max_connections_per_caller)
                .unwrap_or(usize::MAX),
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

pub(super) fn parse_number(
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

#[cfg(test)]
mod tests {
    use super::auth::BUILT_IN_DEV_SECRET;
    use super::*;
    use jsonwebtoken::Algorithm;
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
        assert!(config.trusted_proxies.is_empty());
        assert_eq!(config.events_max_connections, 1_000);
        assert_eq!(config.events_max_connections_per_caller, 5);
    }

    #[test]
    fn functions_port_wins_over_port() {
        let c = config(&[("FUNCTIONS_CUSTOMHANDLER_PORT", "4001"), ("PORT", "4002")]).unwrap();
        assert_eq!(c.port, 4001);
        assert!(c.under_functions_host);
        assert!(!Config::defaults().under_functions_host);
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
