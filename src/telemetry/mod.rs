//! Logs and telemetry.
//!
//! Code uses `tracing` only. Locally that is human-readable logs on stderr; in Azure (or with
//! `ORDERS_LOG_FORMAT=json`) one JSON object per line. With `APPLICATIONINSIGHTS_CONNECTION_STRING`
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

mod bridge;
pub mod export;
mod keep;
mod sampling;

use std::sync::Arc;

use opentelemetry::KeyValue;
use tracing::{Level, Metadata};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogFormat};

pub use export::Telemetry;

/// Target of the exporter's own log lines. They go to stderr only: sending "telemetry cannot
/// be delivered" through the telemetry pipeline would feed on itself.
pub(crate) const EXPORT_LOG_TARGET: &str = "orders_api::telemetry::export";

/// Installs the global subscriber: logs at the `RUST_LOG` level (default `info`), plus the
/// Application Insights pipeline when a connection string is configured. Call it once, before
/// the async runtime starts. When a subscriber is already installed (tests), that one is kept
/// and nothing is exported.
pub fn init(config: &Config) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
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
            // Without a filter of its own: a per-layer filter is consulted for every span a
            // request enters and leaves, and this layer only looks at events.
            Some(bridge::EventsOutsideSpans::new(&pipeline.logger_provider)),
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
    tracing::info_span!(
        "dependency",
        otel.kind = "client",
        otel.name = name,
        otel.status_code = tracing::field::Empty,
        rpc.system.name = kind,
        server.address = target,
        http.response.status_code = tracing::field::Empty,
    )
}

/// Records the outcome of a dependency call on its span: the HTTP status when there was a
/// response, and whether the call did what was asked.
pub fn record_dependency_result(span: &tracing::Span, status: Option<u16>, success: bool) {
    if let Some(status) = status {
        span.record("http.response.status_code", status);
    }
    span.record("otel.status_code", if success { "OK" } else { "ERROR" });
}

tokio::task_local! {
    /// The request span, for code deep in the request that records on it (the caller's
    /// identity, exceptions) while another span may be current.
    static REQUEST_SPAN: RequestSpan;
}

/// A request's span while the request runs: [`record_caller`] and [`record_exception`] record
/// on it from anywhere within the request.
pub struct RequestSpan {
    pub span: tracing::Span,
    /// The caller's owner id, while it waits to be recorded (see [`Self::deferring_caller`]).
    caller: std::cell::RefCell<Option<Arc<str>>>,
    defer_caller: bool,
}

impl RequestSpan {
    /// Records the caller as soon as it is known.
    pub fn new(span: tracing::Span) -> Self {
        Self {
            span,
            caller: Default::default(),
            defer_caller: false,
        }
    }

    /// Keeps the caller until [`Self::record_deferred_caller`]: for a request recorded only in
    /// case it fails, most of which are never exported.
    pub fn deferring_caller(span: tracing::Span) -> Self {
        Self {
            defer_caller: true,
            ..Self::new(span)
        }
    }

    /// Records the caller kept back, if any.
    pub fn record_deferred_caller(&self) {
        if let Some(owner) = self.caller.borrow_mut().take() {
            self.span.record("enduser.id", &*owner);
        }
    }
}

/// Runs `request` inside its span, which becomes the request span that [`record_caller`] and
/// [`record_exception`] record on from anywhere within it; gives it back with the output.
pub async fn in_request_span<F: std::future::Future>(
    span: RequestSpan,
    request: F,
) -> (F::Output, RequestSpan) {
    if span.span.is_disabled() {
        // Nothing records it (no telemetry, and its level is not logged).
        return (request.await, span);
    }
    let mut request = std::pin::pin!(request);
    // Entered on every poll, from the task-local itself: no clone of the span to make and drop
    // (each costs a trip through every layer).
    let entered = std::future::poll_fn(|cx| {
        REQUEST_SPAN.with(|current| {
            let _entered = current.span.enter();
            request.as_mut().poll(cx)
        })
    });
    let mut scoped = std::pin::pin!(REQUEST_SPAN.scope(span, entered));
    let output = scoped.as_mut().await;
    // The task-local's value comes back once the future has completed.
    let span = scoped
        .as_mut()
        .take_value()
        .unwrap_or_else(|| RequestSpan::new(tracing::Span::none()));
    (output, span)
}

/// Runs `f` on the current request's span, or on the current span outside a request.
fn with_request_span(f: impl FnOnce(&tracing::Span)) {
    let mut f = Some(f);
    // By reference: cloning a span and dropping the clone costs a trip through every layer.
    let _ = REQUEST_SPAN.try_with(|current| {
        if let Some(f) = f.take() {
            f(&current.span);
        }
    });
    if let Some(f) = f {
        f(&tracing::Span::current());
    }
}

/// Records the authenticated caller (owner id, never the token) on the request span: it becomes
/// the request's authenticated user id in Application Insights.
pub fn record_caller(owner: &Arc<str>) {
    let deferred = REQUEST_SPAN.try_with(|current| {
        if current.defer_caller {
            *current.caller.borrow_mut() = Some(Arc::clone(owner));
        }
        current.defer_caller
    });
    if deferred != Ok(true) {
        with_request_span(|span| {
            span.record("enduser.id", &**owner);
        });
    }
}

/// Records the hidden detail of a 500 (`ApiError::internal_detail`) as Exception telemetry on the
/// request span. A panic's detail reads `panic at <file>:<line>:<col>: <message>`; anything else
/// is an internal error chain (`context: cause: root cause`).
pub fn record_exception(detail: &str) {
    let attributes = exception_attributes(detail);
    with_request_span(|span| span.add_event("exception", attributes));
}

fn exception_attributes(detail: &str) -> Vec<KeyValue> {
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
