//! The one error path: every failure the service can produce, produced for real over a socket,
//! with its status, headers and exact JSON shape.

use std::time::Duration;

use crate::helpers::{assert_error, header, spawn, spawn_with, test_config};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn unknown_route_is_404_with_the_error_shape() {
    let app = spawn().await;
    let response = app
        .anonymous("GET", "/api/nothing-here")
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 404, "NotFound").await;
    assert_eq!(
        body.as_object().unwrap().len(),
        4,
        "no details on a 404: {body}"
    );
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let app = spawn().await;
    let response = app.request("PUT", "/api/orders").send().await.unwrap();
    let allow = header(&response, "allow");
    assert_error(response, 405, "MethodNotAllowed").await;
    let mut methods: Vec<&str> = allow.split(',').map(str::trim).collect();
    methods.sort_unstable();
    assert_eq!(methods, ["GET", "HEAD", "POST"]);
}

#[tokio::test]
async fn unrecognised_method_is_501() {
    let app = spawn().await;
    for path in ["/api/orders", "/api/nothing-here"] {
        let response = app.request("PURGE", path).send().await.unwrap();
        assert_error(response, 501, "NotImplemented").await;
    }
}

#[tokio::test]
async fn malformed_json_is_400_without_details() {
    let app = spawn().await;
    let response = app
        .post("/api/orders")
        .header("content-type", "application/json")
        .body("{\"items\": [")
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 400, "BadRequest").await;
    assert!(body.get("details").is_none());
    assert!(body["message"].as_str().unwrap().contains("not valid JSON"));
}

