//! Logs: human-readable text locally, one JSON object per line in Azure or when asked.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;

use crate::config::LogFormat;

/// Installs the global subscriber. The level comes from `RUST_LOG` (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A subscriber may already be installed (tests); keep it.
    drop(result);
}

/// A span for one outgoing call (storage, identity provider), exported as Dependency telemetry.
/// Field names follow OpenTelemetry's semantic conventions. Call [`record_dependency_result`]
/// when the call ends.
pub fn dependency_span(kind: &'static str, target: &str, name: &str) -> tracing::Span {
    tracing::info_span!(
        "dependency",
        otel.kind = "client",
        otel.name = name,
        otel.status_code = tracing::field::Empty,
        dependency.type = kind,
        server.address = target,
        http.response.status_code = tracing::field::Empty,
    )
}

/// Records the outcome of a dependency call on its span.
pub fn record_dependency_result(span: &tracing::Span, status: Option<u16>, success: bool) {
    if let Some(status) = status {
        span.record("http.response.status_code", status);
    }
    span.record("otel.status_code", if success { "OK" } else { "ERROR" });
}

/// Records the authenticated caller (owner id, never the token) on the current request span.
pub fn record_caller(owner: &str) {
    tracing::Span::current().record("enduser.id", owner);
}
