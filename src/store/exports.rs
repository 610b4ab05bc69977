//! Where export jobs, their queue and their files live. Shaped like the orders store: jobs are
//! partitioned by owner and every write returns a new ETag, so the worker's status changes are
//! conditional and a redelivered message cannot overwrite a newer status.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::StoreError;
use super::memory::{MemoryExportStore, MemoryJobQueue};
use crate::domain::{ExportId, ExportJob};

/// Where export jobs, their files and their queue live.
#[derive(Clone)]
pub struct ExportStores {
    pub jobs: Arc<dyn ExportStore>,
    pub queue: Arc<dyn JobQueue>,
}

impl ExportStores {
    pub fn in_memory() -> Self {
        Self {
            jobs: Arc::new(MemoryExportStore::new()),
            queue: Arc::new(MemoryJobQueue::new()),
        }
    }
}

/// The queue message for one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportMessage {
    pub owner: String,
    pub id: ExportId,
}

/// Where a finished export's file can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileLocation {
    /// A short-lived, read-only URL (Blob Storage SAS).
    Url(String),
    /// The handler serves the file itself (in-memory store).
    Handler,
}

#[async_trait]
pub trait ExportStore: Send + Sync + 'static {
    async fn insert_job(&self, job: &ExportJob) -> Result<ExportJob, StoreError>;

    async fn get_job(&self, owner: &str, id: &ExportId) -> Result<Option<ExportJob>, StoreError>;

    /// Replaces the job if its current ETag is `if_match`; returns it with its new ETag.
    async fn replace_job(&self, job: &ExportJob, if_match: &str) -> Result<ExportJob, StoreError>;

    /// Writes (or overwrites) the job's file.
    async fn put_file(&self, job: &ExportJob, content: Bytes) -> Result<(), StoreError>;

    async fn file_location(&self, job: &ExportJob) -> Result<FileLocation, StoreError>;

    /// The file's content, for stores whose location is [`FileLocation::Handler`].
    async fn read_file(&self, job: &ExportJob) -> Result<Option<Bytes>, StoreError>;
}

/// A message as received from a [`JobQueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub id: String,
    pub pop_receipt: String,
    /// How many times the message has been received, this time included.
    pub dequeue_count: u32,
    pub text: String,
    pub insertion_time: String,
    pub expiration_time: String,
    pub next_visible_time: String,
}

/// An at-least-once queue: a received message stays hidden for the visibility timeout and
/// comes back unless it is deleted.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    async fn send(&self, text: &str) -> Result<(), StoreError>;

    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<QueuedMessage>, StoreError>;

    async fn delete(&self, message: &QueuedMessage) -> Result<(), StoreError>;

    /// Parks a message that failed every attempt (`<queue>-poison`, as the Functions host does).
    async fn send_poison(&self, text: &str) -> Result<(), StoreError>;
}
