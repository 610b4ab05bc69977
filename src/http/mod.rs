//! HTTP middleware. The stack, outermost first:
//!
//! 0. [`crate::telemetry::request::trace_requests`]: the request span (Request telemetry), which
//!    also decides the request's trace id.
//! 1. [`context::attach`]: trace id and `x-request-id` for every request.
//! 2. [`render::render_errors`]: the one error renderer; everything below may return bare
//!    error statuses and they still leave with the JSON body.
//! 3. [`reject_unknown_methods`]: 501 for methods HTTP does not define, before routing turns
//!    them into 405.
//! 4. Panic catching: a panic becomes a 500 and the process keeps serving.
//! 5. The request deadline: 504 once `ORDERS_REQUEST_TIMEOUT_MS` has passed.
//! 6. [`json::BodyPolicy`] for the extractors that read bodies (413, 408).

pub mod context;
pub mod conditional;
pub mod json;
pub mod negotiate;
pub mod panic;
pub mod query;
pub mod render;

use axum::Router;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

use crate::config::Config;
use crate::error::ApiError;

pub fn apply_stack(router: Router, config: &Config) -> Router {
    panic::install_hook();
    // `Router::layer` wraps every route and the fallback; the last layer added is outermost.
    router
        .layer(axum::Extension(json::BodyPolicy {
            max_bytes: config.max_body_bytes,
            timeout: config.body_timeout,
        }))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            config.request_timeout,
        ))
        .layer(CatchPanicLayer::custom(panic::to_response))
        .layer(middleware::from_fn(reject_unknown_methods))
        .layer(middleware::from_fn(render::render_errors))
        .layer(middleware::from_fn(context::attach))
        .layer(middleware::from_fn(crate::telemetry::request::trace_requests))
}

/// 501 for a method that is not one of HTTP's own (`PURGE`, `BREW`): the service does not
/// recognise it anywhere. Known methods on a route that does not offer them get 405.
async fn reject_unknown_methods(req: Request, next: Next) -> Response {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::TRACE,
        Method::CONNECT,
    ];
    if KNOWN.contains(req.method()) {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("The method '{}' is not supported by this service.", req.method()),
        )
        .into_response()
    }
}
