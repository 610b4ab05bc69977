//! `GET /api/orders/events`: 101 Switching Protocols, then the caller's own order changes as
//! JSON; nobody else's; no token, no upgrade.

use crate::helpers::{PATIENCE, assert_error, sample_order, spawn};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn next_json(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("an event arrives")
            .expect("the socket stays open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

#[tokio::test]
async fn the_owner_receives_their_own_changes_only() {
    let app = spawn().await;
    let mut request = format!("ws://{}/api/orders/events", app.addr)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", app.token("alice")).parse().unwrap(),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);

    // Bob's order first: it must not reach Alice.
    let bob = app
        .as_user("bob", "POST", "/api/orders")
        .json(&sample_order())
        .send()
        .await
        .unwrap();
    assert_eq!(bob.status(), 201);
    let (id, _, _) = app.create_order(&sample_order()).await;
    let event = next_json(&mut socket).await;
    assert_eq!(event["type"], "created");
    assert_eq!(event["order"]["id"], id.as_str());

    let path = format!("/api/orders/{id}");
    app.patch(&path)
        .json(&json!({"status": "paid"}))
        .send()
        .await
        .unwrap();
    let event = next_json(&mut socket).await;
    assert_eq!(event["type"], "updated");
    assert_eq!(event["order"]["status"], "paid");

    app.delete(&path).send().await.unwrap();
    let event = next_json(&mut socket).await;
    assert_eq!(event["type"], "deleted");
    assert_eq!(event["order"]["id"], id.as_str());
}

#[tokio::test]
async fn no_token_is_401_without_upgrade() {
    let app = spawn().await;
    let request = format!("ws://{}/api/orders/events", app.addr)
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
            assert!(response.headers().contains_key("www-authenticate"));
        }
        other => panic!("expected a 401 refusal, got {other:?}"),
    }
    // The same with a plain HTTP client, for the body.
    let response = app
        .anonymous("GET", "/api/orders/events")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "Unauthorized").await;
}

#[tokio::test]
async fn a_plain_get_is_told_to_upgrade() {
    let app = spawn().await;
    let response = app.get("/api/orders/events").send().await.unwrap();
    assert!(response.status().is_client_error());
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
}

// ---------------------------------------------------------------------------------------------
// Abuse: oversized client messages, too many connections, memory.

use std::net::SocketAddr;

