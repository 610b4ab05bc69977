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

use crate::error::{ApiError, ErrorBody, FieldError};
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
    let instance = context.uri.path().to_owned();
    let method = context.method;
    let problem_json = context.problem_json;
    let (mut parts, _discarded_body) = response.into_parts();
    let error = parts
        .extensions
        .remove::<ApiError>()
        .unwrap_or_else(|| ApiError::from_status(parts.status));
    report(&error, &trace_id, &method, &instance);

    let body = error.body(&trace_id);
    let (content_type, bytes) = if problem_json {
        (
            negotiate::PROBLEM_JSON,
            to_json(&ProblemDetails::new(body, instance)),
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
        tracing::debug!(trace_id, status, %method, path, message = error.message(), "request rejected");
    }
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    // infallible in practice: these types hold only strings and numbers. The fallback keeps
    // the promise of a JSON body even so.
    serde_json::to_vec(value)
        .unwrap_or_else(|_| br#"{"status":500,"error":"InternalServerError"}"#.to_vec())
}

/// RFC 9457 problem details, with this service's `error`, `traceId` and `details` as extension
/// members.
#[derive(Serialize)]
struct ProblemDetails {
    r#type: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    instance: String,
    error: String,
    #[serde(rename = "traceId")]
    trace_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Vec<FieldError>>,
}

impl ProblemDetails {
    fn new(body: ErrorBody, instance: String) -> Self {
        let title = axum::http::StatusCode::from_u16(body.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        Self {
            r#type: "about:blank",
            title,
            status: body.status,
            detail: body.message,
            instance,
            error: body.error,
            trace_id: body.trace_id,
            details: body.details,
        }
    }
}