#[tokio::test]
async fn wrong_shape_is_400_with_field_details() {
    let app = spawn().await;
    let response = app
        .post("/api/orders")
        .json(&json!({"items": [{"sku": "A-1", "quantity": "two", "unitPrice": "1.00"}], "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 400, "BadRequest").await;
    let details = body["details"].as_array().unwrap();
    assert_eq!(details.len(), 1);
    assert_eq!(details[0]["field"], "items[0].quantity");
    assert!(
        details[0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert_eq!(details[0].as_object().unwrap().len(), 2);
}

#[tokio::test]
async fn non_json_body_is_415() {
    let app = spawn().await;
    let response = app
        .post("/api/orders")
        .header("content-type", "text/plain")
        .body("items=1")
        .send()
        .await
        .unwrap();
    assert_error(response, 415, "UnsupportedMediaType").await;
    let response = app.post("/api/orders").body("{}").send().await.unwrap();
    assert_error(response, 415, "UnsupportedMediaType").await;
}

fn oversized_order(bytes: usize) -> String {
    let padding = "x".repeat(bytes);
    json!({"items": [{"sku": "A-1", "quantity": 1, "unitPrice": "1"}], "currency": "EUR", "pad": padding}).to_string()
}

#[tokio::test]
async fn body_over_the_limit_is_413_with_content_length() {
    let mut config = test_config();
    config.max_body_bytes = 1024;
    let app = spawn_with(config).await;
    let response = app
        .post("/api/orders")
        .header("content-type", "application/json")
        .body(oversized_order(4096))
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "ContentTooLarge").await;
    assert_eq!(app.store.len(), 0);
}

#[tokio::test]
async fn body_over_the_limit_is_413_without_content_length() {
    let mut config = test_config();
    config.max_body_bytes = 1024;
    let app = spawn_with(config).await;
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..16).map(|_| Ok("x".repeat(256))).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let response = app
        .post("/api/orders")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "ContentTooLarge").await;
}

/// Sends a request whose body never arrives in full; returns everything the server sent back
/// until it closed the connection.
async fn trickle_body(addr: std::net::SocketAddr, token: &str) -> String {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"items\":"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    // The server answers and closes; read_to_end returns at that close.
    socket.read_to_end(&mut received).await.unwrap();
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn slow_body_is_408_and_the_connection_closes() {
    let mut config = test_config();
    config.body_timeout = Duration::from_millis(300);
    let app = spawn_with(config).await;
    let raw = trickle_body(app.addr, &app.token("alice")).await;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 408 "), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let body: Value = serde_json::from_str(body).unwrap();
    crate::helpers::assert_error_body(&body, 408, "RequestTimeout");
    assert_eq!(app.store.len(), 0);
}

#[tokio::test]
async fn request_past_the_deadline_is_504() {
    let mut config = test_config();
    config.request_timeout = Duration::from_millis(200);
    let app = spawn_with(config).await;
    // The handler would sleep ten minutes: only the deadline can end this request.
    let response = app.get("/api/faults/slow?ms=600000").send().await.unwrap();
    assert_error(response, 504, "GatewayTimeout").await;
    let response = app.get("/api/faults/slow?ms=0").send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn panic_is_a_generic_500_and_the_service_keeps_serving() {
    let app = spawn().await;
    let response = app.get("/api/faults/panic").send().await.unwrap();
    let body = assert_error(response, 500, "InternalServerError").await;
    let text = body.to_string();
    assert!(
        !text.contains("panic") && !text.contains("faults.rs"),
        "{text}"
    );
    let response = app.get("/api/health").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let response = app.get("/api/orders").send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn internal_errors_hide_their_detail() {
    let app = spawn().await;
    let response = app.get("/api/faults/error").send().await.unwrap();
    let body = assert_error(response, 500, "InternalServerError").await;
    let text = body.to_string();
    assert!(
        !text.contains("simulated") && !text.contains("fault injection"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_gateway_and_unavailable() {
    let app = spawn().await;
    let response = app.get("/api/faults/bad-gateway").send().await.unwrap();
    let body = assert_error(response, 502, "BadGateway").await;
    assert!(!body.to_string().contains("garbage"));
    let response = app.get("/api/faults/unavailable").send().await.unwrap();
    assert_eq!(header(&response, "retry-after"), "5");
    let body = assert_error(response, 503, "ServiceUnavailable").await;
    assert!(!body.to_string().contains("unreachable"));
}

#[tokio::test]
async fn fault_routes_do_not_exist_unless_enabled() {
    let mut config = test_config();
    config.fault_injection = false;
    let app = spawn_with(config).await;
    for fault in ["panic", "error", "slow", "bad-gateway", "unavailable"] {
        let response = app
            .get(&format!("/api/faults/{fault}"))
            .send()
            .await
            .unwrap();
        assert_error(response, 404, "NotFound").await;
    }
}

#[tokio::test]
async fn problem_json_when_the_client_prefers_it() {
    let app = spawn().await;
    let response = app
        .anonymous("GET", "/api/missing")
        .header("accept", "application/problem+json")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        header(&response, "content-type"),
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "type": "about:blank",
            "title": "Not Found",
            "status": 404,
            "detail": "No resource at '/api/missing'.",
            "instance": "/api/missing",
            "error": "NotFound",
            "message": "No resource at '/api/missing'.",
            "traceId": "4bf92f3577b34da6a3ce929d0e0e4736"
        })
    );

    // Validation details come along; plain JSON stays the default for */* and for JSON-first.
    let response = app
        .post("/api/orders")
        .header("accept", "application/json;q=0.5, application/problem+json")
        .json(&json!({"items": [], "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "content-type"),
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 400);
    assert_eq!(body["details"][0]["field"], "items");
    for accept in ["*/*", "application/json, application/problem+json;q=0.9"] {
        let response = app
            .anonymous("GET", "/api/missing")
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_error(response, 404, "NotFound").await;
    }
}

#[tokio::test]
async fn trace_id_comes_from_traceparent_and_request_id_is_echoed() {
    let app = spawn().await;
    let response = app
        .anonymous("GET", "/api/missing")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "x-request-id"), "client-chosen-42");
    let body = assert_error(response, 404, "NotFound").await;
    assert_eq!(body["traceId"], "0af7651916cd43dd8448eb211c80319c");

    // Without them: a fresh request id on success too, and a fresh trace id per request.
    let ok = app.anonymous("GET", "/api/health").send().await.unwrap();
    assert!(!header(&ok, "x-request-id").is_empty());
    let a = assert_error(
        app.anonymous("GET", "/x").send().await.unwrap(),
        404,
        "NotFound",
    )
    .await;
    let b = assert_error(
        app.anonymous("GET", "/x").send().await.unwrap(),
        404,
        "NotFound",
    )
    .await;
    assert_ne!(a["traceId"], b["traceId"]);

    // A request id that could smuggle content is replaced.
    let response = app
        .anonymous("GET", "/api/health")
        .header("x-request-id", "a b")
        .send()
        .await
        .unwrap();
    assert_ne!(header(&response, "x-request-id"), "a b");
}

#[tokio::test]
async fn health_reports_its_checks_and_version() {
    let app = spawn().await;
    let response = app.anonymous("GET", "/api/health").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["checks"]["store"]["status"], "healthy");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn readiness_probe_answers_without_auth() {
    let app = spawn().await;
    let response = app.anonymous("GET", "/").send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_client_that_accepts_only_problem_details_gets_its_errors_so() {
    let app = spawn().await;
    let problem_only = |method: &str, path: &str| {
        app.request(method, path)
            .header("accept", "application/problem+json")
    };
    // An error of a safe request: the problem body, not 406.
    let response = problem_only("GET", "/api/orders/o_0190f3a1b2c37d4e8f9a0b1c2d3e4f50")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        header(&response, "content-type"),
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "NotFound");
    assert_eq!(body["detail"], body["message"]);

    // A success would be JSON, which the client does not take: 406, as problem details.
    let (id, _, _) = app.create_order(&crate::helpers::sample_order()).await;
    let response = problem_only("GET", &format!("/api/orders/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 406);
    assert_eq!(
        header(&response, "content-type"),
        "application/problem+json"
    );

    // An unsafe request is refused before it changes anything.
    let before = app.store.len();
    let response = problem_only("POST", "/api/orders")
        .json(&crate::helpers::sample_order())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 406);
    assert_eq!(app.store.len(), before);
}
