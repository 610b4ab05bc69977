//! The response headers the service sends, described once for the document: each header's
//! schema is as strict as what the service really sends.

use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Header, HeaderBuilder};

fn string(max_length: usize, pattern: Option<&str>, description: &str) -> Header {
    HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(max_length))
                .pattern(pattern),
        ))
        .description(Some(description))
        .build()
}

fn seconds(maximum: u32, description: &str) -> Header {
    HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                    utoipa::openapi::KnownFormat::Int32,
                )))
                .minimum(Some(0))
                .maximum(Some(maximum)),
        ))
        .description(Some(description))
        .build()
}

/// `x-request-id`: on every response.
pub fn request_id() -> Header {
    string(
        128,
        Some("^[!-~]{1,128}$"),
        "The client's x-request-id when it is short printable ASCII, else a new one.",
    )
}

/// `X-Content-Type-Options: nosniff`: on every response.
pub fn no_sniff() -> Header {
    string(16, Some("^nosniff$"), "Always nosniff.")
}

/// `Cache-Control`: `private` on authenticated answers, `no-store` on errors and changing ones.
pub fn cache_control() -> Header {
    string(
        64,
        Some("^(private|no-store)$"),
        "private for the caller's own data; no-store for errors and answers that change.",
    )
}

/// The three `RateLimit-*` headers (IETF httpapi draft), on answers that passed the limiter.
pub fn rate_limit() -> [(&'static str, Header); 3] {
    [
        (
            "RateLimit-Limit",
            seconds(1_000_000, "Requests per minute the caller may make."),
        ),
        (
            "RateLimit-Remaining",
            seconds(1_000_000, "Requests left in the current window."),
        ),
        (
            "RateLimit-Reset",
            seconds(3_600, "Seconds until the window is full again."),
        ),
    ]
}

/// `Retry-After` in seconds.
pub fn retry_after(description: &str) -> Header {
    seconds(3_600, description)
}

/// `WWW-Authenticate`: the Bearer challenge (RFC 6750).
pub fn www_authenticate() -> Header {
    string(
        1024,
        Some("^Bearer( .*)?$"),
        "The Bearer challenge (RFC 6750): realm, and error and error_description when a token was sent, or scope when it lacks one.",
    )
}

/// `ETag`: a strong entity tag.
pub fn etag(description: &str) -> Header {
    string(256, Some("^\"[!#-~]{1,254}\"$"), description)
}

/// `Location`: a path on this service, or a short-lived file link.
pub fn location(description: &str) -> Header {
    string(4096, None, description)
}

/// The schema of a header an annotation names, keeping the annotation's description: one
/// definition per header, however many operations send it.
pub fn refined(name: &str, description: &str) -> Option<Header> {
    match name {
        "ETag" => Some(etag(description)),
        "Location" => Some(location(description)),
        "Retry-After" => Some(retry_after(description)),
        "Cache-Control" => {
            let mut header = cache_control();
            header.description = Some(description.to_owned());
            Some(header)
        }
        _ => None,
    }
}

/// `Accept-Patch` on a 415 to PATCH.
pub fn accept_patch() -> Header {
    string(
        128,
        None,
        "On PATCH: the accepted patch formats (application/merge-patch+json, application/json).",
    )
}
