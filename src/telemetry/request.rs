//! A request's telemetry while it runs.
//!
//! A request is decided before it starts ([`decide`]): exported, it gets a span in the tracing
//! pipeline like any other (started by [`start_exported`]); held (not sampled), it is recorded
//! here, cheaply, in a [`Held`]: a few attributes, the caller, its exceptions and log events,
//! and its dependencies wait under its span id. When it ends, a held request that failed (or
//! whose dependency failed) is exported after all, whole, from what was recorded; otherwise it
//! leaves nothing behind. Either way the request span lives in a task-local while the request
//! runs ([`in_request_span`]), so code deep inside it records on it ([`record_caller`],
//! [`record_exception`]).

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use opentelemetry::trace::{Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::keep::HeldRequests;
use super::sampling::{Decider, Decision, held_parent, start_root};

/// The installed pipeline, as requests see it; unset when nothing is exported.
#[derive(Debug)]
pub(crate) struct Active {
    pub(crate) decider: Decider,
    pub(crate) held: Arc<dyn HeldRequests>,
}

static ACTIVE: OnceLock<Active> = OnceLock::new();

/// Makes requests decide and record for `active` (once, when the pipeline is installed).
pub(crate) fn activate(active: Active) {
    let _ = ACTIVE.set(active);
}

/// The fate of a request with this trace id and, if a caller sent a `traceparent`, the caller's
/// span: `None` when nothing is exported.
pub fn decide(trace_id: u128, caller: Option<&SpanContext>) -> Option<Decision> {
    let active = ACTIVE.get()?;
    Some(
        active
            .decider
            .decide(TraceId::from(trace_id), caller.map(SpanContext::is_sampled)),
    )
}

/// Starts an exported request's span: `start` makes it start (by asking for its OpenTelemetry
/// context), and a root gets the trace id it was decided on, kept at one in `one_in`.
pub fn start_exported<T>(trace_id: u128, one_in: u32, start: impl FnOnce() -> T) -> T {
    start_root(TraceId::from(trace_id), one_in, start)
}

/// A request recorded cheaply because it is exported only if it fails.
#[derive(Debug)]
pub struct Held {
    trace_id: TraceId,
    span_id: SpanId,
    /// The caller's span, from its `traceparent`.
    parent: Option<SpanId>,
    start: SystemTime,
    events: Vec<Event>,
    caller: Option<Arc<str>>,
    exception: bool,
}

impl Held {
    /// A request starting now. Its attributes (those its span's name is made of too) are given
    /// only if it is exported ([`RequestSpan::settle`]).
    pub fn new(trace_id: u128, parent: Option<SpanId>) -> Self {
        Self {
            trace_id: TraceId::from(trace_id),
            // Not zero: zero is no span at all.
            span_id: SpanId::from(rand::random::<u64>().max(1)),
            parent,
            start: SystemTime::now(),
            events: Vec::new(),
            caller: None,
            exception: false,
        }
    }

    /// The span the exported request would have had: what tracing-opentelemetry makes of the
    /// request span (name, kind, attributes, events, status), so both look the same.
    fn into_span_data(self, status_code: u16, failed: bool, attributes: Vec<KeyValue>) -> SpanData {
        let mut attributes = attributes;
        if let Some(owner) = self.caller {
            attributes.push(KeyValue::new("enduser.id", owner.to_string()));
        }
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(status_code),
        ));
        let mut events = SpanEvents::default();
        events.events = self.events;
        SpanData {
            span_context: SpanContext::new(
                self.trace_id,
                self.span_id,
                TraceFlags::SAMPLED,
                false,
                Default::default(),
            ),
            parent_span_id: self.parent.unwrap_or(SpanId::INVALID),
            parent_span_is_remote: self.parent.is_some(),
            span_kind: SpanKind::Server,
            name: Cow::Borrowed("request"),
            start_time: self.start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events,
            links: Default::default(),
            status: if failed {
                Status::error("")
            } else {
                Status::Ok
            },
            instrumentation_scope: InstrumentationScope::builder("orders-api").build(),
        }
    }
}

tokio::task_local! {
    /// The request span, for code deep in the request that records on it (the caller's
    /// identity, exceptions) while another span may be current.
    static REQUEST_SPAN: RequestSpan;
}

/// A request's span while the request runs: exported (`span`), or held (`held`, and `span`
/// then only shows the request around local log lines at debug level).
#[derive(Debug)]
pub struct RequestSpan {
    pub span: tracing::Span,
    held: Option<RefCell<Held>>,
}

