//! Order change notifications for `GET /api/orders/events` (WebSocket). Changes are broadcast
//! within this instance only: a client sees the changes made through the instance it is
//! connected to. Listeners are counted, per owner and in total, since each holds a connection
//! and its buffers for as long as it likes. Under the Functions host, which cannot upgrade
//! connections, nothing subscribes and publishing costs nothing; this service has no Web PubSub
//! integration for that case.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

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

/// The broadcast channel of one instance, and who is listening to it. Cheap to clone.
#[derive(Clone)]
pub struct OrderEvents {
    sender: broadcast::Sender<OrderChanged>,
    listeners: Arc<Listeners>,
}

/// How many may listen at once: each listener is a connection held open, with its buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    pub total: usize,
    pub per_owner: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            total: 1_000,
            per_owner: 5,
        }
    }
}

struct Listeners {
    limits: ListenerLimits,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_owner: HashMap<Arc<str>, usize>,
}

/// Why a new listener was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The owner already holds `per_owner` listeners.
    OwnerAtLimit(usize),
    /// The instance already holds `total` listeners.
    InstanceAtLimit,
}

/// One admitted listener: its changes, and its place among the listeners, given back when this
/// is dropped (the connection closed, or never upgraded).
pub struct Subscription {
    pub changes: broadcast::Receiver<OrderChanged>,
    _place: Place,
}

struct Place {
    listeners: Arc<Listeners>,
    owner: Arc<str>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.listeners.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.per_owner.get_mut(&self.owner) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.per_owner.remove(&self.owner);
            }
        }
    }
}

impl Listeners {
    fn lock(&self) -> MutexGuard<'_, Open> {
        // Every change under the lock is a counter update: a panic cannot leave it half done.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for OrderEvents {
    fn default() -> Self {
        Self::new(ListenerLimits::default())
    }
}

impl OrderEvents {
    /// A subscriber that falls this far behind loses the oldest changes (and is told so).
    const BUFFER: usize = 1_024;

    pub fn new(limits: ListenerLimits) -> Self {
        Self {
            sender: broadcast::channel(Self::BUFFER).0,
            listeners: Arc::new(Listeners {
                limits,
                open: Mutex::new(Open::default()),
            }),
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

    /// A new listener for `owner`, within the limits.
    pub fn subscribe(&self, owner: &Arc<str>) -> Result<Subscription, Refused> {
        let limits = self.listeners.limits;
        {
            let mut open = self.listeners.lock();
            let mine = open.per_owner.get(owner).copied().unwrap_or(0);
            if mine >= limits.per_owner {
                return Err(Refused::OwnerAtLimit(limits.per_owner));
            }
            if open.total >= limits.total {
                return Err(Refused::InstanceAtLimit);
            }
            open.total += 1;
            *open.per_owner.entry(Arc::clone(owner)).or_insert(0) += 1;
        }
        Ok(Subscription {
            changes: self.sender.subscribe(),
            _place: Place {
                listeners: Arc::clone(&self.listeners),
                owner: Arc::clone(owner),
            },
        })
    }

    /// Listeners open now.
    pub fn listeners(&self) -> usize {
        self.listeners.lock().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_limited_per_owner_and_in_total_and_given_back() {
        let events = OrderEvents::new(ListenerLimits {
            total: 3,
            per_owner: 2,
        });
        let (alice, bob, carol): (Arc<str>, Arc<str>, Arc<str>) =
            (Arc::from("alice"), Arc::from("bob"), Arc::from("carol"));
        let first = events.subscribe(&alice).unwrap();
        let _second = events.subscribe(&alice).unwrap();
        assert_eq!(
            events.subscribe(&alice).err(),
            Some(Refused::OwnerAtLimit(2))
        );
        let _third = events.subscribe(&bob).unwrap();
        assert_eq!(
            events.subscribe(&carol).err(),
            Some(Refused::InstanceAtLimit)
        );
        drop(first);
        assert_eq!(events.listeners(), 2);
        assert!(events.subscribe(&carol).is_ok());
    }
}
