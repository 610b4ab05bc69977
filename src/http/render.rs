//! The one renderer: every response with status 400 or above leaves through here.
//!
//! A response built from an [`ApiError`] carries it in its extensions; any other error response
//! (the router's 404/405, a timeout layer's 504, a panic's 500) is given the generic error for its
//! status, keeping its headers (`Allow`, `Retry-After`, `WWW-Authenticate`, ...). The body is the
//! service's JSON shape, or RFC 9457 problem details when the client prefers them.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Serialize;

use crate::error::{ApiError, ProblemDetails};
use crate::http::context::{RequestContext, RequestTraceId};
use crate::http::negotiate;

/// Marks an error-status response whose JSON body is its documented representation (health's
/// 503 lists the failing checks), so the renderer leaves it as it is.
#[derive(Debug, Clone, Copy)]
pub struct OwnBody;

/// What rendering an error for a request needs to know of it, taken before the request is
/// handed on. Cheap: no allocation unless the client sent an `Accept` header.
pub struct ErrorContext {
    trace_id: Option<RequestTraceId>,
    problem_json: bool,
    method: axum::http::Method,
    uri: axum::http::Uri,
}

impl ErrorContext {
    pub fn capture(req: &Request) -> Self {
        Self {
            trace_id: req.extensions().get::<RequestContext>().map(|c| c.trace_id),
            problem_json: negotiate::prefers_problem_json(req.headers()),
            method: req.method().clone(),
            uri: req.uri().clone(),
        }
    }
}

/// Gives an error response (status 400 or more) the service's body; other responses pass.
pub fn render(response: Response, context: ErrorContext) -> Response {
    if response.status().as_u16() < 400 || response.extensions().get::<OwnBody>().is_some() {
        return response;
    }
    let trace_id = context
        .trace_id
        .map(|id| id.to_string())
        .unwrap_or_default();
    let path = context.uri.path();
    let method = context.method;
    let problem_json = context.problem_json;
    let (mut parts, _discarded_body) = response.into_parts();
    let error = parts
        .extensions
        .remove::<ApiError>()
        .unwrap_or_else(|| ApiError::from_status(parts.status));
    report(&error, &trace_id, &method, path);

    let body = error.body(&trace_id);
    let (content_type, bytes) = if problem_json {
        (
            negotiate::PROBLEM_JSON,
            // Cut like every quoted path: the body never grows with the request.
            to_json(&ProblemDetails::new(body, path)),
        )
    } else {
        (negotiate::JSON, to_json(&body))
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Error bodies describe one request; no cache should keep them.
    parts
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    parts.extensions.insert(error);
    Response::from_parts(parts, Body::from(bytes))
}

/// Server errors are logged with their hidden detail under the trace id the client was given;
/// client errors are routine and logged quietly. A 500's detail is also Exception telemetry on
/// the request (this runs inside the request span).
fn report(error: &ApiError, trace_id: &str, method: &axum::http::Method, path: &str) {
    let status = error.status().as_u16();
    if error.status() == axum::http::StatusCode::INTERNAL_SERVER_ERROR {
        crate::telemetry::record_exception(error.internal_detail().unwrap_or(error.message()));
        tracing::error!(
            trace_id,
            status,
            %method,
            path,
            detail = error.internal_detail().unwrap_or(error.message()),
            "request failed"
        );
    } else if error.status().is_server_error() {
        tracing::warn!(
            trace_id,
            status,
            %method,
            path,
            detail = error.internal_detail().unwrap_or(error.message()),
            "request failed"
        );
    } else {
        // `reason`, not `message`: that is the event's own ("request rejected").
        tracing::debug!(trace_id, status, %method, path, reason = error.message(), "request rejected");
    }
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    // infallible in practice: these types hold only strings and numbers. The fallback keeps
    // the promise of a JSON body even so.
    serde_json::to_vec(value)
        .unwrap_or_else(|_| br#"{"status":500,"error":"InternalServerError"}"#.to_vec())
}
