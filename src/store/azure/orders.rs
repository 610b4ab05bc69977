//! [`OrderStore`] on Azure Table Storage. Partition = owner, row = order id; the order itself is
//! one JSON property (`Data`) plus `Status` for filtering. The table's entity ETag is the
//! order's version, so `If-Match` becomes a conditional update and no update is ever lost.
//! Idempotency records live in the owner's partition too, under rows `k_<sha256 of the key>`
//! (one point read finds a key), which sort apart from orders (`o_...`); how many keys the owner
//! holds is counted in its ledger row (`c_...`, see [`super::key_ledger`]). A key row outlives
//! its 24 hours until its key is used again: Table Storage has no expiry, and listing an owner's
//! rows to delete them would cost more than the rows. Every such row stood for a created order
//! (a refused or failed claim removes its own row), so they grow no faster than the orders.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::client::StorageClient;
use super::key_ledger::{self, KeyLedger};
use super::table::{Continuation, Entity, Table, escape_key, odata_string};
use crate::config::storage::DEFAULT_IDEMPOTENCY_KEYS_PER_OWNER;
use crate::domain::{Order, OrderId};
use crate::store::{
    Claim, IDEMPOTENCY_CLAIM_TIMEOUT, IDEMPOTENCY_RETENTION, ListQuery, OrderStore, Page,
    StoreError, StoredResponse,
};

pub struct TableOrderStore {
    table: Table,
    /// Idempotency keys one owner may hold at a time.
    key_limit: usize,
}

impl TableOrderStore {
    pub fn new(client: Arc<StorageClient>, table_name: &str) -> Self {
        Self {
            table: Table::new(client, table_name),
            key_limit: DEFAULT_IDEMPOTENCY_KEYS_PER_OWNER,
        }
    }

    /// The same store, where each owner holds at most `limit` idempotency keys at a time.
    pub fn with_key_limit(mut self, limit: usize) -> Self {
        self.key_limit = limit.max(1);
        self
    }

