//! `Accept` header negotiation (RFC 9110, section 12.5.1).
//!
//! The service offers few representations (JSON, and problem+json for errors), so a small
//! q-value evaluator is enough; a general negotiation crate would add weight for no gain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};

use crate::error::ApiError;

pub const JSON: &str = "application/json";
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The quality (0.0..=1.0) the request's `Accept` gives `media_type`. No `Accept` header means
/// anything is acceptable. The most specific matching range decides (exact > `type/*` > `*/*`).
pub fn quality(headers: &HeaderMap, media_type: &str) -> f32 {
    let mut values = headers.get_all(header::ACCEPT).iter().peekable();
    if values.peek().is_none() {
        return 1.0;
    }
    let (wanted_type, wanted_subtype) = media_type.split_once('/').unwrap_or((media_type, ""));
    let mut best: Option<(u8, f32)> = None;
    for range in values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut params = range.split(';');
        let Some((range_type, range_subtype)) =
            params.next().and_then(|m| m.trim().split_once('/'))
        else {
            continue;
        };
        let specificity = match (range_type.trim(), range_subtype.trim()) {
            ("*", "*") => 1,
            (t, "*") if t.eq_ignore_ascii_case(wanted_type) => 2,
            (t, s)
                if t.eq_ignore_ascii_case(wanted_type)
                    && s.eq_ignore_ascii_case(wanted_subtype) =>
            {
                3
            }
            _ => continue,
        };
        let q = params
            .filter_map(|p| p.trim().split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, value)| value.trim().parse::<f32>().unwrap_or(0.0))
            .clamp(0.0, 1.0);
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

/// Whether the client accepts a JSON response at all.
pub fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    quality(headers, media_type) > 0.0
}

/// 406 unless the client accepts JSON: for routes whose every success is JSON. An extractor, so
/// listed first among a handler's it answers before authentication and before any body is
/// read, and costs no layer of its own around the route.
///
/// A client that accepts problem details but not JSON still has a safe request (GET, HEAD)
/// carried out, so that an error reaches it in the form it asked for; the frame turns a success,
/// which would be JSON, into 406 ([`SuccessRefused`]). An unsafe request is refused before it
/// can change anything.
pub struct AcceptsJson;

impl<S: Send + Sync> FromRequestParts<S> for AcceptsJson {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        if accepts(&parts.headers, JSON) {
            return Ok(Self);
        }
        if parts.method.is_safe()
            && accepts(&parts.headers, PROBLEM_JSON)
            && let Some(refused) = parts.extensions.get::<SuccessRefused>()
        {
            refused.0.store(true, Ordering::Relaxed);
            return Ok(Self);
        }
        Err(not_acceptable())
    }
}

/// The 406 of a resource whose successes are JSON.
pub fn not_acceptable() -> ApiError {
    ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "This resource is available as application/json only.",
    )
}

/// Put on a request that does not accept JSON by the frame; set by [`AcceptsJson`] when it lets
/// such a request through for its errors, so that the frame answers a success with 406.
#[derive(Debug, Clone, Default)]
pub struct SuccessRefused(Arc<AtomicBool>);

impl SuccessRefused {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Errors are rendered as RFC 9457 problem details when the client asks for them more strongly
/// than for plain JSON.
pub fn prefers_problem_json(headers: &HeaderMap) -> bool {
    // No `Accept` (most clients): plain JSON, without looking three more times.
    if !headers.contains_key(header::ACCEPT) {
        return false;
    }
    let problem = quality(headers, PROBLEM_JSON);
    problem > 0.0 && problem > quality(headers, JSON)
        || problem > 0.0
            && problem == quality(headers, JSON)
            && names_explicitly(headers, PROBLEM_JSON)
            && !names_explicitly(headers, JSON)
}

fn names_explicitly(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            range
                .split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case(media_type))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn no_accept_header_accepts_everything() {
        assert_eq!(quality(&HeaderMap::new(), JSON), 1.0);
        assert!(!prefers_problem_json(&HeaderMap::new()));
    }

    #[test]
    fn most_specific_range_wins() {
        let h = accept("application/*;q=0.2, application/json;q=0.9, */*;q=0.1");
        assert_eq!(quality(&h, JSON), 0.9);
        assert_eq!(quality(&h, PROBLEM_JSON), 0.2);
        assert_eq!(quality(&h, "text/html"), 0.1);
        assert_eq!(quality(&accept("text/html"), JSON), 0.0);
        assert_eq!(quality(&accept("application/json;q=0"), JSON), 0.0);
    }

    #[test]
    fn problem_json_when_preferred() {
        assert!(prefers_problem_json(&accept("application/problem+json")));
        assert!(prefers_problem_json(&accept(
            "application/problem+json, */*;q=0.5"
        )));
        assert!(prefers_problem_json(&accept(
            "application/json;q=0.5, application/problem+json"
        )));
        assert!(!prefers_problem_json(&accept(
            "application/json, application/problem+json;q=0.5"
        )));
        assert!(!prefers_problem_json(&accept("*/*")));
        assert!(!prefers_problem_json(&accept("application/json")));
    }
}
