//! Per-caller rate limiting (429), per instance: a token bucket of `ORDERS_RATE_LIMIT_PER_MINUTE`
//! for each caller, on top of APIM's `rate-limit-by-key` at the edge (defense in depth: a
//! Function App URL can be called around APIM).
//!
//! The caller is the token's owner when it authenticates, else the client address: the socket
//! peer, unless that peer is a trusted proxy (`ORDERS_TRUSTED_PROXIES`, and the Functions host
//! on loopback), in which case `X-Forwarded-For` is read from the right, skipping trusted
//! proxies, and the first other address is the client. Entries further left are whatever the
//! client claimed and never count. IPv6 clients are keyed by their /64, which one subscriber
//! usually holds whole.
//!
//! Memory is bounded: at most `ORDERS_RATE_LIMIT_MAX_CALLERS` callers are tracked; beyond that,
//! idle ones are forgotten, and if the table is still full, untracked callers share one bucket.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use governor::clock::{Clock, FakeRelativeClock, QuantaClock, QuantaInstant, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::config::TrustedProxies;
use crate::config::proxies::canonical;
use crate::error::ApiError;

/// The rate limiter's time: the machine's monotonic clock, or (for tests) a clock that stands
/// still until it is advanced, so that what a bucket holds never depends on how fast a test
/// runs.
#[derive(Debug, Clone)]
pub struct RateClock(ClockKind);

#[derive(Debug, Clone)]
enum ClockKind {
    System {
        clock: QuantaClock,
        origin: QuantaInstant,
    },
    Manual(FakeRelativeClock),
}

impl RateClock {
    pub fn system() -> Self {
        let clock = QuantaClock::default();
        let origin = clock.now();
        Self(ClockKind::System { clock, origin })
    }

    /// A clock that only moves when [`RateClock::advance`] is called.
    pub fn manual() -> Self {
        Self(ClockKind::Manual(FakeRelativeClock::default()))
    }

    /// Moves a manual clock forward; the system clock moves by itself.
    pub fn advance(&self, by: Duration) {
        if let ClockKind::Manual(clock) = &self.0 {
            clock.advance(by);
        }
    }
}

impl Clock for RateClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match &self.0 {
            ClockKind::System { clock, origin } => clock.now().duration_since(*origin),
            ClockKind::Manual(clock) => clock.now(),
        }
    }
}

