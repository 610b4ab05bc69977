//! A local Application Insights ingestion endpoint, and the real `handler` binary exporting to
//! it: telemetry is asserted on what arrives there, never on internal calls.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use super::{Handler, eventually, serve_on_own_thread};
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;

pub const IKEY: &str = "00000000-0000-4000-8000-0000000000aa";
pub const DEV_SECRET: &str = "telemetry-test-signing-key-0123456789-abcdefghij";

// ---------------------------------------------------------------------------------------------
// The local ingestion endpoint

/// An HTTP server on 127.0.0.1:0 that accepts what the exporter posts (gzip JSON arrays of
/// envelopes) and keeps every decompressed body. It runs on a thread of its own, so it answers
/// whatever the test's runtime is doing.
pub struct Ingestion {
    pub addr: SocketAddr,
    pub bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    pub paths: Arc<Mutex<Vec<String>>>,
}

impl Ingestion {
    pub fn start() -> Self {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (b, p) = (bodies.clone(), paths.clone());
        let addr = serve_on_own_thread(Router::new().fallback(post(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let (bodies, paths) = (b.clone(), p.clone());
                async move { track(uri, headers, body, bodies, paths) }
            },
        )));
        Self {
            addr,
            bodies,
            paths,
        }
    }

    pub fn connection_string(&self) -> String {
        format!(
            "InstrumentationKey={IKEY};IngestionEndpoint=http://{}/;LiveEndpoint=http://{}/",
            self.addr, self.addr
        )
    }

    /// Every envelope received so far.
    pub fn envelopes(&self) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|body| match serde_json::from_slice::<Value>(body) {
                Ok(Value::Array(items)) => items,
                _ => panic!("not a JSON array: {}", String::from_utf8_lossy(body)),
            })
            .collect()
    }

    /// Every byte received, decompressed.
    pub fn raw(&self) -> Vec<u8> {
        self.bodies.lock().unwrap().concat()
    }

    /// Polls until `found` picks something out of the envelopes.
    pub async fn wait_for<T>(&self, what: &str, found: impl Fn(&[Value]) -> Option<T>) -> T {
        eventually(what, || async {
            let envelopes = self.envelopes();
            found(&envelopes).ok_or_else(|| serde_json::to_string_pretty(&envelopes).unwrap())
        })
        .await
    }
}

pub fn track(
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    paths: Arc<Mutex<Vec<String>>>,
) -> (StatusCode, String) {
    paths.lock().unwrap().push(uri.path().to_owned());
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let json = if gzip {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_err()
        {
            return (StatusCode::BAD_REQUEST, "bad gzip".to_owned());
        }
        out
    } else {
        body.to_vec()
    };
    let count = serde_json::from_slice::<Vec<Value>>(&json).map_or(0, |items| items.len());
    bodies.lock().unwrap().push(json);
    (
        StatusCode::OK,
        format!(r#"{{"itemsReceived":{count},"itemsAccepted":{count},"errors":[]}}"#),
    )
}

// ---------------------------------------------------------------------------------------------
// Reading envelopes

pub fn kind(envelope: &Value) -> &str {
    envelope["data"]["baseType"].as_str().unwrap_or_default()
}

pub fn data(envelope: &Value) -> &Value {
    &envelope["data"]["baseData"]
}

pub fn tag<'a>(envelope: &'a Value, key: &str) -> &'a str {
    envelope["tags"][key].as_str().unwrap_or_default()
}

pub fn operation_id(envelope: &Value) -> &str {
    tag(envelope, "ai.operation.id")
}

/// The Request envelope whose URL ends with `path_and_query`.
pub fn request_for(envelopes: &[Value], path_and_query: &str) -> Option<Value> {
    envelopes
        .iter()
        .find(|e| {
            kind(e) == "RequestData"
                && data(e)["url"]
                    .as_str()
                    .is_some_and(|url| url.ends_with(path_and_query))
        })
        .cloned()
}

pub fn of_kind_in<'a>(envelopes: &'a [Value], base_type: &str, operation: &str) -> Vec<&'a Value> {
    envelopes
        .iter()
        .filter(|e| kind(e) == base_type && operation_id(e) == operation)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The handler under test

/// The binary exporting to `ingestion`, with fault injection, a known development key and short
/// batch delays (so tests do not wait out the default five seconds).
pub fn start_exporting(ingestion: &Ingestion, extra: &[(&str, &str)]) -> Handler {
    let connection = ingestion.connection_string();
    let mut env = vec![
        ("APPLICATIONINSIGHTS_CONNECTION_STRING", connection.as_str()),
        // Sampling off: these tests look for particular requests. The sampling tests set a rate.
        ("ORDERS_TELEMETRY_SAMPLE_PER_SECOND", "0"),
        ("ORDERS_FAULT_INJECTION", "true"),
        ("ORDERS_AUTH_DEV_SECRET", DEV_SECRET),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
    ];
    env.extend_from_slice(extra);
    Handler::start(&env)
}

/// A development token for `subject`, as `handler token` issues it for [`DEV_SECRET`].
pub fn dev_token(subject: &str) -> String {
    super::dev_token(subject, Some(DEV_SECRET))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn body_json(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

/// Whether `needle` occurs in `haystack` (bytes, since payloads are compressed JSON).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
