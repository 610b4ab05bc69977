//! Per-caller rate limiting (429), per instance: a token bucket of `ORDERS_RATE_LIMIT_PER_MINUTE`
//! for each caller, on top of APIM's `rate-limit-by-key` at the edge (defense in depth: a
//! Function App URL can be called around APIM).
//!
//! The caller is the token's owner when it authenticates, else the client address: the
//! right-most `X-Forwarded-For` entry (the one Azure's front end appended; entries to its left
//! are whatever the client claimed), else the socket peer. Behind the Functions host every
//! socket peer is 127.0.0.1, which is why the owner comes first.
//!
//! Memory is bounded: at most `ORDERS_RATE_LIMIT_MAX_CALLERS` callers are tracked; beyond that,
//! idle ones are forgotten, and if the table is still full, untracked callers share one bucket.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::error::ApiError;

type KeyedLimiter = RateLimiter<
    CallerKey,
    DefaultKeyedStateStore<CallerKey>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// Whom a bucket belongs to. The owner is shared with the request's `Caller`, so keying costs
/// no allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CallerKey {
    Owner(Arc<str>),
    Address(IpAddr),
    Unknown,
}
type SharedLimiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The rate limiter of one instance. Cheap to clone.
#[derive(Clone)]
pub struct CallerLimits {
    inner: Arc<Inner>,
}

struct Inner {
    per_caller: KeyedLimiter,
    overflow: SharedLimiter,
    max_callers: usize,
    per_minute: u32,
    /// `RateLimit-Limit`.
    limit_header: HeaderValue,
    clock: DefaultClock,
    /// Callers tracked when last counted (counting takes a lock on every shard of the map),
    /// and the checks made since: recounted every `RECOUNT` checks, and at every check near
    /// the bound.
    counted: AtomicUsize,
    checks: AtomicUsize,
}

/// Checks between two counts of the tracked callers. Each check adds at most one caller, so
/// a count stays exact enough to tell that the bound is still far.
const RECOUNT: usize = 64;

impl CallerLimits {
    pub fn new(per_minute: u32, max_callers: usize) -> Self {
        let rate = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(rate);
        Self {
            inner: Arc::new(Inner {
                per_caller: RateLimiter::keyed(quota)
                    .with_middleware::<StateInformationMiddleware>(),
                overflow: RateLimiter::direct(quota)
                    .with_middleware::<StateInformationMiddleware>(),
                max_callers: max_callers.max(1),
                per_minute: rate.get(),
                limit_header: HeaderValue::from(rate.get()),
                clock: DefaultClock::default(),
                counted: AtomicUsize::new(0),
                checks: AtomicUsize::new(0),
            }),
        }
    }

    /// How many callers are tracked now.
    pub fn tracked_callers(&self) -> usize {
        self.inner.per_caller.len()
    }

    /// Takes one request from `key`'s bucket.
    fn check(&self, key: CallerKey) -> Decision {
        let inner = &self.inner;
        let mut tracked = inner.tracked();
        if tracked >= inner.max_callers {
            inner.per_caller.retain_recent();
            inner.per_caller.shrink_to_fit();
            tracked = inner.recount();
        }
        let outcome = if tracked < inner.max_callers {
            inner.per_caller.check_key(&key)
        } else {
            inner.overflow.check()
        };
        let refill = Duration::from_secs(60) / inner.per_minute;
        match outcome {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = inner.per_minute.saturating_sub(remaining);
                Decision::Allowed {
                    remaining,
                    reset: refill * used,
                }
            }
            Err(not_until) => Decision::Limited {
                retry_after: not_until.wait_time_from(inner.clock.now()),
            },
        }
    }
}

impl Inner {
    /// How many callers are tracked, or a figure known to be below the bound when it is.
    fn tracked(&self) -> usize {
        let checks = self.checks.fetch_add(1, Ordering::Relaxed);
        let counted = self.counted.load(Ordering::Relaxed);
        // Since the last count at most 2 * RECOUNT callers were added (concurrent checks
        // included), so below this the bound cannot have been reached.
        if counted + 2 * RECOUNT < self.max_callers && !checks.is_multiple_of(RECOUNT) {
            return counted;
        }
        self.recount()
    }

    fn recount(&self) -> usize {
        let tracked = self.per_caller.len();
        self.counted.store(tracked, Ordering::Relaxed);
        tracked
    }
}

enum Decision {
    Allowed { remaining: u32, reset: Duration },
    Limited { retry_after: Duration },
}

fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// The caller's key: owner if the request authenticates, else the client address.
fn caller_key(req: &Request) -> CallerKey {
    if let Some(caller) = crate::auth::identified(req) {
        return CallerKey::Owner(Arc::clone(&caller.owner));
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    match forwarded_client(req.headers()).or(peer) {
        Some(ip) => CallerKey::Address(ip),
        None => CallerKey::Unknown,
    }
}

fn forwarded_client(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .rfind(|v| !v.is_empty())?;
    // Azure may append the port (`203.0.113.7:52000`, `[2001:db8::1]:443`).
    last.parse::<IpAddr>()
        .ok()
        .or_else(|| last.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// The `RateLimit-*` headers of an admitted request.
pub struct Allowance {
    /// The same for every request: made once (a clone shares its bytes).
    limit: HeaderValue,
    remaining: u32,
    reset: Duration,
}

impl Allowance {
    pub fn apply(self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_LIMIT.clone(), self.limit);
        headers.insert(
            RATELIMIT_REMAINING.clone(),
            HeaderValue::from(self.remaining),
        );
        headers.insert(
            RATELIMIT_RESET.clone(),
            HeaderValue::from(whole_seconds(self.reset)),
        );
    }
}

impl CallerLimits {
    /// Takes one request from its caller's bucket: the headers to answer with, or 429 with
    /// `Retry-After`.
    pub fn admit(&self, req: &Request) -> Result<Allowance, ApiError> {
        let limit = self.inner.limit_header.clone();
        match self.check(caller_key(req)) {
            Decision::Allowed { remaining, reset } => Ok(Allowance {
                limit,
                remaining,
                reset,
            }),
            Decision::Limited { retry_after } => {
                let seconds = whole_seconds(retry_after).max(1);
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("Rate limit exceeded: retry in {seconds} s."),
                )
                .with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
                .with_header(RATELIMIT_LIMIT.clone(), limit)
                .with_header(RATELIMIT_REMAINING.clone(), HeaderValue::from(0u32))
                .with_header(RATELIMIT_RESET.clone(), HeaderValue::from(seconds)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_client_is_the_right_most_entry() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("10.9.9.9, 203.0.113.7:52000"),
        );
        assert_eq!(forwarded_client(&headers), "203.0.113.7".parse().ok());
        headers.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(forwarded_client(&headers), None);
    }

    #[test]
    fn tracking_is_bounded() {
        let limits = CallerLimits::new(60, 100);
        for i in 0..1_000 {
            let _ = limits.check(CallerKey::Address(IpAddr::from([
                10,
                0,
                (i / 256) as u8,
                (i % 256) as u8,
            ])));
        }
        assert!(limits.tracked_callers() <= 100);
    }
}
