//! Application Insights telemetry, asserted on what a local ingestion endpoint receives from the
//! real `handler` binary: requests, exceptions, dependencies and traces, their correlation with
//! the caller's `traceparent` and the error bodies, flush on SIGTERM, an unreachable endpoint,
//! and the absence of secrets in everything exported.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::helpers::{Handler, eventually};
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::Value;

mod sampling;

const IKEY: &str = "00000000-0000-4000-8000-0000000000aa";
const DEV_SECRET: &str = "telemetry-test-signing-key-0123456789-abcdefghij";

// ---------------------------------------------------------------------------------------------
// The local ingestion endpoint

/// An HTTP server on 127.0.0.1:0 that accepts what the exporter posts (gzip JSON arrays of
/// envelopes) and keeps every decompressed body. It runs on a thread of its own, so it answers
/// whatever the test's runtime is doing.
struct Ingestion {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Ingestion {
    fn start() -> Self {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (b, p) = (bodies.clone(), paths.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = Router::new().fallback(post(
                    move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                        let (bodies, paths) = (b.clone(), p.clone());
                        async move { track(uri, headers, body, bodies, paths) }
                    },
                ));
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self {
            addr,
            bodies,
            paths,
        }
    }

    fn connection_string(&self) -> String {
        format!(
            "InstrumentationKey={IKEY};IngestionEndpoint=http://{}/;LiveEndpoint=http://{}/",
            self.addr, self.addr
        )
    }

