//! The head of sampling: which traces are exported whatever happens in them.
//!
//! A trace is decided once, where it starts in this process:
//!
//! - with a caller's `traceparent`, as the caller decided (its `sampled` flag): the caller
//!   records the traces it sampled, and ours completes them;
//! - otherwise on its trace id: the Application Insights sampling score of the operation id
//!   (see [`score`]) against a percentage of `100 / n`, where a rate limiter sets `n` so that
//!   about `ORDERS_TELEMETRY_SAMPLE_PER_SECOND` traces a second are kept. Every instance, and
//!   every Application Insights SDK (APIM's included) sampling at a percentage at least as
//!   high, keeps the same traces: the score depends on the trace id alone.
//!
//! A request is decided before its span exists ([`Decider`]), on the trace id it will have:
//! a request not kept is recorded cheaply, outside the tracing pipeline (`super::request`), and
//! exported only if it fails ([`super::keep::KeepFailures`]); a kept one gets its span, with
//! that trace id ([`RequestIds`], [`start_root`]). Other roots (a dependency outside any
//! request) are decided by the [`RateLimitedSampler`] as their span starts, and recorded either
//! way so that a failure can still be exported.
//!
//! A kept trace carries its `n` in its `tracestate` (`orders=n:<n>`), which its child spans
//! inherit, so that the exporter can give every item of the trace the `sampleRate` it was
//! kept at ([`one_in_of`]). The child spans of a request not kept carry `orders=held`.

use std::cell::Cell;
use std::sync::Arc;

use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SamplingDecision, SamplingResult, ShouldSample,
};

pub(crate) use super::limiter::Limiter;

/// The `tracestate` key under which a kept trace carries its `n`.
const STATE_KEY: &str = "orders";
/// Its value on the child spans of a request not kept (`super::request::Held`).
const HELD: &str = "held";

/// The Application Insights sampling score of a trace, from 0 to 100: the .NET SDK's hash of
/// the operation id (`SamplingScoreGenerator.GetSamplingHashCode`, microsoft/ApplicationInsights-
/// dotnet, BASE/src/Microsoft.ApplicationInsights/Channel/SamplingScoreGenerator.cs, which the
/// JavaScript, Java and OpenTelemetry-based Azure Monitor SDKs port), taken over the trace id's
/// 32 lower-case hex digits (the operation id). An item is sampled in when its score is below
/// the sampling percentage.
pub(crate) fn score(trace_id: TraceId) -> f64 {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // djb2 on 32-bit signed integers that wrap, as in C#; 32 characters need no padding.
    let mut hash: i32 = 5381;
    for byte in trace_id.to_bytes() {
        for digit in [byte >> 4, byte & 0x0f] {
            let c = i32::from(HEX[usize::from(digit)]);
            hash = (hash << 5).wrapping_add(hash).wrapping_add(c);
        }
    }
    let hash = if hash == i32::MIN {
        i32::MAX
    } else {
        hash.abs()
    };
    f64::from(hash) / f64::from(i32::MAX) * 100.0
}

/// Whether a trace is kept at "one in `n`": its score is below `100 / n` percent.
pub(crate) fn keeps(trace_id: TraceId, one_in: u32) -> bool {
    one_in <= 1 || score(trace_id) < 100.0 / f64::from(one_in)
}

/// The `n` a trace was kept at, from its `tracestate`; 1 when it carries none (kept whole: a
/// caller's decision, a failure, or `n` = 1). Its `sampleRate` is `100 / n` percent.
pub(crate) fn one_in_of(state: &TraceState) -> u32 {
    state
        .get(STATE_KEY)
        .and_then(|value| value.strip_prefix("n:"))
        .and_then(|n| n.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1)
}

fn state_for(one_in: u32) -> TraceState {
    if one_in <= 1 {
        return TraceState::NONE;
    }
    // infallible: the key and value are valid tracestate text.
    TraceState::from_key_value([(STATE_KEY, format!("n:{one_in}"))]).unwrap_or_default()
}

/// Whether a span belongs to a request not kept, waiting for that request's outcome.
pub(crate) fn is_held(context: &SpanContext) -> bool {
    context.trace_state().get(STATE_KEY) == Some(HELD)
}

/// The context a request not kept gives the spans made within it (its dependencies): its
/// trace, its span id as their parent, not sampled, marked as held.
pub(crate) fn held_parent(trace_id: TraceId, span_id: SpanId) -> SpanContext {
    // infallible: the key and value are valid tracestate text.
    let state = TraceState::from_key_value([(STATE_KEY, HELD)]).unwrap_or_default();
    SpanContext::new(trace_id, span_id, TraceFlags::default(), true, state)
}

