//! Load shedding: beyond `ORDERS_MAX_CONCURRENCY` in-flight requests, new ones get 503 with
//! `Retry-After` at once instead of queueing behind work that is already late. The readiness
//! probe and health stay answerable, so the platform does not take an overloaded instance for a
//! dead one.
//!
//! A semaphore in a middleware rather than tower's `ConcurrencyLimit` + `LoadShed`: those apply
//! to everything below them, and these two routes must be exempt.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

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
}

fn is_exempt(path: &str) -> bool {
    path == "/" || path == "/api/health"
}

pub async fn shed(State(shedder): State<Shedder>, req: Request, next: Next) -> Response {
    if is_exempt(req.uri().path()) {
        return next.run(req).await;
    }
    match Arc::clone(&shedder.permits).try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => ApiError::unavailable("The service is at capacity; retry shortly.", 1)
            .with_internal("load shed: concurrency limit reached")
            .into_response(),
    }
}
