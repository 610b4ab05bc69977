//! Export jobs, files and the job queue in memory: the development default, with the same
//! promises as the Azure versions (conditional job updates, at-least-once delivery with a
//! visibility timeout and a dequeue count).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use crate::domain::{ExportId, ExportJob};
use crate::store::StoreError;
use crate::store::exports::{ExportStore, FileLocation, JobQueue, QueuedMessage};

type Key = (String, ExportId);

#[derive(Default)]
pub struct MemoryExportStore {
    jobs: Mutex<HashMap<Key, ExportJob>>,
    files: Mutex<HashMap<Key, Bytes>>,
    next_version: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutation is a single map operation: a panic elsewhere cannot leave it half-done.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryExportStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn new_etag(&self) -> String {
        format!("v{}", self.next_version.fetch_add(1, Ordering::Relaxed))
    }

    /// Number of files held, for tests that check a redelivery wrote no second file.
    pub fn file_count(&self) -> usize {
        lock(&self.files).len()
    }
}

#[async_trait]
impl ExportStore for MemoryExportStore {
    async fn insert_job(&self, job: &ExportJob) -> Result<ExportJob, StoreError> {
        let stored = ExportJob {
            etag: self.new_etag(),
            ..job.clone()
        };
        let mut jobs = lock(&self.jobs);
        let key = (job.owner.clone(), job.id.clone());
        if jobs.contains_key(&key) {
            return Err(StoreError::AlreadyExists);
        }
        jobs.insert(key, stored.clone());
        Ok(stored)
    }

    async fn get_job(&self, owner: &str, id: &ExportId) -> Result<Option<ExportJob>, StoreError> {
        Ok(lock(&self.jobs)
            .get(&(owner.to_owned(), id.clone()))
            .cloned())
    }

    async fn replace_job(&self, job: &ExportJob, if_match: &str) -> Result<ExportJob, StoreError> {
        let etag = self.new_etag();
        let mut jobs = lock(&self.jobs);
        let current = jobs
            .get_mut(&(job.owner.clone(), job.id.clone()))
            .ok_or(StoreError::NotFound)?;
        if current.etag != if_match {
            return Err(StoreError::EtagMismatch);
        }
        *current = ExportJob {
            etag,
            ..job.clone()
        };
        Ok(current.clone())
    }

    async fn put_file(&self, job: &ExportJob, content: Bytes) -> Result<(), StoreError> {
        lock(&self.files).insert((job.owner.clone(), job.id.clone()), content);
        Ok(())
    }

    async fn file_location(&self, _job: &ExportJob) -> Result<FileLocation, StoreError> {
        Ok(FileLocation::Handler)
    }

    async fn read_file(&self, job: &ExportJob) -> Result<Option<Bytes>, StoreError> {
        Ok(lock(&self.files)
            .get(&(job.owner.clone(), job.id.clone()))
            .cloned())
    }
}

struct Message {
    id: String,
    text: String,
    dequeue_count: u32,
    visible_at: Instant,
    pop_receipt: String,
}

#[derive(Default)]
pub struct MemoryJobQueue {
    messages: Mutex<Vec<Message>>,
    poison: Mutex<Vec<String>>,
    next_id: AtomicU64,
}

impl MemoryJobQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages parked after failing every attempt.
    pub fn poisoned(&self) -> Vec<String> {
        lock(&self.poison).clone()
    }

    fn next(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

#[async_trait]
impl JobQueue for MemoryJobQueue {
    async fn send(&self, text: &str) -> Result<(), StoreError> {
        let id = format!("m{}", self.next());
        lock(&self.messages).push(Message {
            id,
            text: text.to_owned(),
            dequeue_count: 0,
            visible_at: Instant::now(),
            pop_receipt: String::new(),
        });
        Ok(())
    }

    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<QueuedMessage>, StoreError> {
        let now = Instant::now();
        let mut received = Vec::new();
        let mut messages = lock(&self.messages);
        for message in messages.iter_mut() {
            if received.len() >= max as usize {
                break;
            }
            if message.visible_at > now {
                continue;
            }
            message.dequeue_count += 1;
            message.visible_at = now + visibility;
            message.pop_receipt = format!("p{}", self.next());
            received.push(QueuedMessage {
                id: message.id.clone(),
                pop_receipt: message.pop_receipt.clone(),
                dequeue_count: message.dequeue_count,
                text: message.text.clone(),
                insertion_time: String::new(),
                expiration_time: String::new(),
                next_visible_time: String::new(),
            });
        }
        Ok(received)
    }

    async fn delete(&self, message: &QueuedMessage) -> Result<(), StoreError> {
        // Only the latest receiver (matching pop receipt) may delete, as in Azure.
        lock(&self.messages)
            .retain(|m| !(m.id == message.id && m.pop_receipt == message.pop_receipt));
        Ok(())
    }

    async fn send_poison(&self, text: &str) -> Result<(), StoreError> {
        lock(&self.poison).push(text.to_owned());
        Ok(())
    }
}
