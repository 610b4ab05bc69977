//! SharedKey request signing (Table has its own, shorter string-to-sign) and read-only service
//! SAS URLs for blobs. Reference: "Authorize with Shared Key" and "Create a service SAS".

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use reqwest::Url;
use reqwest::header::HeaderMap;
use sha2::Sha256;

/// Base64 of HMAC-SHA256(key, text).
pub fn sign(key: &[u8], text: &str) -> String {
    // HMAC takes keys of any length, so this cannot fail; an empty MAC would only fail auth.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(text.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Table service SharedKey: `VERB\nContent-MD5\nContent-Type\nDate\nCanonicalizedResource`,
/// with the `x-ms-date` value as Date and only `comp` from the query.
pub fn table_string_to_sign(method: &str, headers: &HeaderMap, url: &Url, account: &str) -> String {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let mut resource = format!("/{account}{}", url.path());
    if let Some((_, comp)) = url.query_pairs().find(|(name, _)| name == "comp") {
        resource.push_str("?comp=");
        resource.push_str(&comp);
    }
    format!(
        "{method}\n{}\n{}\n{}\n{resource}",
        header("content-md5"),
        header("content-type"),
        header("x-ms-date"),
    )
}

/// Blob and Queue service SharedKey (version 2009-09-19 and later).
pub fn blob_queue_string_to_sign(
    method: &str,
    headers: &HeaderMap,
    url: &Url,
    account: &str,
) -> String {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    // Content-Length is signed as empty when zero (version 2015-02-21 and later).
    let length = match header("content-length") {
        "0" => "",
        other => other,
    };
    let mut text = format!(
        "{method}\n{}\n{}\n{length}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
        header("content-encoding"),
        header("content-language"),
        header("content-md5"),
        header("content-type"),
        header("date"),
        header("if-modified-since"),
        header("if-match"),
        header("if-none-match"),
        header("if-unmodified-since"),
        header("range"),
    );
    let mut ms_headers: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-ms-"))
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or_default().trim().to_owned(),
            )
        })
        .collect();
    ms_headers.sort();
    for (name, value) in ms_headers {
        text.push_str(&name);
        text.push(':');
        text.push_str(&value);
        text.push('\n');
    }
    text.push('/');
    text.push_str(account);
    text.push_str(url.path());
    let mut params: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in url.query_pairs() {
        let name = name.to_ascii_lowercase();
        match params.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value.into_owned()),
            None => params.push((name, vec![value.into_owned()])),
        }
    }
    params.sort();
    for (name, mut values) in params {
        values.sort();
        text.push('\n');
        text.push_str(&name);
        text.push(':');
        text.push_str(&values.join(","));
    }
    text
}

/// The SAS version this service signs with.
pub const SAS_VERSION: &str = "2020-12-06";

/// Query string of a read-only service SAS for one blob, valid from `start` to `expiry`
/// (ISO 8601 UTC, seconds precision). `blob_path` is `container/blob`.
pub fn blob_read_sas(
    key: &[u8],
    account: &str,
    blob_path: &str,
    start: &str,
    expiry: &str,
) -> String {
    let resource = format!("/blob/{account}/{blob_path}");
    // permissions, start, expiry, resource, identifier, IP, protocol, version, resource type,
    // snapshot time, encryption scope, then the five response-header overrides.
    let text = format!("r\n{start}\n{expiry}\n{resource}\n\n\n\n{SAS_VERSION}\nb\n\n\n\n\n\n\n");
    let signature = sign(key, &text);
    let mut query = Url::parse("http://sas.invalid/").map_or_else(
        |_| String::new(),
        |mut url| {
            url.query_pairs_mut()
                .append_pair("sv", SAS_VERSION)
                .append_pair("st", start)
                .append_pair("se", expiry)
                .append_pair("sr", "b")
                .append_pair("sp", "r")
                .append_pair("sig", &signature);
            url.query().unwrap_or_default().to_owned()
        },
    );
    if query.is_empty() {
        query.push_str("sig=");
    }
    query
}

/// A user delegation key: lets an identity without the account key sign SAS URLs.
#[derive(Clone, PartialEq, Eq)]
pub struct UserDelegationKey {
    pub object_id: String,
    pub tenant_id: String,
    pub start: String,
    pub expiry: String,
    pub service: String,
    pub version: String,
    /// The decoded key.
    pub value: Vec<u8>,
}

