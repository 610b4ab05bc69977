//! The request span: one per HTTP request (and per invocation-payload call from the Functions
//! host), exported as Request telemetry named `METHOD /route/{template}`.
//!
//! The span is also where the request's trace id is decided: the [`RequestContext`] inserted
//! here carries the exported operation id, so the `traceId` in error bodies, the logs and
//! Application Insights agree. With a valid incoming `traceparent` that is the caller's trace
//! id (APIM's operation id carries through); without one it is a new one.
//!
//! Telemetry decides each request before it starts (`crate::telemetry::decide`): exported, it
//! gets its span in the tracing pipeline; held (not sampled), it is recorded cheaply and
//! exported only if it fails; without telemetry, it has a span for local debug logs only.

use std::future::Future;

use futures_util::FutureExt;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, header};
use axum::response::Response;
use opentelemetry::KeyValue;
use opentelemetry::trace::{
    SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::context::RequestContext;
use crate::telemetry::Decision;

static INVOCATION_ID: HeaderName = HeaderName::from_static("x-azure-functions-invocationid");
static FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Request telemetry name for paths no route matched, by the Functions catch-all's template.
const UNKNOWN_API_ROUTE: &str = "/api/{*path}";
const UNKNOWN_ROUTE: &str = "/{*path}";

/// Middleware, outermost: decides the request's trace id and its telemetry, opens its span,
/// and records the outcome; `next` is the rest of the stack. It runs after routing
/// (`Router::layer`), so the matched route is known.
pub async fn trace_requests<F: Future<Output = Response>>(
    mut req: Request,
    next: impl FnOnce(Request) -> F,
) -> Response {
    // The Functions host polls `GET /` every 25 ms while it starts the handler, and now and then
    // after: a request record per poll would be noise (and cost) in Application Insights.
    if req.uri().path() == "/" && req.method() == axum::http::Method::GET {
        return next(req).await;
    }
    let route = Route::of(&req);
    let context = RequestContext::from_headers(req.headers());
    let parent = remote_parent(&context);
    match crate::telemetry::decide(context.trace_id.value(), parent.as_ref()) {
        Some(Decision::Export { one_in }) => {
            exported(req, context, parent, route.as_str(), one_in, next).await
        }
        Some(Decision::Hold) => held(req, context, parent, route, next).await,
        None => {
            let span = local_span(&req, route.as_str());
            req.extensions_mut().insert(context);
            let request = crate::telemetry::RequestSpan::new(span);
            crate::telemetry::in_request_span(request, next(req))
                .await
                .0
        }
    }
}

/// The request around local log lines, at debug level only; nothing exports it.
fn local_span(req: &Request, route: &str) -> tracing::Span {
    tracing::debug_span!(
        "request",
        http.request.method = req.method().as_str(),
        http.route = route,
    )
}

/// A request exported whatever its outcome: its span goes through the tracing pipeline.
async fn exported<F: Future<Output = Response>>(
    mut req: Request,
    mut context: RequestContext,
    parent: Option<SpanContext>,
    route: &str,
    one_in: u32,
    next: impl FnOnce(Request) -> F,
) -> Response {
    // At debug level for the logs: exported whatever RUST_LOG says (the telemetry layer takes
    // every span that declares `otel.kind`), and shown around local log lines at debug only.
    let span = tracing::debug_span!(
        "request",
        otel.kind = "server",
        http.request.method = req.method().as_str(),
        http.route = route,
        enduser.id = tracing::field::Empty,
    );
    if let Some(parent) = parent {
        // Err only when nothing exports spans.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
    }
    // The span starts with the trace id it was decided on.
    let exported = crate::telemetry::start_exported(context.trace_id.value(), one_in, || {
        span.context().span().span_context().clone()
    });
    if exported.is_valid() {
        context.trace_id = super::context::RequestTraceId::from_u128(u128::from_be_bytes(
            exported.trace_id().to_bytes(),
        ));
        for attribute in request_attributes(req.uri(), req.headers()) {
            span.set_attribute(attribute.key, attribute.value);
        }
    }
    req.extensions_mut().insert(context);

    let request = crate::telemetry::RequestSpan::new(span);
    let (response, recorded) = crate::telemetry::in_request_span(request, next(req)).await;

    if exported.is_valid() {
        let status = response.status();
        recorded
            .span
            .set_attribute("http.response.status_code", i64::from(status.as_u16()));
        // 4xx are the client's mistakes: only 5xx fail a request. Setting Ok also overrides
        // the error status an error-level log line inside a 4xx request would leave.
        recorded.span.set_status(if status.is_server_error() {
            Status::error("")
        } else {
            Status::Ok
        });
    }
    response
}

/// A request exported only if it fails: recorded cheaply, outside the tracing pipeline, with
/// what its attributes need kept (shared, not copied) until then. A future built from the
/// request's own rather than an `async fn`, which would copy it once more.
fn held<F: Future<Output = Response>>(
    mut req: Request,
    context: RequestContext,
    parent: Option<SpanContext>,
    route: Route,
    next: impl FnOnce(Request) -> F,
) -> impl Future<Output = Response> {
    let record = crate::telemetry::Held::new(context.trace_id.value(), parent.map(|p| p.span_id()));
    let deferred = Deferred::capture(&req, route);
    let request =
        crate::telemetry::RequestSpan::held(local_span(&req, deferred.route.as_str()), record);
    req.extensions_mut().insert(context);
    crate::telemetry::in_request_span(request, next(req)).map(move |(response, recorded)| {
        recorded.settle(response.status().as_u16(), || deferred.attributes());
        response
    })
}

/// The attributes of Request telemetry that come from the request itself.
fn request_attributes(uri: &axum::http::Uri, headers: &HeaderMap) -> Vec<KeyValue> {
    let mut attributes = vec![KeyValue::new("url.full", request_url(uri, headers))];
    if let Some(invocation) = printable(headers, &INVOCATION_ID) {
        attributes.push(KeyValue::new("InvocationId", invocation.to_owned()));
    }
    attributes
}

/// The parts of a request that [`request_attributes`] reads, kept without copying (a URI and
/// header values share the request's bytes) until the request turns out to be exported.
struct Deferred {
    method: axum::http::Method,
    route: Route,
    uri: axum::http::Uri,
    headers: [(&'static HeaderName, Option<axum::http::HeaderValue>); 3],
}

impl Deferred {
    fn capture(req: &Request, route: Route) -> Self {
        let mut headers = [
            (&header::HOST, None),
            (&FORWARDED_PROTO, None),
            (&INVOCATION_ID, None),
        ];
        // One pass over the headers rather than a lookup (a hash of the name) for each.
        for (name, value) in req.headers() {
            if let Some((_, kept)) = headers.iter_mut().find(|(wanted, _)| *wanted == name) {
                kept.get_or_insert_with(|| value.clone());
            }
        }
        Self {
            method: req.method().clone(),
            route,
            uri: req.uri().clone(),
            headers,
        }
    }

    /// The attributes the exported request span has.
    fn attributes(self) -> Vec<KeyValue> {
        let mut attributes = vec![
            KeyValue::new("http.request.method", self.method.as_str().to_owned()),
            KeyValue::new("http.route", self.route.as_str().to_owned()),
        ];
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (name, value) in self.headers {
            if let Some(value) = value {
                headers.insert(name.clone(), value);
            }
        }
        attributes.extend(request_attributes(&self.uri, &headers));
        attributes
    }
}

/// The route template a request is named by: the one it matched, or the catch-all's.
#[derive(Clone)]
enum Route {
    Matched(MatchedPath),
    Unmatched(&'static str),
}

impl Route {
    fn of(req: &Request) -> Self {
        match req.extensions().get::<MatchedPath>() {
            Some(path) => Self::Matched(path.clone()),
            None if req.uri().path() == "/api" || req.uri().path().starts_with("/api/") => {
                Self::Unmatched(UNKNOWN_API_ROUTE)
            }
            None => Self::Unmatched(UNKNOWN_ROUTE),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Self::Matched(path) => path.as_str(),
            Self::Unmatched(template) => template,
        }
    }
}

/// The caller's span from `traceparent`, as the remote parent of the request span. Its `sampled`
/// flag carries through: the sampler honours the caller's decision.
fn remote_parent(context: &RequestContext) -> Option<SpanContext> {
    let span_id = SpanId::from(context.parent_span_id?);
    let trace_id = TraceId::from(context.trace_id.value());
    let flags = if context.parent_sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    Some(SpanContext::new(
        trace_id,
        span_id,
        flags,
        true,
        TraceState::default(),
    ))
}

/// The URL the client asked for, as exported: the scheme as forwarded, the host the request was
/// sent to (`Host`; never `X-Forwarded-Host`, which any client can write), the path, and the
/// query by allow-list ([`redact_query`]).
fn request_url(uri: &axum::http::Uri, headers: &HeaderMap) -> String {
    let scheme = match printable(headers, &FORWARDED_PROTO).and_then(first_value) {
        Some("https") => "https",
        _ => "http",
    };
    let host = printable(headers, &header::HOST)
        .filter(|host| is_host(host))
        .unwrap_or("localhost");
    let mut url = format!("{scheme}://{host}{}", uri.path());
    if let Some(query) = uri.query() {
        url.push('?');
        url.push_str(&redact_query(query));
    }
    url
}

/// A host name or address with an optional port: nothing else belongs in a URL's authority.
fn is_host(value: &str) -> bool {
    value.len() <= 255
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

fn first_value(value: &str) -> Option<&str> {
    value
        .split(',')
        .next()
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// A header value that is short printable ASCII (spaces allowed, as in lists), so nothing odd
/// reaches telemetry.
fn printable<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| {
        !v.is_empty() && v.len() <= 256 && v.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    })
}

type ValueShape = fn(&str) -> bool;

/// Query parameters the API defines whose values are worth seeing, and what such a value looks
/// like. A value of another shape is not what the parameter means and may be anything.
const SHOWN: [(&str, ValueShape); 3] = [
    ("status", |v| {
        (1..=16).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphabetic())
    }),
    ("top", |v| {
        (1..=4).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit())
    }),
    ("ms", |v| {
        (1..=7).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_digit())
    }),
];

/// Parameters shown by name only: the Functions key, and continuation tokens (opaque, and they
/// name the owner's partition).
const NAMED: [&str; 2] = ["code", "continuationToken"];

/// The query by allow-list: parameters in [`SHOWN`] with a value of their shape as they are
/// (decoded), those in [`NAMED`] as `name=REDACTED`, and everything else, name included (a
/// name can be a secret too), as `REDACTED`. Names are percent-decoded before they are matched,
/// so `to%6Ben` is `token`, not an unknown name let through.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let Some((name, value)) = form_urlencoded::parse(pair.as_bytes()).next() else {
                return "REDACTED".to_owned();
            };
            let shown = SHOWN
                .iter()
                .any(|(known, shape)| *known == name && shape(&value));
            if shown {
                format!("{name}={value}")
            } else if NAMED.contains(&name.as_ref()) {
                format!("{name}=REDACTED")
            } else {
                "REDACTED".to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_exported_by_allow_list() {
        assert_eq!(
            redact_query("code=abc%3D%3D&status=paid&top=5&continuationToken=xyz&sig=s&flag"),
            "code=REDACTED&status=paid&top=5&continuationToken=REDACTED&REDACTED&REDACTED"
        );
        // Whatever the name, an unknown parameter shows neither name nor value.
        assert_eq!(
            redact_query("pwd=1&jwt=2&sas=3&bearer=4&passwd=5&session=6&to%6Ben=7"),
            "REDACTED&REDACTED&REDACTED&REDACTED&REDACTED&REDACTED&REDACTED"
        );
        // Names are decoded before matching; a known name with an odd value is redacted too.
        assert_eq!(
            redact_query("st%61tus=paid&status=eyJhbGciOi.x.y&top=5%200&ms=10&co%64e=k"),
            "status=paid&REDACTED&REDACTED&ms=10&code=REDACTED"
        );
    }

    #[test]
    fn urls_use_forwarded_scheme_and_the_requests_own_host() {
        let req = Request::builder()
            .uri("/api/orders?code=k&top=2")
            .header("host", "orders.example.net")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "phish.example, proxy")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(
            request_url(req.uri(), req.headers()),
            "https://orders.example.net/api/orders?code=REDACTED&top=2"
        );
        let odd_host = Request::builder()
            .uri("/api/health")
            .header("host", "evil.example/path?x=")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(
            request_url(odd_host.uri(), odd_host.headers()),
            "http://localhost/api/health"
        );
    }

    #[test]
    fn parent_comes_from_traceparent() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
                .parse()
                .unwrap(),
        );
        let parent = remote_parent(&RequestContext::from_headers(&headers)).unwrap();
        assert_eq!(
            parent.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
        assert!(parent.is_remote());
        assert!(!parent.is_sampled(), "flags 00: the caller does not record");
        assert!(remote_parent(&RequestContext::from_headers(&HeaderMap::new())).is_none());
    }
}
