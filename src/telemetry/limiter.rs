//! The rate limiter of head sampling: sets `n`, the "one in `n`" at which traces are kept, from
//! the rate at which they start.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Sets `n` from the rate at which traces start, so that about `per_second` of them are kept a
/// second. The rate is measured over windows of a second; a window closes early when traces
/// come twice as fast as `n` was set for, so a sudden burst is sampled within milliseconds
/// rather than after a second of exporting everything. Deciding costs two atomic operations,
/// and under load a clock read one time in sixteen.
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

/// Traces per clock reading, once a window has seen that many.
const CLOCK_EVERY: u32 = 16;

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
        self.one_in_with(|| self.epoch.elapsed())
    }

    /// [`Self::one_in`] at `now` (time since the limiter was made).
    #[cfg(test)]
    pub(crate) fn one_in_at(&self, now: Duration) -> u32 {
        self.one_in_with(|| now)
    }

    fn one_in_with(&self, now: impl Fn() -> Duration) -> u32 {
        let seen = self.seen.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if seen >= self.early.load(Ordering::Relaxed) {
            self.close_window(now());
        } else if seen < CLOCK_EVERY || seen.is_multiple_of(CLOCK_EVERY) {
            // Under load the clock is read on one trace in CLOCK_EVERY: a window then ends that
            // many traces late at most, a fraction of a millisecond.
            let now = now();
            if nanos(now) >= self.closes_at.load(Ordering::Relaxed) {
                self.close_window(now);
            }
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
}
