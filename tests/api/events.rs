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
