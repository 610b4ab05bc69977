//! Export jobs on Table Storage (partition = owner, row = job id), their files in Blob Storage
//! (`<owner>/<job id>.<format>`, one name per job so a repeated run overwrites), and the job
//! queue on Queue Storage.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Map, Value};

use super::blob::Container;
use super::client::StorageClient;
use super::orders::{decode_etag, encode_etag};
use super::queue::Queue;
use super::table::{Entity, Table, escape_key};
use crate::domain::{ExportId, ExportJob};
use crate::store::StoreError;
use crate::store::exports::{ExportStore, FileLocation, JobQueue, QueuedMessage};

/// How long a download link works.
pub const LINK_LIFETIME: Duration = Duration::from_secs(15 * 60);

pub struct TableExportStore {
    table: Table,
    container: Container,
}

impl TableExportStore {
    pub fn new(client: Arc<StorageClient>, table_name: &str, container_name: &str) -> Self {
        Self {
            table: Table::new(client.clone(), table_name),
            container: Container::new(client, container_name),
        }
    }

    fn blob_name(job: &ExportJob) -> String {
        format!("{}/{}", escape_key(&job.owner), job.file_name())
    }
}

fn job_properties(job: &ExportJob) -> Result<Map<String, Value>, StoreError> {
    let mut stored = job.clone();
    stored.etag = String::new();
    let data = serde_json::to_string(&stored)
        .map_err(|e| StoreError::BadResponse(format!("cannot serialise a job: {e}")))?;
    let mut properties = Map::new();
    properties.insert("Status".into(), Value::from(job.status.as_str()));
    properties.insert("Data".into(), Value::from(data));
    Ok(properties)
}

fn job_from(entity: &Entity) -> Result<ExportJob, StoreError> {
    let data = entity
        .string("Data")
        .ok_or_else(|| StoreError::BadResponse("job entity without Data".to_owned()))?;
    let mut job: ExportJob = serde_json::from_str(data)
        .map_err(|e| StoreError::BadResponse(format!("job entity is not a job: {e}")))?;
    job.etag = encode_etag(&entity.etag);
    Ok(job)
}

#[async_trait]
impl ExportStore for TableExportStore {
    async fn insert_job(&self, job: &ExportJob) -> Result<ExportJob, StoreError> {
        let etag = self
            .table
            .insert(
                &escape_key(&job.owner),
                job.id.as_str(),
                job_properties(job)?,
            )
            .await?;
        Ok(ExportJob {
            etag: encode_etag(&etag),
            ..job.clone()
        })
    }

    async fn get_job(&self, owner: &str, id: &ExportId) -> Result<Option<ExportJob>, StoreError> {
        match self.table.get(&escape_key(owner), id.as_str()).await? {
            Some(entity) => job_from(&entity).map(Some),
            None => Ok(None),
        }
    }

    async fn replace_job(&self, job: &ExportJob, if_match: &str) -> Result<ExportJob, StoreError> {
        let table_etag = decode_etag(if_match).ok_or(StoreError::EtagMismatch)?;
        let etag = self
            .table
            .replace(
                &escape_key(&job.owner),
                job.id.as_str(),
                job_properties(job)?,
                Some(&table_etag),
            )
            .await?;
        Ok(ExportJob {
            etag: encode_etag(&etag),
            ..job.clone()
        })
    }

    async fn put_file(&self, job: &ExportJob, content: Bytes) -> Result<(), StoreError> {
        self.container
            .put(&Self::blob_name(job), job.format.media_type(), content)
            .await
    }

    async fn file_location(&self, job: &ExportJob) -> Result<FileLocation, StoreError> {
        self.container
            .read_url(&Self::blob_name(job), LINK_LIFETIME)
            .await
            .map(|url| FileLocation::Url(url.to_string()))
    }

    async fn read_file(&self, _job: &ExportJob) -> Result<Option<Bytes>, StoreError> {
        // Files are read from Blob Storage directly, through the link.
        Ok(None)
    }
}

/// The job queue and its poison queue.
pub struct StorageJobQueue {
    queue: Queue,
    poison: Queue,
}

impl StorageJobQueue {
    pub fn new(client: Arc<StorageClient>, name: &str) -> Self {
        Self {
            queue: Queue::new(client.clone(), name),
            poison: Queue::new(client, format!("{name}-poison")),
        }
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    pub fn poison_queue(&self) -> &Queue {
        &self.poison
    }
}

#[async_trait]
impl JobQueue for StorageJobQueue {
    async fn send(&self, text: &str) -> Result<(), StoreError> {
        self.queue.put(text).await
    }

    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<QueuedMessage>, StoreError> {
        self.queue.receive(max, visibility).await
    }

    async fn delete(&self, message: &QueuedMessage) -> Result<(), StoreError> {
        self.queue.delete(message).await
    }

    async fn send_poison(&self, text: &str) -> Result<(), StoreError> {
        self.poison.put(text).await
    }
}
