//! The tail of sampling: every trace is settled when its local root ends, so that a failure
//! anywhere in it (a failed request (5xx), an exception, a failed dependency) exports all of
//! it, whatever the head decided ([`super::sampling`]).
//!
//! A span that ends before its local root (a dependency inside a request) waits here under its
//! parent. When the root ends (the request span, or a dependency made outside any request), the
//! trace is settled:
//!
//! - it failed: every span goes on to export, marked sampled and with no rate, so a
//!   `sampleRate` of 100: a failed trace is kept for certain, each item counts once (even one
//!   the head kept at one in `n`, which would otherwise count `n` times);
//! - it did not, and the head kept it: every span goes on with the head's rate;
//! - otherwise all of it is dropped.
//!
//! Most requests have no child spans, and then settling is one check of the root.
//!
//! A request the head did not keep has no span of its own until it fails
//! (`super::request::Held`): its child spans wait under its span id, marked as held, and the
//! request settles them itself when it ends ([`HeldRequests::settle_held`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, Status, TraceState};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

use super::sampling::is_held;

/// Spans waiting for their root, at most; beyond, a span is decided on its own.
const CAPACITY: usize = 4096;
/// Spans whose root has not ended after this long (a task that outlived its request) are
/// decided on their own when room is needed.
const STALE: Duration = Duration::from_secs(60);

/// A span processor in front of `next` (the batch processor): spans are kept back until their
/// trace is settled. A handle: the tracer provider holds one, held requests another.
#[derive(Debug)]
pub(crate) struct KeepFailures<P>(Arc<Keep<P>>);

impl<P> Clone for KeepFailures<P> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

#[derive(Debug)]
pub(crate) struct Keep<P> {
    next: P,
    waiting: Mutex<HashMap<SpanId, Waiting>>,
    /// Spans in `waiting`, read without the lock: usually none.
    count: AtomicUsize,
}

/// What a request not kept needs when it ends: to be settled with what waits under it.
pub(crate) trait HeldRequests: Send + Sync + std::fmt::Debug {
    /// Exports the request (`build` makes its span) and its child spans if it or any of them
    /// failed; drops them otherwise.
    fn settle_held(
        &self,
        request: SpanId,
        failed: bool,
        build: &mut dyn FnMut() -> Option<SpanData>,
    );
}

impl<P: SpanProcessor> HeldRequests for KeepFailures<P> {
    fn settle_held(
        &self,
        request: SpanId,
        failed: bool,
        build: &mut dyn FnMut() -> Option<SpanData>,
    ) {
        let (children, children_failed) = self.0.take_children(request);
        if failed || children_failed {
            self.0.decide(children.into_iter().chain(build()), true);
        }
    }
}

impl<P: SpanProcessor> KeepFailures<P> {
    pub(crate) fn new(next: P) -> Self {
        Self(Arc::new(Keep::new(next)))
    }
}

#[derive(Debug)]
struct Waiting {
    spans: Vec<SpanData>,
    failed: bool,
    since: Instant,
}

impl<P: SpanProcessor> Keep<P> {
    fn new(next: P) -> Self {
        Self {
            next,
            waiting: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
        }
    }

    /// The spans waiting under `parent`, and whether any of them failed.
    fn take_children(&self, parent: SpanId) -> (Vec<SpanData>, bool) {
        if self.count.load(Ordering::Acquire) == 0 {
            return (Vec::new(), false);
        }
        match self.lock().remove(&parent) {
            Some(waiting) => {
                self.count.fetch_sub(waiting.spans.len(), Ordering::AcqRel);
                (waiting.spans, waiting.failed)
            }
            None => (Vec::new(), false),
        }
    }

    /// Keeps `spans` (a span and its descendants) back under their parent.
    fn wait(&self, parent: SpanId, spans: Vec<SpanData>, failed: bool) {
        let mut waiting = self.lock();
        if self.count.load(Ordering::Acquire) + spans.len() > CAPACITY {
            self.release_stale(&mut waiting);
        }
        if self.count.load(Ordering::Acquire) + spans.len() > CAPACITY {
            drop(waiting);
            return self.decide(spans, failed);
        }
        self.count.fetch_add(spans.len(), Ordering::AcqRel);
        let entry = waiting.entry(parent).or_insert_with(|| Waiting {
            spans: Vec::new(),
            failed: false,
            since: Instant::now(),
        });
        entry.spans.extend(spans);
        entry.failed |= failed;
    }

