//! `GET /api/orders/events`: a WebSocket (101) that streams the caller's own order changes as
//! JSON text messages, `{"type": "created"|"updated"|"deleted", "order": {...}}`. Standalone
//! hosting only: Functions HTTP cannot upgrade a connection.
//!
//! Clients have nothing to say but control frames (ping, pong, close), so what they may send is
//! small: a frame or message over [`MAX_CLIENT_MESSAGE`] closes the connection with 1009
//! (message too big) instead of being buffered. Connections are counted per caller and per
//! instance (`ORDERS_EVENTS_MAX_CONNECTIONS*`); beyond either, the upgrade is refused with 429 or
//! 503 before it happens.

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use crate::auth::Reader;
use crate::error::ApiError;
use crate::events::{ChangeKind, OrderChanged, Refused, Subscription};
use crate::routes::orders::OrderResource;
use crate::state::AppState;

pub const PATH: &str = "/api/orders/events";

/// Largest frame, and largest message, a client may send: control frames carry at most 125
/// bytes, and a client that sends text anyway has room for a little.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;

/// What the server may have written but not yet flushed: one order event is at most a few tens
/// of kilobytes (100 items), and sends wait for the socket, so this is only a backstop.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new().route(PATH, get(subscribe))
}

#[derive(Serialize)]
struct EventMessage<'a> {
    #[serde(rename = "type")]
    kind: ChangeKind,
    order: OrderResource<'a>,
}

/// Authenticates like every route (401/403 without upgrading), takes a place among the
/// listeners (429/503 without upgrading), then upgrades with small buffers and limits.
async fn subscribe(
    State(state): State<AppState>,
    Reader(caller): Reader,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let subscription = state.events.subscribe(&caller.owner).map_err(refusal)?;
    let owner = caller.owner;
    Ok(upgrade
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .read_buffer_size(MAX_CLIENT_MESSAGE)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| stream_changes(socket, owner, subscription)))
}

fn refusal(refused: Refused) -> ApiError {
    match refused {
        Refused::OwnerAtLimit(limit) => ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            format!("This caller already has {limit} event streams open; close one first."),
        )
        .with_retry_after(5),
        Refused::InstanceAtLimit => ApiError::unavailable(
            "This instance has no room for another event stream; retry shortly.",
            5,
        )
        .with_internal("event streams: instance limit reached"),
    }
}

async fn stream_changes(
    mut socket: WebSocket,
    owner: std::sync::Arc<str>,
    mut subscription: Subscription,
) {
    loop {
        tokio::select! {
            change = subscription.changes.recv() => match change {
                Ok(change) if *change.order.owner == *owner => {
                    if !send_change(&mut socket, &change).await {
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
                Some(Ok(Message::Close(_))) | None => return,
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    if is_too_big(error) {
                        let frame = CloseFrame {
                            code: close_code::SIZE,
                            reason: "clients send control frames only".into(),
                        };
                        // The connection ends either way; a client that stopped reading
                        // just does not hear why.
                        let _ = socket.send(Message::Close(Some(frame))).await;
                    }
                    return;
                }
            },
        }
    }
}

/// Sends one change; false when the connection is gone.
async fn send_change(socket: &mut WebSocket, change: &OrderChanged) -> bool {
    let message = EventMessage {
        kind: change.kind,
        order: OrderResource::from(&change.order),
    };
    match serde_json::to_string(&message) {
        Ok(text) => socket.send(Message::text(text)).await.is_ok(),
        // infallible in practice: the representation holds strings and numbers only.
        Err(_) => true,
    }
}

/// Whether a read failed because the client's frame or message was over the limit.
fn is_too_big(error: axum::Error) -> bool {
    error
        .into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}