impl RequestSpan {
    pub fn new(span: tracing::Span) -> Self {
        Self { span, held: None }
    }

    pub fn held(span: tracing::Span, held: Held) -> Self {
        Self {
            span,
            held: Some(RefCell::new(held)),
        }
    }

    /// Settles a held request when it has ended with `status_code`: exported with
    /// `attributes()` and its dependencies if it or one of them failed, else dropped.
    pub fn settle(mut self, status_code: u16, attributes: impl FnOnce() -> Vec<KeyValue>) {
        let (Some(held), Some(active)) = (self.held.take(), ACTIVE.get()) else {
            return;
        };
        let held = held.into_inner();
        let failed = status_code >= 500 || held.exception;
        let span_id = held.span_id;
        let mut parts = Some((held, attributes));
        active.held.settle_held(span_id, failed, &mut || {
            let (held, attributes) = parts.take()?;
            Some(held.into_span_data(status_code, failed, attributes()))
        });
    }
}

impl Drop for RequestSpan {
    /// A held request that never ended (its client went away and the request was dropped):
    /// its dependencies stop waiting, exported if one of them failed, and it leaves no span.
    fn drop(&mut self) {
        if let (Some(held), Some(active)) = (self.held.take(), ACTIVE.get()) {
            let held = held.into_inner();
            active
                .held
                .settle_held(held.span_id, held.exception, &mut || None);
        }
    }
}

