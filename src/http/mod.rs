//! HTTP middleware. The stack, outermost first:
//!
//! 1. [`trace::trace_requests`]: the request span (Request telemetry), which
//!    also decides the request's trace id.
//! 2. [`frame`]: request id and context, 414/431/501 for what no route could serve, the body
//!    policy for the extractors that read bodies (413, 408), `nosniff` on every response and
//!    `private` on every response to a request with credentials, and on the way out the one
//!    error renderer ([`render`]): everything below may return bare error statuses and they
//!    still leave with the JSON body.
//! 3. [`admit`]: authenticates a bearer token once, before any body is read (handlers see the
//!    outcome through the `Caller` extractor); 429 per caller ([`rate_limit`]); 503 beyond the
//!    concurrency limit ([`shed`]). Only `/api/...` except health goes through it.
//! 4. Panic catching: a panic becomes a 500 and the process keeps serving.
//! 5. The request deadline: 504 once `ORDERS_REQUEST_TIMEOUT_MS` has passed.
//!
//! All five run as one middleware ([`apply_stack`]): each layer of its own would cost every
//! request a few allocations.

pub mod conditional;
pub mod context;
pub mod json;
pub mod negotiate;
pub mod panic;
pub mod query;
pub mod rate_limit;
pub mod render;
pub mod rendered;
pub mod shed;
pub mod strict;
pub mod trace;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;

use crate::config::Config;
use crate::error::ApiError;

pub fn apply_stack(
    router: Router,
    config: &Config,
    auth: crate::auth::Auth,
    limits: rate_limit::CallerLimits,
) -> Router {
    panic::install_hook(config.log_format);
    let stack = Stack(Arc::new(StackParts {
        body_policy: json::BodyPolicy::from(config),
        auth,
        limits,
        shedder: shed::Shedder::new(config.max_concurrency),
        deadline: config.request_timeout,
    }));
    // One middleware for the whole stack. `Router::layer` wraps every route (and the fallback)
    // in each layer as a boxed service, and every request clones the boxes of each level
    // below the one it passes (an allocation each): five layers cost some forty allocations
    // a request, one costs two. It runs after routing, so the matched route is known.
    router.layer(middleware::from_fn_with_state(stack, run_stack))
}

/// What the stack needs. One `Arc`: middleware state is cloned for every request.
#[derive(Clone)]
struct Stack(Arc<StackParts>);

struct StackParts {
    body_policy: json::BodyPolicy,
    auth: crate::auth::Auth,
    limits: rate_limit::CallerLimits,
    shedder: shed::Shedder,
    /// `ORDERS_REQUEST_TIMEOUT_MS`.
    deadline: std::time::Duration,
}

/// The stack, outermost first, as the module documentation lists it.
async fn run_stack(State(stack): State<Stack>, req: Request, next: Next) -> Response {
    let parts = &*stack.0;
    trace::trace_requests(req, |req| {
        frame(parts, req, |req| {
            admit(parts, req, |req| guarded(parts.deadline, req, next))
        })
    })
    .await
}

/// Every request's frame: its request id and context, the checks no route could pass (431, 501),
/// the body policy for extractors, and the one error renderer on the way out.
async fn frame<F: Future<Output = Response>>(
    parts: &StackParts,
    mut req: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let request_id = context::ensure(&mut req, parts.body_policy);
    let errors = render::ErrorContext::capture(&req);
    let credentials = req.headers().contains_key(header::AUTHORIZATION);
    // A client that takes no JSON may still be let through for its errors (see
    // `negotiate::AcceptsJson`); its success, JSON, is then refused here.
    let success_refused = (req.headers().contains_key(header::ACCEPT)
        && !negotiate::accepts(req.headers(), negotiate::JSON))
    .then(|| {
        let refused = negotiate::SuccessRefused::default();
        req.extensions_mut().insert(refused.clone());
        refused
    });
    let mut response = match unserviceable(&req) {
        Some(error) => error.into_response(),
        None => next(req).await,
    };
    if success_refused.is_some_and(|refused| refused.is_set()) && response.status().is_success() {
        response = negotiate::not_acceptable().into_response();
    }
    let mut response = render::render(response, errors);
    let headers = response.headers_mut();
    headers.insert(context::X_REQUEST_ID.clone(), request_id);
    // Every body is what its Content-Type says, never sniffed into something a browser runs.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // What a caller's credentials unlocked is theirs alone: no shared cache keeps it. Routes
    // that say more (error bodies' no-store) keep what they said.
    if credentials && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    }
    response
}

