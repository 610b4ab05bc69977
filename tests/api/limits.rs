//! Misbehaving clients and overload: load shedding, slow and oversized headers, idle
//! connections. None of them may pin the service.

use std::time::Duration;

use crate::helpers::{assert_error, header, spawn_with, test_config};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn beyond_the_concurrency_limit_requests_are_shed_but_health_answers() {
    let mut config = test_config();
    config.max_concurrency = 1;
    let app = spawn_with(config).await;
    let slow = tokio::spawn(app.get("/api/faults/slow?ms=1500").send());
    // Wait until the slow request holds the only permit.
    let mut shed = None;
    for _ in 0..100 {
        let response = app.get("/api/orders").send().await.unwrap();
        if response.status() == 503 {
            shed = Some(response);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shed = shed.expect("a second request is shed while the first is in flight");
    assert_eq!(header(&shed, "retry-after"), "1");
    assert_error(shed, 503, "ServiceUnavailable").await;
    assert_eq!(
        app.anonymous("GET", "/api/health")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.anonymous("GET", "/").send().await.unwrap().status(),
        200
    );
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    // Capacity comes back once the slow request is done.
    assert_eq!(app.get("/api/orders").send().await.unwrap().status(), 200);
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_until_closed(socket: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let _ = socket.read_to_end(&mut received).await;
    received
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let mut config = test_config();
    config.header_timeout = Duration::from_millis(300);
    let app = spawn_with(config).await;
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    socket
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // The rest of the headers never come: the server closes the connection.
    let received = read_until_closed(&mut socket).await;
    let text = String::from_utf8_lossy(&received);
    assert!(!text.contains("200 OK"), "{text}");
    // And it still serves others.
    assert_eq!(
        app.anonymous("GET", "/api/health")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let mut config = test_config();
    config.header_timeout = Duration::from_millis(300);
    let app = spawn_with(config).await;
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let received = read_until_closed(&mut socket).await;
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "the request is answered: {text}"
    );
    assert_eq!(text.matches("HTTP/1.1").count(), 1);
}

#[tokio::test]
async fn oversized_headers_get_a_rendered_431() {
    let app = spawn_with(test_config()).await;
    let response = app
        .anonymous("GET", "/api/health")
        .header("x-padding", "p".repeat(20 * 1024))
        .send()
        .await
        .unwrap();
    assert_error(response, 431, "RequestHeaderFieldsTooLarge").await;
    assert_eq!(
        app.anonymous("GET", "/api/health")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_burst_over_the_limit_gets_429_and_recovers_after_retry_after() {
    let mut config = test_config();
    config.rate_limit_per_minute = 60;
    let app = spawn_with(config).await;
    for expected_remaining in (0..60).rev() {
        let response = app.get("/api/orders").send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-limit"), "60");
        assert_eq!(
            header(&response, "ratelimit-remaining"),
            expected_remaining.to_string()
        );
        assert!(header(&response, "ratelimit-reset").parse::<u64>().unwrap() <= 60);
    }
    let limited = app.get("/api/orders").send().await.unwrap();
    let retry_after: u64 = header(&limited, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(header(&limited, "ratelimit-remaining"), "0");
    assert_error(limited, 429, "TooManyRequests").await;

    // Other callers have their own buckets; health is never limited.
    assert_eq!(
        app.as_user("bob", "GET", "/api/orders")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.anonymous("GET", "/api/health")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(app.get("/api/orders").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn anonymous_callers_are_limited_by_the_forwarded_client_address() {
    let mut config = test_config();
    config.rate_limit_per_minute = 2;
    let app = spawn_with(config).await;
    let from = |client: &str| {
        app.anonymous("GET", "/api/orders")
            .header("x-forwarded-for", format!("198.51.100.1, {client}"))
            .send()
    };
    assert_eq!(from("203.0.113.1").await.unwrap().status(), 401);
    assert_eq!(from("203.0.113.1").await.unwrap().status(), 401);
    assert_error(from("203.0.113.1").await.unwrap(), 429, "TooManyRequests").await;
    // Another client address (the right-most entry counts, not what the client wrote first).
    assert_eq!(from("203.0.113.2").await.unwrap().status(), 401);
}

#[tokio::test]
async fn ten_thousand_distinct_callers_do_not_grow_memory_without_bound() {
    let mut config = test_config();
    config.rate_limit_max_callers = 1_000;
    let app = spawn_with(config).await;
    let client = &app.client;
    let url = app.url("/api/orders");
    let statuses: Vec<u16> = futures_util::stream::iter(0..10_000u32)
        .map(|i| {
            let forwarded = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            let request = client.get(&url).header("x-forwarded-for", forwarded);
            async move { request.send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "only 401/429"
    );
    let tracked = app.state.rate_limits.tracked_callers();
    assert!(tracked <= 1_000, "tracked callers: {tracked}");
    // Still serving.
    assert_eq!(app.get("/api/orders").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_hosts_own_calls_are_never_rate_limited() {
    let mut config = test_config();
    config.rate_limit_per_minute = 1;
    let app = spawn_with(config).await;
    // The Functions host calls from 127.0.0.1 without X-Forwarded-For: readiness probes and the
    // export worker's invocations must not share (and exhaust) one bucket.
    for _ in 0..5 {
        assert_eq!(
            app.anonymous("GET", "/").send().await.unwrap().status(),
            200
        );
        let invocation = app
            .anonymous("POST", "/export-worker")
            .json(&serde_json::json!({"Data": {}, "Metadata": {}}))
            .send()
            .await
            .unwrap();
        assert_ne!(invocation.status(), 429);
        assert!(!invocation.headers().contains_key("ratelimit-limit"));
    }
    // A client route from the same address is limited.
    assert_eq!(
        app.anonymous("GET", "/api/orders")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let limited = app.anonymous("GET", "/api/orders").send().await.unwrap();
    assert_error(limited, 429, "TooManyRequests").await;
}
