//! Where telemetry goes, how much of it, and how this process is named there:
//! `APPLICATIONINSIGHTS_CONNECTION_STRING`, `ORDERS_TELEMETRY_SAMPLE_PER_SECOND`,
//! `WEBSITE_SITE_NAME` and `WEBSITE_INSTANCE_ID`.

use std::fmt;

use super::ConfigError;

/// Cloud role name when `WEBSITE_SITE_NAME` is not set.
pub const DEFAULT_ROLE_NAME: &str = "orders-api";

/// Traces sampled per second per instance when `ORDERS_TELEMETRY_SAMPLE_PER_SECOND` is not set:
/// the Application Insights SDKs' own default rate (five items a second). Failures come on top.
pub const DEFAULT_SAMPLE_PER_SECOND: u32 = 5;

/// Where telemetry goes and how this process is named there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `APPLICATIONINSIGHTS_CONNECTION_STRING`; unset keeps telemetry local (logs only).
    pub connection: Option<ConnectionString>,
    /// Cloud role name: `WEBSITE_SITE_NAME`, else `orders-api`.
    pub role_name: String,
    /// Cloud role instance: `WEBSITE_INSTANCE_ID`, else the host name.
    pub role_instance: String,
    /// `ORDERS_TELEMETRY_SAMPLE_PER_SECOND`: successful traces exported per second, about; 0
    /// turns sampling off (every request is exported). Failures are exported whatever it says.
    pub sample_per_second: u32,
}

impl TelemetryConfig {
    /// Reads the telemetry settings through `get` (which treats empty values as unset).
    pub(super) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let connection = get("APPLICATIONINSIGHTS_CONNECTION_STRING")
            .map(|value| ConnectionString::parse(&value))
            .transpose()
            .map_err(|problem| ConfigError {
                setting: "APPLICATIONINSIGHTS_CONNECTION_STRING",
                problem,
            })?;
        let sample_per_second = match get("ORDERS_TELEMETRY_SAMPLE_PER_SECOND") {
            None => DEFAULT_SAMPLE_PER_SECOND,
            Some(value) => value.trim().parse().map_err(|_| ConfigError {
                setting: "ORDERS_TELEMETRY_SAMPLE_PER_SECOND",
                problem: format!("'{value}' is not a whole number from 0 to 4294967295"),
            })?,
        };
        Ok(Self {
            connection,
            sample_per_second,
            role_name: get("WEBSITE_SITE_NAME")
                .map(|name| name.trim().to_owned())
                .unwrap_or_else(|| DEFAULT_ROLE_NAME.to_owned()),
            role_instance: get("WEBSITE_INSTANCE_ID")
                .map(|id| id.trim().to_owned())
                .unwrap_or_else(host_name),
        })
    }
}

/// An Application Insights connection string. Its `Debug` shows the endpoint only: the
/// instrumentation key stays out of logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// The connection string with empty segments and stray spaces removed.
    normalized: String,
    /// `IngestionEndpoint`, exactly as configured (an `http://` endpoint stays plain HTTP).
    ingestion_endpoint: Option<String>,
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("ingestion_endpoint", &self.ingestion_endpoint)
            .finish_non_exhaustive()
    }
}