    fn release_stale(&self, waiting: &mut HashMap<SpanId, Waiting>) {
        let stale: Vec<SpanId> = waiting
            .iter()
            .filter(|(_, w)| w.since.elapsed() >= STALE)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(w) = waiting.remove(&id) {
                self.count.fetch_sub(w.spans.len(), Ordering::AcqRel);
                self.decide(w.spans, w.failed);
            }
        }
    }

    /// Settles a trace (or what is left of it): failed, all of it goes on at a rate of 100;
    /// otherwise what the head kept goes on as it is, and the rest is dropped.
    fn decide(&self, spans: impl IntoIterator<Item = SpanData>, failed: bool) {
        for span in spans {
            if failed {
                self.next.on_end(kept_whole(span));
            } else if span.span_context.is_sampled() {
                self.next.on_end(span);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SpanId, Waiting>> {
        // Every change under the lock is a single map operation: a panic cannot leave it
        // half done, so a poisoned lock is still usable.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<P: SpanProcessor> SpanProcessor for KeepFailures<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.0.next.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let keep = &*self.0;
        let failed = is_failure(&span);
        // A held request's children wait for it, though their parent (its span id, outside
        // the tracing pipeline) looks remote.
        let is_local_root = span.parent_span_id == SpanId::INVALID
            || (span.parent_span_is_remote && !is_held(&span.span_context));
        if is_local_root && keep.count.load(Ordering::Acquire) == 0 {
            // The usual request: nothing waits for it. Settled without collecting anything.
            return keep.decide(std::iter::once(span), failed);
        }
        let (mut spans, children_failed) = keep.take_children(span.span_context.span_id());
        let failed = failed || children_failed;
        let parent = span.parent_span_id;
        spans.push(span);
        if is_local_root {
            keep.decide(spans, failed);
        } else {
            keep.wait(parent, spans, failed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.next.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        // What still waits will not see its root: decide it now, so failures go out.
        let keep = &*self.0;
        let waiting: Vec<Waiting> = keep.lock().drain().map(|(_, w)| w).collect();
        keep.count.store(0, Ordering::Release);
        for w in waiting {
            keep.decide(w.spans, w.failed);
        }
        keep.next.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Only while this is the one handle; the pipeline sets the exporter's resource itself
        // before the handles are shared.
        if let Some(keep) = Arc::get_mut(&mut self.0) {
            keep.next.set_resource(resource);
        }
    }
}

/// A failed request or dependency (status error: 5xx, a failed call) or one that recorded an
/// exception.
fn is_failure(span: &SpanData) -> bool {
    matches!(span.status, Status::Error { .. })
        || span.events.iter().any(|event| event.name == "exception")
}

/// The span marked sampled, with no rate in its trace state: kept because its trace failed.
fn kept_whole(mut span: SpanData) -> SpanData {
    let context = &span.span_context;
    span.span_context = SpanContext::new(
        context.trace_id(),
        context.span_id(),
        context.trace_flags().with_sampled(true),
        context.is_remote(),
        TraceState::NONE,
    );
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::{SpanKind, TraceFlags, TraceId};
    use std::borrow::Cow;
    use std::sync::Arc;
    use std::time::SystemTime;

    /// Collects what reaches the next processor.
    #[derive(Debug, Clone, Default)]
    struct Sink(Arc<Mutex<Vec<SpanData>>>);

    impl SpanProcessor for Sink {
        fn on_start(&self, _span: &mut Span, _cx: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    impl Sink {
        fn names(&self) -> Vec<String> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .map(|s| s.name.to_string())
                .collect()
        }
    }

    fn span(name: &'static str, id: u64, parent: u64, sampled: bool, status: Status) -> SpanData {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(1),
                SpanId::from(id),
                flags,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::from(parent),
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(name),
            start_time: SystemTime::UNIX_EPOCH,
            end_time: SystemTime::UNIX_EPOCH,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    fn error() -> Status {
        Status::error("")
    }

    #[test]
    fn sampled_traces_pass_with_their_rate_and_quiet_unsampled_ones_are_dropped() {
        let sink = Sink::default();
        let keep = KeepFailures::new(sink.clone());
        let at_one_in_4 = TraceState::from_key_value([("orders", "n:4")]).unwrap();
        let mut child = span("sampled dependency", 11, 10, true, Status::Ok);
        child.span_context = SpanContext::new(
            TraceId::from(1),
            SpanId::from(11),
            TraceFlags::SAMPLED,
            false,
            at_one_in_4.clone(),
        );
        keep.on_end(child);
        assert!(sink.names().is_empty(), "a child waits for its root");
        keep.on_end(span("sampled", 10, 0, true, Status::Ok));
        keep.on_end(span("dependency", 3, 2, false, Status::Ok));
        keep.on_end(span("request", 2, 0, false, Status::Ok));
        assert_eq!(sink.names(), ["sampled dependency", "sampled"]);
        assert_eq!(
            sink.0.lock().unwrap()[0].span_context.trace_state(),
            &at_one_in_4
        );
        assert_eq!(
            keep.0.count.load(Ordering::Acquire),
            0,
            "nothing left waiting"
        );
    }

    #[test]
    fn a_failure_in_a_sampled_trace_counts_once() {
        let sink = Sink::default();
        let keep = KeepFailures::new(sink.clone());
        let mut request = span("request", 2, 0, true, error());
        request.span_context = SpanContext::new(
            TraceId::from(1),
            SpanId::from(2),
            TraceFlags::SAMPLED,
            false,
            TraceState::from_key_value([("orders", "n:4")]).unwrap(),
        );
        keep.on_end(request);
        let exported = sink.0.lock().unwrap();
        assert_eq!(exported[0].span_context.trace_state(), &TraceState::NONE);
    }

    #[test]
    fn a_failure_anywhere_exports_the_whole_trace_marked_sampled() {
        let sink = Sink::default();
        let keep = KeepFailures::new(sink.clone());
        // A successful dependency, then the request fails.
        keep.on_end(span("dependency", 3, 2, false, Status::Ok));
        keep.on_end(span("request", 2, 0, false, error()));
        // A failed dependency in a request that succeeds.
        keep.on_end(span("failed dependency", 5, 4, false, error()));
        keep.on_end(span("quiet request", 4, 0, false, Status::Ok));
        // An exception in a request.
        let mut with_exception = span("request with exception", 6, 0, false, Status::Ok);
        with_exception
            .events
            .events
            .push(opentelemetry::trace::Event::with_name("exception"));
        keep.on_end(with_exception);
        // A failed dependency outside any request.
        keep.on_end(span("background", 7, 0, false, error()));
        assert_eq!(
            sink.names(),
            [
                "dependency",
                "request",
                "failed dependency",
                "quiet request",
                "request with exception",
                "background"
            ]
        );
        for exported in sink.0.lock().unwrap().iter() {
            assert!(exported.span_context.is_sampled(), "{}", exported.name);
        }
    }

    #[test]
    fn a_caller_s_span_is_a_remote_parent_and_ends_the_wait() {
        let sink = Sink::default();
        let keep = KeepFailures::new(sink.clone());
        let mut request = span("request", 2, 9, false, error());
        request.parent_span_is_remote = true;
        keep.on_end(request);
        assert_eq!(sink.names(), ["request"]);
    }

    #[test]
    fn shutdown_exports_what_still_waits_if_it_failed() {
        let sink = Sink::default();
        let keep = KeepFailures::new(sink.clone());
        keep.on_end(span("orphan ok", 3, 2, false, Status::Ok));
        keep.on_end(span("orphan failed", 5, 4, false, error()));
        keep.shutdown_with_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!(sink.names(), ["orphan failed"]);
    }

    #[test]
    fn waiting_is_bounded() {
        let sink = Sink::default();
        let keep = KeepFailures::new(sink.clone());
        for id in 0..(CAPACITY as u64 + 10) {
            keep.on_end(span("orphan", 1000 + id, 1, false, Status::Ok));
        }
        keep.on_end(span("orphan failed", 7, 1, false, error()));
        assert_eq!(keep.0.count.load(Ordering::Acquire), CAPACITY);
        // Over capacity, a failure is still exported, on its own.
        assert_eq!(sink.names(), ["orphan failed"]);
    }
}