/// Who may come in: authentication (recorded, not enforced: routes decide), the caller's rate
/// limit, and a concurrency permit. Only client routes (`/api/...`) are admitted this way:
/// health must answer under load, and the Functions host's own calls (the readiness probe, the
/// export worker's invocations, all from 127.0.0.1) must never be rate-limited into retries.
async fn admit<F: Future<Output = Response>>(
    parts: &StackParts,
    mut req: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    let path = req.uri().path();
    if !path.starts_with("/api/") || path == "/api/health" {
        return next(req).await;
    }
    crate::auth::identify(&parts.auth, &mut req).await;
    let quota = match parts.limits.admit(&req) {
        Ok(quota) => quota,
        Err(limited) => return limited.into_response(),
    };
    let _permit = match parts.shedder.enter() {
        Ok(permit) => permit,
        Err(shed) => return shed.into_response(),
    };
    let mut response = next(req).await;
    quota.apply(response.headers_mut());
    response
}

/// The handler, with a panic turned into a 500 (the process keeps serving) and the request
/// deadline into a 504; the renderer above gives both the JSON body.
async fn guarded(deadline: std::time::Duration, req: Request, next: Next) -> Response {
    // Unwind safety: a panicking request's state is dropped with it; nothing it shares is
    // left half changed (the stores' locks recover from poisoning).
    let handler = std::panic::AssertUnwindSafe(tokio::time::timeout(deadline, next.run(req)));
    match handler.catch_unwind().await {
        Ok(Ok(response)) => response,
        Ok(Err(_elapsed)) => StatusCode::GATEWAY_TIMEOUT.into_response(),
        Err(payload) => panic::to_response(payload),
    }
}

/// Request headers beyond this size get 431 (rendered like every error). hyper's own, larger
/// buffer limit (see `app::serve`) only catches what is too big to parse at all.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// More header fields than this cannot fit in [`MAX_HEADER_BYTES`] as [`header_bytes`] counts
/// them (a one-letter name and an empty value count 5 bytes), so hyper's count limit (see
/// `app::serve`) set to it never refuses a request this service would have answered.
pub const MAX_HEADER_COUNT: usize = MAX_HEADER_BYTES / 5 + 1;

/// Request targets (path and query) beyond this length get a rendered 414: well below hyper's
/// own limit (64 KiB, answered without a body), and above anything the API needs (the Functions
/// host forwards URLs up to 4 KB).
pub const MAX_TARGET_BYTES: usize = 8 * 1024;

fn header_bytes(req: &Request) -> usize {
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// 414 for an overlong target, 431 for oversized headers, and 501 for a method that is not one
/// of HTTP's own (`PURGE`, `BREW`): the service does not recognise it anywhere. Known methods on a route that does not
/// offer them get 405 from the router.
fn unserviceable(req: &Request) -> Option<ApiError> {
    let target = req.uri().path_and_query().map_or(0, |t| t.as_str().len());
    if target > MAX_TARGET_BYTES {
        return Some(ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("The request target exceeds {MAX_TARGET_BYTES} bytes."),
        ));
    }
    if header_bytes(req) > MAX_HEADER_BYTES {
        return Some(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("The request headers exceed {MAX_HEADER_BYTES} bytes."),
        ));
    }
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
    // QUERY (the safe method with a body, IETF httpbis) is known: the routes just don't offer it.
    let known = KNOWN.contains(req.method()) || req.method().as_str() == "QUERY";
    (!known).then(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "The method '{}' is not supported by this service.",
                req.method()
            ),
        )
    })
}
