//! Orders in memory. Each write gets a fresh ETag; all checks happen under one lock, so
//! conditional writes are atomic. Idempotency keys live beside them ([`super::keys`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;

use super::keys::KeyTable;
use crate::config::storage::DEFAULT_IDEMPOTENCY_KEYS_PER_OWNER;
use crate::domain::{Order, OrderId};
use crate::store::{Claim, ListQuery, OrderStore, Page, StoreError, StoredResponse};

pub struct MemoryOrderStore {
    state: Mutex<State>,
    next_version: AtomicU64,
    /// Differs per store, so ETags from one run never match another run's orders.
    epoch: u64,
}

struct State {
    orders: HashMap<String, BTreeMap<OrderId, Order>>,
    keys: KeyTable,
}

impl Default for MemoryOrderStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryOrderStore {
    pub fn new() -> Self {
        Self::with_key_limit(DEFAULT_IDEMPOTENCY_KEYS_PER_OWNER)
    }

    /// A store where each owner holds at most `limit` idempotency keys at a time.
    pub fn with_key_limit(limit: usize) -> Self {
        Self {
            state: Mutex::new(State {
                orders: HashMap::new(),
                keys: KeyTable::new(limit),
            }),
            next_version: AtomicU64::new(0),
            epoch: rand::random(),
        }
    }

    /// Idempotency keys `owner` holds now, for tests of the bound.
    pub fn idempotency_keys(&self, owner: &str) -> usize {
        self.lock().keys.held(owner)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave an order half-written (every mutation is
        // one map operation), so the data stays usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn new_etag(&self) -> String {
        let version = self.next_version.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}{version:08x}", self.epoch)
    }

    /// Number of orders held, for tests that check a rejected request changed nothing.
    pub fn len(&self) -> usize {
        self.lock().orders.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl OrderStore for MemoryOrderStore {
    async fn insert(&self, order: &Order) -> Result<Order, StoreError> {
        let mut stored = order.clone();
        stored.etag = self.new_etag();
        let mut state = self.lock();
        let orders = state.orders.entry(order.owner.clone()).or_default();
        if orders.contains_key(&order.id) {
            return Err(StoreError::AlreadyExists);
        }
        orders.insert(order.id.clone(), stored.clone());
        Ok(stored)
    }

    async fn get(&self, owner: &str, id: &OrderId) -> Result<Option<Order>, StoreError> {
        Ok(self
            .lock()
            .orders
            .get(owner)
            .and_then(|orders| orders.get(id))
            .cloned())
    }

    async fn replace(&self, order: &Order, if_match: &str) -> Result<Order, StoreError> {
        let etag = self.new_etag();
        let mut state = self.lock();
        let current = state
            .orders
            .get_mut(&order.owner)
            .and_then(|orders| orders.get_mut(&order.id))
            .ok_or(StoreError::NotFound)?;
        if current.etag != if_match {
            return Err(StoreError::EtagMismatch);
        }
        *current = Order {
            etag,
            ..order.clone()
        };
        Ok(current.clone())
    }

    async fn delete(
        &self,
        owner: &str,
        id: &OrderId,
        if_match: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut state = self.lock();
        let orders = state.orders.get_mut(owner).ok_or(StoreError::NotFound)?;
        let current = orders.get(id).ok_or(StoreError::NotFound)?;
        if if_match.is_some_and(|etag| etag != current.etag) {
            return Err(StoreError::EtagMismatch);
        }
        orders.remove(id);
        Ok(())
    }

    async fn list(&self, owner: &str, query: &ListQuery) -> Result<Page, StoreError> {
        let after = match &query.continuation {
            Some(token) => Some(decode_continuation(token)?),
            None => None,
        };
        let state = self.lock();
        let Some(orders) = state.orders.get(owner) else {
            return Ok(Page {
                orders: Vec::new(),
                continuation: None,
            });
        };
        let range = match &after {
            Some(id) => orders
                .range::<OrderId, _>((std::ops::Bound::Excluded(id), std::ops::Bound::Unbounded)),
            None => orders.range::<OrderId, _>(..),
        };
        let mut matching = range
            .map(|(_, order)| order)
            .filter(|order| query.status.is_none_or(|s| order.status == s));
        let page: Vec<Order> = matching.by_ref().take(query.top).cloned().collect();
        let more = matching.next().is_some();
        let continuation = match (more, page.last()) {
            (true, Some(last)) => Some(URL_SAFE_NO_PAD.encode(last.id.as_str())),
            _ => None,
        };
        Ok(Page {
            orders: page,
            continuation,
        })
    }

    async fn claim_idempotency_key(
        &self,
        owner: &str,
        key: &str,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Claim, StoreError> {
        Ok(self.lock().keys.claim(owner, key, fingerprint, now))
    }

    async fn complete_idempotency_key(
        &self,
        owner: &str,
        key: &str,
        fingerprint: &str,
        response: &StoredResponse,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.lock()
            .keys
            .complete(owner, key, fingerprint, response, now);
        Ok(())
    }

    async fn release_idempotency_key(&self, owner: &str, key: &str) -> Result<(), StoreError> {
        self.lock().keys.release(owner, key);
        Ok(())
    }

    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn decode_continuation(token: &str) -> Result<OrderId, StoreError> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|id| OrderId::parse(&id))
        .ok_or(StoreError::BadContinuation)
}
