//! Conditional requests (RFC 9110, section 13): `If-Match` for writes, `If-None-Match` for reads.
//! Stores hand out opaque version tokens; on the wire they are strong entity tags.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};

/// The strong entity tag for a store's version token.
pub fn etag_header(version: &str) -> HeaderValue {
    let mut quoted = Vec::with_capacity(version.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(version.as_bytes());
    quoted.push(b'"');
    // infallible in practice: stores issue visible ASCII tokens. A token that is not would
    // never match anything, which fails safe.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(quoted))
        .unwrap_or_else(|_| HeaderValue::from_static("\"invalid\""))
}

/// The request's `If-None-Match` values, for a read: taken alone, where the `HeaderMap`
/// extractor would copy every header of the request.
pub struct IfNoneMatch(Vec<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Usually none: an empty vector allocates nothing.
        Ok(Self(
            parts
                .headers
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .cloned()
                .collect(),
        ))
    }
}

impl IfNoneMatch {
    /// Whether the client's copy is `current_version` ("not modified"); see [`if_none_match`].
    pub fn matches(&self, current_version: &str) -> bool {
        none_match(tags(self.0.iter()), current_version)
    }
}

/// Outcome of evaluating `If-Match` against the current version.
#[derive(Debug, PartialEq, Eq)]
pub enum IfMatch {
    /// No `If-Match` header: the write is unconditional for the client.
    Absent,
    /// The header matches the current version (or is `*`).
    Matches,
    Fails,
}

/// `If-Match` uses the strong comparison: weak tags never match.
pub fn if_match(headers: &HeaderMap, current_version: &str) -> IfMatch {
    let mut present = false;
    for tag in list_values(headers, &header::IF_MATCH) {
        present = true;
        if tag == "*" || opaque(tag).is_some_and(|(weak, v)| !weak && v == current_version) {
            return IfMatch::Matches;
        }
    }
    if present {
        IfMatch::Fails
    } else {
        IfMatch::Absent
    }
}

/// `If-None-Match` uses the weak comparison; true means "not modified".
pub fn if_none_match(headers: &HeaderMap, current_version: &str) -> bool {
    none_match(
        list_values(headers, &header::IF_NONE_MATCH),
        current_version,
    )
}

fn none_match<'a>(mut tags: impl Iterator<Item = &'a str>, current_version: &str) -> bool {
    tags.any(|tag| tag == "*" || opaque(tag).is_some_and(|(_, v)| v == current_version))
}

fn list_values<'a>(
    headers: &'a HeaderMap,
    name: &header::HeaderName,
) -> impl Iterator<Item = &'a str> + 'a {
    tags(headers.get_all(name).iter())
}

/// The entity tags listed in the values of one header.
fn tags<'a>(
    values: impl Iterator<Item = &'a HeaderValue> + 'a,
) -> impl Iterator<Item = &'a str> + 'a {
    values
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// `"abc"` → (false, abc); `W/"abc"` → (true, abc).
fn opaque(tag: &str) -> Option<(bool, &str)> {
    let (weak, quoted) = match tag.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, tag),
    };
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    Some((weak, inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn if_match_is_strong() {
        assert_eq!(if_match(&HeaderMap::new(), "v1"), IfMatch::Absent);
        assert_eq!(
            if_match(&headers(header::IF_MATCH, "\"v1\""), "v1"),
            IfMatch::Matches
        );
        assert_eq!(
            if_match(&headers(header::IF_MATCH, "\"v0\", \"v1\""), "v1"),
            IfMatch::Matches
        );
        assert_eq!(
            if_match(&headers(header::IF_MATCH, "*"), "v1"),
            IfMatch::Matches
        );
        assert_eq!(
            if_match(&headers(header::IF_MATCH, "W/\"v1\""), "v1"),
            IfMatch::Fails
        );
        assert_eq!(
            if_match(&headers(header::IF_MATCH, "v1"), "v1"),
            IfMatch::Fails
        );
    }

    #[test]
    fn if_none_match_is_weak() {
        assert!(if_none_match(
            &headers(header::IF_NONE_MATCH, "W/\"v1\""),
            "v1"
        ));
        assert!(if_none_match(&headers(header::IF_NONE_MATCH, "*"), "v1"));
        assert!(!if_none_match(
            &headers(header::IF_NONE_MATCH, "\"v2\""),
            "v1"
        ));
    }
}
