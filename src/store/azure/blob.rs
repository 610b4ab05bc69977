//! Blob service operations on one container: upload, and read-only SAS URLs for downloads.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use time::OffsetDateTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::client::{Call, Service, StorageClient};
use super::{signing, xml};
use crate::store::StoreError;

pub struct Container {
    client: Arc<StorageClient>,
    name: String,
    exists: AtomicBool,
    /// The user delegation key for identity-based connections, and until when it is valid.
    delegation: tokio::sync::Mutex<Option<(signing::UserDelegationKey, OffsetDateTime)>>,
}

impl Container {
    pub fn new(client: Arc<StorageClient>, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
            exists: AtomicBool::new(false),
            delegation: tokio::sync::Mutex::new(None),
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

    /// A URL that reads `name` for `ttl` (started a minute back to allow for clock skew):
    /// a service SAS with the account key, else a user delegation SAS.
    pub async fn read_url(&self, name: &str, ttl: Duration) -> Result<Url, StoreError> {
        let now = OffsetDateTime::now_utc();
        let start = iso(now - time::Duration::minutes(1));
        let expiry = iso(now + ttl);
        let blob_path = format!("{}/{name}", self.name);
        let query = match self.client.account_key() {
            Some(key) => {
                signing::blob_read_sas(key, &self.client.account.name, &blob_path, &start, &expiry)
            }
            None => {
                let key = self.delegation_key(now, ttl).await?;
                signing::blob_read_user_delegation_sas(
                    &key,
                    &self.client.account.name,
                    &blob_path,
                    &start,
                    &expiry,
                )
            }
        };
        let mut url = self.client.url(Service::Blob, &blob_path)?;
        url.set_query(Some(&query));
        Ok(url)
    }

    /// A user delegation key that outlives a link made now, fetched when the cached one would
    /// not (keys are valid for an hour; links for minutes).
    async fn delegation_key(
        &self,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<signing::UserDelegationKey, StoreError> {
        let needed_until = now + ttl + time::Duration::minutes(5);
        let mut cached = self.delegation.lock().await;
        if let Some((key, until)) = cached.as_ref()
            && *until > needed_until
        {
            return Ok(key.clone());
        }
        let until = now + time::Duration::hours(1);
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><KeyInfo><Start>{}</Start><Expiry>{}</Expiry></KeyInfo>",
            iso(now - time::Duration::minutes(1)),
            iso(until)
        );
        let mut url = self.client.url(Service::Blob, "")?;
        url.query_pairs_mut()
            .append_pair("restype", "service")
            .append_pair("comp", "userdelegationkey");
        let reply = self
            .client
            .send(
                Call::new(Service::Blob, "GetUserDelegationKey", Method::POST, url)
                    .body("application/xml", body),
            )
            .await?;
        if reply.status != StatusCode::OK {
            return Err(reply.unexpected("GetUserDelegationKey"));
        }
        let text = String::from_utf8_lossy(&reply.body);
        let field = |tag: &str| {
            xml::first(&text, tag)
                .ok_or_else(|| StoreError::BadResponse(format!("GetUserDelegationKey: no {tag}")))
        };
        let key = signing::UserDelegationKey {
            object_id: field("SignedOid")?,
            tenant_id: field("SignedTid")?,
            start: field("SignedStart")?,
            expiry: field("SignedExpiry")?,
            service: field("SignedService")?,
            version: field("SignedVersion")?,
            value: STANDARD.decode(field("Value")?.trim()).map_err(|_| {
                StoreError::BadResponse("GetUserDelegationKey: key is not Base64".to_owned())
            })?,
        };
        *cached = Some((key.clone(), until));
        Ok(key)
    }
}

/// ISO 8601 UTC with seconds precision, as SAS fields want it.
fn iso(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