/// How a request is decided, before its span exists.
#[derive(Debug, Clone)]
pub(crate) enum Decider {
    /// Sampling off: every request is exported.
    Everything,
    Limited(Arc<Limiter>),
}

/// The fate of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Its span is exported; kept at one in `one_in` (1: for certain).
    Export { one_in: u32 },
    /// Recorded cheaply and exported only if it fails.
    Hold,
}

impl Decider {
    /// `caller_sampled`: the `sampled` flag of the caller's `traceparent`, if one came.
    pub(crate) fn decide(&self, trace_id: TraceId, caller_sampled: Option<bool>) -> Decision {
        let limiter = match self {
            Self::Everything => return Decision::Export { one_in: 1 },
            Self::Limited(limiter) => limiter,
        };
        match caller_sampled {
            Some(true) => Decision::Export { one_in: 1 },
            Some(false) => Decision::Hold,
            None => {
                let one_in = limiter.one_in();
                if keeps(trace_id, one_in) {
                    Decision::Export { one_in }
                } else {
                    Decision::Hold
                }
            }
        }
    }
}

thread_local! {
    /// A request root about to start on this thread: the trace id decided for it and the `n`
    /// it was kept at. Set only around the start ([`start_root`]).
    static PENDING_ROOT: Cell<Option<(TraceId, u32)>> = const { Cell::new(None) };
}

/// Starts a request root's span (`start` makes the span start: its first OpenTelemetry context)
/// with the trace id it was decided on and the `n` it was kept at: the [`RequestIds`] generator
/// and the sampler read them on this thread while it starts.
pub(crate) fn start_root<T>(trace_id: TraceId, one_in: u32, start: impl FnOnce() -> T) -> T {
    PENDING_ROOT.set(Some((trace_id, one_in)));
    let started = start();
    PENDING_ROOT.set(None);
    started
}

/// The tracer provider's id generator: random ids, except a request root's trace id, which was
/// decided before its span ([`start_root`]).
#[derive(Debug, Default)]
pub(crate) struct RequestIds(RandomIdGenerator);

