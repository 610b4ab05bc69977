//! The error responses operations share, declared once and referenced by status: each carries
//! the error body as JSON or as problem details, and the headers the service sends with it.

use utoipa::openapi::{Content, Header, Ref, RefOr, Response, ResponseBuilder};

use super::headers;

/// An error response: the two bodies, the headers every error carries, and `extra` headers.
fn error(description: &str, extra: Vec<(&str, Header)>) -> RefOr<Response> {
    let mut builder = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .content(
            "application/problem+json",
            Content::new(Some(Ref::from_schema_name("ProblemDetails"))),
        )
        .header("x-request-id", headers::request_id())
        .header("X-Content-Type-Options", headers::no_sniff())
        .header("Cache-Control", headers::cache_control());
    for (name, header) in headers::rate_limit().into_iter().chain(extra) {
        builder = builder.header(name, header);
    }
    builder.build().into()
}

/// Declares a shared error response type, for `(status = N, response = Type)` in annotations.
macro_rules! shared_error {
    ($(#[$doc:meta])* $name:ident, $description:expr, [$($header:expr),* $(,)?]) => {
        $(#[$doc])*
        pub struct $name;

        impl<'r> utoipa::ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), error($description, vec![$($header),*]))
            }
        }
    };
}

shared_error!(
    BadRequest,
    "The request is not valid: malformed JSON, or a parameter, header or member that does not parse; `details` names each problem.",
    []
);
shared_error!(
    Unauthorized,
    "No valid bearer token.",
    [("WWW-Authenticate", headers::www_authenticate())]
);
shared_error!(
    Forbidden,
    "The token lacks the scope or app role this operation needs (Orders.Read to read, Orders.Write to change).",
    [("WWW-Authenticate", headers::www_authenticate())]
);
shared_error!(
    NotFound,
    "No such resource for this caller (another caller's resource does not exist either).",
    []
);
shared_error!(
    NotAcceptable,
    "The client does not accept JSON, the one representation of a success; an error still reaches a client that accepts problem details.",
    []
);
shared_error!(
    RequestTimeout,
    "The request body did not arrive in time; the connection is closed.",
    []
);
shared_error!(
    Conflict,
    "The request conflicts with the resource's state; with Retry-After when waiting helps.",
    [(
        "Retry-After",
        headers::retry_after("Seconds to wait before trying again, when the conflict will pass.")
    )]
);
shared_error!(
    PreconditionFailed,
    "If-Match does not match the resource's current ETag.",
    []
);
shared_error!(ContentTooLarge, "The request body is too large.", []);
shared_error!(
    UnsupportedMediaType,
    "The request body's media type is not accepted.",
    [("Accept-Patch", headers::accept_patch())]
);
shared_error!(
    UnprocessableContent,
    "The Idempotency-Key was already used with a different request body.",
    []
);
shared_error!(
    TooManyRequests,
    "The caller is over its rate limit, or already holds as many Idempotency-Keys as it may (ORDERS_IDEMPOTENCY_KEYS_PER_CALLER).",
    [(
        "Retry-After",
        headers::retry_after("Seconds until a request will be admitted again.")
    )]
);
shared_error!(
    InternalServerError,
    "An unexpected error; quote the traceId when reporting it.",
    []
);
shared_error!(
    BadGateway,
    "A dependency (storage, the identity provider) answered with something unusable.",
    []
);
shared_error!(
    ServiceUnavailable,
    "A dependency is unreachable, or the service is at capacity or shutting down.",
    [(
        "Retry-After",
        headers::retry_after("Seconds to wait before retrying.")
    )]
);
shared_error!(
    GatewayTimeout,
    "The request, or a dependency's answer, did not finish in time.",
    []
);