impl ConnectionString {
    /// `Key=Value;...` with an `InstrumentationKey`. Problems are described without echoing the
    /// value, which holds the key.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut instrumentation_key = false;
        let mut ingestion_endpoint = None;
        for segment in value.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((key, val)) = segment.split_once('=') else {
                return Err("every part must look like Key=Value".to_owned());
            };
            let (key, val) = (key.trim(), val.trim());
            if val.contains('=') {
                return Err(format!("the value of {key} must not contain '='"));
            }
            if key.eq_ignore_ascii_case("Authorization") && !val.eq_ignore_ascii_case("ikey") {
                return Err(
                    "only instrumentation-key authorization (Authorization=ikey) is supported"
                        .to_owned(),
                );
            }
            if key.eq_ignore_ascii_case("InstrumentationKey") && !val.is_empty() {
                instrumentation_key = true;
            }
            if key.eq_ignore_ascii_case("IngestionEndpoint") {
                let scheme_ok = val.starts_with("https://") || val.starts_with("http://");
                if !scheme_ok || val.parse::<axum::http::Uri>().is_err() {
                    return Err("IngestionEndpoint must be an http:// or https:// URL".to_owned());
                }
                ingestion_endpoint = Some(val.trim_end_matches('/').to_owned());
            }
            segments.push(format!("{key}={val}"));
        }
        if !instrumentation_key {
            return Err("it has no InstrumentationKey".to_owned());
        }
        Ok(Self {
            normalized: segments.join(";"),
            ingestion_endpoint,
        })
    }

    /// The connection string as the exporter takes it (empty segments and spaces removed).
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// The configured ingestion endpoint, if the connection string names one.
    pub fn ingestion_endpoint(&self) -> Option<&str> {
        self.ingestion_endpoint.as_deref()
    }
}

/// The machine's host name, for the cloud role instance outside Azure.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<TelemetryConfig, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        TelemetryConfig::from_lookup(|name| map.get(name).map(|v| v.to_string()))
    }

    #[test]
    fn unset_means_logs_only_with_default_names() {
        let c = config(&[]).unwrap();
        assert!(c.connection.is_none());
        assert_eq!(c.role_name, "orders-api");
        assert!(!c.role_instance.is_empty());
        assert_eq!(c.sample_per_second, DEFAULT_SAMPLE_PER_SECOND);
    }

    #[test]
    fn the_sampling_rate_is_a_whole_number_and_zero_means_everything() {
        let rate = |value| config(&[("ORDERS_TELEMETRY_SAMPLE_PER_SECOND", value)]);
        assert_eq!(rate(" 20 ").unwrap().sample_per_second, 20);
        assert_eq!(rate("0").unwrap().sample_per_second, 0);
        for bad in ["-1", "2.5", "lots"] {
            let err = rate(bad).unwrap_err();
            assert_eq!(err.setting, "ORDERS_TELEMETRY_SAMPLE_PER_SECOND", "{bad}");
        }
    }

    #[test]
    fn role_comes_from_the_site_and_instance() {
        let c = config(&[
            ("WEBSITE_SITE_NAME", "orders-prod"),
            ("WEBSITE_INSTANCE_ID", "abc123"),
        ])
        .unwrap();
        assert_eq!(c.role_name, "orders-prod");
        assert_eq!(c.role_instance, "abc123");
    }

    #[test]
    fn http_endpoints_are_kept() {
        let c = config(&[(
            "APPLICATIONINSIGHTS_CONNECTION_STRING",
            " InstrumentationKey=k-1; IngestionEndpoint=http://127.0.0.1:9/ ;",
        )])
        .unwrap();
        let connection = c.connection.unwrap();
        assert_eq!(connection.ingestion_endpoint(), Some("http://127.0.0.1:9"));
        assert_eq!(
            connection.normalized,
            "InstrumentationKey=k-1;IngestionEndpoint=http://127.0.0.1:9/"
        );
        assert!(!format!("{connection:?}").contains("k-1"));
    }

    #[test]
    fn bad_connection_strings_are_named_without_their_key() {
        for bad in [
            "IngestionEndpoint=https://example.com",
            "InstrumentationKey=secret-key;garbage",
            "InstrumentationKey=secret-key;IngestionEndpoint=ftp://example.com",
        ] {
            let err = config(&[("APPLICATIONINSIGHTS_CONNECTION_STRING", bad)]).unwrap_err();
            assert_eq!(err.setting, "APPLICATIONINSIGHTS_CONNECTION_STRING");
            assert!(!err.to_string().contains("secret-key"), "{err}");
        }
    }
}
