//! The export worker: writes a job's file and marks the job finished, for each delivery of its
//! queue message, from the Functions host's queue trigger (`POST /export-worker`) or from the
//! [`poller`] that feeds it when no Functions host does.
//!
//! The worker is idempotent: the queue delivers at least once, so a redelivered message for a
//! finished job changes nothing, and a rerun overwrites the job's one file instead of adding one.

pub mod poller;

use std::sync::Arc;

use bytes::Bytes;
use time::OffsetDateTime;

use crate::config::StorageSettings;
use crate::domain::{self, ExportFailure, ExportJob, ExportStatus};
use crate::store::exports::{ExportMessage, ExportStore, ExportStores};
use crate::store::{ListQuery, OrderStore, StoreError};

/// Deliveries of one message before the job is marked failed (the Functions host's default
/// `maxDequeueCount`).
pub const MAX_ATTEMPTS: u32 = 5;

/// Starts the queue poller unless the Functions host feeds the worker (it does when it runs
/// this process with Azure storage: the `export-worker` queue trigger). In memory mode the
/// poller is the only way jobs get processed.
pub fn start_background(
    storage: &StorageSettings,
    under_functions_host: bool,
    orders: Arc<dyn OrderStore>,
    exports: ExportStores,
) -> Option<tokio::task::JoinHandle<()>> {
    if storage.account.is_some() && under_functions_host {
        return None;
    }
    let options = if storage.account.is_some() {
        poller::PollerOptions::default()
    } else {
        // Polling memory costs nothing: keep the wait short so local exports finish quickly.
        poller::PollerOptions {
            idle_wait: std::time::Duration::from_millis(100),
            ..poller::PollerOptions::default()
        }
    };
    Some(poller::spawn(orders, exports, options))
}

/// What processing one delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file was written and the job marked succeeded.
    Succeeded { orders: usize },
    /// The job had already finished: a redelivery, nothing done.
    AlreadyFinished(ExportStatus),
    /// No such job (deleted, or a message this service did not write): nothing to do.
    Missing,
    /// Every attempt failed: the job is marked failed.
    Failed,
}

/// Why a delivery failed; the queue delivers the message again.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the message is not an export job: {0}")]
    BadMessage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ExportMessage {
    /// Reads a message, decoding it again when it arrives JSON-encoded twice (a string whose
    /// content is the JSON object), as the Functions host may deliver it.
    pub fn parse(text: &str) -> Result<Self, WorkerError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| WorkerError::BadMessage(e.to_string()))?;
        Self::from_value(value)
    }

    pub fn from_value(value: serde_json::Value) -> Result<Self, WorkerError> {
        match value {
            serde_json::Value::String(inner) => Self::parse(&inner),
            other => {
                serde_json::from_value(other).map_err(|e| WorkerError::BadMessage(e.to_string()))
            }
        }
    }

    /// The message as enqueued. Built as a JSON value of two strings, which always serialises.
    pub fn to_text(&self) -> String {
        serde_json::json!({ "owner": self.owner, "id": self.id.as_str() }).to_string()
    }
}

/// Processes one delivery of `message`, the `dequeue_count`-th. On the last attempt a failure
/// marks the job failed (and is then reported as done, so the message is not retried).
pub async fn process(
    orders: &dyn OrderStore,
    exports: &dyn ExportStore,
    message: &ExportMessage,
    dequeue_count: u32,
) -> Result<Outcome, WorkerError> {
    match run(orders, exports, message).await {
        Ok(outcome) => Ok(outcome),
        Err(error) if dequeue_count >= MAX_ATTEMPTS => {
            tracing::error!(job = %message.id, %error, dequeue_count, "export failed on its last attempt");
            Ok(give_up(exports, message).await?)
        }
        Err(error) => Err(error.into()),
    }
}

async fn run(
    orders: &dyn OrderStore,
    exports: &dyn ExportStore,
    message: &ExportMessage,
) -> Result<Outcome, StoreError> {
    let Some(job) = exports.get_job(&message.owner, &message.id).await? else {
        return Ok(Outcome::Missing);
    };
    if job.status.is_finished() {
        return Ok(Outcome::AlreadyFinished(job.status));
    }
    let job = if job.status == ExportStatus::NotStarted {
        match exports.replace_job(&job.running(), &job.etag).await {
            Ok(running) => running,
            // Another delivery moved it on; let the next delivery look again.
            Err(StoreError::EtagMismatch) => return reread(exports, message).await,
            Err(other) => return Err(other),
        }
    } else {
        job
    };

    let snapshot = read_orders(orders, &job).await?;
    let content = domain::render_export(job.format, &snapshot);
    exports.put_file(&job, Bytes::from(content)).await?;

    let done = job.succeeded(snapshot.len(), OffsetDateTime::now_utc());
    match exports.replace_job(&done, &job.etag).await {
        Ok(_) => Ok(Outcome::Succeeded {
            orders: snapshot.len(),
        }),
        // A concurrent delivery finished first; its file has the same name.
        Err(StoreError::EtagMismatch) => reread(exports, message).await,
        Err(other) => Err(other),
    }
}

async fn reread(exports: &dyn ExportStore, message: &ExportMessage) -> Result<Outcome, StoreError> {
    match exports.get_job(&message.owner, &message.id).await? {
        Some(job) if job.status.is_finished() => Ok(Outcome::AlreadyFinished(job.status)),
        Some(_) => Err(StoreError::EtagMismatch),
        None => Ok(Outcome::Missing),
    }
}

async fn read_orders(
    orders: &dyn OrderStore,
    job: &ExportJob,
) -> Result<Vec<domain::Order>, StoreError> {
    let mut all = Vec::new();
    let mut query = ListQuery {
        status: job.order_status,
        top: 100,
        continuation: None,
    };
    loop {
        let page = orders.list(&job.owner, &query).await?;
        all.extend(page.orders);
        match page.continuation {
            Some(token) => query.continuation = Some(token),
            None => return Ok(all),
        }
    }
}

/// Marks the message's job failed because every attempt at it did: on its last delivery, and
/// for a message the queue moved to `export-jobs-poison` (whose deliveries may have died before
/// they could say so: a crash, a timeout). A job that finished meanwhile stays as it is.
pub async fn give_up(
    exports: &dyn ExportStore,
    message: &ExportMessage,
) -> Result<Outcome, StoreError> {
    for _ in 0..5 {
        let Some(job) = exports.get_job(&message.owner, &message.id).await? else {
            return Ok(Outcome::Missing);
        };
        if job.status.is_finished() {
            return Ok(Outcome::AlreadyFinished(job.status));
        }
        let failed = job.failed(ExportFailure::AttemptsExhausted, OffsetDateTime::now_utc());
        match exports.replace_job(&failed, &job.etag).await {
            Ok(_) => return Ok(Outcome::Failed),
            Err(StoreError::EtagMismatch) => continue,
            Err(other) => return Err(other),
        }
    }
    Err(StoreError::EtagMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_may_arrive_encoded_twice() {
        let message = ExportMessage {
            owner: "alice".into(),
            id: crate::domain::ExportId::generate(),
        };
        let once = message.to_text();
        let twice = serde_json::to_string(&once).unwrap();
        assert_eq!(ExportMessage::parse(&once).unwrap(), message);
        assert_eq!(ExportMessage::parse(&twice).unwrap(), message);
        assert!(ExportMessage::parse("{\"owner\":1}").is_err());
        assert!(ExportMessage::parse("not json").is_err());
    }
}
