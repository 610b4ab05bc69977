//! What must never reach Application Insights: tokens, keys, secrets, bodies, query values the
//! API does not define, and hosts a client made up.

use crate::helpers::ingestion::*;

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

#[tokio::test]
async fn only_the_apis_own_query_parameters_and_the_requests_host_are_exported() {
    let ingestion = Ingestion::start();
    let mut handler = start_exporting(&ingestion, &[]);
    let secrets = [
        ("pwd", "Pwd-3f9a1c"),
        ("jwt", "eyJhbGciOiJIUzI1NiJ9.secret-jwt-4b2d"),
        ("sas", "sv%3D2024%26sig%3Dsas-signature-8c3e"),
        ("bearer", "Bearer-token-9d4f"),
        ("passwd", "Passwd-0e5a"),
        ("session", "Session-1f6b"),
        // `token`, percent-encoded so that matching names as written would miss it.
        ("to%6Ben", "Token-2a7c"),
    ];
    let mut query: Vec<String> = secrets.iter().map(|(n, v)| format!("{n}={v}")).collect();
    query.push("status=pending".to_owned());
    query.push("top=5".to_owned());
    let path_and_query = format!("/api/orders?{}", query.join("&"));
    let response = client()
        .get(format!("{}{path_and_query}", handler.base()))
        .bearer_auth(dev_token("alice"))
        .header("x-forwarded-host", "phish.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let exported = format!(
        "http://127.0.0.1:{}/api/orders?{}&status=pending&top=5",
        handler.port,
        vec!["REDACTED"; secrets.len()].join("&")
    );
    let request = ingestion
        .wait_for("the listing's request telemetry", |e| {
            request_for(e, "&status=pending&top=5")
        })
        .await;
    assert_eq!(data(&request)["url"], exported.as_str(), "{request}");

    handler.terminate();
    assert!(handler.child.wait().unwrap().success());
    let raw = ingestion.raw();
    for (name, value) in secrets {
        let decoded = value.replace("%3D", "=").replace("%26", "&");
        for secret in [value, decoded.as_str()] {
            assert!(
                !contains(&raw, secret.as_bytes()),
                "{name}: {secret:?} was exported"
            );
        }
    }
    assert!(
        !contains(&raw, b"phish.example"),
        "a client's X-Forwarded-Host was exported"
    );
}