    /// Every envelope received so far.
    fn envelopes(&self) -> Vec<Value> {
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
    fn raw(&self) -> Vec<u8> {
        self.bodies.lock().unwrap().concat()
    }

    /// Polls until `found` picks something out of the envelopes.
    async fn wait_for<T>(&self, what: &str, found: impl Fn(&[Value]) -> Option<T>) -> T {
        eventually(what, || async {
            let envelopes = self.envelopes();
            found(&envelopes).ok_or_else(|| serde_json::to_string_pretty(&envelopes).unwrap())
        })
        .await
    }
}

fn track(
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

fn kind(envelope: &Value) -> &str {
    envelope["data"]["baseType"].as_str().unwrap_or_default()
}

fn data(envelope: &Value) -> &Value {
    &envelope["data"]["baseData"]
}

fn tag<'a>(envelope: &'a Value, key: &str) -> &'a str {
    envelope["tags"][key].as_str().unwrap_or_default()
}

fn operation_id(envelope: &Value) -> &str {
    tag(envelope, "ai.operation.id")
}

/// The Request envelope whose URL ends with `path_and_query`.
fn request_for(envelopes: &[Value], path_and_query: &str) -> Option<Value> {
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

fn of_kind_in<'a>(envelopes: &'a [Value], base_type: &str, operation: &str) -> Vec<&'a Value> {
    envelopes
        .iter()
        .filter(|e| kind(e) == base_type && operation_id(e) == operation)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The handler under test

/// The binary exporting to `ingestion`, with fault injection, a known development key and short
/// batch delays (so tests do not wait out the default five seconds).
fn start_exporting(ingestion: &Ingestion, extra: &[(&str, &str)]) -> Handler {
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
fn dev_token(subject: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_handler"))
        .env_clear()
        .env("ORDERS_AUTH_DEV_SECRET", DEV_SECRET)
        .args([
            "token",
            "--sub",
            subject,
            "--scope",
            "Orders.Read",
            "--scope",
            "Orders.Write",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "handler token: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn body_json(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn requests_are_named_by_route_with_their_codes_and_success() {
    let ingestion = Ingestion::start();
    let handler = start_exporting(
        &ingestion,
        &[("WEBSITE_SITE_NAME", "orders-telemetry-test")],
    );
    let base = handler.base();
    let client = client();
    let token = dev_token("alice");

    let created = client
        .post(format!("{base}/api/orders"))
        .bearer_auth(&token)
        .header(
            "X-Azure-Functions-InvocationId",
            "6f1c7c2e-0000-4000-8000-00000000beef",
        )
        .json(&serde_json::json!({
            "items": [{"sku": "A-1", "quantity": 2, "unitPrice": "9.99"}],
            "currency": "EUR"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = body_json(created).await["id"].as_str().unwrap().to_owned();
    let cases = [
        (
            format!("/api/orders/{id}"),
            200,
            "GET /api/orders/{id}",
            true,
        ),
        (
            "/api/orders/o_missing".to_owned(),
            404,
            "GET /api/orders/{id}",
            true,
        ),
        (
            "/api/no-such-thing".to_owned(),
            404,
            "GET /api/{*path}",
            true,
        ),
        (
            "/api/faults/nothing".to_owned(),
            404,
            "GET /api/faults/{fault}",
            true,
        ),
        (
            "/api/faults/error".to_owned(),
            500,
            "GET /api/faults/{fault}",
            false,
        ),
        (
            "/api/faults/unavailable".to_owned(),
            503,
            "GET /api/faults/{fault}",
            false,
        ),
    ];
    // The host's readiness probe, polled often: answered, never recorded (checked below, once
    // the requests sent after it have arrived).
    for _ in 0..3 {
        let probe = client.get(format!("{base}/")).send().await.unwrap();
        assert_eq!(probe.status(), 200);
    }
    for (path, status, _, _) in &cases {
        let response = client
            .get(format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), *status, "{path}");
    }

    for (path, status, name, success) in &cases {
        let request = ingestion
            .wait_for(&format!("request telemetry for {path}"), |e| {
                request_for(e, path)
            })
            .await;
        let fields = data(&request);
        assert_eq!(fields["name"], *name, "{request}");
        assert_eq!(fields["responseCode"], status.to_string(), "{request}");
        assert_eq!(fields["success"], *success, "{request}");
        assert!(fields["duration"].as_str().is_some(), "{request}");
        assert_eq!(tag(&request, "ai.operation.name"), *name, "{request}");
        assert_eq!(tag(&request, "ai.cloud.role"), "orders-telemetry-test");
        assert!(
            !tag(&request, "ai.cloud.roleInstance").is_empty(),
            "{request}"
        );
        assert_eq!(request["iKey"], IKEY);
    }

    assert!(
        !ingestion
            .envelopes()
            .iter()
            .any(|e| kind(e) == "RequestData" && data(e)["name"] == "GET /"),
        "no request telemetry for the readiness probe"
    );

    // The owner id (never the token) is the authenticated user; the Functions invocation id is
    // a property.
    let post = ingestion
        .wait_for("the POST's request telemetry", |e| {
            e.iter()
                .find(|e| kind(e) == "RequestData" && data(e)["name"] == "POST /api/orders")
                .cloned()
        })
        .await;
    assert_eq!(data(&post)["responseCode"], "201");
    assert_eq!(tag(&post, "ai.user.authUserId"), "alice", "{post}");
    assert_eq!(
        data(&post)["properties"]["InvocationId"],
        "6f1c7c2e-0000-4000-8000-00000000beef",
        "{post}"
    );

    // Log events at info and above are traces: inside a request they share its operation id,
    // outside one (start-up) they stand alone.
    let failed = request_for(&ingestion.envelopes(), "/api/faults/error").unwrap();
    let operation = operation_id(&failed).to_owned();
    let trace = ingestion
        .wait_for("the 500's log line as a trace", |e| {
            of_kind_in(e, "MessageData", &operation)
                .into_iter()
                .find(|m| data(m)["message"] == "request failed")
                .cloned()
        })
        .await;
    assert_eq!(data(&trace)["severityLevel"], 3, "error: {trace}");
    let listening = ingestion
        .wait_for("the start-up log line as a trace", |e| {
            e.iter()
                .find(|e| kind(e) == "MessageData" && data(e)["message"] == "listening")
                .cloned()
        })
        .await;
    assert_eq!(
        data(&listening)["severityLevel"],
        1,
        "information: {listening}"
    );
    assert_eq!(tag(&listening, "ai.cloud.role"), "orders-telemetry-test");
    // Debug events (the 404s' "request rejected") stay local.
    assert!(
        !ingestion
            .envelopes()
            .iter()
            .any(|e| data(e)["message"] == "request rejected"),
        "debug events are not exported"
    );
}

#[tokio::test]
async fn an_invocation_payload_call_is_a_request_with_its_invocation_id() {
    let ingestion = Ingestion::start();
    let handler = start_exporting(&ingestion, &[]);
    // The Functions host invoking the queue-triggered worker, for a job that no longer exists.
    let message = serde_json::json!({
        "owner": "alice",
        "id": orders_api::domain::ExportId::generate(),
    })
    .to_string();
    let response = client()
        .post(format!("{}/export-worker", handler.base()))
        .header(
            "x-azure-functions-invocationid",
            "0d7c5a7e-1111-4222-8333-944444444444",
        )
        .json(&serde_json::json!({"Data": {"job": message}, "Metadata": {"DequeueCount": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let request = ingestion
        .wait_for("request telemetry for the invocation", |e| {
            request_for(e, "/export-worker")
        })
        .await;
    let fields = data(&request);
    assert_eq!(fields["name"], "POST /export-worker", "{request}");
    assert_eq!(fields["responseCode"], "200", "{request}");
    assert_eq!(fields["success"], true, "{request}");
    assert_eq!(
        fields["properties"]["InvocationId"], "0d7c5a7e-1111-4222-8333-944444444444",
        "{request}"
    );
}

#[tokio::test]
async fn the_operation_id_is_the_traceparent_trace_id_and_the_error_body_trace_id() {
    let ingestion = Ingestion::start();
    let handler = start_exporting(&ingestion, &[]);
    let base = handler.base();
    let client = client();
    let token = dev_token("alice");

    // APIM's traceparent: its trace id is the operation id, its span the request's parent. A
    // "not sampled" flag does not stop the request from being recorded.
    for (path, trace_id, parent, flags) in [
        (
            "/api/faults/error",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "00f067aa0ba902b7",
            "01",
        ),
        (
            "/api/no-route-here",
            "0af7651916cd43dd8448eb211c80319c",
            "b7ad6b7169203331",
            "00",
        ),
    ] {
        let response = client
            .get(format!("{base}{path}"))
            .bearer_auth(&token)
            .header("traceparent", format!("00-{trace_id}-{parent}-{flags}"))
            .send()
            .await
            .unwrap();
        assert!(response.status().as_u16() >= 400);
        let body = body_json(response).await;
        assert_eq!(body["traceId"], trace_id, "{body}");
        let request = ingestion
            .wait_for(&format!("request telemetry for {path}"), |e| {
                request_for(e, path)
            })
            .await;
        assert_eq!(operation_id(&request), trace_id, "{request}");
        assert_eq!(tag(&request, "ai.operation.parentId"), parent, "{request}");
    }

    // Without traceparent the service starts the trace, and the body quotes the same id.
    for path in ["/api/faults/panic", "/api/unrouted-without-traceparent"] {
        let response = client
            .get(format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let body = body_json(response).await;
        let trace_id = body["traceId"].as_str().unwrap().to_owned();
        let request = ingestion
            .wait_for(&format!("request telemetry for {path}"), |e| {
                request_for(e, path)
            })
            .await;
        assert_eq!(operation_id(&request), trace_id, "{request}");
        assert_eq!(tag(&request, "ai.operation.parentId"), "", "{request}");
    }
}

#[tokio::test]
async fn every_500_is_an_exception_with_the_detail_the_response_hid() {
    let ingestion = Ingestion::start();
    let handler = start_exporting(&ingestion, &[]);
    let base = handler.base();
    let client = client();
    let token = dev_token("alice");

    for (path, type_name, hidden) in [
        (
            "/api/faults/panic",
            "Panic",
            &[
                "fault injection: deliberate panic in a handler",
                "src/routes/faults.rs:",
            ][..],
        ),
        (
            "/api/faults/error",
            "InternalServerError",
            &[
                "while serving /api/faults/error",
                "simulated failure deep inside",
            ][..],
        ),
    ] {
        let response = client
            .get(format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        let trace_id = body["traceId"].as_str().unwrap().to_owned();
        for detail in hidden {
            assert!(
                !text.contains(detail),
                "the response must not show {detail:?}: {text}"
            );
        }

        let exception = ingestion
            .wait_for(&format!("exception telemetry for {path}"), |e| {
                of_kind_in(e, "ExceptionData", &trace_id)
                    .first()
                    .map(|e| (*e).clone())
            })
            .await;
        let details = &data(&exception)["exceptions"][0];
        assert_eq!(details["typeName"], type_name, "{exception}");
        let shown = format!("{} {}", details["message"], details["stack"]);
        for detail in hidden {
            assert!(
                shown.contains(detail),
                "exception lacks {detail:?}: {exception}"
            );
        }
        // Inside the request: its parent is the request's own id.
        let request = ingestion
            .wait_for(&format!("request telemetry for {path}"), |e| {
                request_for(e, path)
            })
            .await;
        assert_eq!(
            tag(&exception, "ai.operation.parentId"),
            data(&request)["id"],
            "{exception}"
        );
        assert_eq!(
            of_kind_in(&ingestion.envelopes(), "ExceptionData", &trace_id).len(),
            1,
            "one exception per 500"
        );
    }

    // Other statuses carry no exception.
    let response = client
        .get(format!("{base}/api/faults/unavailable"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let trace_id = body_json(response).await["traceId"]
        .as_str()
        .unwrap()
        .to_owned();
    ingestion
        .wait_for("the 503's request telemetry", |e| {
            request_for(e, "/api/faults/unavailable")
        })
        .await;
    assert!(of_kind_in(&ingestion.envelopes(), "ExceptionData", &trace_id).is_empty());
}

#[tokio::test]
async fn a_jwks_fetch_is_a_dependency() {
    // A stand-in identity provider publishing an empty key set.
    let keys = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    keys.set_nonblocking(true).unwrap();
    let keys_addr = keys.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(keys).unwrap();
            let app = Router::new().route(
                "/keys",
                get(|| async { ([("content-type", "application/json")], r#"{"keys":[]}"#) }),
            );
            axum::serve(listener, app).await.unwrap();
        });
    });
    let issuer = format!("http://{keys_addr}/");
    let jwks_uri = format!("http://{keys_addr}/keys");
    let ingestion = Ingestion::start();
    let handler = start_exporting(
        &ingestion,
        &[
            ("ORDERS_AUTH_ISSUER", issuer.as_str()),
            ("ORDERS_AUTH_AUDIENCE", "api://orders-telemetry-test"),
            ("ORDERS_AUTH_JWKS_URI", jwks_uri.as_str()),
        ],
    );

    // A well-formed RS256 token with an unknown key id makes the service look the key up.
    let header = r#"{"alg":"RS256","typ":"JWT","kid":"unknown-key"}"#;
    let claims = r#"{"sub":"alice","aud":"api://orders-telemetry-test","exp":4102444800}"#;
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let token = format!("{}.{}.{}", b64(header), b64(claims), b64("not-a-signature"));
    let response = client()
        .get(format!("{}/api/orders", handler.base()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error() || response.status().is_server_error());

    let dependency = ingestion
        .wait_for("dependency telemetry for the JWKS fetch", |e| {
            e.iter()
                .find(|e| kind(e) == "RemoteDependencyData" && data(e)["name"] == "GET /keys")
                .cloned()
        })
        .await;
    let fields = data(&dependency);
    assert_eq!(fields["target"], "127.0.0.1", "{dependency}");
    assert_eq!(fields["resultCode"], "200", "{dependency}");
    assert_eq!(fields["success"], true, "{dependency}");
    assert_eq!(fields["type"], "HTTP", "{dependency}");
    assert!(fields["duration"].as_str().is_some(), "{dependency}");
}

#[tokio::test]
async fn a_storage_call_is_a_dependency_of_its_request_and_its_key_stays_out() {
    // A stand-in storage account that refuses every call, keeping the signatures it was sent.
    let storage = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    storage.set_nonblocking(true).unwrap();
    let storage_addr = storage.local_addr().unwrap();
    let authorizations = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = authorizations.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(storage).unwrap();
            let app = Router::new().fallback(move |headers: HeaderMap| {
                let seen = seen.clone();
                async move {
                    if let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok())
                    {
                        seen.lock().unwrap().push(value.to_owned());
                    }
                    (
                        StatusCode::FORBIDDEN,
                        [("content-type", "application/json")],
                        r#"{"odata.error":{"code":"AuthenticationFailed","message":{"lang":"en-US","value":"Server failed to authenticate the request."}}}"#,
                    )
                }
            });
            axum::serve(listener, app).await.unwrap();
        });
    });
    // 64 bytes, Base64: a key that exists nowhere but here.
    let account_key =
        "c3RvcmFnZS1hY2NvdW50LWtleS10aGF0LW11c3QtbmV2ZXItYmUtZXhwb3J0ZWQtMDEyMzQ1Njc4OWFiY2RlZg==";
    let endpoint = format!("http://{storage_addr}/devstoreaccount1");
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={account_key};\
         TableEndpoint={endpoint};QueueEndpoint={endpoint};BlobEndpoint={endpoint}"
    );
    let ingestion = Ingestion::start();
    let mut handler = start_exporting(
        &ingestion,
        &[
            ("AzureWebJobsStorage", connection.as_str()),
            ("ORDERS_STORAGE_TIMEOUT_MS", "2000"),
        ],
    );

    let response = client()
        .get(format!("{}/api/orders", handler.base()))
        .bearer_auth(dev_token("alice"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_server_error(), "{}", response.status());

    let request = ingestion
        .wait_for("request telemetry for the listing", |e| {
            request_for(e, "/api/orders")
        })
        .await;
    assert_eq!(data(&request)["success"], false, "{request}");
    let operation = operation_id(&request).to_owned();
    let dependency = ingestion
        .wait_for("the listing's storage dependency", |e| {
            of_kind_in(e, "RemoteDependencyData", &operation)
                .first()
                .map(|d| (*d).clone())
        })
        .await;
    let fields = data(&dependency);
    assert_eq!(fields["type"], "Azure table", "{dependency}");
    assert_eq!(fields["target"], "127.0.0.1", "{dependency}");
    assert_eq!(fields["resultCode"], "403", "{dependency}");
    assert_eq!(fields["success"], false, "{dependency}");
    assert_eq!(
        tag(&dependency, "ai.operation.parentId"),
        data(&request)["id"],
        "{dependency}"
    );

    handler.terminate();
    assert!(handler.child.wait().unwrap().success());
    let raw = ingestion.raw();
    // "SharedKey account:signature": the signature alone must not appear either.
    let signatures: Vec<String> = authorizations
        .lock()
        .unwrap()
        .iter()
        .filter_map(|value| value.rsplit(':').next().map(str::to_owned))
        .collect();
    assert!(!signatures.is_empty(), "the store signed its calls");
    for secret in std::iter::once(account_key.to_owned())
        .chain(std::iter::once(connection.clone()))
        .chain(signatures)
    {
        assert!(
            !contains(&raw, secret.as_bytes()),
            "{secret:?} reached the ingestion endpoint"
        );
    }
}

#[tokio::test]
async fn sigterm_flushes_the_last_request() {
    let ingestion = Ingestion::start();
    // Batches wait ten minutes: only the flush at shutdown can deliver this request.
    let mut handler = start_exporting(
        &ingestion,
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
            ("OTEL_BLRP_SCHEDULE_DELAY", "600000"),
        ],
    );
    let response = client()
        .get(format!("{}/api/health", handler.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    handler.terminate();
    let status = handler.child.wait().unwrap();
    assert!(
        status.success(),
        "exit status {status}; stderr: {}",
        handler.stderr()
    );
    let envelopes = ingestion.envelopes();
    let request = request_for(&envelopes, "/api/health").unwrap_or_else(|| {
        panic!(
            "the last request was not flushed; received {envelopes:?}; stderr: {}",
            handler.stderr()
        )
    });
    assert_eq!(data(&request)["responseCode"], "200");
    // The shutdown's own log lines went out with it.
    assert!(
        envelopes
            .iter()
            .any(|e| kind(e) == "MessageData" && data(e)["message"] == "stopped"),
        "{envelopes:?}"
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_leaves_every_response_unchanged() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let unreachable =
        format!("InstrumentationKey={IKEY};IngestionEndpoint=http://127.0.0.1:{port}/");
    let common = [
        ("ORDERS_FAULT_INJECTION", "true"),
        ("ORDERS_AUTH_DEV_SECRET", DEV_SECRET),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
    ];
    let plain = Handler::start(&common);
    let mut with_telemetry = common.to_vec();
    with_telemetry.push((
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        unreachable.as_str(),
    ));
    // Shutdown gives up on the undeliverable telemetry when the grace period ends.
    with_telemetry.push(("ORDERS_SHUTDOWN_GRACE_MS", "1000"));
    let mut exporting = Handler::start(&with_telemetry);
    let token = dev_token("alice");
    let client = client();

    let order = serde_json::json!({
        "items": [{"sku": "A-1", "quantity": 1, "unitPrice": "1.00"}],
        "currency": "EUR"
    });
    let requests: Vec<(&str, &str, Option<&Value>)> = vec![
        ("GET", "/", None),
        ("GET", "/api/health", None),
        ("GET", "/api/orders", None),
        ("POST", "/api/orders", Some(&order)),
        ("GET", "/api/orders/o_missing", None),
        ("GET", "/api/nowhere", None),
        ("DELETE", "/api/health", None),
        ("GET", "/api/faults/error", None),
        ("GET", "/api/faults/panic", None),
        ("GET", "/api/faults/unavailable", None),
        ("GET", "/api/faults/bad-gateway", None),
    ];
    for round in 0..3 {
        for (method, path, body) in &requests {
            let mut seen = Vec::new();
            for handler in [&plain, &exporting] {
                let mut request = client
                    .request(method.parse().unwrap(), format!("{}{path}", handler.base()))
                    .bearer_auth(&token);
                if let Some(body) = body {
                    request = request.json(body);
                }
                let response = request.send().await.unwrap();
                let status = response.status();
                let headers: Vec<(String, String)> = response
                    .headers()
                    .iter()
                    .filter(|(name, _)| {
                        !matches!(
                            name.as_str(),
                            "date" | "x-request-id" | "etag" | "location" | "content-length"
                        )
                    })
                    .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
                    .collect();
                let mut body: Value = match response.bytes().await.unwrap() {
                    b if b.is_empty() => Value::Null,
                    b => serde_json::from_slice(&b).unwrap_or(Value::Null),
                };
                strip_volatile(&mut body);
                seen.push((status, headers, body));
            }
            assert_eq!(seen[0], seen[1], "round {round}: {method} {path}");
        }
    }

    // The failures cost a log line, not a response.
    eventually("a log line about the unreachable endpoint", || async {
        let stderr = exporting.stderr();
        if stderr.contains("telemetry could not be delivered") {
            Ok(())
        } else {
            Err(stderr)
        }
    })
    .await;
    exporting.terminate();
    let status = exporting.child.wait().unwrap();
    assert!(
        status.success(),
        "exit status {status}: {}",
        exporting.stderr()
    );
}

#[tokio::test]
async fn no_token_key_secret_or_body_reaches_the_payloads() {
    let ingestion = Ingestion::start();
    let function_key = "FunctionKey-9f8e7d6c5b4a39281706ABCDEF==";
    let query_key = "QueryCodeKey-0a1b2c3d4e5f60718293XYZ==";
    let mut handler = start_exporting(&ingestion, &[]);
    let base = handler.base();
    let client = client();
    let token = dev_token("alice");
    let body_marker = "BODY-MARKER-5d41402abc4b2a76b9719d911017c592";

    let order = serde_json::json!({
        "items": [{"sku": body_marker, "quantity": 1, "unitPrice": "1.00"}],
        "currency": "EUR"
    });
    // A token whose signature does not verify: rejected, and not logged either.
    let tampered = format!("{token}x");
    let rejected = client
        .get(format!("{base}/api/orders"))
        .bearer_auth(&tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 401);
    let sends = [
        client
            .post(format!("{base}/api/orders?code={query_key}"))
            .json(&order),
        client
            .post(format!("{base}/api/orders?code={query_key}"))
            .header("content-type", "application/json")
            .body(format!("{{\"items\": \"{body_marker}\"")),
        client.get(format!("{base}/api/orders?code={query_key}")),
        client.get(format!("{base}/api/faults/error?code={query_key}")),
        client.get(format!("{base}/api/faults/panic")),
        client.get(format!("{base}/api/nowhere?code={query_key}")),
    ];
    for send in sends {
        let response = send
            .bearer_auth(&token)
            .header("x-functions-key", function_key)
            .header("cookie", format!("session={function_key}"))
            .send()
            .await
            .unwrap();
        assert!(response.status().as_u16() < 600);
    }
    handler.terminate();
    assert!(handler.child.wait().unwrap().success());

    let envelopes = ingestion.envelopes();
    let requests = envelopes
        .iter()
        .filter(|e| kind(e) == "RequestData")
        .count();
    assert!(requests >= 7, "every request was exported: {envelopes:?}");
    // The query stays, with the key's value replaced.
    assert!(
        envelopes.iter().any(|e| data(e)["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("?code=REDACTED"))),
        "{envelopes:?}"
    );

    let raw = ingestion.raw();
    let connection = ingestion.connection_string();
    let signature = token.rsplit('.').next().unwrap_or_default().to_owned();
    for secret in [
        token.as_str(),
        tampered.as_str(),
        signature.as_str(),
        function_key,
        query_key,
        DEV_SECRET,
        body_marker,
        connection.as_str(),
    ] {
        assert!(
            !contains(&raw, secret.as_bytes()),
            "{secret:?} reached the ingestion endpoint"
        );
    }
    assert!(!ingestion.paths.lock().unwrap().is_empty());
}

/// Removes what differs between any two answers to the same request (ids, times), at any depth.
fn strip_volatile(value: &mut Value) {
    match value {
        Value::Object(object) => {
            object.retain(|key, _| {
                !matches!(
                    key.as_str(),
                    "traceId" | "id" | "createdAt" | "updatedAt" | "etag" | "nextLink"
                )
            });
            object.values_mut().for_each(strip_volatile);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_volatile),
        _ => {}
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