/// Runs `request` inside its span, which becomes the request span that [`record_caller`] and
/// [`record_exception`] record on from anywhere within it; gives it back with the output.
///
/// A future of its own rather than an `async fn`, which would hold the request's future twice
/// (as its argument and where it is polled): several kilobytes copied for every request.
pub fn in_request_span<F: std::future::Future>(span: RequestSpan, request: F) -> InRequestSpan<F> {
    if span.span.is_disabled() && span.held.is_none() {
        // Nothing records it (no telemetry, and its level is not logged).
        return InRequestSpan::Plain {
            request,
            span: Some(span),
        };
    }
    InRequestSpan::Scoped {
        scoped: REQUEST_SPAN.scope(span, Entered { request }),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`in_request_span`].
    #[project = InRequestSpanProjection]
    pub enum InRequestSpan<F: std::future::Future> {
        Plain { #[pin] request: F, span: Option<RequestSpan> },
        Scoped { #[pin] scoped: tokio::task::futures::TaskLocalFuture<RequestSpan, Entered<F>> },
    }
}

impl<F: std::future::Future> std::future::Future for InRequestSpan<F> {
    type Output = (F::Output, RequestSpan);

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let none = || RequestSpan::new(tracing::Span::none());
        match self.project() {
            InRequestSpanProjection::Plain { request, span } => match request.poll(cx) {
                Poll::Ready(output) => Poll::Ready((output, span.take().unwrap_or_else(none))),
                Poll::Pending => Poll::Pending,
            },
            InRequestSpanProjection::Scoped { mut scoped } => match scoped.as_mut().poll(cx) {
                // The task-local's value comes back once the future has completed.
                Poll::Ready(output) => {
                    Poll::Ready((output, scoped.take_value().unwrap_or_else(none)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's future, entering the request span (from the task-local itself: no clone of
    /// the span to make and drop, each of which costs a trip through every layer) on every
    /// poll.
    pub struct Entered<F> {
        #[pin]
        request: F,
    }
}

impl<F: std::future::Future> std::future::Future for Entered<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let request = self.project().request;
        REQUEST_SPAN.with(|current| {
            let _entered = current.span.enter();
            request.poll(cx)
        })
    }
}

/// Runs `exported` on the current request's span, or `held` on its record; on the current span
/// outside a request.
fn with_request(exported: impl FnOnce(&tracing::Span), held: impl FnOnce(&mut Held)) {
    if ACTIVE.get().is_none() {
        // Nothing exported: there is nothing to record on (and no current span to look up).
        return;
    }
    let mut exported = Some(exported);
    // By reference: cloning a span and dropping the clone costs a trip through every layer.
    let _ = REQUEST_SPAN.try_with(|current| match &current.held {
        Some(record) => held(&mut record.borrow_mut()),
        None => {
            if let Some(f) = exported.take() {
                f(&current.span);
            }
        }
    });
    if let Some(f) = exported {
        f(&tracing::Span::current());
    }
}

/// Records the authenticated caller (owner id, never the token) on the request span: it becomes
/// the request's authenticated user id in Application Insights.
pub fn record_caller(owner: &Arc<str>) {
    with_request(
        |span| {
            span.record("enduser.id", &**owner);
        },
        |held| held.caller = Some(Arc::clone(owner)),
    );
}

/// Records the hidden detail of a 500 (`ApiError::internal_detail`) as Exception telemetry on the
/// request span. A panic's detail reads `panic at <file>:<line>:<col>: <message>`; anything else
/// is an internal error chain (`context: cause: root cause`).
pub fn record_exception(detail: &str) {
    let attributes = super::exception_attributes(detail);
    with_request(
        |span| span.add_event("exception", attributes.clone()),
        |held| {
            held.exception = true;
            held.events.push(Event::new(
                "exception",
                SystemTime::now(),
                attributes.clone(),
                0,
            ));
        },
    );
}

/// The parent a span made inside a held request needs (a dependency's): the request's own.
pub(crate) fn held_request_parent() -> Option<SpanContext> {
    REQUEST_SPAN
        .try_with(|current| {
            let held = current.held.as_ref()?.borrow();
            Some(held_parent(held.trace_id, held.span_id))
        })
        .ok()
        .flatten()
}

/// Keeps a log event of a held request with it (as tracing-opentelemetry would have made it an
/// event of the request span); false outside one.
pub(crate) fn hold_event(event: &tracing::Event<'_>) -> bool {
    REQUEST_SPAN
        .try_with(|current| {
            let Some(held) = &current.held else {
                return false;
            };
            let meta = event.metadata();
            let mut fields = EventFields {
                name: String::new(),
                attributes: vec![
                    KeyValue::new("level", meta.level().as_str()),
                    KeyValue::new("target", meta.target()),
                ],
            };
            event.record(&mut fields);
            let name = if fields.name.is_empty() {
                Cow::Borrowed(meta.name())
            } else {
                Cow::Owned(fields.name)
            };
            held.borrow_mut().events.push(Event::new(
                name,
                SystemTime::now(),
                fields.attributes,
                0,
            ));
            true
        })
        .unwrap_or(false)
}

/// An event's fields as tracing-opentelemetry records them: `message` is the name, the others
/// attributes.
struct EventFields {
    name: String,
    attributes: Vec<KeyValue>,
}

impl EventFields {
    fn push(&mut self, field: &tracing::field::Field, value: impl Into<Value>) {
        self.attributes.push(KeyValue::new(field.name(), value));
    }
}

impl tracing::field::Visit for EventFields {
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.push(field, value);
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.push(field, value);
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.push(field, value);
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.name = value.to_owned(),
            // As tracing-opentelemetry does for an `error` field.
            "error" if self.name.is_empty() => self.push(field, format!("{value:?}")),
            _ => self.push(field, value.to_owned()),
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.name = format!("{value:?}");
        } else {
            self.push(field, format!("{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    #[test]
    fn a_failed_held_request_becomes_the_span_it_would_have_had() {
        let mut held = Held::new(0x4bf9_2f35, Some(SpanId::from(7)));
        held.caller = Some("alice".into());
        held.events
            .push(Event::new("exception", SystemTime::now(), Vec::new(), 0));
        let span_id = held.span_id;
        let span = held.into_span_data(502, true, vec![KeyValue::new("http.route", "/api/orders")]);
        assert_eq!(span.span_kind, SpanKind::Server);
        assert_eq!(span.span_context.trace_id(), TraceId::from(0x4bf9_2f35));
        assert_eq!(span.span_context.span_id(), span_id);
        assert!(span.span_context.is_sampled());
        assert_eq!(span.parent_span_id, SpanId::from(7));
        assert!(span.parent_span_is_remote);
        assert!(matches!(span.status, Status::Error { .. }));
        assert_eq!(span.events.len(), 1);
        assert_eq!(
            attribute(&span, "http.route"),
            Some(&Value::from("/api/orders"))
        );
        assert_eq!(attribute(&span, "enduser.id"), Some(&Value::from("alice")));
        assert_eq!(
            attribute(&span, "http.response.status_code"),
            Some(&Value::I64(502))
        );
    }

    #[test]
    fn held_span_ids_are_never_zero_and_roots_have_no_parent() {
        for _ in 0..100 {
            let held = Held::new(1, None);
            assert_ne!(held.span_id, SpanId::INVALID);
            let span = held.into_span_data(200, false, Vec::new());
            assert_eq!(span.parent_span_id, SpanId::INVALID);
            assert!(!span.parent_span_is_remote);
            assert_eq!(span.status, Status::Ok);
        }
    }
}
