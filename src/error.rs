//! The one error type of the service.
//!
//! Handlers, extractors and middleware return [`ApiError`]. Turning it into a response does not
//! render a body: the error travels in the response extensions to the renderer middleware
//! ([`crate::http::render`]), which also catches every non-2xx response that did not come from an
//! `ApiError` (unknown routes, wrong methods, timeouts, panics) and gives all of them the same
//! JSON shape with the request's trace id.
//!
//! Use the small constructors (`ApiError::not_found(..)`, `ApiError::bad_request(..)`, ...).
//! Anything unexpected becomes [`ApiError::internal`]: the client sees a generic 500 and the
//! detail goes to the logs and telemetry under the same trace id.

use std::borrow::Cow;
use std::fmt;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Longest `message` (and field-level message) a body carries; longer text, which can quote the
/// client's input, is cut.
pub const MAX_MESSAGE_CHARS: usize = 512;
/// Longest `field` path in `details`.
pub const MAX_FIELD_CHARS: usize = 256;
/// Most field-level problems one body lists.
pub const MAX_DETAILS: usize = 100;

/// One problem with one field of the request, as listed in `details`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Where the problem is: a JSON path such as `items[0].quantity`, or a query parameter name.
    #[schema(max_length = 256, example = "items[0].quantity")]
    pub field: String,
    /// What is wrong with it, for humans.
    #[schema(max_length = 512, example = "must be between 1 and 10000")]
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The error body every non-2xx response carries (`application/json`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": 404, "error": "NotFound", "message": "Order 'o_123' was not found.", "traceId": "4bf92f3577b34da6a3ce929d0e0e4736"}))]
pub struct ErrorBody {
    /// Equals the HTTP status code.
    #[schema(minimum = 400, maximum = 599, format = Int32)]
    pub status: u16,
    /// The reason phrase in PascalCase, e.g. `NotFound`.
    #[schema(max_length = 64, pattern = "^[A-Za-z]{1,64}$")]
    pub error: String,
    /// What went wrong, for humans.
    #[schema(max_length = 512)]
    pub message: String,
    /// W3C trace id of the request (the Application Insights operation id).
    #[serde(rename = "traceId")]
    #[schema(min_length = 32, max_length = 32, pattern = "^[0-9a-f]{32}$")]
    pub trace_id: String,
    /// Field-level problems, present on validation errors only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, max_items = 100)]
    pub details: Option<Vec<FieldError>>,
}

/// The same error as RFC 9457 problem details (`application/problem+json`), for clients that
/// prefer it: the RFC's members plus every member of [`ErrorBody`] (`detail` repeats
/// `message`), so a client can read either media type with one model.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"type": "about:blank", "title": "Not Found", "status": 404, "detail": "Order 'o_123' was not found.", "instance": "/api/orders/o_123", "error": "NotFound", "message": "Order 'o_123' was not found.", "traceId": "4bf92f3577b34da6a3ce929d0e0e4736"}))]
pub struct ProblemDetails {
    /// Always `about:blank`: the status and `error` say what kind of problem it is.
    #[serde(rename = "type")]
    #[schema(max_length = 64, format = "uri", example = "about:blank")]
    pub problem_type: &'static str,
    /// The status's reason phrase.
    #[schema(max_length = 64)]
    pub title: &'static str,
    #[schema(minimum = 400, maximum = 599, format = Int32)]
    pub status: u16,
    /// What went wrong, for humans (equals `message`).
    #[schema(max_length = 512)]
    pub detail: String,
    /// The path of the request (its first 64 characters).
    #[schema(max_length = 64, format = "uri-reference")]
    pub instance: String,
    #[schema(max_length = 64, pattern = "^[A-Za-z]{1,64}$")]
    pub error: String,
    #[schema(max_length = 512)]
    pub message: String,
    #[serde(rename = "traceId")]
    #[schema(min_length = 32, max_length = 32, pattern = "^[0-9a-f]{32}$")]
    pub trace_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, max_items = 100)]
    pub details: Option<Vec<FieldError>>,
}

