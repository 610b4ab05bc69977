//! Queue service operations on one queue. Messages are sent Base64-encoded: the Functions queue
//! trigger decodes Base64 by default, and a plain-text message would go straight to poison.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::{Method, StatusCode};

use super::client::{Call, Reply, Service, StorageClient};
use super::xml;
use crate::store::StoreError;
use crate::store::exports::QueuedMessage as ReceivedMessage;

pub struct Queue {
    client: Arc<StorageClient>,
    name: String,
    exists: AtomicBool,
}

impl Queue {
    pub fn new(client: Arc<StorageClient>, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
            exists: AtomicBool::new(false),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    async fn ensure(&self) -> Result<(), StoreError> {
        if self.exists.load(Ordering::Acquire) {
            return Ok(());
        }
        let url = self.client.url(Service::Queue, &self.name)?;
        let reply = self
            .client
            .send(Call::new(Service::Queue, "CreateQueue", Method::PUT, url))
            .await?;
        match reply.status.as_u16() {
            201 | 204 | 409 => {
                self.exists.store(true, Ordering::Release);
                Ok(())
            }
            _ => Err(reply.unexpected("CreateQueue")),
        }
    }

    /// Creates the queue on first use, and again after a `QueueNotFound`.
    async fn send(&self, make: impl Fn() -> Result<Call, StoreError>) -> Result<Reply, StoreError> {
        self.ensure().await?;
        let reply = self.client.send(make()?).await?;
        if reply.status == StatusCode::NOT_FOUND && reply.error_code() == "QueueNotFound" {
            self.exists.store(false, Ordering::Release);
            self.ensure().await?;
            return self.client.send(make()?).await;
        }
        Ok(reply)
    }

    pub async fn put(&self, text: &str) -> Result<(), StoreError> {
        let body = format!(
            "<QueueMessage><MessageText>{}</MessageText></QueueMessage>",
            STANDARD.encode(text)
        );
        let reply = self
            .send(|| {
                let url = self
                    .client
                    .url(Service::Queue, &format!("{}/messages", self.name))?;
                Ok(Call::new(Service::Queue, "PutMessage", Method::POST, url)
                    .body("application/xml", body.clone()))
            })
            .await?;
        if reply.status == StatusCode::CREATED {
            Ok(())
        } else {
            Err(reply.unexpected("PutMessage"))
        }
    }

    /// Up to `max` messages, hidden from other receivers for `visibility`.
    pub async fn receive(
        &self,
        max: u32,
        visibility: Duration,
    ) -> Result<Vec<ReceivedMessage>, StoreError> {
        let reply = self
            .send(|| {
                let mut url = self
                    .client
                    .url(Service::Queue, &format!("{}/messages", self.name))?;
                url.query_pairs_mut()
                    .append_pair("numofmessages", &max.clamp(1, 32).to_string())
                    .append_pair(
                        "visibilitytimeout",
                        &visibility.as_secs().max(1).to_string(),
                    );
                Ok(Call::new(Service::Queue, "GetMessages", Method::GET, url))
            })
            .await?;
        if reply.status != StatusCode::OK {
            return Err(reply.unexpected("GetMessages"));
        }
        let text = String::from_utf8_lossy(&reply.body);
        xml::all(&text, "QueueMessage")
            .iter()
            .map(|message| parse_message(message))
            .collect()
    }

    pub async fn delete(&self, message: &ReceivedMessage) -> Result<(), StoreError> {
        let reply = self
            .send(|| {
                let mut url = self.client.url(
                    Service::Queue,
                    &format!("{}/messages/{}", self.name, message.id),
                )?;
                url.query_pairs_mut()
                    .append_pair("popreceipt", &message.pop_receipt);
                Ok(Call::new(
                    Service::Queue,
                    "DeleteMessage",
                    Method::DELETE,
                    url,
                ))
            })
            .await?;
        match reply.status.as_u16() {
            // 404: already gone (deleted by another receiver, or expired); nothing to do.
            204 | 404 => Ok(()),
            _ => Err(reply.unexpected("DeleteMessage")),
        }
    }
}

fn parse_message(xml_text: &str) -> Result<ReceivedMessage, StoreError> {
    let field = |tag: &str| {
        xml::first(xml_text, tag)
            .ok_or_else(|| StoreError::BadResponse(format!("GetMessages: no {tag}")))
    };
    let encoded = field("MessageText")?;
    let text = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| StoreError::BadResponse("queue message is not Base64 text".to_owned()))?;
    Ok(ReceivedMessage {
        id: field("MessageId")?,
        pop_receipt: field("PopReceipt")?,
        dequeue_count: field("DequeueCount")?
            .trim()
            .parse()
            .map_err(|_| StoreError::BadResponse("GetMessages: bad DequeueCount".to_owned()))?,
        text,
        insertion_time: field("InsertionTime")?,
        expiration_time: field("ExpirationTime")?,
        next_visible_time: field("TimeNextVisible")?,
    })
}
