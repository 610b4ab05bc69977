//! The Application Insights pipeline: settings, exporter, batch processors, flush on shutdown.

use std::fmt;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_application_insights::Exporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::config::ConfigError;

use super::EXPORT_LOG_TARGET;

/// Cloud role name when `WEBSITE_SITE_NAME` is not set.
pub const DEFAULT_ROLE_NAME: &str = "orders-api";

/// Where telemetry goes and how this process is named there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `APPLICATIONINSIGHTS_CONNECTION_STRING`; unset keeps telemetry local (logs only).
    pub connection: Option<ConnectionString>,
    /// Cloud role name: `WEBSITE_SITE_NAME`, else `orders-api`.
    pub role_name: String,
    /// Cloud role instance: `WEBSITE_INSTANCE_ID`, else the host name.
    pub role_instance: String,
}

impl TelemetryConfig {
    /// Reads the telemetry settings through `get` (which treats empty values as unset).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let connection = get("APPLICATIONINSIGHTS_CONNECTION_STRING")
            .map(|value| ConnectionString::parse(&value))
            .transpose()
            .map_err(|problem| ConfigError {
                setting: "APPLICATIONINSIGHTS_CONNECTION_STRING",
                problem,
            })?;
        Ok(Self {
            connection,
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

    /// The configured ingestion endpoint, if the connection string names one.
    pub fn ingestion_endpoint(&self) -> Option<&str> {
        self.ingestion_endpoint.as_deref()
    }
}

/// What the tracing layers need from a running pipeline.
pub(crate) struct Pipeline {
    pub(crate) tracer: SdkTracer,
    pub(crate) logger_provider: SdkLoggerProvider,
    tracer_provider: SdkTracerProvider,
}

/// The running telemetry pipeline, if any. Keep it until the server has stopped, then
/// [`Telemetry::flush`] it.
pub struct Telemetry {
    pipeline: Option<Pipeline>,
}

impl Telemetry {
    /// No exporting: logs only.
    pub fn disabled() -> Self {
        Self { pipeline: None }
    }

    /// Builds the exporter and its batch processors when a connection string is configured.
    /// Nothing here touches the network: the first export happens in the background.
    pub(crate) fn start(config: &TelemetryConfig) -> Self {
        let Some(connection) = &config.connection else {
            return Self::disabled();
        };
        let exporter = match exporter(connection) {
            Ok(exporter) => exporter,
            Err(problem) => {
                // The settings were validated at start-up, so this is unexpected; the service
                // still runs, with logs only.
                eprintln!("handler: telemetry disabled: {problem}");
                return Self::disabled();
            }
        };
        let resource = Resource::builder_empty()
            .with_attributes([
                KeyValue::new("service.name", config.role_name.clone()),
                KeyValue::new("service.instance.id", config.role_instance.clone()),
                KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            ])
            .build();
        // The batch processors run on their own threads: a request only hands a finished span
        // to a bounded queue, and a full queue drops telemetry, never requests. Batch sizes and
        // delays follow the OTEL_BSP_* and OTEL_BLRP_* variables when set.
        let tracer_provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter.clone())
            // Every request is recorded, even when the caller's traceparent says "not
            // sampled": the Functions host and APIM sample on their own.
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(resource.clone())
            .build();
        let logger_provider = SdkLoggerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = tracer_provider.tracer("orders-api");
        Self {
            pipeline: Some(Pipeline {
                tracer,
                logger_provider,
                tracer_provider,
            }),
        }
    }

    pub(crate) fn pipeline(&self) -> Option<&Pipeline> {
        self.pipeline.as_ref()
    }

    /// Whether telemetry is being exported.
    pub fn is_exporting(&self) -> bool {
        self.pipeline.is_some()
    }

    /// Delivers what is still queued, waiting at most `budget`. What cannot be delivered in
    /// time (an unreachable endpoint) is dropped: shutting down must not wait on telemetry.
    pub async fn flush(self, budget: Duration) {
        let Some(pipeline) = self.pipeline else {
            return;
        };
        let started = Instant::now();
        // The providers block while their threads deliver the last batches.
        let spans = tokio::task::spawn_blocking({
            let provider = pipeline.tracer_provider.clone();
            move || provider.shutdown_with_timeout(budget)
        });
        let logs = tokio::task::spawn_blocking({
            let provider = pipeline.logger_provider.clone();
            move || provider.shutdown_with_timeout(budget)
        });
        let (spans, logs) = tokio::join!(spans, logs);
        let delivered = matches!(spans, Ok(Ok(()))) && matches!(logs, Ok(Ok(())));
        if delivered {
            tracing::info!(
                target: EXPORT_LOG_TARGET,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "telemetry flushed"
            );
        } else {
            tracing::warn!(
                target: EXPORT_LOG_TARGET,
                budget_ms = budget.as_millis() as u64,
                "telemetry not fully flushed before shutdown; the rest is dropped"
            );
        }
    }
}

/// The exporter, posting through a blocking HTTP client on the batch processors' threads.
fn exporter(connection: &ConnectionString) -> Result<Exporter<reqwest::blocking::Client>, String> {
    // The blocking client runs its own small runtime; it must not be created (or dropped) on
    // a Tokio worker, so it is built on a thread of its own whatever the caller is.
    let client = std::thread::spawn(|| {
        reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
    })
    .join()
    .map_err(|_| "the HTTP client could not be built".to_owned())?
    .map_err(|e| format!("the HTTP client could not be built: {e}"))?;

    let exporter = Exporter::new_from_connection_string(&connection.normalized, client)
        .map_err(|e| format!("invalid connection string: {e}"))?;
    let exporter = match connection.ingestion_endpoint() {
        // The exporter turns http:// endpoints into https://; a plain-HTTP endpoint (a local
        // collector, tests) is set again as configured. `with_endpoint` is deprecated in
        // favour of connection strings, but it is the one way to keep the scheme.
        Some(endpoint) if endpoint.starts_with("http://") => {
            #[allow(deprecated)]
            let exporter = exporter.with_endpoint(endpoint);
            exporter.map_err(|e| format!("invalid IngestionEndpoint: {e}"))?
        }
        _ => exporter,
    };
    Ok(exporter.with_retry_notify(retry_notice()))
}

/// An unreachable or failing endpoint is worth a log line, not one per retry: the first failure
/// is logged, then at most one line a minute while failures go on.
fn retry_notice()
-> impl FnMut(&opentelemetry_application_insights::Error, Duration) + Send + 'static {
    const QUIET: Duration = Duration::from_secs(60);
    let mut last: Option<Instant> = None;
    move |error, retry_in| {
        if last.is_none_or(|at| at.elapsed() >= QUIET) {
            last = Some(Instant::now());
            tracing::warn!(
                target: EXPORT_LOG_TARGET,
                %error,
                retry_in_ms = retry_in.as_millis() as u64,
                "telemetry could not be delivered; retrying in the background"
            );
        }
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
