//! Order change notifications for `GET /api/orders/events` (WebSocket). Changes are broadcast
//! within this instance only: a client sees the changes made through the instance it is
//! connected to. Under the Functions host, which cannot upgrade connections, nothing subscribes
//! and publishing costs nothing; this service has no Web PubSub integration for that case.

use tokio::sync::broadcast;

use crate::domain::Order;

/// What happened to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
}

/// One change, with the order as it is after the change (as it was, for a deletion).
#[derive(Debug, Clone)]
pub struct OrderChanged {
    pub kind: ChangeKind,
    pub order: Order,
}

/// The broadcast channel of one instance. Cheap to clone.
#[derive(Clone)]
pub struct OrderEvents {
    sender: broadcast::Sender<OrderChanged>,
}

impl Default for OrderEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl OrderEvents {
    /// A subscriber that falls this far behind loses the oldest changes (and is told so).
    const BUFFER: usize = 1_024;

    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(Self::BUFFER).0,
        }
    }

    /// Publishes a change; nobody listening is fine.
    pub fn publish(&self, kind: ChangeKind, order: &Order) {
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(OrderChanged {
                kind,
                order: order.clone(),
            });
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<OrderChanged> {
        self.sender.subscribe()
    }
}
