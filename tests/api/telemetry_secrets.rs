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
