//! Table service operations on one table, JSON (`odata=minimalmetadata`). The table is created
//! on first use, and again if it disappears, never on the start-up path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};

use super::client::{Call, Reply, Service, StorageClient};
use crate::store::StoreError;

const ACCEPT: &str = "application/json;odata=minimalmetadata";

/// An entity as read: its properties (without OData annotations) and its ETag.
#[derive(Debug, Clone)]
pub struct Entity {
    pub properties: Map<String, Value>,
    pub etag: String,
}

impl Entity {
    pub fn string(&self, name: &str) -> Option<&str> {
        self.properties.get(name).and_then(Value::as_str)
    }
}

/// Where the next page of a query starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    pub partition_key: String,
    pub row_key: Option<String>,
}

pub struct Table {
    client: Arc<StorageClient>,
    name: String,
    exists: AtomicBool,
}

impl Table {
    pub fn new(client: Arc<StorageClient>, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
            exists: AtomicBool::new(false),
        }
    }

    pub fn client(&self) -> &StorageClient {
        &self.client
    }

    async fn ensure(&self) -> Result<(), StoreError> {
        if self.exists.load(Ordering::Acquire) {
            return Ok(());
        }
        let body = serde_json::json!({ "TableName": self.name }).to_string();
        let call = Call::new(
            Service::Table,
            "CreateTable",
            Method::POST,
            self.client.url(Service::Table, "Tables")?,
        )
        .header("accept", ACCEPT)
        .header("prefer", "return-no-content")
        .body("application/json", body);
        let reply = self.client.send(call).await?;
        match reply.status.as_u16() {
            201 | 204 | 409 => {
                self.exists.store(true, Ordering::Release);
                Ok(())
            }
            _ => Err(reply.unexpected("CreateTable")),
        }
    }

    /// Sends a call built by `make`, creating the table first (and again after a
    /// `TableNotFound`, e.g. when someone deleted it).
    async fn send(&self, make: impl Fn() -> Result<Call, StoreError>) -> Result<Reply, StoreError> {
        self.ensure().await?;
        let reply = self.client.send(make()?).await?;
        if reply.status == StatusCode::NOT_FOUND && reply.error_code() == "TableNotFound" {
            self.exists.store(false, Ordering::Release);
            self.ensure().await?;
            return self.client.send(make()?).await;
        }
        Ok(reply)
    }

    fn entity_url(&self, partition_key: &str, row_key: &str) -> Result<reqwest::Url, StoreError> {
        self.client.url(
            Service::Table,
            &format!(
                "{}(PartitionKey='{}',RowKey='{}')",
                self.name,
                key_literal(partition_key),
                key_literal(row_key)
            ),
        )
    }

    /// Inserts a new entity; `AlreadyExists` if the keys are taken. Returns the new ETag.
    pub async fn insert(
        &self,
        partition_key: &str,
        row_key: &str,
        properties: Map<String, Value>,
    ) -> Result<String, StoreError> {
        let sent = properties.clone();
        let mut entity = properties;
        entity.insert("PartitionKey".into(), Value::from(partition_key));
        entity.insert("RowKey".into(), Value::from(row_key));
        let body = Value::Object(entity).to_string();
        let reply = self
            .send(|| {
                Ok(Call::new(
                    Service::Table,
                    "InsertEntity",
                    Method::POST,
                    self.client.url(Service::Table, &self.name)?,
                )
                .header("accept", ACCEPT)
                .header("prefer", "return-no-content")
                .body("application/json", body.clone()))
            })
            .await?;
        match reply.status.as_u16() {
            201 | 204 => etag_of(&reply, "InsertEntity"),
            409 if reply.retried => self.written_by_us(partition_key, row_key, &sent).await,
            409 => Err(StoreError::AlreadyExists),
            _ => Err(reply.unexpected("InsertEntity")),
        }
    }

    pub async fn get(
        &self,
        partition_key: &str,
        row_key: &str,
    ) -> Result<Option<Entity>, StoreError> {
        let reply = self
            .send(|| {
                Ok(Call::new(
                    Service::Table,
                    "GetEntity",
                    Method::GET,
                    self.entity_url(partition_key, row_key)?,
                )
                .header("accept", ACCEPT))
            })
            .await?;
        match reply.status.as_u16() {
            200 => {
                let value: Value = serde_json::from_slice(&reply.body).map_err(|e| {
                    StoreError::BadResponse(format!("GetEntity: body is not JSON: {e}"))
                })?;
                let fallback = reply.header("etag").map(str::to_owned);
                entity_from(value, fallback).map(Some)
            }
            404 => Ok(None),
            _ => Err(reply.unexpected("GetEntity")),
        }
    }

    /// Replaces the entity if its ETag is `if_match` (`*` = any existing entity), or inserts or
    /// replaces it unconditionally with `None`. Returns the new ETag.
    pub async fn replace(
        &self,
        partition_key: &str,
        row_key: &str,
        properties: Map<String, Value>,
        if_match: Option<&str>,
    ) -> Result<String, StoreError> {
        let sent = properties.clone();
        let mut entity = properties;
        entity.insert("PartitionKey".into(), Value::from(partition_key));
        entity.insert("RowKey".into(), Value::from(row_key));
        let body = Value::Object(entity).to_string();
        let reply = self
            .send(|| {
                let mut call = Call::new(
                    Service::Table,
                    "UpdateEntity",
                    Method::PUT,
                    self.entity_url(partition_key, row_key)?,
                )
                .header("accept", ACCEPT)
                .body("application/json", body.clone());
                if let Some(etag) = if_match {
                    call = call.header("if-match", etag);
                }
                Ok(call)
            })
            .await?;
        match reply.status.as_u16() {
            200 | 204 => etag_of(&reply, "UpdateEntity"),
            404 => Err(StoreError::NotFound),
            412 if reply.retried => self
                .written_by_us(partition_key, row_key, &sent)
                .await
                .map_err(|_| StoreError::EtagMismatch),
            412 => Err(StoreError::EtagMismatch),
            _ => Err(reply.unexpected("UpdateEntity")),
        }
    }

    /// After a conflict on a retried write: the entity's ETag if it holds exactly what was
    /// sent, which means the earlier attempt whose reply was lost did the write. Otherwise
    /// someone else's write stands: `AlreadyExists`.
    async fn written_by_us(
        &self,
        partition_key: &str,
        row_key: &str,
        sent: &Map<String, Value>,
    ) -> Result<String, StoreError> {
        match self.get(partition_key, row_key).await? {
            Some(entity)
                if sent
                    .iter()
                    .all(|(name, value)| entity.properties.get(name) == Some(value)) =>
            {
                Ok(entity.etag)
            }
            _ => Err(StoreError::AlreadyExists),
        }
    }

    /// Deletes the entity if its ETag is `if_match` (`*` = whatever it is).
    pub async fn delete(
        &self,
        partition_key: &str,
        row_key: &str,
        if_match: &str,
    ) -> Result<(), StoreError> {
        let reply = self
            .send(|| {
                Ok(Call::new(
                    Service::Table,
                    "DeleteEntity",
                    Method::DELETE,
                    self.entity_url(partition_key, row_key)?,
                )
                .header("accept", ACCEPT)
                .header("if-match", if_match))
            })
            .await?;
        match reply.status.as_u16() {
            200 | 204 => Ok(()),
            404 => Err(StoreError::NotFound),
            412 => Err(StoreError::EtagMismatch),
            _ => Err(reply.unexpected("DeleteEntity")),
        }
    }

    /// One page of entities matching the OData `filter`, at most `top`.
    pub async fn query(
        &self,
        filter: &str,
        top: usize,
        from: Option<&Continuation>,
    ) -> Result<(Vec<Entity>, Option<Continuation>), StoreError> {
        let reply = self
            .send(|| {
                let mut url = self
                    .client
                    .url(Service::Table, &format!("{}()", self.name))?;
                {
                    let mut query = url.query_pairs_mut();
                    query.append_pair("$filter", filter);
                    query.append_pair("$top", &top.to_string());
                    if let Some(from) = from {
                        query.append_pair("NextPartitionKey", &from.partition_key);
                        if let Some(row) = &from.row_key {
                            query.append_pair("NextRowKey", row);
                        }
                    }
                }
                Ok(Call::new(Service::Table, "QueryEntities", Method::GET, url)
                    .header("accept", ACCEPT))
            })
            .await?;
        if reply.status != StatusCode::OK {
            return Err(reply.unexpected("QueryEntities"));
        }
        let body: Value = serde_json::from_slice(&reply.body).map_err(|e| {
            StoreError::BadResponse(format!("QueryEntities: body is not JSON: {e}"))
        })?;
        let Some(values) = body.get("value").and_then(Value::as_array) else {
            return Err(StoreError::BadResponse(
                "QueryEntities: no value array".to_owned(),
            ));
        };
        let entities = values
            .iter()
            .cloned()
            .map(|v| entity_from(v, None))
            .collect::<Result<Vec<_>, _>>()?;
        let next = reply
            .header("x-ms-continuation-nextpartitionkey")
            .map(|pk| Continuation {
                partition_key: pk.to_owned(),
                row_key: reply
                    .header("x-ms-continuation-nextrowkey")
                    .map(str::to_owned),
            });
        Ok((entities, next))
    }

    /// A cheap authenticated call: proves the account is reachable and the credential works.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut url = self.client.url(Service::Table, "Tables")?;
        url.query_pairs_mut().append_pair("$top", "1");
        let reply = self
            .client
            .send(
                Call::new(Service::Table, "QueryTables", Method::GET, url).header("accept", ACCEPT),
            )
            .await?;
        if reply.status != StatusCode::OK {
            return Err(reply.unexpected("QueryTables"));
        }
        // Something that answers 200 is not necessarily the Table service.
        match serde_json::from_slice::<Value>(&reply.body) {
            Ok(body) if body.get("value").is_some_and(Value::is_array) => Ok(()),
            _ => Err(StoreError::BadResponse(
                "QueryTables: not a table listing".to_owned(),
            )),
        }
    }
}