impl ProblemDetails {
    pub fn new(body: ErrorBody, instance: &str) -> Self {
        let title = StatusCode::from_u16(body.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        Self {
            problem_type: "about:blank",
            title,
            status: body.status,
            detail: body.message.clone(),
            instance: quoted(instance),
            error: body.error,
            message: body.message,
            trace_id: body.trace_id,
            details: body.details,
        }
    }
}

/// `text` cut to at most `max` characters.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => text[..at].to_owned(),
        None => text.to_owned(),
    }
}

/// Boxed so that `Result<T, ApiError>` stays one pointer wide on the happy path.
#[derive(Clone)]
pub struct ApiError(Box<ErrorParts>);

#[derive(Clone)]
struct ErrorParts {
    status: StatusCode,
    message: Cow<'static, str>,
    details: Vec<FieldError>,
    headers: HeaderMap,
    /// What really happened, for logs and telemetry only; never rendered.
    internal: Option<String>,
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("status", &self.0.status.as_u16())
            .field("message", &self.0.message)
            .field("details", &self.0.details)
            .field("internal", &self.0.internal)
            .finish()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0.status.as_u16(), self.0.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self(Box::new(ErrorParts {
            status,
            message: message.into(),
            details: Vec::new(),
            headers: HeaderMap::new(),
            internal: None,
        }))
    }

    /// The error for a bare status produced outside the service's own code (a timeout layer,
    /// the router's 405): a fixed, generic message per status.
    pub fn from_status(status: StatusCode) -> Self {
        Self::new(status, default_message(status))
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400 with field-level details.
    pub fn validation(details: Vec<FieldError>) -> Self {
        Self::bad_request("The request is not valid.").with_details(details)
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn precondition_failed() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "The resource has changed: If-Match does not match its current ETag.",
        )
    }

    pub fn unsupported_media_type(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body is larger than the limit of {limit} bytes."),
        )
    }

    /// 408: the client did not finish sending its body in time. The connection is closed
    /// because the rest of that body may still be on its way.
    pub fn request_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "The request body was not received in time.",
        )
        .with_header(header::CONNECTION, HeaderValue::from_static("close"))
    }

    /// 503 with `Retry-After` in seconds.
    pub fn unavailable(message: impl Into<Cow<'static, str>>, retry_after_secs: u64) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message).with_retry_after(retry_after_secs)
    }

    /// 500 for anything unexpected. `detail` goes to logs and telemetry, never to the client.
    pub fn internal(detail: impl fmt::Display) -> Self {
        Self::from_status(StatusCode::INTERNAL_SERVER_ERROR).with_internal(detail)
    }

    pub fn with_details(mut self, details: Vec<FieldError>) -> Self {
        self.0.details = details;
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.insert(name, value);
        self
    }

    pub fn with_retry_after(self, secs: u64) -> Self {
        self.with_header(header::RETRY_AFTER, HeaderValue::from(secs))
    }

    pub fn with_internal(mut self, detail: impl fmt::Display) -> Self {
        self.0.internal = Some(detail.to_string());
        self
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    pub fn details(&self) -> &[FieldError] {
        &self.0.details
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }

    pub fn internal_detail(&self) -> Option<&str> {
        self.0.internal.as_deref()
    }

    /// The body as sent to the client. 5xx messages are replaced by the generic text for the
    /// status whatever the code that raised them wrote, so no internal text can leak.
    pub fn body(&self, trace_id: &str) -> ErrorBody {
        let message = if self.0.status.is_server_error() {
            default_message(self.0.status).to_owned()
        } else {
            cut(&self.0.message, MAX_MESSAGE_CHARS)
        };
        let details = self
            .0
            .details
            .iter()
            .take(MAX_DETAILS)
            .map(|d| {
                FieldError::new(
                    cut(&d.field, MAX_FIELD_CHARS),
                    cut(&d.message, MAX_MESSAGE_CHARS),
                )
            })
            .collect::<Vec<_>>();
        ErrorBody {
            status: self.0.status.as_u16(),
            error: error_name(self.0.status),
            message,
            trace_id: trace_id.to_owned(),
            details: (!details.is_empty()).then_some(details),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.0.status.into_response();
        response.headers_mut().extend(self.0.headers.clone());
        response.extensions_mut().insert(self);
        response
    }
}

/// Client-supplied text (an id, a path) as an answer quotes it: at most 64 characters, so that
/// an answer never grows with what the client sent.
pub fn quoted(text: &str) -> String {
    text.chars().take(64).collect()
}

/// `error` field: the reason phrase in PascalCase (`NotFound`, `ContentTooLarge`, ...).
pub fn error_name(status: StatusCode) -> String {
    match status.as_u16() {
        // RFC 9110 renamed these; the registry's old phrases still ship in `http`.
        413 => "ContentTooLarge".to_owned(),
        // PascalCase of "URI Too Long", not "URITooLong".
        414 => "UriTooLong".to_owned(),
        422 => "UnprocessableContent".to_owned(),
        _ => status
            .canonical_reason()
            .unwrap_or("Error")
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|word| !word.is_empty())
            .map(|word| {
                let mut chars = word.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect(),
    }
}

/// The message used when nothing more specific is known, and always for 5xx.
pub fn default_message(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "The request is not valid.",
        401 => "A valid bearer token is required.",
        403 => "The token does not grant access to this operation.",
        404 => "The requested resource was not found.",
        405 => "The method is not allowed on this resource.",
        406 => "No available representation satisfies the Accept header.",
        408 => "The request was not received in time.",
        409 => "The request conflicts with the current state of the resource.",
        412 => "A precondition of the request did not hold.",
        413 => "The request body is too large.",
        414 => "The request target is too long.",
        415 => "The request body's media type is not supported.",
        422 => "The request could not be processed.",
        428 => "This request must be conditional.",
        429 => "Too many requests: retry later.",
        431 => "The request headers are too large.",
        500 => "An unexpected error occurred. Quote the traceId when reporting it.",
        501 => "The request method is not supported by this service.",
        502 => "A dependency returned an invalid response.",
        503 => "The service is temporarily unavailable: retry later.",
        504 => "The request did not complete in time.",
        s if s >= 500 => "The server could not complete the request.",
        _ => "The request could not be completed.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_pascal_case_reason_phrases() {
        let cases = [
            (400, "BadRequest"),
            (401, "Unauthorized"),
            (404, "NotFound"),
            (405, "MethodNotAllowed"),
            (406, "NotAcceptable"),
            (408, "RequestTimeout"),
            (412, "PreconditionFailed"),
            (413, "ContentTooLarge"),
            (414, "UriTooLong"),
            (415, "UnsupportedMediaType"),
            (422, "UnprocessableContent"),
            (428, "PreconditionRequired"),
            (429, "TooManyRequests"),
            (500, "InternalServerError"),
            (501, "NotImplemented"),
            (502, "BadGateway"),
            (503, "ServiceUnavailable"),
            (504, "GatewayTimeout"),
        ];
        for (code, name) in cases {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(error_name(status), name, "status {code}");
        }
    }

    #[test]
    fn server_error_bodies_never_carry_the_raised_message() {
        let error = ApiError::new(StatusCode::BAD_GATEWAY, "storage said: secret stack trace")
            .with_internal("connection reset by 10.0.0.4");
        let body = error.body("t");
        assert_eq!(body.message, default_message(StatusCode::BAD_GATEWAY));
        let json = serde_json::to_string(&body).unwrap();
        assert!(!json.contains("secret") && !json.contains("10.0.0.4"));
    }
}