use crate::helpers::{Handler, eventually, spawn_with, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens the events WebSocket by hand (the attacks below write frames no client library would).
async fn raw_upgrade(addr: SocketAddr, token: &str) -> TcpStream {
    match try_upgrade(addr, token).await {
        Ok(socket) => socket,
        Err(answer) => panic!("not upgraded: {answer}"),
    }
}

/// The upgraded connection, or the head of the answer that refused it.
async fn try_upgrade(addr: SocketAddr, token: &str) -> Result<TcpStream, String> {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET /api/orders/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(
            socket.read(&mut byte).await.unwrap(),
            1,
            "closed during the handshake"
        );
        answer.push(byte[0]);
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    if answer.starts_with("HTTP/1.1 101") {
        Ok(socket)
    } else {
        Err(answer)
    }
}

/// A client frame's header (masked, as clients must; the zero key leaves the payload as is).
fn frame_header(opcode: u8, fin: bool, len: u64) -> Vec<u8> {
    let mut header = vec![if fin { 0x80 } else { 0 } | opcode, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    header
}

const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;

/// Reads server frames until a close frame, and returns its status code.
async fn close_code(socket: &mut TcpStream) -> u16 {
    loop {
        let mut head = [0u8; 2];
        socket.read_exact(&mut head).await.expect("a close frame");
        let len = match head[1] & 0x7f {
            126 => u64::from(socket.read_u16().await.unwrap()),
            127 => socket.read_u64().await.unwrap(),
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).unwrap()];
        socket.read_exact(&mut payload).await.unwrap();
        if head[0] & 0x0f == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

#[tokio::test]
async fn a_client_frame_or_message_over_the_limit_is_closed_with_1009() {
    let app = spawn().await;
    let token = app.token("alice");

    // One frame announcing a megabyte: refused from its header, before any payload is kept.
    let mut socket = raw_upgrade(app.addr, &token).await;
    socket
        .write_all(&frame_header(BINARY, false, 1 << 20))
        .await
        .unwrap();
    assert_eq!(close_code(&mut socket).await, 1009);

    // Small fragments of a message that never ends: refused once they add up past the limit.
    let mut socket = raw_upgrade(app.addr, &token).await;
    for opcode in [BINARY, CONTINUATION] {
        socket
            .write_all(&frame_header(opcode, false, 3 * 1024))
            .await
            .unwrap();
        socket.write_all(&[0u8; 3 * 1024]).await.unwrap();
    }
    assert_eq!(close_code(&mut socket).await, 1009);

    // Both places are given back.
    eventually("closed streams to be counted out", || async {
        match app.state.events.listeners() {
            0 => Ok(()),
            n => Err(format!("{n} listeners")),
        }
    })
    .await;
}

#[tokio::test]
async fn event_streams_are_limited_per_caller_and_per_instance() {
    let mut config = test_config();
    config.events_max_connections_per_caller = 2;
    config.events_max_connections = 3;
    let app = spawn_with(config).await;
    let upgrade = |user: &str| {
        app.as_user(user, "GET", "/api/orders/events")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
    };
    let first = raw_upgrade(app.addr, &app.token("alice")).await;
    let _second = raw_upgrade(app.addr, &app.token("alice")).await;
    let refused = upgrade("alice").await.unwrap();
    assert_eq!(crate::helpers::header(&refused, "retry-after"), "5");
    assert_error(refused, 429, "TooManyRequests").await;

    let _third = raw_upgrade(app.addr, &app.token("bob")).await;
    let refused = upgrade("carol").await.unwrap();
    assert_eq!(crate::helpers::header(&refused, "retry-after"), "5");
    assert_error(refused, 503, "ServiceUnavailable").await;

    // A closed stream makes room again.
    drop(first);
    eventually("alice's closed stream to be counted out", || async {
        match app.state.events.listeners() {
            2 => Ok(()),
            n => Err(format!("{n} listeners")),
        }
    })
    .await;
    let _again = raw_upgrade(app.addr, &app.token("alice")).await;
}

/// Resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

#[tokio::test]
async fn twenty_streams_of_endless_fragments_stay_within_a_memory_bound() {
    let handler = Handler::start(&[]);
    let addr: SocketAddr = format!("127.0.0.1:{}", handler.port).parse().unwrap();
    let pid = handler.child.id();
    let tokens: Vec<String> = (0..4)
        .map(|i| {
            let request =
                orders_api::auth::dev::TokenRequest::new(format!("user{i}"), &["Orders.Read"]);
            orders_api::auth::dev::issue_token(
                &orders_api::config::Config::defaults().auth,
                &request,
            )
            .unwrap()
        })
        .collect();
    // Warm: one stream opened and closed, so that start-up allocations are not counted.
    drop(raw_upgrade(addr, &tokens[0]).await);
    let before = rss_bytes(pid);

    // Twenty streams (five per caller, the default limit), each sending 8 MiB of a binary
    // fragment that announces itself as 8 MiB and never ends the message.
    const EACH: usize = 8 << 20;
    let mut attacks = Vec::new();
    for i in 0..20 {
        let token = tokens[i % 4].clone();
        attacks.push(tokio::spawn(async move {
            let mut socket = raw_upgrade(addr, &token).await;
            let mut sent = 0;
            if socket
                .write_all(&frame_header(BINARY, false, EACH as u64))
                .await
                .is_ok()
            {
                let chunk = vec![0u8; 64 * 1024];
                while sent < EACH && socket.write_all(&chunk).await.is_ok() {
                    sent += chunk.len();
                }
            }
            socket
        }));
    }
    let mut sockets = Vec::new();
    for attack in attacks {
        sockets.push(attack.await.unwrap());
    }
    let during = rss_bytes(pid);
    let growth = during.saturating_sub(before);
    eprintln!(
        "RSS before {} KiB, with 20 attacking streams {} KiB (+{} KiB)",
        before / 1024,
        during / 1024,
        growth / 1024
    );
    // 20 × 8 MiB were offered; none of it may be kept.
    assert!(
        growth < 16 << 20,
        "the handler grew by {} KiB under the attack",
        growth / 1024
    );
    drop(sockets);
    // Every place is given back (once the handler has seen the closes): each caller can hold
    // its five streams again.
    eventually("every caller to get its five streams back", || async {
        let mut open = Vec::new();
        for token in &tokens {
            for _ in 0..5 {
                open.push(try_upgrade(addr, token).await?);
            }
        }
        Ok(open.len())
    })
    .await;
}
