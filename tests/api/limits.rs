//! Misbehaving clients and overload: load shedding, slow and oversized headers, idle
//! connections. None of them may pin the service.

use std::time::Duration;

use crate::helpers::{assert_error, header, sample_order, spawn_with, test_config};
use futures_util::StreamExt;
use orders_api::config::TrustedProxies;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn beyond_the_concurrency_limit_requests_are_shed_but_health_answers() {
    let mut config = test_config();
    config.max_concurrency = 1;
    let app = spawn_with(config).await;
    // An upload that holds the only permit for as long as the test wants: the server sends
    // `100 Continue` once the request is admitted and its handler asks for the body, and the
    // body comes only when the test sends it. No timing decides anything.
    let body = sample_order().to_string();
    let mut upload = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        app.token("alice"),
        body.len()
    );
    upload.write_all(head.as_bytes()).await.unwrap();
    let interim = read_some(&mut upload).await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");

    let shed = app.get("/api/orders").send().await.unwrap();
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

    upload.write_all(body.as_bytes()).await.unwrap();
    let answer = read_some(&mut upload).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    // The permit went back before the answer was written: capacity is there again.
    assert_eq!(app.get("/api/orders").send().await.unwrap().status(), 200);
}

/// What the server sent in its next write (one response head, here).
async fn read_some(socket: &mut tokio::net::TcpStream) -> String {
    let mut buffer = vec![0u8; 4096];
    let n = socket.read(&mut buffer).await.unwrap();
    String::from_utf8_lossy(&buffer[..n]).into_owned()
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
    // The rate limiter's clock stands still: every count below is exact.
    for expected_remaining in (0..60u64).rev() {
        let response = app.get("/api/orders").send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-limit"), "60");
        assert_eq!(
            header(&response, "ratelimit-remaining"),
            expected_remaining.to_string()
        );
        assert_eq!(
            header(&response, "ratelimit-reset"),
            (60 - expected_remaining).to_string()
        );
    }
    let limited = app.get("/api/orders").send().await.unwrap();
    let retry_after: u64 = header(&limited, "retry-after").parse().unwrap();
    assert_eq!(retry_after, 1, "one request's worth of refill");
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

    app.clock
        .advance(Duration::from_secs(retry_after) - Duration::from_millis(1));
    assert_eq!(app.get("/api/orders").send().await.unwrap().status(), 429);
    app.clock.advance(Duration::from_millis(1));
    assert_eq!(app.get("/api/orders").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn anonymous_callers_are_limited_by_the_forwarded_client_address() {
    let mut config = test_config();
    config.rate_limit_per_minute = 2;
    // As under the Functions host: the peer on loopback forwards the client's address.
    config.trusted_proxies = TrustedProxies::none().with_loopback();
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
    // Forwarded addresses count (a trusted proxy in front), so each one is a caller.
    config.trusted_proxies = TrustedProxies::none().with_loopback();
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
    // Once the flood's buckets have refilled (a tenth of a second at 600 a minute), they are
    // forgotten and a new caller gets a bucket of its own.
    app.clock.advance(Duration::from_secs(1));
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

#[tokio::test]
async fn a_direct_client_cannot_pick_its_address_with_x_forwarded_for() {
    // Reached directly (no trusted proxy configured): the socket address is the client, whatever
    // X-Forwarded-For says.
    let mut config = test_config();
    config.rate_limit_per_minute = 2;
    config.rate_limit_max_callers = 100;
    let app = spawn_with(config).await;
    let spoofing = |i: u32| {
        app.anonymous("GET", "/api/orders")
            .header(
                "x-forwarded-for",
                format!("198.51.100.1, 203.0.113.{}", i % 250),
            )
            .send()
    };
    assert_eq!(spoofing(1).await.unwrap().status(), 401);
    assert_eq!(spoofing(2).await.unwrap().status(), 401);
    // A rotated right-most entry is still the same caller.
    assert_error(spoofing(3).await.unwrap(), 429, "TooManyRequests").await;
    for i in 4..500 {
        assert_eq!(spoofing(i).await.unwrap().status(), 429);
    }
    // Nor can it fill the tracked-callers table and push others into the shared overflow.
    assert_eq!(app.state.rate_limits.tracked_callers(), 1);
    assert_eq!(app.get("/api/orders").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn an_ipv4_mapped_address_is_the_same_client() {
    let mut config = test_config();
    config.rate_limit_per_minute = 1;
    config.trusted_proxies = TrustedProxies::none().with_loopback();
    let app = spawn_with(config).await;
    let from = |client: &str| {
        app.anonymous("GET", "/api/orders")
            .header("x-forwarded-for", client.to_owned())
            .send()
    };
    assert_eq!(from("203.0.113.5").await.unwrap().status(), 401);
    assert_eq!(from("::ffff:203.0.113.5").await.unwrap().status(), 429);
    assert_eq!(
        from("[::ffff:203.0.113.5]:4431").await.unwrap().status(),
        429
    );
    assert_eq!(from("203.0.113.6").await.unwrap().status(), 401);
}
