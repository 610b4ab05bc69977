//! Misbehaving clients and overload: load shedding, slow and oversized headers, idle
//! connections. None of them may pin the service.

mod common;

use std::time::Duration;

use common::{assert_error, header, spawn_with, test_config};
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
