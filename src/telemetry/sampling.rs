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
//! Spans of traces not kept are still recorded, cheaply, because a failure must flip the
//! decision: [`super::keep::KeepFailures`] exports such a trace when it fails.
//!
//! A kept trace carries its `n` in its `tracestate` (`orders=n:<n>`), which its child spans
//! inherit, so that the exporter can give every item of the trace the `sampleRate` it was
//! kept at ([`one_in_of`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::trace::{Link, SpanKind, TraceContextExt, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult, ShouldSample};

/// The `tracestate` key under which a kept trace carries its `n`.
const STATE_KEY: &str = "orders";

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

/// The sampler of the tracer provider: decides each trace where it starts, as described above.
/// Spans of traces not kept are recorded but not sampled (`RecordOnly`).
#[derive(Debug, Clone)]
pub(crate) struct RateLimitedSampler {
    limiter: std::sync::Arc<Limiter>,
}

impl RateLimitedSampler {
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            limiter: std::sync::Arc::new(Limiter::new(per_second)),
        }
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
                    recorded_only()
                };
            }
        }
        let one_in = self.limiter.one_in();
        if keeps(trace_id, one_in) {
            kept(state_for(one_in))
        } else {
            recorded_only()
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

fn recorded_only() -> SamplingResult {
    SamplingResult {
        decision: SamplingDecision::RecordOnly,
        attributes: Vec::new(),
        trace_state: TraceState::NONE,
    }
}

/// Sets `n` from the rate at which traces start, so that about `per_second` of them are kept a
/// second. The rate is measured over windows of a second; a window closes early when traces
/// come twice as fast as `n` was set for, so a sudden burst is sampled within milliseconds
/// rather than after a second of exporting everything. Deciding costs two atomic operations
/// and a clock read.
#[derive(Debug)]
pub(crate) struct Limiter {
    per_second: f64,
    one_in: AtomicU32,
    /// Traces started in the current window.
    seen: AtomicU32,
    /// `seen` at which the current window closes early.
    early: AtomicU32,
    /// When the current window closes, in nanoseconds since `epoch`.
    closes_at: AtomicU64,
    epoch: Instant,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    opened_at: Duration,
    /// Traces a second, smoothed over the last windows; `None` before the first closes.
    rate: Option<f64>,
}

/// Length of a measuring window.
const WINDOW: Duration = Duration::from_secs(1);
/// `n` at most: one in a million.
const MAX_ONE_IN: u32 = 1_000_000;

impl Limiter {
    pub(crate) fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        Self {
            per_second,
            one_in: AtomicU32::new(1),
            seen: AtomicU32::new(0),
            early: AtomicU32::new(early_close(per_second, 1)),
            closes_at: AtomicU64::new(nanos(WINDOW)),
            epoch: Instant::now(),
            window: Mutex::new(Window {
                opened_at: Duration::ZERO,
                rate: None,
            }),
        }
    }

    /// The `n` for a trace starting now; counts the trace.
    pub(crate) fn one_in(&self) -> u32 {
        self.one_in_at(self.epoch.elapsed())
    }

    /// [`Self::one_in`] at `now` (time since the limiter was made).
    pub(crate) fn one_in_at(&self, now: Duration) -> u32 {
        let seen = self.seen.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if seen >= self.early.load(Ordering::Relaxed)
            || nanos(now) >= self.closes_at.load(Ordering::Relaxed)
        {
            self.close_window(now);
        }
        self.one_in.load(Ordering::Relaxed)
    }

    /// Measures the window that ends at `now` and sets `n` for the next. One thread does it;
    /// the others go on with the current `n` meanwhile.
    fn close_window(&self, now: Duration) {
        let Ok(mut window) = self.window.try_lock() else {
            return;
        };
        let full = nanos(now) >= self.closes_at.load(Ordering::Relaxed);
        if !full && self.seen.load(Ordering::Relaxed) < self.early.load(Ordering::Relaxed) {
            // Another thread closed it just before.
            return;
        }
        let seen = f64::from(self.seen.swap(0, Ordering::Relaxed));
        // At least a millisecond: a burst's first traces may arrive within nanoseconds.
        let elapsed = now
            .saturating_sub(window.opened_at)
            .max(Duration::from_millis(1));
        let measured = seen / elapsed.as_secs_f64();
        let rate = match window.rate {
            // A full window: smooth, so that one quiet or busy second moves `n` halfway.
            Some(previous) if full => (previous + measured) / 2.0,
            // Closed early: traffic rose; follow it at once.
            Some(previous) => previous.max(measured),
            None => measured,
        };
        // `as` saturates; the clamp keeps `n` in range.
        let one_in = ((rate / self.per_second).ceil() as u32).clamp(1, MAX_ONE_IN);
        window.rate = Some(rate);
        window.opened_at = now;
        self.one_in.store(one_in, Ordering::Relaxed);
        self.early
            .store(early_close(self.per_second, one_in), Ordering::Relaxed);
        self.closes_at.store(nanos(now + WINDOW), Ordering::Relaxed);
    }
}

/// Traces in a window beyond which it closes early: twice what `n` was set for.
fn early_close(per_second: f64, one_in: u32) -> u32 {
    // `as` saturates at u32::MAX, which is what a huge product should mean.
    (2.0 * per_second * f64::from(one_in) * WINDOW.as_secs_f64()).ceil() as u32
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
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
    fn the_limiter_follows_the_rate() {
        let limiter = Limiter::new(5);
        let ms = Duration::from_millis;
        // Quiet: a trace a second is kept, all of them.
        for second in 0..3 {
            assert_eq!(limiter.one_in_at(ms(1000 * second + 500)), 1);
        }
        // A burst of 1000 a second: the window closes early at 10 traces, and n follows.
        let mut now = ms(3000);
        let mut last = 1;
        for _ in 0..2000 {
            now += ms(1);
            last = limiter.one_in_at(now);
        }
        assert!((150..=250).contains(&last), "n = {last} at 1000/s for 5/s");
        // Quiet again: n comes down within seconds.
        for _ in 0..10 {
            now += ms(1000);
            last = limiter.one_in_at(now);
        }
        assert_eq!(last, 1);
    }

    #[test]
    fn the_sampler_honours_the_parent_and_decides_roots_on_the_trace_id() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags};
        let sampler = RateLimitedSampler::new(5);
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
    }
}
