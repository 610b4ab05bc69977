//! Telemetry on its way out: storage calls as dependencies (with the account key kept out),
//! the flush on SIGTERM, and an unreachable endpoint that changes no response.

use std::sync::{Arc, Mutex};

use crate::helpers::ingestion::*;
use crate::helpers::{Handler, eventually, serve_on_own_thread};
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

#[tokio::test]
async fn a_storage_call_is_a_dependency_of_its_request_and_its_key_stays_out() {
    // A stand-in storage account that refuses every call, keeping the signatures it was sent.
    let authorizations = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = authorizations.clone();
    let storage_addr = serve_on_own_thread(Router::new().fallback(move |headers: HeaderMap| {
        let seen = seen.clone();
        async move {
            if let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
                seen.lock().unwrap().push(value.to_owned());
            }
            (
                StatusCode::FORBIDDEN,
                [("content-type", "application/json")],
                r#"{"odata.error":{"code":"AuthenticationFailed","message":{"lang":"en-US","value":"Server failed to authenticate the request."}}}"#,
            )
        }
    }));
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
                    .map(|(n, v)| {
                        // How much of the caller's bucket is left, and when it is full again,
                        // depend on the time between requests: present in both, values not
                        // compared.
                        let value =
                            if matches!(n.as_str(), "ratelimit-remaining" | "ratelimit-reset") {
                                "(varies with time)"
                            } else {
                                v.to_str().unwrap_or_default()
                            };
                        (n.to_string(), value.to_owned())
                    })
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
