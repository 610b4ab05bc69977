//! The state every handler can reach: settings, stores, the token checker, rate limits and the
//! order-change broadcast. Built once from a [`Config`]; cloned (one reference count) per request.

use std::sync::Arc;

use axum::extract::FromRef;

use crate::auth::Auth;
use crate::config::Config;
use crate::events::{ListenerLimits, OrderEvents};
use crate::http::rate_limit::{CallerLimits, RateClock};
use crate::http::rendered::Rendered;
use crate::store::memory::MemoryOrderStore;
use crate::store::{ExportStores, OrderStore};

/// State every handler can reach. One `Arc`, so that handing it to a handler (which axum does
/// for every request) costs one reference count, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<StateParts>);

impl std::ops::Deref for AppState {
    type Target = StateParts;

    fn deref(&self) -> &StateParts {
        &self.0
    }
}

/// What [`AppState`] holds.
#[derive(Clone)]
pub struct StateParts {
    pub config: Arc<Config>,
    pub store: Arc<dyn OrderStore>,
    /// Checks bearer tokens (see [`crate::auth`]).
    pub auth: Auth,
    /// Per-caller rate limits of this instance.
    pub rate_limits: CallerLimits,
    /// Order changes, for WebSocket subscribers on this instance.
    pub events: OrderEvents,
    /// Export jobs: their store, files and queue.
    pub exports: ExportStores,
    /// Order bodies already serialized, by version.
    pub rendered: Arc<Rendered>,
}

/// Bytes of order bodies kept serialized at most.
const RENDERED_BYTES: usize = 8 * 1024 * 1024;

impl AppState {
    /// The state for `config` over `store`, with export jobs in memory.
    pub fn new(config: Config, store: Arc<dyn OrderStore>) -> Self {
        Self(Arc::new(StateParts {
            auth: Auth::new(&config.auth),
            rate_limits: rate_limits(&config, RateClock::system()),
            events: OrderEvents::new(ListenerLimits {
                total: config.events_max_connections,
                per_owner: config.events_max_connections_per_caller,
            }),
            config: Arc::new(config),
            store,
            exports: ExportStores::in_memory(),
            rendered: Arc::new(Rendered::new(RENDERED_BYTES)),
        }))
    }

    /// The state for `config` with the stores its settings select: Azure Storage when
    /// `AzureWebJobsStorage` is set, else memory. Makes no network call.
    pub fn from_config(config: Config) -> Result<Self, String> {
        let (store, exports) = crate::store::open(&config.storage)?;
        Ok(Self::new(config, store).with_exports(exports))
    }

    /// The same state with its rate limits on `clock` (tests use a manual one).
    pub fn with_rate_clock(mut self, clock: RateClock) -> Self {
        let limits = rate_limits(&self.config, clock);
        Arc::make_mut(&mut self.0).rate_limits = limits;
        self
    }

    pub fn with_exports(mut self, exports: ExportStores) -> Self {
        Arc::make_mut(&mut self.0).exports = exports;
        self
    }

    /// The state for `config`, with the in-memory stores.
    pub fn in_memory(config: Config) -> Self {
        let keys = config.storage.idempotency_keys_per_owner;
        Self::new(config, Arc::new(MemoryOrderStore::with_key_limit(keys)))
    }
}

fn rate_limits(config: &Config, clock: RateClock) -> CallerLimits {
    CallerLimits::new(
        config.rate_limit_per_minute,
        config.rate_limit_max_callers,
        config.trusted_proxies.clone(),
        clock,
    )
}

/// The `Caller`, `Reader` and `Writer` extractors find the token checker here.
impl FromRef<AppState> for Auth {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}