fn etag_of(reply: &Reply, operation: &str) -> Result<String, StoreError> {
    reply
        .header("etag")
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| StoreError::BadResponse(format!("{operation}: no ETag")))
}

fn entity_from(value: Value, fallback_etag: Option<String>) -> Result<Entity, StoreError> {
    let Value::Object(mut properties) = value else {
        return Err(StoreError::BadResponse(
            "entity is not an object".to_owned(),
        ));
    };
    let etag = properties
        .get("odata.etag")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or(fallback_etag)
        .ok_or_else(|| StoreError::BadResponse("entity without an ETag".to_owned()))?;
    properties.retain(|name, _| !name.starts_with("odata.") && !name.contains("@odata."));
    Ok(Entity { properties, etag })
}

/// A key inside `(PartitionKey='...')`: quotes doubled, then percent-encoded except for the
/// characters keys built by this service use.
fn key_literal(key: &str) -> String {
    let doubled = key.replace('\'', "''");
    let mut out = String::with_capacity(doubled.len());
    for b in doubled.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'\'' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An OData string literal: `'...'` with quotes doubled.
pub fn odata_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Table keys may not contain `/ \ # ?` or control characters, and this service's keys also
/// travel inside URLs: everything but `A-Z a-z 0-9 - _ . @` becomes `~XX` per UTF-8 byte. The
/// mapping is one-to-one, so distinct owners never share a partition.
pub fn escape_key(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_escaped_one_to_one() {
        assert_eq!(escape_key("alice@example.com"), "alice@example.com");
        assert_eq!(escape_key("a/b#c?d\\e"), "a~2Fb~23c~3Fd~5Ce");
        assert_eq!(escape_key("a~2F"), "a~7E2F");
        assert_ne!(escape_key("a/"), escape_key("a~2F"));
        assert_eq!(escape_key("é"), "~C3~A9");
        assert_eq!(key_literal("o'k x"), "o''k%20x");
        assert_eq!(odata_string("it's"), "'it''s'");
    }
}
