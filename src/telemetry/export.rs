//! The Application Insights pipeline: settings, exporter, batch processors, flush on shutdown.

use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_application_insights::Exporter;
use opentelemetry_http::HttpClient;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};

use crate::config::telemetry::{ConnectionString, TelemetryConfig};

use super::EXPORT_LOG_TARGET;
use super::keep::KeepFailures;
use super::request::Active;
use super::sampling::{Decider, Limiter, RateLimitedSampler, RequestIds, one_in_of};

/// What the tracing layers need from a running pipeline.
pub(crate) struct Pipeline {
    pub(crate) tracer: SdkTracer,
    pub(crate) logger_provider: SdkLoggerProvider,
    tracer_provider: SdkTracerProvider,
    /// What requests need, once the pipeline is installed (`super::request::activate`).
    pub(crate) requests: Option<Active>,
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
        // delays follow the OTEL_BSP_* and OTEL_BLRP_* variables when set. In front of the
        // span queue, traces the sampler did not keep wait for their outcome (`keep`).
        let mut spans_exporter = WithSampleRate(exporter.clone());
        // Set here: the provider sets it through the span processor only while that has a
        // single owner, and held requests share it (`KeepFailures`).
        spans_exporter.set_resource(&resource);
        let keep = KeepFailures::new(BatchSpanProcessor::builder(spans_exporter).build());
        let tracer_provider = SdkTracerProvider::builder()
            .with_span_processor(keep.clone())
            .with_id_generator(RequestIds::default())
            .with_resource(resource.clone());
        let (tracer_provider, decider) = match config.sample_per_second {
            // Sampling off: every trace is kept, whatever a caller's traceparent says.
            0 => (
                tracer_provider.with_sampler(Sampler::AlwaysOn),
                Decider::Everything,
            ),
            per_second => {
                let limiter = std::sync::Arc::new(Limiter::new(per_second));
                (
                    tracer_provider.with_sampler(RateLimitedSampler::new(limiter.clone())),
                    Decider::Limited(limiter),
                )
            }
        };
        let tracer_provider = tracer_provider.build();
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
                requests: Some(Active {
                    decider,
                    held: std::sync::Arc::new(keep),
                }),
            }),
        }
    }

    pub(crate) fn pipeline(&self) -> Option<&Pipeline> {
        self.pipeline.as_ref()
    }

    /// Hands requests what they need to decide and record (once it is installed).
    pub(crate) fn activate_requests(&mut self) {
        if let Some(active) = self.pipeline.as_mut().and_then(|p| p.requests.take()) {
            super::request::activate(active);
        }
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

/// The Application Insights exporter, giving each span the `sampleRate` its trace was kept at.
///
/// The exporter (opentelemetry-application-insights 0.46) has one rate for everything it sends:
/// `Exporter::with_sample_rate` stores it as a percentage, and `create_envelopes_for_span`
/// (src/trace.rs) writes it as `sampleRate` on the envelope of every span and of every event in
/// it (exceptions, traces). Log records get none (src/logs.rs: `sample_rate: None`, which
/// Application Insights reads as 100). So a batch is exported in groups, one per rate, each
/// through a copy of the exporter set to that rate; a batch usually holds one or two rates.
#[derive(Debug)]
struct WithSampleRate<C>(Exporter<C>);

impl<C> SpanExporter for WithSampleRate<C>
where
    C: HttpClient + Clone + std::fmt::Debug + 'static,
{
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut groups: Vec<(u32, Vec<SpanData>)> = Vec::new();
        for span in batch {
            let one_in = one_in_of(span.span_context.trace_state());
            match groups.iter_mut().find(|(n, _)| *n == one_in) {
                Some((_, spans)) => spans.push(span),
                None => groups.push((one_in, vec![span])),
            }
        }
        let mut outcome = Ok(());
        for (one_in, spans) in groups {
            // `with_sample_rate` takes a fraction (and sends it times 100).
            let exporter = self.0.clone().with_sample_rate(1.0 / f64::from(one_in));
            if let Err(error) = exporter.export(spans).await {
                outcome = Err(error);
            }
        }
        outcome
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
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
