//! The Application Insights pipeline: settings, exporter, batch processors, flush on shutdown.

use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_application_insights::Exporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::config::telemetry::{ConnectionString, TelemetryConfig};

use super::EXPORT_LOG_TARGET;

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

    let exporter = Exporter::new_from_connection_string(connection.normalized(), client)
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
