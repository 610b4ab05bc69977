//! What every answer carries and how big it may get: `nosniff` everywhere, `private` caching for
//! whatever a caller's credentials unlocked, quoted paths cut short, and requests with many
//! headers or long targets answered by the service (with its body) rather than by hyper.

use serde_json::{Value, json};

use crate::helpers::{assert_error, header, sample_order, spawn};

/// The response's Cache-Control, or "" when it has none.
fn cache_control(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn check_headers(request: reqwest::RequestBuilder, private: bool) -> u16 {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let what = format!("{} {}", status, response.url().path());
    assert_eq!(
        header(&response, "x-content-type-options"),
        "nosniff",
        "{what}"
    );
    let cache = cache_control(&response);
    if private {
        assert!(
            cache == "private" || cache == "no-store",
            "{what}: an authenticated answer is never stored by shared caches, got {cache:?}"
        );
    }
    status
}

#[tokio::test]
async fn every_answer_is_nosniff_and_authenticated_ones_are_private() {
    let app = spawn().await;
    let (id, etag, _) = app.create_order(&sample_order()).await;
    let order = format!("/api/orders/{id}");

    let anonymous = [
        ("GET", "/"),
        ("GET", "/api/health"),
        ("GET", "/api/openapi.json"),
        ("GET", "/api/nowhere"),
        ("GET", "/api/orders"),
    ];
    for (method, path) in anonymous {
        check_headers(app.anonymous(method, path), false).await;
    }
    // The listing was the gap: single orders already said private.
    let authenticated = [
        (app.get("/api/orders"), 200),
        (app.get("/api/orders?status=pending&top=1"), 200),
        (app.get(&order), 200),
        (app.get(&order).header("if-none-match", &etag), 304),
        (app.post("/api/orders").json(&sample_order()), 201),
        (app.patch(&order).json(&json!({"status": "paid"})), 200),
        (
            app.post("/api/exports").json(&json!({"format": "csv"})),
            202,
        ),
        (app.get("/api/orders/o_missing"), 404),
        (app.delete(&order), 204),
    ];
    for (request, expected) in authenticated {
        assert_eq!(check_headers(request, true).await, expected);
    }
}

#[tokio::test]
async fn an_unknown_path_is_quoted_cut_like_an_order_id() {
    let app = spawn().await;
    let long = format!("/api/{}", "a".repeat(4_000));
    let response = app.get(&long).send().await.unwrap();
    let body = assert_error(response, 404, "NotFound").await;
    let message = body["message"].as_str().unwrap();
    assert_eq!(
        message,
        format!("No resource at '/api/{}'.", "a".repeat(59))
    );
    // Problem details quote the path as `instance`: cut the same way.
    let response = app
        .get(&long)
        .header("accept", "application/problem+json")
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(text.len() < 512, "{} bytes: {text}", text.len());
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(problem["instance"].as_str().unwrap().len(), 64);
}

#[tokio::test]
async fn a_long_target_gets_the_services_414() {
    let app = spawn().await;
    // 60 KB: within what hyper reads, so the service answers, with its body.
    let path = format!("/api/{}", "a".repeat(60 * 1024));
    let response = app.get(&path).send().await.unwrap();
    let body = assert_error(response, 414, "UriTooLong").await;
    assert!(body.to_string().len() < 512);
    let query = format!("/api/orders?status={}", "x".repeat(9 * 1024));
    assert_error(app.get(&query).send().await.unwrap(), 414, "UriTooLong").await;
    // Up to the limit, exactly, the target is served as usual.
    let start = "/api/orders?top=5&x=";
    let fits = format!("{start}{}", "y".repeat(8 * 1024 - start.len()));
    assert_eq!(app.get(&fits).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn many_small_headers_are_answered_by_the_service_not_by_hyper() {
    let app = spawn().await;
    // 150 fields of a few bytes: hyper's default limit of 100 answered 431 with no body.
    let mut request = app.get("/api/orders");
    for i in 0..150 {
        request = request.header(format!("x-h{i}"), "1");
    }
    assert_eq!(request.send().await.unwrap().status(), 200);
    // 3,000 fields, 24 KB: more than the 16 KiB allowed, answered with the service's 431.
    let mut request = app.get("/api/orders");
    for i in 0..3_000 {
        request = request.header(format!("x-h{i:04}"), "value");
    }
    assert_error(
        request.send().await.unwrap(),
        431,
        "RequestHeaderFieldsTooLarge",
    )
    .await;
    // And the service goes on serving.
    assert_eq!(app.get("/api/orders").send().await.unwrap().status(), 200);
}
