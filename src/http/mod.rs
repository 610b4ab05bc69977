//! HTTP middleware. The stack, outermost first:
//!
//! 0. [`crate::telemetry::request::trace_requests`]: the request span (Request telemetry), which
//!    also decides the request's trace id.
//! 1. [`context::attach`]: trace id and `x-request-id` for every request.
//! 2. [`render::render_errors`]: the one error renderer; everything below may return bare
//!    error statuses and they still leave with the JSON body.
//! 3. [`reject_unknown_methods`]: 501 for methods HTTP does not define, before routing turns
//!    them into 405.
//! 4. [`crate::auth::identify`]: authenticates a bearer token once, before any body is read;
//!    handlers see the outcome through the `Caller` extractor.
//! 5. [`rate_limit::limit`]: 429 per caller (owner, else client address).
//! 6. [`shed::shed`]: 503 beyond the concurrency limit, except for `/` and `/api/health`.
//! 7. Panic catching: a panic becomes a 500 and the process keeps serving.
//! 8. The request deadline: 504 once `ORDERS_REQUEST_TIMEOUT_MS` has passed.
//! 9. [`json::BodyPolicy`] for the extractors that read bodies (413, 408).

pub mod conditional;
pub mod context;
pub mod json;
pub mod negotiate;
pub mod panic;
pub mod query;
pub mod rate_limit;
pub mod render;
pub mod shed;

use axum::Router;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

use crate::config::Config;
use crate::error::ApiError;

pub fn apply_stack(
    router: Router,
    config: &Config,
    auth: crate::auth::Auth,
    limits: rate_limit::CallerLimits,
) -> Router {
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
        .layer(middleware::from_fn_with_state(
            shed::Shedder::new(config.max_concurrency),
            shed::shed,
        ))
        .layer(middleware::from_fn_with_state(limits, rate_limit::limit))
        .layer(middleware::from_fn_with_state(auth, crate::auth::identify))
        .layer(middleware::from_fn(reject_unknown_methods))
        .layer(middleware::from_fn(render::render_errors))
        .layer(middleware::from_fn(context::attach))
        .layer(middleware::from_fn(
            crate::telemetry::request::trace_requests,
        ))
}

/// Request headers beyond this size get 431 (rendered like every error). hyper's own, larger
/// buffer limit (see `app::serve`) only catches what is too big to parse at all.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

fn header_bytes(req: &Request) -> usize {
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// 431 for oversized headers, and 501 for a method that is not one of HTTP's own (`PURGE`, `BREW`): the service does not
/// recognise it anywhere. Known methods on a route that does not offer them get 405.
async fn reject_unknown_methods(req: Request, next: Next) -> Response {
    if header_bytes(&req) > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("The request headers exceed {MAX_HEADER_BYTES} bytes."),
        )
        .into_response();
    }
    // QUERY (the safe method with a body, IETF httpbis) is known: the routes just don't offer it.
    let query = Method::from_bytes(b"QUERY").ok();
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
    if KNOWN.contains(req.method()) || query.as_ref() == Some(req.method()) {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "The method '{}' is not supported by this service.",
                req.method()
            ),
        )
        .into_response()
    }
}
