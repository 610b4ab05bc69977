//! Logs and telemetry.
//!
//! Code uses `tracing` only. Locally that is human-readable logs on stderr; in Azure (or with
//! `ORDERS_LOG_FORMAT=json`) one JSON object per line ([`lines`]: either way, what a client
//! sent cannot forge a line). With `APPLICATIONINSIGHTS_CONNECTION_STRING`
//! set, the same spans and events also go to Application Insights:
//!
//! - a span that declares `otel.kind = "server"` (`crate::http::trace::trace_requests`) is a Request;
//! - a span that declares `otel.kind = "client"` ([`dependency_span`]) is a Dependency;
//! - [`record_exception`] inside a request is an Exception;
//! - log events at info and above are Traces, correlated with the request they happen in.
//!
//! Exporting happens on background threads in batches: a request never waits for telemetry and
//! never fails because of it. Spans that do not declare `otel.kind` are local logging context
//! only; their events belong to the nearest exported span around them.
//!
//! What is exported is sampled, whole traces at a time, and every failure is kept:
//! `sampling` decides a trace where it starts, a request not sampled is recorded cheaply
//! (`request`) and exported only if it fails, and `keep` settles each trace when it ends.

mod bridge;
pub mod export;
mod keep;
mod limiter;
pub mod lines;
mod request;
mod sampling;

use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt;
use tracing::{Level, Metadata};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogFormat};

pub use export::Telemetry;
pub use request::{
    Held, RequestSpan, decide, in_request_span, record_caller, record_exception, start_exported,
};
pub use sampling::Decision;

/// Target of the exporter's own log lines. They go to stderr only: sending "telemetry cannot
/// be delivered" through the telemetry pipeline would feed on itself.
pub(crate) const EXPORT_LOG_TARGET: &str = "orders_api::telemetry::export";

/// Installs the global subscriber: logs at the `RUST_LOG` level (default `info`), plus the
/// Application Insights pipeline when a connection string is configured. Call it once, before
/// the async runtime starts. When a subscriber is already installed (tests), that one is kept
/// and nothing is exported.
pub fn init(config: &Config) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Both formats escape what a client could use to forge or break a line ([`lines`]).
    let logs = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(lines::JsonLines)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .fmt_fields(lines::EscapedFields)
            .with_writer(std::io::stderr)
            .boxed(),
    }
    // The log level applies to the logs only: what is exported does not depend on RUST_LOG.
    .with_filter(filter);

    let telemetry = export::Telemetry::start(&config.telemetry);
    let (spans, events) = match telemetry.pipeline() {
        Some(pipeline) => (
            Some(
                tracing_opentelemetry::layer()
                    .with_tracer(pipeline.tracer.clone())
                    // Keep envelopes lean: no thread ids, timings or source locations on
                    // every span and event.
                    .with_threads(false)
                    .with_location(false)
                    .with_target(false)
                    .with_tracked_inactivity(false)
                    // Parents come from the tracing span tree; no OpenTelemetry context is
                    // swapped in and out on every poll of a request.
                    .with_context_activation(false)
                    // Exceptions are recorded explicitly for 500s ([`record_exception`]), not
                    // guessed from fields named `error`.
                    .with_error_events_to_exceptions(false)
                    .with_error_records_to_exceptions(false)
                    .with_error_fields_to_exceptions(false)
                    .with_filter(filter_fn(is_exported)),
            ),
            // With the same filter as the span exporter: it sees the exported spans (to leave
            // their events to it), and no other span is made for its sake.
            Some(
                bridge::EventsOutsideSpans::new(&pipeline.logger_provider)
                    .with_filter(filter_fn(is_exported)),
            ),
        ),
        None => (None, None),
    };
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .with(events)
        .try_init();
    match installed {
        Ok(()) => {
            let mut telemetry = telemetry;
            telemetry.activate_requests();
            if telemetry.pipeline().is_some() {
                tracing::info!(
                    target: EXPORT_LOG_TARGET,
                    role = %config.telemetry.role_name,
                    "exporting telemetry to Application Insights"
                );
            }
            telemetry
        }
        // A subscriber is already installed (tests): keep it, and export nothing, since the
        // pipeline could not see any span.
        Err(_) => Telemetry::disabled(),
    }
}

