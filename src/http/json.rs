//! JSON request bodies: media type check (415), size limit (413, with or without
//! Content-Length), read deadline (408), syntax (400) and shape (400 with `details`).
//!
//! Bodies are read here rather than by a body-limit layer, so that a request is authenticated
//! (an extractor listed before the body) before any byte of its body is read: an anonymous
//! upload gets 401, not 413, and `Expect: 100-continue` is answered only when the body is wanted.

use std::time::Duration;

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};

/// Limits for reading request bodies (`ORDERS_MAX_BODY_BYTES`, `ORDERS_BODY_TIMEOUT_MS`), placed
/// in the request extensions by the middleware stack.
#[derive(Debug, Clone, Copy)]
pub struct BodyPolicy {
    pub max_bytes: usize,
    pub timeout: Duration,
}

impl From<&crate::config::Config> for BodyPolicy {
    fn from(config: &crate::config::Config) -> Self {
        Self {
            max_bytes: config.max_body_bytes,
            timeout: config.body_timeout,
        }
    }
}

/// A JSON body (`application/json` or any `+json` type).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        match media_type(req.headers()) {
            Some(m) if m == "application/json" || m.ends_with("+json") => {}
            _ => {
                return Err(ApiError::unsupported_media_type(
                    "The request body must be JSON (Content-Type: application/json).",
                ));
            }
        }
        let bytes = read_body(req).await?;
        parse(&bytes).map(ApiJson)
    }
}

pub const MERGE_PATCH: &str = "application/merge-patch+json";

/// A JSON merge patch body (RFC 7396): `application/merge-patch+json` or `application/json`.
/// Any other media type gets 415 with `Accept-Patch`.
#[derive(Debug)]
pub struct MergePatch<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for MergePatch<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        match media_type(req.headers()) {
            Some(m) if m == MERGE_PATCH || m == "application/json" => {}
            _ => {
                return Err(ApiError::unsupported_media_type(
                    "PATCH bodies must be application/merge-patch+json or application/json.",
                )
                .with_header(
                    header::HeaderName::from_static("accept-patch"),
                    HeaderValue::from_static("application/merge-patch+json, application/json"),
                ));
            }
        }
        let bytes = read_body(req).await?;
        parse(&bytes).map(MergePatch)
    }
}

/// The lower-cased media type of `Content-Type`, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim().to_ascii_lowercase();
    (!essence.is_empty()).then_some(essence)
}

/// One member of a JSON body read on its own: when it does not parse, its problem is kept
/// instead of failing the whole body, so that one answer can list every problem of a request.
#[derive(Debug)]
pub struct Checked<T>(Result<T, String>);

impl<'de, T: DeserializeOwned> serde::Deserialize<'de> for Checked<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Buffered first: a member that fails must not stop the rest of the body being read.
        let value = serde_json::Value::deserialize(deserializer)?;
        Ok(Self(T::deserialize(value).map_err(|e| e.to_string())))
    }
}

impl<T> Checked<T> {
    /// The value, or `None` with its problem added to `problems` under `field`.
    pub fn or_note(self, field: &str, problems: &mut Vec<FieldError>) -> Option<T> {
        self.0
            .map_err(|message| problems.push(FieldError::new(field, message)))
            .ok()
    }
}

/// Reads the whole body within the policy's size and time limits.
pub async fn read_body(req: Request) -> Result<bytes::Bytes, ApiError> {
    let policy = req
        .extensions()
        .get::<super::context::RequestContext>()
        .and_then(|context| context.body_policy);
    let Some(policy) = policy else {
        return Err(ApiError::internal(
            "no body policy: the request did not pass through the middleware frame",
        ));
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > policy.max_bytes as u64) {
        return Err(ApiError::payload_too_large(policy.max_bytes));
    }
    let limited = Limited::new(req.into_body(), policy.max_bytes);
    match tokio::time::timeout(policy.timeout, limited.collect()).await {
        Err(_elapsed) => Err(ApiError::request_timeout()),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<LengthLimitError>() => {
            Err(ApiError::payload_too_large(policy.max_bytes))
        }
        Ok(Err(error)) => {
            Err(ApiError::bad_request("The request body could not be read.").with_internal(error))
        }
    }
}

/// Parses JSON, reporting syntax errors with their position and shape errors with the path of
/// the offending field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "The request body is empty: a JSON object is expected.",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    // Every body of this API is an object: an array of a struct's fields is not one.
    let value: T = serde_path_to_error::deserialize(super::strict::ObjectOnly(&mut deserializer))
        .map_err(shape_error)?;
    deserializer
        .end()
        .map_err(|e| ApiError::bad_request(format!("The request body is not valid JSON: {e}.")))?;
    Ok(value)
}

fn shape_error(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    use serde_json::error::Category;
    let path = error.path().to_string();
    let inner = error.into_inner();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request(format!("The request body is not valid JSON: {inner}."))
        }
        Category::Data => {
            let message = without_position(&inner.to_string());
            let field = missing_field(&message).map_or_else(
                || {
                    if path == "." {
                        "$".to_owned()
                    } else {
                        path.clone()
                    }
                },
                |name| {
                    if path == "." {
                        name.to_owned()
                    } else {
                        format!("{path}.{name}")
                    }
                },
            );
            ApiError::validation(vec![FieldError::new(field, message)])
        }
    }
}

/// serde_json appends " at line L column C"; inside `details` the field path says where.
pub(crate) fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        quantity: u32,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        items: Vec<Item>,
    }

    #[test]
    fn shape_errors_name_the_field() {
        let error = parse::<Body>(br#"{"items":[{"quantity":"two"}]}"#).unwrap_err();
        assert_eq!(error.status().as_u16(), 400);
        assert_eq!(error.details()[0].field, "items[0].quantity");
        assert!(!error.details()[0].message.contains("line"));
    }

    #[test]
    fn missing_fields_are_named() {
        let error = parse::<Body>(b"{}").unwrap_err();
        assert_eq!(error.details()[0].field, "items");
        let error = parse::<Body>(br#"{"items":[{}]}"#).unwrap_err();
        assert_eq!(error.details()[0].field, "items[0].quantity");
    }

    #[test]
    fn syntax_errors_have_no_details() {
        let error = parse::<Body>(b"{\"items\": [").unwrap_err();
        assert_eq!(error.status().as_u16(), 400);
        assert!(error.details().is_empty());
        assert!(
            error
                .message()
                .starts_with("The request body is not valid JSON")
        );
    }
}