    /// Counts a new key for the owner of `partition` in its ledger ([`key_ledger`]), or says
    /// that the owner holds too many. The ledger is written with its ETag: concurrent claims
    /// retry rather than lose a count.
    async fn count_new_key(
        &self,
        partition: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Claim>, StoreError> {
        for _ in 0..16 {
            let current = self.table.get(partition, key_ledger::ROW).await?;
            let (mut ledger, etag) = match &current {
                Some(entity) => (KeyLedger::from_entity(entity)?, Some(entity.etag.as_str())),
                None => (KeyLedger::default(), None),
            };
            ledger.prune(now);
            if ledger.count() >= self.key_limit as u64 {
                return Ok(Some(Claim::LimitReached {
                    limit: self.key_limit,
                    retry_after: ledger.retry_after(now),
                }));
            }
            ledger.add(now);
            let written = match etag {
                Some(etag) => self
                    .table
                    .replace(partition, key_ledger::ROW, ledger.properties(), Some(etag))
                    .await
                    .map(|_| ()),
                None => self
                    .table
                    .insert(partition, key_ledger::ROW, ledger.properties())
                    .await
                    .map(|_| ()),
            };
            match written {
                Ok(()) => return Ok(None),
                Err(
                    StoreError::EtagMismatch | StoreError::AlreadyExists | StoreError::NotFound,
                ) => {
                    continue;
                }
                Err(other) => return Err(other),
            }
        }
        Err(StoreError::Unavailable(
            "idempotency key ledger under heavy contention".to_owned(),
        ))
    }

    /// Removes a key row this claim inserted and then could not keep.
    async fn forget_key(&self, partition: &str, row: &str, etag: &str) -> Result<(), StoreError> {
        match self.table.delete(partition, row, etag).await {
            Ok(()) | Err(StoreError::NotFound | StoreError::EtagMismatch) => Ok(()),
            Err(other) => Err(other),
        }
    }
}

/// The table's ETag (`W/"datetime'...'"`) as an opaque token of visible ASCII without quotes,
/// so it fits inside an HTTP entity tag.
pub fn encode_etag(table_etag: &str) -> String {
    URL_SAFE_NO_PAD.encode(table_etag)
}

/// The table's ETag back from a token; a token we never issued matches nothing.
pub fn decode_etag(token: &str) -> Option<String> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

fn order_properties(order: &Order) -> Result<Map<String, Value>, StoreError> {
    let mut stored = order.clone();
    stored.etag = String::new();
    let data = serde_json::to_string(&stored)
        .map_err(|e| StoreError::BadResponse(format!("cannot serialise an order: {e}")))?;
    let mut properties = Map::new();
    properties.insert("Status".into(), Value::from(order.status.as_str()));
    properties.insert("Data".into(), Value::from(data));
    Ok(properties)
}

fn order_from(entity: &Entity) -> Result<Order, StoreError> {
    let data = entity
        .string("Data")
        .ok_or_else(|| StoreError::BadResponse("order entity without Data".to_owned()))?;
    let mut order: Order = serde_json::from_str(data)
        .map_err(|e| StoreError::BadResponse(format!("order entity is not an order: {e}")))?;
    order.etag = encode_etag(&entity.etag);
    Ok(order)
}

fn key_row(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("k_{hex}")
}

fn timestamp(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// An idempotency record as stored.
struct KeyRecord {
    fingerprint: String,
    completed: Option<StoredResponse>,
    at: OffsetDateTime,
    etag: String,
}

fn key_record(entity: &Entity) -> Result<KeyRecord, StoreError> {
    let bad = |what: &str| StoreError::BadResponse(format!("idempotency record: {what}"));
    let fingerprint = entity
        .string("Fingerprint")
        .ok_or_else(|| bad("no fingerprint"))?;
    let at = entity
        .string("At")
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .ok_or_else(|| bad("no time"))?;
    let completed = match entity.string("State") {
        Some("InProgress") => None,
        Some("Completed") => {
            let response = entity
                .string("Response")
                .ok_or_else(|| bad("no response"))?;
            Some(serde_json::from_str(response).map_err(|_| bad("unreadable response"))?)
        }
        _ => return Err(bad("unknown state")),
    };
    Ok(KeyRecord {
        fingerprint: fingerprint.to_owned(),
        completed,
        at,
        etag: entity.etag.clone(),
    })
}

fn in_progress(fingerprint: &str, now: OffsetDateTime) -> Map<String, Value> {
    let mut properties = Map::new();
    properties.insert("State".into(), Value::from("InProgress"));
    properties.insert("Fingerprint".into(), Value::from(fingerprint));
    properties.insert("At".into(), Value::from(timestamp(now)));
    properties
}

/// Continuation tokens are the table's next keys (opaque values of the service's own), wrapped
/// with the partition they belong to and Base64url-encoded: opaque to clients, and refused in
/// another owner's listing.
fn encode_continuation(partition: &str, next: &Continuation) -> String {
    let text = format!(
        "{partition}\n{}\n{}",
        next.partition_key,
        next.row_key.as_deref().unwrap_or_default()
    );
    URL_SAFE_NO_PAD.encode(text)
}

fn decode_continuation(token: &str, partition: &str) -> Result<Continuation, StoreError> {
    let text = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(StoreError::BadContinuation)?;
    let mut parts = text.split('\n');
    let (Some(owner), Some(pk), Some(rk), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(StoreError::BadContinuation);
    };
    let printable = |s: &str| s.len() <= 1024 && s.bytes().all(|b| b.is_ascii_graphic());
    if owner != partition || pk.is_empty() || !printable(pk) || !printable(rk) {
        return Err(StoreError::BadContinuation);
    }
    Ok(Continuation {
        partition_key: pk.to_owned(),
        row_key: (!rk.is_empty()).then(|| rk.to_owned()),
    })
}

#[async_trait]
impl OrderStore for TableOrderStore {
    async fn insert(&self, order: &Order) -> Result<Order, StoreError> {
        let etag = self
            .table
            .insert(
                &escape_key(&order.owner),
                order.id.as_str(),
                order_properties(order)?,
            )
            .await?;
        Ok(Order {
            etag: encode_etag(&etag),
            ..order.clone()
        })
    }

    async fn get(&self, owner: &str, id: &OrderId) -> Result<Option<Order>, StoreError> {
        match self.table.get(&escape_key(owner), id.as_str()).await? {
            Some(entity) => order_from(&entity).map(Some),
            None => Ok(None),
        }
    }

    async fn replace(&self, order: &Order, if_match: &str) -> Result<Order, StoreError> {
        let Some(table_etag) = decode_etag(if_match) else {
            return Err(StoreError::EtagMismatch);
        };
        let etag = self
            .table
            .replace(
                &escape_key(&order.owner),
                order.id.as_str(),
                order_properties(order)?,
                Some(&table_etag),
            )
            .await?;
        Ok(Order {
            etag: encode_etag(&etag),
            ..order.clone()
        })
    }

    async fn delete(
        &self,
        owner: &str,
        id: &OrderId,
        if_match: Option<&str>,
    ) -> Result<(), StoreError> {
        let table_etag = match if_match {
            Some(token) => decode_etag(token).ok_or(StoreError::EtagMismatch)?,
            None => "*".to_owned(),
        };
        self.table
            .delete(&escape_key(owner), id.as_str(), &table_etag)
            .await
    }

    async fn list(&self, owner: &str, query: &ListQuery) -> Result<Page, StoreError> {
        let partition = escape_key(owner);
        let from = match &query.continuation {
            Some(token) => Some(decode_continuation(token, &partition)?),
            None => None,
        };
        // Orders only: their rows start with `o_`, and '`' is the character after '_'.
        let mut filter = format!(
            "PartitionKey eq {} and RowKey ge 'o_' and RowKey lt 'o`'",
            odata_string(&partition)
        );
        if let Some(status) = query.status {
            filter.push_str(&format!(" and Status eq {}", odata_string(status.as_str())));
        }
        let (entities, next) = self.table.query(&filter, query.top, from.as_ref()).await?;
        let orders = entities
            .iter()
            .map(order_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            orders,
            continuation: next.as_ref().map(|n| encode_continuation(&partition, n)),
        })
    }

    async fn claim_idempotency_key(
        &self,
        owner: &str,
        key: &str,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Result<Claim, StoreError> {
        let partition = escape_key(owner);
        let row = key_row(key);
        // Insert wins the key outright; otherwise look at the holder, and take over an expired
        // or abandoned record with a conditional replace so that two claimants cannot both win.
        for _ in 0..5 {
            match self
                .table
                .insert(&partition, &row, in_progress(fingerprint, now))
                .await
            {
                // A new key: counted, or given back when the owner already holds too many.
                Ok(etag) => {
                    return match self.count_new_key(&partition, now).await {
                        Ok(None) => Ok(Claim::Claimed),
                        Ok(Some(refused)) => {
                            self.forget_key(&partition, &row, &etag).await?;
                            Ok(refused)
                        }
                        Err(error) => {
                            if let Err(forget) = self.forget_key(&partition, &row, &etag).await {
                                tracing::warn!(error = %forget, "could not remove an uncounted idempotency key");
                            }
                            Err(error)
                        }
                    };
                }
                Err(StoreError::AlreadyExists) => {}
                Err(other) => return Err(other),
            }
            let Some(entity) = self.table.get(&partition, &row).await? else {
                continue;
            };
            let record = key_record(&entity)?;
            let expired = now - record.at >= IDEMPOTENCY_RETENTION;
            let abandoned =
                record.completed.is_none() && now - record.at >= IDEMPOTENCY_CLAIM_TIMEOUT;
            if !expired && !abandoned {
                return Ok(match record.completed {
                    Some(response) => Claim::Completed {
                        fingerprint: record.fingerprint,
                        response,
                    },
                    None => Claim::InProgress {
                        fingerprint: record.fingerprint,
                    },
                });
            }
            // An expired key is a new key for the count (an abandoned one was counted when it
            // was claimed). Should the takeover below lose its race, the count is one too high
            // for a day: the bound errs on the safe side.
            if expired && let Some(refused) = self.count_new_key(&partition, now).await? {
                return Ok(refused);
            }
            match self
                .table
                .replace(
                    &partition,
                    &row,
                    in_progress(fingerprint, now),
                    Some(&record.etag),
                )
                .await
            {
                Ok(_) => return Ok(Claim::Claimed),
                Err(StoreError::EtagMismatch | StoreError::NotFound) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(StoreError::Unavailable(
            "idempotency key under heavy contention".to_owned(),
        ))
    }

    async fn complete_idempotency_key(
        &self,
        owner: &str,
        key: &str,
        fingerprint: &str,
        response: &StoredResponse,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let response = serde_json::to_string(response)
            .map_err(|e| StoreError::BadResponse(format!("cannot serialise a response: {e}")))?;
        let mut properties = Map::new();
        properties.insert("State".into(), Value::from("Completed"));
        properties.insert("Fingerprint".into(), Value::from(fingerprint));
        properties.insert("At".into(), Value::from(timestamp(now)));
        properties.insert("Response".into(), Value::from(response));
        self.table
            .replace(&escape_key(owner), &key_row(key), properties, None)
            .await
            .map(|_| ())
    }

    async fn release_idempotency_key(&self, owner: &str, key: &str) -> Result<(), StoreError> {
        match self
            .table
            .delete(&escape_key(owner), &key_row(key), "*")
            .await
        {
            Ok(()) | Err(StoreError::NotFound) => Ok(()),
            Err(other) => Err(other),
        }
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.table.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_round_trip_as_visible_ascii() {
        let raw = "W/\"datetime'2026-11-24T10%3A00%3A00.1234567Z'\"";
        let token = encode_etag(raw);
        assert!(token.bytes().all(|b| b.is_ascii_graphic() && b != b'"'));
        assert_eq!(decode_etag(&token).as_deref(), Some(raw));
    }

    #[test]
    fn continuation_stays_in_the_partition() {
        let next = Continuation {
            partition_key: "alice".into(),
            row_key: Some("1!20!bz0xMjM-".into()),
        };
        let token = encode_continuation("alice", &next);
        assert_eq!(decode_continuation(&token, "alice").unwrap(), next);
        assert!(matches!(
            decode_continuation(&token, "bob"),
            Err(StoreError::BadContinuation)
        ));
        assert!(matches!(
            decode_continuation("!!", "alice"),
            Err(StoreError::BadContinuation)
        ));
    }
}