/// What goes to Application Insights: spans that declare their kind (requests, dependencies)
/// and log events at info and above, except the exporter's own.
pub(crate) fn is_exported(meta: &Metadata<'_>) -> bool {
    if meta.is_span() {
        meta.fields().field("otel.kind").is_some()
    } else {
        *meta.level() <= Level::INFO
            && meta.target() != EXPORT_LOG_TARGET
            && !meta.target().starts_with("opentelemetry")
    }
}

/// A span for one outgoing call (storage, identity provider), exported as Dependency telemetry.
/// `kind` is the dependency type shown in Application Insights (`HTTP`, `Azure table`,
/// `Azure queue`, `Azure blob`); `target` the host (and port) called; `name` the operation, such
/// as `GET /keys` (never a full URL with a query: it may carry a SAS signature). Field names
/// follow OpenTelemetry's semantic conventions; the exporter takes the type from
/// `rpc.system.name`. Call [`record_dependency_result`] when the call ends; the span's duration
/// is the call's.
pub fn dependency_span(kind: &'static str, target: &str, name: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "dependency",
        otel.kind = "client",
        otel.name = name,
        otel.status_code = tracing::field::Empty,
        rpc.system.name = kind,
        server.address = target,
        http.response.status_code = tracing::field::Empty,
    );
    // In a held request (no span of its own in the pipeline), the request is still its parent.
    if let Some(parent) = request::held_request_parent() {
        // Err only when nothing exports spans.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
    }
    span
}

/// Records the outcome of a dependency call on its span: the HTTP status when there was a
/// response, and whether the call did what was asked.
pub fn record_dependency_result(span: &tracing::Span, status: Option<u16>, success: bool) {
    if let Some(status) = status {
        span.record("http.response.status_code", status);
    }
    span.record("otel.status_code", if success { "OK" } else { "ERROR" });
}

/// The attributes of an exception event for the hidden detail of a 500.
pub(crate) fn exception_attributes(detail: &str) -> Vec<KeyValue> {
    if let Some((location, message)) = detail
        .strip_prefix("panic at ")
        .and_then(|rest| rest.split_once(": "))
    {
        vec![
            KeyValue::new("exception.type", "Panic"),
            KeyValue::new("exception.message", format!("{message} (at {location})")),
            KeyValue::new("exception.stacktrace", format!("panic at {location}")),
        ]
    } else {
        vec![
            KeyValue::new("exception.type", "InternalServerError"),
            KeyValue::new("exception.message", detail.to_owned()),
            // One cause per line, outermost first.
            KeyValue::new(
                "exception.stacktrace",
                detail.split(": ").collect::<Vec<_>>().join("\n"),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(attributes: &[KeyValue], key: &str) -> String {
        attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn panics_keep_message_and_location() {
        let attributes =
            exception_attributes("panic at src/routes/faults.rs:33:20: deliberate: really");
        assert_eq!(get(&attributes, "exception.type"), "Panic");
        assert_eq!(
            get(&attributes, "exception.message"),
            "deliberate: really (at src/routes/faults.rs:33:20)"
        );
        assert_eq!(
            get(&attributes, "exception.stacktrace"),
            "panic at src/routes/faults.rs:33:20"
        );
    }

    #[test]
    fn internal_errors_keep_their_chain() {
        let attributes = exception_attributes("while saving: connection reset");
        assert_eq!(get(&attributes, "exception.type"), "InternalServerError");
        assert_eq!(
            get(&attributes, "exception.message"),
            "while saving: connection reset"
        );
        assert_eq!(
            get(&attributes, "exception.stacktrace"),
            "while saving\nconnection reset"
        );
    }
}