type KeyedLimiter = RateLimiter<
    CallerKey,
    DefaultKeyedStateStore<CallerKey>,
    RateClock,
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
type SharedLimiter = RateLimiter<NotKeyed, InMemoryState, RateClock, StateInformationMiddleware>;

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

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
    proxies: TrustedProxies,
    clock: RateClock,
    /// When the full table was last swept for idle callers (clock nanoseconds + 1; 0: never).
    last_sweep: AtomicU64,
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
    pub fn new(
        per_minute: u32,
        max_callers: usize,
        proxies: TrustedProxies,
        clock: RateClock,
    ) -> Self {
        let rate = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(rate);
        Self {
            inner: Arc::new(Inner {
                per_caller: KeyedLimiter::new(
                    quota,
                    DefaultKeyedStateStore::default(),
                    clock.clone(),
                ),
                overflow: RateLimiter::direct_with_clock(quota, clock.clone())
                    .with_middleware::<StateInformationMiddleware>(),
                max_callers: max_callers.max(1),
                per_minute: rate.get(),
                limit_header: HeaderValue::from(rate.get()),
                proxies,
                clock,
                last_sweep: AtomicU64::new(0),
                counted: AtomicUsize::new(0),
                checks: AtomicUsize::new(0),
            }),
        }
    }

    /// How many callers are tracked now.
    pub fn tracked_callers(&self) -> usize {
        self.inner.per_caller.len()
    }

    /// Whether a sweep of the full table may run now (and claims it if so).
    fn sweep_due(&self, interval: Duration) -> bool {
        let now = self.inner.clock.now().as_u64().saturating_add(1);
        let last = self.inner.last_sweep.load(Ordering::Relaxed);
        let interval = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        (last == 0 || now.saturating_sub(last) >= interval)
            && self
                .inner
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Takes one request from `key`'s bucket.
    fn check(&self, key: CallerKey) -> Decision {
        let inner = &self.inner;
        let refill = Duration::from_secs(60) / inner.per_minute;
        let mut tracked = inner.tracked();
        if tracked >= inner.max_callers && self.sweep_due(refill) {
            // Callers whose buckets are full again are indistinguishable from new ones. A sweep
            // visits every caller, so it runs at most once per refill interval (the time for a
            // bucket to gain a request), not on every request while the table is full.
            inner.per_caller.retain_recent();
            inner.per_caller.shrink_to_fit();
            tracked = inner.recount();
        }
        let outcome = if tracked < inner.max_callers {
            inner.per_caller.check_key(&key)
        } else {
            inner.overflow.check()
        };
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
fn caller_key(req: &Request, proxies: &TrustedProxies) -> CallerKey {
    if let Some(caller) = crate::auth::identified(req) {
        return CallerKey::Owner(Arc::clone(&caller.owner));
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    match peer.map(|peer| client_address(peer, req.headers(), proxies)) {
        Some(ip) => CallerKey::Address(bucket_of(ip)),
        None => CallerKey::Unknown,
    }
}

/// The client's address: the socket peer, or, while the hop in hand is a trusted proxy, the
/// entry that proxy appended to `X-Forwarded-For` (read right to left). An entry that is not an
/// address stops the walk at the last proxy: nothing left of it can be believed.
fn client_address(peer: IpAddr, headers: &HeaderMap, proxies: &TrustedProxies) -> IpAddr {
    let mut client = canonical(peer);
    if !proxies.trusts(client) {
        return client;
    }
    let entries = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.rsplit(','))
        .map(str::trim)
        .filter(|v| !v.is_empty());
    for entry in entries {
        let Some(address) = parse_forwarded(entry) else {
            break;
        };
        client = address;
        if !proxies.trusts(client) {
            break;
        }
    }
    client
}

fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    // Azure may append the port (`203.0.113.7:52000`, `[2001:db8::1]:443`).
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(canonical)
}

/// One bucket per IPv4 address, and per IPv6 /64: an IPv6 subscriber usually holds a whole
/// /64 and could otherwise fill the table with addresses of their own.
fn bucket_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
    }
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
        match self.check(caller_key(req, &self.inner.proxies)) {
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

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn forwarded(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let headers = forwarded("10.9.9.9, 203.0.113.7:52000");
        let none = TrustedProxies::none();
        assert_eq!(
            client_address(ip("198.51.100.2"), &headers, &none),
            ip("198.51.100.2")
        );
        let host = TrustedProxies::none().with_loopback();
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers, &host),
            ip("203.0.113.7")
        );
        // Proxies in the chain are skipped; what the client wrote left of them is not read.
        let chain = host.clone().with_networks("10.0.0.0/8").unwrap();
        let headers = forwarded("192.0.2.1, 203.0.113.9, 10.0.0.2");
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers, &chain),
            ip("203.0.113.9")
        );
        // Garbage appended stops the walk at the last proxy.
        let headers = forwarded("203.0.113.9, garbage");
        assert_eq!(
            client_address(ip("127.0.0.1"), &headers, &host),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn mapped_addresses_are_their_ipv4_address() {
        let host = TrustedProxies::none().with_loopback();
        let headers = forwarded("::ffff:203.0.113.7");
        assert_eq!(
            client_address(ip("::ffff:127.0.0.1"), &headers, &host),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_address(
                ip("::ffff:198.51.100.2"),
                &HeaderMap::new(),
                &TrustedProxies::none()
            ),
            ip("198.51.100.2")
        );
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        assert_eq!(bucket_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(bucket_of(ip("203.0.113.7")), ip("203.0.113.7"));
    }

    #[test]
    fn tracking_is_bounded() {
        let limits = CallerLimits::new(60, 100, TrustedProxies::none(), RateClock::manual());
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

    #[test]
    fn a_full_table_forgets_idle_callers_once_their_buckets_refill() {
        let clock = RateClock::manual();
        let limits = CallerLimits::new(60, 10, TrustedProxies::none(), clock.clone());
        let caller = |i: u8| CallerKey::Address(IpAddr::from([10, 0, 0, i]));
        for i in 0..10 {
            let _ = limits.check(caller(i));
        }
        // Full, and nobody's bucket has refilled: a new caller shares the overflow bucket.
        let _ = limits.check(caller(10));
        assert_eq!(limits.tracked_callers(), 10);
        // Once every bucket is full again (governor waits one refill more to be sure), the next
        // sweep forgets them all.
        clock.advance(Duration::from_secs(2));
        let _ = limits.check(caller(11));
        assert_eq!(limits.tracked_callers(), 1);
    }

    #[test]
    fn a_manual_clock_refills_only_when_advanced() {
        let clock = RateClock::manual();
        let limits = CallerLimits::new(60, 10, TrustedProxies::none(), clock.clone());
        let key = || CallerKey::Owner(Arc::from("alice"));
        for _ in 0..60 {
            assert!(matches!(limits.check(key()), Decision::Allowed { .. }));
        }
        let Decision::Limited { retry_after } = limits.check(key()) else {
            panic!("the 61st request in a frozen minute is limited");
        };
        assert_eq!(retry_after, Duration::from_secs(1));
        clock.advance(retry_after);
        assert!(matches!(
            limits.check(key()),
            Decision::Allowed { remaining: 0, .. }
        ));
    }
}
