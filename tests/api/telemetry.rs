//! Application Insights telemetry, asserted on what a local ingestion endpoint receives from the
//! real `handler` binary: requests, exceptions, dependencies and traces, and their correlation
//! with the caller's `traceparent` and the error bodies. Delivery (flush, an unreachable
//! endpoint) and secrets have modules of their own.

use crate::helpers::ingestion::*;
use serde_json::Value;

mod sampling;

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
    // Under the Functions host (which sets the port; 0 lets the kernel choose here).
    let handler = start_exporting(&ingestion, &[("FUNCTIONS_CUSTOMHANDLER_PORT", "0")]);
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
    // The stand-in identity provider, publishing no keys.
    let idp = crate::helpers::idp::Idp::start(&[]).await;
    let issuer = idp.issuer();
    let jwks_uri = idp.jwks_uri();
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
                .find(|e| {
                    kind(e) == "RemoteDependencyData"
                        && data(e)["name"] == "GET /tenant/discovery/v2.0/keys"
                })
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
