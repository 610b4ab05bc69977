//! Load shedding: beyond `ORDERS_MAX_CONCURRENCY` in-flight requests, new ones get 503 with
//! `Retry-After` at once instead of queueing behind work that is already late. The readiness
//! probe and health stay answerable, so the platform does not take an overloaded instance for a
//! dead one.
//!
//! A semaphore taken by the admission middleware (`admit` in [`crate::http`]) rather than
//! tower's `ConcurrencyLimit` + `LoadShed`: those apply to everything below them, and these two
//! routes must be exempt.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

#[derive(Clone)]
pub struct Shedder {
    permits: Arc<Semaphore>,
}

impl Shedder {
    pub fn new(max_concurrency: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrency.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// A permit for one request, or 503 when all are taken. The permit is held until the
    /// response is ready.
    pub fn enter(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.permits).try_acquire_owned().map_err(|_| {
            ApiError::unavailable("The service is at capacity; retry shortly.", 1)
                .with_internal("load shed: concurrency limit reached")
        })
    }
}
