//! The orders store: what every implementation promises. Shaped after what Azure Table Storage
//! can do: orders are partitioned by owner, every write returns a new opaque ETag, conditional
//! writes fail rather than lose an update, and listings page with opaque continuation tokens.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::StoreError;
use crate::domain::{Order, OrderId, OrderStatus};

/// What to list.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub status: Option<OrderStatus>,
    pub top: usize,
    pub continuation: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Page {
    pub orders: Vec<Order>,
    /// Present when more orders may follow.
    pub continuation: Option<String>,
}

/// The state of an idempotency key after trying to claim it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and is now held by the caller, who must complete or release it.
    Claimed,
    /// Another request with this key is still being processed.
    InProgress { fingerprint: String },
    /// A request with this key already finished; its response is kept.
    Completed {
        fingerprint: String,
        response: StoredResponse,
    },
    /// The key is new, and the owner already holds `limit` keys from the retention period; one
    /// of them is forgotten after `retry_after` at the latest.
    LimitReached {
        limit: usize,
        retry_after: time::Duration,
    },
}

/// The first response given for an idempotency key, replayed to retries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub order: Order,
}

/// How long an idempotency key is remembered, and how long a claim may stay in progress before
/// it is treated as abandoned (its request died before finishing).
pub const IDEMPOTENCY_RETENTION: time::Duration = time::Duration::hours(24);
pub const IDEMPOTENCY_CLAIM_TIMEOUT: time::Duration = time::Duration::minutes(2);

#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Stores a new order and returns it with its ETag.
    async fn insert(&self, order: &Order) -> Result<Order, StoreError>;

    async fn get(&self, owner: &str, id: &OrderId) -> Result<Option<Order>, StoreError>;

    /// Replaces the order if its current ETag is `if_match`; returns it with its new ETag.
    async fn replace(&self, order: &Order, if_match: &str) -> Result<Order, StoreError>;

    /// Deletes the order, only if its ETag is `if_match` when one is given.
    async fn delete(
        &self,
        owner: &str,
        id: &OrderId,
        if_match: Option<&str>,
    ) -> Result<(), StoreError>;

    /// The owner's orders in id order (creation order), one page at a time.
    async fn list(&self, owner: &str, query: &ListQuery) -> Result<Page, StoreError>;

    /// Atomically claims `key` for `owner`, or reports who holds it. Finding a key is O(1),
    /// and an owner holds at most a configured number of keys at a time: a new key beyond that
    /// is [`Claim::LimitReached`], while the keys it holds keep answering.
    async fn claim_idempotency_key(
        &self,
        owner: &str,
        key: &str,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Claim, StoreError>;

    /// Records the response for a claimed key.
    async fn complete_idempotency_key(
        &self,
        owner: &str,
        key: &str,
        fingerprint: &str,
        response: &StoredResponse,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Frees a claimed key whose request failed, so a retry can run again.
    async fn release_idempotency_key(&self, owner: &str, key: &str) -> Result<(), StoreError>;

    /// Whether the store is usable now.
    async fn health(&self) -> Result<(), StoreError>;
}
