//! Per-request identity: the W3C trace id that error bodies and telemetry share, and the
//! `x-request-id` echoed on every response.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use rand::Rng;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Inserted into the request extensions before anything else runs.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The incoming `traceparent`'s trace id, or a new one. When telemetry is exported, the
    /// request span (`http::trace`) sets it to the exported operation id.
    pub trace_id: RequestTraceId,
    /// The caller's span id from `traceparent`, when one was sent.
    pub parent_span_id: Option<u64>,
    /// The caller's `sampled` flag from `traceparent`: whether it records this trace.
    pub parent_sampled: bool,
    pub request_id: HeaderValue,
    /// How bodies may be read, set by the request frame for the extractors (here rather than
    /// as an extension of its own: each costs an allocation).
    pub body_policy: Option<super::json::BodyPolicy>,
}

impl RequestContext {
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Self {
        let (trace_id, parent_span_id, parent_sampled) = headers
            .get(&TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent)
            .map_or_else(
                || (RequestTraceId::new(), None, false),
                |(t, s, sampled)| (t, Some(s), sampled),
            );
        let request_id = headers
            .get(&X_REQUEST_ID)
            .filter(|v| is_acceptable_request_id(v))
            .cloned()
            .unwrap_or_else(|| {
                let mut buffer = uuid::Uuid::encode_buffer();
                // From the thread's seeded generator: `Uuid::new_v4` asks the OS (a system call)
                // for every id.
                let id = uuid::Builder::from_random_bytes(rand::random())
                    .into_uuid()
                    .hyphenated()
                    .encode_lower(&mut buffer);
                // infallible: a hyphenated UUID is always a valid header value.
                HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
            });
        Self {
            trace_id,
            parent_span_id,
            parent_sampled,
            request_id,
            body_policy: None,
        }
    }
}

/// The request's [`RequestContext`] (attaching one unless an outer layer already did) with
/// `body_policy`, and the `x-request-id` to echo on its response.
pub fn ensure(req: &mut Request, body_policy: super::json::BodyPolicy) -> HeaderValue {
    match req.extensions_mut().get_mut::<RequestContext>() {
        Some(existing) => {
            existing.body_policy = Some(body_policy);
            existing.request_id.clone()
        }
        None => {
            let mut context = RequestContext::from_headers(req.headers());
            context.body_policy = Some(body_policy);
            let request_id = context.request_id.clone();
            req.extensions_mut().insert(context);
            request_id
        }
    }
}

/// A client's request id is echoed only when it is short printable ASCII, so it cannot be used
/// to smuggle anything into logs or other systems' headers.
fn is_acceptable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(|b| b.is_ascii_graphic())
}

/// A W3C trace id. Kept as a number: most requests never need it as text, which is written
/// (32 lower-case hex digits) only for an error body or a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTraceId(u128);

impl RequestTraceId {
    /// A new random trace id (never all zeros).
    pub fn new() -> Self {
        Self(rand::rng().random_range(1..=u128::MAX))
    }

    pub fn from_u128(id: u128) -> Self {
        Self(id)
    }

    pub fn value(self) -> u128 {
        self.0
    }
}

impl Default for RequestTraceId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for RequestTraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`; all-zero ids are invalid (W3C Trace
/// Context, section 3.2). Gives the trace id, the span id and the `sampled` flag (bit 0).
pub fn parse_traceparent(value: &str) -> Option<(RequestTraceId, u64, bool)> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let is_hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let valid = is_hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && is_hex(trace_id, 32)
        && is_hex(span_id, 16)
        && is_hex(flags, 2)
        && trace_id.bytes().any(|b| b != b'0')
        && span_id.bytes().any(|b| b != b'0');
    if !valid {
        return None;
    }
    // All three are hex digits of the right length (checked above).
    let trace_id = u128::from_str_radix(trace_id, 16).ok()?;
    let span_id = u64::from_str_radix(span_id, 16).ok()?;
    // Only the lowest bit of the flags is defined.
    let sampled = u8::from_str_radix(flags, 16).ok()? & 1 == 1;
    Some((RequestTraceId(trace_id), span_id, sampled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_traceparent() {
        let (trace, span, sampled) =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(trace.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span, 0x00f0_67aa_0ba9_02b7);
        assert!(sampled);
        let (_, _, sampled) =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02").unwrap();
        assert!(!sampled, "only bit 0 means sampled");
    }

    #[test]
    fn rejects_invalid_traceparent() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn new_trace_ids_are_32_hex() {
        let id = RequestTraceId::new().to_string();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
