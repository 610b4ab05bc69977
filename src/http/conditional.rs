//! Conditional requests (RFC 9110, section 13): `If-Match` for writes, `If-None-Match` for reads.
//! Stores hand out opaque version tokens; on the wire they are strong entity tags. A condition
//! that is not `*` or a list of entity tags is a 400 naming the header, before anything is read
//! or changed.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::error::{ApiError, FieldError};

/// Longest condition header read; the document declares the same limit.
const MAX_CONDITION_BYTES: usize = 1024;

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

/// Outcome of evaluating `If-Match` against the current version.
#[derive(Debug, PartialEq, Eq)]
pub enum IfMatch {
    /// No `If-Match` header: the write is unconditional for the client.
    Absent,
    /// The header matches the current version (or is `*`).
    Matches,
    Fails,
}

/// `*`, or entity tags as (weak, opaque tag).
#[derive(Debug, Clone, PartialEq, Eq)]
enum TagList {
    Any,
    Tags(Vec<(bool, String)>),
}

/// A request's `If-Match` and `If-None-Match`, parsed. As an extractor it rejects a malformed
/// condition with 400.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    if_match: Option<TagList>,
    if_none_match: Option<TagList>,
}

impl Conditions {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        Ok(Self {
            if_match: parse(headers, &header::IF_MATCH, "If-Match")?,
            if_none_match: parse(headers, &header::IF_NONE_MATCH, "If-None-Match")?,
        })
    }

    /// `If-Match` uses the strong comparison: weak tags never match.
    pub fn if_match(&self, current_version: &str) -> IfMatch {
        match &self.if_match {
            None => IfMatch::Absent,
            Some(TagList::Any) => IfMatch::Matches,
            Some(TagList::Tags(tags))
                if tags.iter().any(|(weak, v)| !weak && v == current_version) =>
            {
                IfMatch::Matches
            }
            Some(TagList::Tags(_)) => IfMatch::Fails,
        }
    }

    /// `If-None-Match` uses the weak comparison; true means "not modified".
    pub fn if_none_match(&self, current_version: &str) -> bool {
        match &self.if_none_match {
            None => false,
            Some(TagList::Any) => true,
            Some(TagList::Tags(tags)) => tags.iter().any(|(_, v)| v == current_version),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Conditions {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::from_headers(&parts.headers)
    }
}

/// Every value of `name`, joined as one list (RFC 9110, section 5.3); a problem is reported
/// under `field`, the header's name as the document spells it.
fn parse(
    headers: &HeaderMap,
    name: &HeaderName,
    field: &'static str,
) -> Result<Option<TagList>, ApiError> {
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return Ok(None);
    }
    let invalid = || {
        ApiError::validation(vec![FieldError::new(
            field,
            "must be * or a comma-separated list of entity tags such as \"v1\" or W/\"v1\"",
        )])
    };
    let mut total = 0;
    let mut members = Vec::new();
    for value in values {
        total += value.len();
        if total > MAX_CONDITION_BYTES {
            return Err(invalid());
        }
        members.extend(list_members(value.to_str().map_err(|_| invalid())?).ok_or_else(invalid)?);
    }
    let any = members.iter().any(|m| m.is_none());
    let tags: Vec<(bool, String)> = members.into_iter().flatten().collect();
    match (any, tags.is_empty()) {
        (true, true) => Ok(Some(TagList::Any)),
        (false, false) => Ok(Some(TagList::Tags(tags))),
        // `*` mixed with tags, or nothing but commas.
        _ => Err(invalid()),
    }
}

/// The members of one header value: `None` for `*`, else an entity tag. Tags are scanned, not
/// split on commas: a comma is a valid character inside the quotes.
fn list_members(text: &str) -> Option<Vec<Option<(bool, String)>>> {
    let bytes = text.as_bytes();
    let mut members = Vec::new();
    let mut at = 0;
    loop {
        while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b',') {
            at += 1;
        }
        if at == bytes.len() {
            return Some(members);
        }
        if bytes[at] == b'*' {
            members.push(None);
            at += 1;
        } else {
            let weak = text[at..].starts_with("W/");
            if weak {
                at += 2;
            }
            if bytes.get(at) != Some(&b'"') {
                return None;
            }
            let start = at + 1;
            let length = bytes[start..].iter().position(|b| *b == b'"')?;
            let tag = &text[start..start + length];
            // etagc = %x21 / %x23-7E (obs-text is not produced by this service, so never
            // matches).
            if !tag.bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b)) {
                return None;
            }
            members.push(Some((weak, tag.to_owned())));
            at = start + length + 1;
        }
        // A member ends at a separator or at the end.
        if at < bytes.len() && !matches!(bytes[at], b' ' | b'\t' | b',') {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(name: header::HeaderName, value: &str) -> Result<Conditions, ApiError> {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        Conditions::from_headers(&h)
    }

    #[test]
    fn if_match_is_strong() {
        let c = |v: &str| conditions(header::IF_MATCH, v).unwrap();
        assert_eq!(Conditions::default().if_match("v1"), IfMatch::Absent);
        assert_eq!(c("\"v1\"").if_match("v1"), IfMatch::Matches);
        assert_eq!(c("\"v0\", \"v1\"").if_match("v1"), IfMatch::Matches);
        assert_eq!(c("*").if_match("v1"), IfMatch::Matches);
        assert_eq!(c("W/\"v1\"").if_match("v1"), IfMatch::Fails);
    }

    #[test]
    fn if_none_match_is_weak() {
        let c = |v: &str| conditions(header::IF_NONE_MATCH, v).unwrap();
        assert!(c("W/\"v1\"").if_none_match("v1"));
        assert!(c("*").if_none_match("v1"));
        assert!(!c("\"v2\"").if_none_match("v1"));
    }

    #[test]
    fn commas_inside_tags_are_part_of_them() {
        let c = conditions(header::IF_MATCH, "\"a,b\" ,W/\"c\",\"\"").unwrap();
        assert_eq!(c.if_match("a,b"), IfMatch::Matches);
        assert_eq!(c.if_match("c"), IfMatch::Fails);
        assert_eq!(c.if_match(""), IfMatch::Matches);
    }

    #[test]
    fn malformed_conditions_are_refused_with_the_header_named() {
        for bad in [
            "v1",
            "null",
            "\"v1",
            "*, \"v1\"",
            ",",
            "\"a b\"",
            "\"a\"\"b\"",
            "0",
        ] {
            let error = conditions(header::IF_MATCH, bad).unwrap_err();
            assert_eq!(error.status().as_u16(), 400, "{bad}");
            assert_eq!(error.details()[0].field, "If-Match");
        }
        let error = conditions(header::IF_NONE_MATCH, &format!("\"{}\"", "a".repeat(2000)));
        assert_eq!(error.unwrap_err().details()[0].field, "If-None-Match");
    }
}
