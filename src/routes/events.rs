//! `GET /api/orders/events`: a WebSocket (101) that streams the caller's own order changes as
//! JSON text messages, `{"type": "created"|"updated"|"deleted", "order": {...}}`. Standalone
//! hosting only: Functions HTTP cannot upgrade a connection.

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::Reader;
use crate::events::{ChangeKind, OrderChanged};
use crate::routes::orders::OrderResource;
use crate::state::AppState;

pub const PATH: &str = "/api/orders/events";

pub fn router() -> Router<AppState> {
    Router::new().route(PATH, get(subscribe))
}

#[derive(Serialize)]
struct EventMessage<'a> {
    #[serde(rename = "type")]
    kind: ChangeKind,
    order: OrderResource<'a>,
}

/// Authenticates like every route (401/403 without upgrading), then upgrades.
async fn subscribe(
    State(state): State<AppState>,
    Reader(caller): Reader,
    upgrade: WebSocketUpgrade,
) -> Response {
    let changes = state.events.subscribe();
    upgrade.on_upgrade(move |socket| stream_changes(socket, caller.owner, changes))
}

async fn stream_changes(
    mut socket: WebSocket,
    owner: std::sync::Arc<str>,
    mut changes: tokio::sync::broadcast::Receiver<OrderChanged>,
) {
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) if *change.order.owner == *owner => {
                    let message = EventMessage { kind: change.kind, order: OrderResource::from(&change.order) };
                    let Ok(text) = serde_json::to_string(&message) else { continue };
                    if socket.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // Too slow to keep up: say so, and let the client re-read what it missed.
                Err(RecvError::Lagged(missed)) => {
                    let text = serde_json::json!({"type": "lagged", "missed": missed}).to_string();
                    if socket.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            },
            incoming = socket.recv() => match incoming {
                // Clients only listen; anything but a close is ignored (pings are answered by the library).
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
