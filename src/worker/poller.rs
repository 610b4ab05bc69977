//! Feeds the worker from the queue when no Functions host does (standalone with Azure storage,
//! and in memory mode). It behaves like the host's queue trigger: a failed delivery is left to
//! become visible again, and a message delivered more than [`MAX_ATTEMPTS`] times is parked in
//! the poison queue.

use std::sync::Arc;
use std::time::Duration;

use super::{MAX_ATTEMPTS, Outcome, give_up, process};
use crate::store::OrderStore;
use crate::store::exports::{ExportMessage, ExportStores, QueuedMessage};

#[derive(Debug, Clone, Copy)]
pub struct PollerOptions {
    /// How long a received message stays hidden: the delay before a failed one is retried.
    pub visibility: Duration,
    /// Pause after an empty or failed receive.
    pub idle_wait: Duration,
    pub batch: u32,
}

impl Default for PollerOptions {
    fn default() -> Self {
        Self {
            visibility: Duration::from_secs(30),
            idle_wait: Duration::from_secs(1),
            batch: 16,
        }
    }
}

/// Runs until the task is dropped or aborted.
pub fn spawn(
    orders: Arc<dyn OrderStore>,
    exports: ExportStores,
    options: PollerOptions,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tracing::info!("export poller started");
        loop {
            let handled = match poll_once(orders.as_ref(), &exports, &options).await {
                Ok(count) => count,
                Err(error) => {
                    tracing::warn!(%error, "export queue unavailable; retrying");
                    0
                }
            };
            if handled == 0 {
                tokio::time::sleep(options.idle_wait).await;
            }
        }
    })
}

/// Receives one batch and processes it; returns how many messages were received.
pub async fn poll_once(
    orders: &dyn OrderStore,
    exports: &ExportStores,
    options: &PollerOptions,
) -> Result<usize, crate::store::StoreError> {
    let messages = exports
        .queue
        .receive(options.batch, options.visibility)
        .await?;
    let count = messages.len();
    for message in messages {
        handle(orders, exports, &message).await;
    }
    Ok(count)
}

async fn handle(orders: &dyn OrderStore, exports: &ExportStores, message: &QueuedMessage) {
    if message.dequeue_count > MAX_ATTEMPTS {
        park(exports, message).await;
        return;
    }
    let Ok(parsed) = ExportMessage::parse(&message.text) else {
        // Neither the text nor the parser's error (which quotes it) is logged: it is not a
        // message this service wrote.
        tracing::error!(message_id = %message.id, "unreadable export message");
        park(exports, message).await;
        return;
    };
    match process(
        orders,
        exports.jobs.as_ref(),
        &parsed,
        message.dequeue_count,
    )
    .await
    {
        Ok(outcome) => {
            if let Outcome::Succeeded { orders } = outcome {
                tracing::info!(job = %parsed.id, orders, "export written");
            }
            if let Err(error) = exports.queue.delete(message).await {
                // The message comes back and the idempotent worker finds the job finished.
                tracing::warn!(%error, "could not delete a processed export message");
            }
        }
        Err(error) => {
            tracing::warn!(job = %parsed.id, %error, attempt = message.dequeue_count, "export attempt failed; it will be retried");
        }
    }
}

/// Moves a message that failed every delivery to the poison queue, as the Functions host does,
/// and then does what the host's `export-poison` function does: marks its job failed.
async fn park(exports: &ExportStores, message: &QueuedMessage) {
    match exports.queue.send_poison(&message.text).await {
        Ok(()) => {
            if let Err(error) = exports.queue.delete(message).await {
                tracing::warn!(%error, message_id = %message.id, "could not delete a poisoned export message");
            }
        }
        Err(error) => {
            tracing::warn!(%error, message_id = %message.id, "could not park an export message");
            return;
        }
    }
    if let Ok(parsed) = ExportMessage::parse(&message.text)
        && let Err(error) = give_up(exports.jobs.as_ref(), &parsed).await
    {
        tracing::warn!(%error, job = %parsed.id, "could not mark a poisoned export failed");
    }
}
