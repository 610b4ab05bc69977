//! Conditional requests (RFC 9110, section 13): `If-Match` for writes, `If-None-Match` for reads.
//! Stores hand out opaque version tokens; on the wire they are strong entity tags.

use axum::http::{HeaderMap, HeaderValue, header};

/// The strong entity tag for a store's version token.
pub fn etag_header(version: &str) -> HeaderValue {
    // infallible in practice: stores issue visible ASCII tokens. A token that is not would
    // never match anything, which fails safe.
    HeaderValue::from_str(&format!("\"{version}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("\"invalid\""))
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
    list_values(headers, &header::IF_NONE_MATCH)
        .any(|tag| tag == "*" || opaque(tag).is_some_and(|(_, v)| v == current_version))
}

fn list_values<'a>(
    headers: &'a HeaderMap,
    name: &header::HeaderName,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(name)
        .iter()
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
