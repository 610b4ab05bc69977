//! Log events that happen outside any exported span (start-up, shutdown, background work) become
//! Application Insights traces through the OpenTelemetry logs pipeline. Events inside a request
//! or dependency travel with that span instead, so each event is exported exactly once.

use std::fmt::{self, Write as _};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

pub(crate) struct EventsOutsideSpans {
    logger: SdkLogger,
}

impl EventsOutsideSpans {
    pub(crate) fn new(provider: &SdkLoggerProvider) -> Self {
        Self {
            logger: provider.logger("orders-api"),
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for EventsOutsideSpans
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // This layer sits behind the same filter as the span exporter, so `event_span` finds
        // exported spans only: with one, the span exporter already carries the event. In a
        // held request, the event waits with it (exported only if the request fails).
        if ctx.event_span(event).is_some() || super::request::hold_event(event) {
            return;
        }
        let meta = event.metadata();
        let (severity, severity_text) = match *meta.level() {
            Level::ERROR => (Severity::Error, "ERROR"),
            Level::WARN => (Severity::Warn, "WARN"),
            Level::INFO => (Severity::Info, "INFO"),
            Level::DEBUG => (Severity::Debug, "DEBUG"),
            Level::TRACE => (Severity::Trace, "TRACE"),
        };
        let mut record = self.logger.create_log_record();
        record.set_severity_number(severity);
        record.set_severity_text(severity_text);
        record.set_target(meta.target());
        record.set_timestamp(std::time::SystemTime::now());
        let mut fields = Fields::default();
        event.record(&mut fields);
        record.set_body(AnyValue::from(fields.message));
        record.add_attribute("target", meta.target());
        for (name, value) in fields.others {
            record.add_attribute(name, value);
        }
        self.logger.emit(record);
    }
}

/// The event's message and its other fields as text.
#[derive(Default)]
struct Fields {
    message: String,
    others: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.others.push((field.name(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            // infallible: writing to a String.
            let _ = write!(self.message, "{value:?}");
        } else {
            self.others.push((field.name(), format!("{value:?}")));
        }
    }
}