/// Query string of a read-only user delegation SAS for one blob (version 2020-12-06 layout).
pub fn blob_read_user_delegation_sas(
    key: &UserDelegationKey,
    account: &str,
    blob_path: &str,
    start: &str,
    expiry: &str,
) -> String {
    let resource = format!("/blob/{account}/{blob_path}");
    // permissions, start, expiry, resource, the six key fields, authorized and unauthorized
    // object ids, correlation id, IP, protocol, version, resource type, snapshot time,
    // encryption scope, then the five response-header overrides.
    let text = format!(
        "r\n{start}\n{expiry}\n{resource}\n{}\n{}\n{}\n{}\n{}\n{}\n\n\n\n\n\n{SAS_VERSION}\nb\n\n\n\n\n\n\n",
        key.object_id, key.tenant_id, key.start, key.expiry, key.service, key.version
    );
    let signature = sign(&key.value, &text);
    let mut url = match Url::parse("http://sas.invalid/") {
        Ok(url) => url,
        Err(_) => return String::new(),
    };
    url.query_pairs_mut()
        .append_pair("sv", SAS_VERSION)
        .append_pair("st", start)
        .append_pair("se", expiry)
        .append_pair("sr", "b")
        .append_pair("sp", "r")
        .append_pair("skoid", &key.object_id)
        .append_pair("sktid", &key.tenant_id)
        .append_pair("skt", &key.start)
        .append_pair("ske", &key.expiry)
        .append_pair("sks", &key.service)
        .append_pair("skv", &key.version)
        .append_pair("sig", &signature);
    url.query().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn hmac_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign(b"Jefe", "what do ya want for nothing?"),
            STANDARD.encode(hex(
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
            ))
        );
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn user_delegation_sas_carries_the_key_fields() {
        let key = UserDelegationKey {
            object_id: "oid".into(),
            tenant_id: "tid".into(),
            start: "2026-11-24T10:00:00Z".into(),
            expiry: "2026-11-24T11:00:00Z".into(),
            service: "b".into(),
            version: "2021-12-02".into(),
            value: b"secret".to_vec(),
        };
        let query = blob_read_user_delegation_sas(
            &key,
            "acct",
            "exports/a/x.csv",
            "2026-11-24T10:00:00Z",
            "2026-11-24T10:15:00Z",
        );
        let expected = sign(
            b"secret",
            "r\n2026-11-24T10:00:00Z\n2026-11-24T10:15:00Z\n/blob/acct/exports/a/x.csv\noid\ntid\n2026-11-24T10:00:00Z\n2026-11-24T11:00:00Z\nb\n2021-12-02\n\n\n\n\n\n2020-12-06\nb\n\n\n\n\n\n\n",
        );
        let url = Url::parse(&format!("http://x/?{query}")).unwrap();
        let pairs: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs["sig"], expected);
        assert_eq!(pairs["skoid"], "oid");
        assert_eq!(pairs["sp"], "r");
        assert_eq!(pairs["sr"], "b");
    }

    #[test]
    fn table_signs_path_and_comp_only() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-ms-date",
            HeaderValue::from_static("Tue, 24 Nov 2026 10:00:00 GMT"),
        );
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let url = Url::parse("http://127.0.0.1:1/acct/Tables?comp=acl&$top=1").unwrap();
        assert_eq!(
            table_string_to_sign("POST", &headers, &url, "acct"),
            "POST\n\napplication/json\nTue, 24 Nov 2026 10:00:00 GMT\n/acct/acct/Tables?comp=acl"
        );
    }

    #[test]
    fn blob_queue_canonicalises_headers_and_query() {
        let mut headers = HeaderMap::new();
        headers.insert("x-ms-version", HeaderValue::from_static("2021-12-02"));
        headers.insert("x-ms-date", HeaderValue::from_static("D"));
        headers.insert("content-length", HeaderValue::from_static("0"));
        let url = Url::parse(
            "https://a.queue.core.windows.net/q/messages?VisibilityTimeout=5&numofmessages=2",
        )
        .unwrap();
        assert_eq!(
            blob_queue_string_to_sign("GET", &headers, &url, "a"),
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:D\nx-ms-version:2021-12-02\n/a/q/messages\nnumofmessages:2\nvisibilitytimeout:5"
        );
    }
}
