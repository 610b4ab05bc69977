//! Blob service operations on one container: upload, and read-only SAS URLs for downloads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use time::OffsetDateTime;

use super::client::{Call, Service, StorageClient};
use super::signing;
use crate::store::StoreError;

pub struct Container {
    client: Arc<StorageClient>,
    name: String,
    exists: AtomicBool,
}

impl Container {
    pub fn new(client: Arc<StorageClient>, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
            exists: AtomicBool::new(false),
        }
    }

    async fn ensure(&self) -> Result<(), StoreError> {
        if self.exists.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut url = self.client.url(Service::Blob, &self.name)?;
        url.query_pairs_mut().append_pair("restype", "container");
        let reply = self
            .client
            .send(Call::new(
                Service::Blob,
                "CreateContainer",
                Method::PUT,
                url,
            ))
            .await?;
        match reply.status.as_u16() {
            201 | 409 => {
                self.exists.store(true, Ordering::Release);
                Ok(())
            }
            _ => Err(reply.unexpected("CreateContainer")),
        }
    }

    /// Uploads (or overwrites) `name` in one request.
    pub async fn put(
        &self,
        name: &str,
        content_type: &'static str,
        content: bytes::Bytes,
    ) -> Result<(), StoreError> {
        self.ensure().await?;
        let make = || -> Result<Call, StoreError> {
            let url = self
                .client
                .url(Service::Blob, &format!("{}/{name}", self.name))?;
            Ok(Call::new(Service::Blob, "PutBlob", Method::PUT, url)
                .header("x-ms-blob-type", "BlockBlob")
                .body(content_type, content.clone()))
        };
        let mut reply = self.client.send(make()?).await?;
        if reply.status == StatusCode::NOT_FOUND && reply.error_code() == "ContainerNotFound" {
            self.exists.store(false, Ordering::Release);
            self.ensure().await?;
            reply = self.client.send(make()?).await?;
        }
        if reply.status == StatusCode::CREATED {
            Ok(())
        } else {
            Err(reply.unexpected("PutBlob"))
        }
    }

    /// A URL that reads `name` for `ttl` (started a minute back to allow for clock skew).
    pub fn read_url(&self, name: &str, ttl: Duration) -> Result<Url, StoreError> {
        let Some(key) = self.client.account_key() else {
            // Identity-based connections would need a user delegation key.
            return Err(StoreError::BadResponse(
                "download links need an account key connection".to_owned(),
            ));
        };
        let now = OffsetDateTime::now_utc();
        let format = |t: OffsetDateTime| {
            let t = t.replace_nanosecond(0).unwrap_or(t);
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        let start = format(now - time::Duration::minutes(1));
        let expiry = format(now + ttl);
        let query = signing::blob_read_sas(
            key,
            &self.client.account.name,
            &format!("{}/{name}", self.name),
            &start,
            &expiry,
        );
        let mut url = self
            .client
            .url(Service::Blob, &format!("{}/{name}", self.name))?;
        url.set_query(Some(&query));
        Ok(url)
    }
}