impl IdGenerator for RequestIds {
    fn new_trace_id(&self) -> TraceId {
        match PENDING_ROOT.get() {
            Some((trace_id, _)) => trace_id,
            None => self.0.new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// The sampler of the tracer provider. A span with a parent follows it (sampled or not, and a
/// held request's mark); a request root follows the decision taken for it ([`start_root`]);
/// any other root (a dependency outside a request) is decided here, on its trace id. Spans not
/// kept are recorded but not sampled (`RecordOnly`).
#[derive(Debug, Clone)]
pub(crate) struct RateLimitedSampler {
    limiter: Arc<Limiter>,
}

impl RateLimitedSampler {
    pub(crate) fn new(limiter: Arc<Limiter>) -> Self {
        Self { limiter }
    }
}

impl ShouldSample for RateLimitedSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[Link],
    ) -> SamplingResult {
        if let Some(parent) = parent_context.filter(|cx| cx.has_active_span()) {
            let span = parent.span();
            let parent = span.span_context();
            if parent.is_valid() {
                // A child of a span here, or of the caller's: the trace was decided there.
                return if parent.is_sampled() {
                    kept(parent.trace_state().clone())
                } else {
                    recorded_only(parent.trace_state().clone())
                };
            }
        }
        if let Some((pending, one_in)) = PENDING_ROOT.get()
            && pending == trace_id
        {
            return kept(state_for(one_in));
        }
        let one_in = self.limiter.one_in();
        if keeps(trace_id, one_in) {
            kept(state_for(one_in))
        } else {
            recorded_only(TraceState::NONE)
        }
    }
}

fn kept(trace_state: TraceState) -> SamplingResult {
    SamplingResult {
        decision: SamplingDecision::RecordAndSample,
        attributes: Vec::new(),
        trace_state,
    }
}

fn recorded_only(trace_state: TraceState) -> SamplingResult {
    SamplingResult {
        decision: SamplingDecision::RecordOnly,
        attributes: Vec::new(),
        trace_state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(hex: &str) -> TraceId {
        TraceId::from_hex(hex).unwrap()
    }

    #[test]
    fn the_score_is_the_application_insights_one() {
        // Computed with the .NET algorithm (djb2 over the characters, 32-bit wrapping, Abs,
        // divided by int.MaxValue, times 100) on these operation ids.
        for (id, expected) in [
            ("4bf92f3577b34da6a3ce929d0e0e4736", 33.461_353_850),
            ("0af7651916cd43dd8448eb211c80319c", 52.788_928_036),
            ("00000000000000000000000000000001", 2.339_351_458),
        ] {
            let got = score(trace(id));
            assert!((got - expected).abs() < 1e-6, "{id}: {got} vs {expected}");
        }
    }

    #[test]
    fn lower_rates_keep_a_subset_of_what_higher_rates_keep() {
        let ids: Vec<TraceId> = (1..2000u128)
            .map(|i| TraceId::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
            .collect();
        for (higher, lower) in [(1, 2), (2, 4), (3, 7), (10, 100)] {
            for id in &ids {
                assert!(
                    !keeps(*id, lower) || keeps(*id, higher),
                    "{id} at {lower}, {higher}"
                );
            }
        }
        // And about one in n are kept.
        let kept = ids.iter().filter(|id| keeps(**id, 10)).count();
        assert!(
            (120..=280).contains(&kept),
            "{kept} of {} at one in 10",
            ids.len()
        );
    }

    #[test]
    fn the_trace_state_carries_n() {
        assert_eq!(one_in_of(&state_for(8)), 8);
        assert_eq!(one_in_of(&state_for(1)), 1);
        assert_eq!(one_in_of(&TraceState::NONE), 1);
        let odd = TraceState::from_key_value([(STATE_KEY, "n:0")]).unwrap();
        assert_eq!(one_in_of(&odd), 1);
    }

    #[test]
    fn the_sampler_honours_the_parent_and_decides_roots_on_the_trace_id() {
        let limiter = Arc::new(Limiter::new(5));
        let sampler = RateLimitedSampler::new(Arc::clone(&limiter));
        let id = trace("4bf92f3577b34da6a3ce929d0e0e4736");
        let decide = |parent: Option<&Context>| {
            sampler
                .should_sample(parent, id, "request", &SpanKind::Server, &[], &[])
                .decision
        };
        let remote = |flags| {
            Context::new().with_remote_span_context(SpanContext::new(
                id,
                SpanId::from(7),
                flags,
                true,
                TraceState::NONE,
            ))
        };
        assert_eq!(
            decide(Some(&remote(TraceFlags::SAMPLED))),
            SamplingDecision::RecordAndSample
        );
        assert_eq!(
            decide(Some(&remote(TraceFlags::default()))),
            SamplingDecision::RecordOnly
        );
        // No parent: the limiter starts at n = 1, so the first traces are kept.
        assert_eq!(decide(None), SamplingDecision::RecordAndSample);
        assert_eq!(
            decide(Some(&Context::new())),
            SamplingDecision::RecordAndSample
        );
        // A request root follows the decision taken for it, and takes its trace id from it.
        let other = trace("0af7651916cd43dd8448eb211c80319c");
        let (decision, state, generated) = start_root(other, 7, || {
            let result = sampler.should_sample(None, other, "request", &SpanKind::Server, &[], &[]);
            (
                result.decision,
                result.trace_state,
                RequestIds::default().new_trace_id(),
            )
        });
        assert_eq!(decision, SamplingDecision::RecordAndSample);
        assert_eq!(one_in_of(&state), 7);
        assert_eq!(generated, other);
        assert_ne!(
            RequestIds::default().new_trace_id(),
            other,
            "only while it starts"
        );
        // A held request's children are recorded, not sampled, and keep the mark.
        let held = Context::new().with_remote_span_context(held_parent(id, SpanId::from(9)));
        let result =
            sampler.should_sample(Some(&held), id, "dependency", &SpanKind::Client, &[], &[]);
        assert_eq!(result.decision, SamplingDecision::RecordOnly);
        assert!(is_held(&SpanContext::new(
            id,
            SpanId::from(10),
            TraceFlags::default(),
            false,
            result.trace_state
        )));
    }

    #[test]
    fn requests_are_decided_on_the_caller_s_flag_else_on_the_trace_id() {
        let id = trace("4bf92f3577b34da6a3ce929d0e0e4736");
        let everything = Decider::Everything;
        assert_eq!(
            everything.decide(id, Some(false)),
            Decision::Export { one_in: 1 }
        );
        let limited = Decider::Limited(Arc::new(Limiter::new(1)));
        assert_eq!(
            limited.decide(id, Some(true)),
            Decision::Export { one_in: 1 }
        );
        assert_eq!(limited.decide(id, Some(false)), Decision::Hold);
        assert_eq!(limited.decide(id, None), Decision::Export { one_in: 1 });
    }
}
