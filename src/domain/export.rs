//! Exports: a job that writes a snapshot of an owner's orders to a file, and the file formats.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Order, OrderStatus};

/// `x_` followed by a UUIDv7 in hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExportId(String);

impl ExportId {
    pub fn generate() -> Self {
        Self(format!("x_{}", uuid::Uuid::now_v7().simple()))
    }

    /// Accepts only ids this service could have issued.
    pub fn parse(value: &str) -> Option<Self> {
        let hex = value.strip_prefix("x_")?;
        (hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ExportId {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or("an export id is x_ and 32 lower-case hex digits")
    }
}

impl From<ExportId> for String {
    fn from(id: ExportId) -> Self {
        id.0
    }
}

impl fmt::Display for ExportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum ExportFormat {
    /// One JSON object per order, one per line.
    Ndjson,
    /// One row per line item, with a header row.
    Csv,
}

impl TryFrom<String> for ExportFormat {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value).ok_or("must be ndjson or csv")
    }
}

impl ExportFormat {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "ndjson" => Some(Self::Ndjson),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ndjson => "ndjson",
            Self::Csv => "csv",
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportStatus {
    NotStarted,
    Running,
    Succeeded,
    Failed,
}

impl ExportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "NotStarted",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// Why an export failed, as its status tells the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExportFailure {
    /// The job's message could not be put on the queue: nothing ever ran it.
    NotQueued,
    /// Every delivery of the job's message failed (the last attempt, or the message moved to the
    /// poison queue).
    AttemptsExhausted,
}

impl ExportFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotQueued => "notQueued",
            Self::AttemptsExhausted => "attemptsExhausted",
        }
    }
}

/// An export job. `etag` is the store's version token, as for orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportJob {
    pub id: ExportId,
    pub owner: String,
    pub format: ExportFormat,
    /// Only orders in this status, when set.
    pub order_status: Option<OrderStatus>,
    pub status: ExportStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub completed_at: Option<OffsetDateTime>,
    /// Orders written, once succeeded.
    #[serde(default)]
    pub order_count: Option<usize>,
    /// Why it failed, once failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<ExportFailure>,
    #[serde(default)]
    pub etag: String,
}

impl ExportJob {
    pub fn create(
        owner: &str,
        format: ExportFormat,
        order_status: Option<OrderStatus>,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            id: ExportId::generate(),
            owner: owner.to_owned(),
            format,
            order_status,
            status: ExportStatus::NotStarted,
            created_at: now,
            completed_at: None,
            order_count: None,
            failure: None,
            etag: String::new(),
        }
    }

    /// The file's name: one per job, so a repeated run overwrites rather than adds a file.
    pub fn file_name(&self) -> String {
        format!("{}.{}", self.id, self.format.as_str())
    }

    pub fn running(&self) -> Self {
        Self {
            status: ExportStatus::Running,
            ..self.clone()
        }
    }

    pub fn succeeded(&self, order_count: usize, now: OffsetDateTime) -> Self {
        Self {
            status: ExportStatus::Succeeded,
            completed_at: Some(now),
            order_count: Some(order_count),
            ..self.clone()
        }
    }

    pub fn failed(&self, reason: ExportFailure, now: OffsetDateTime) -> Self {
        Self {
            status: ExportStatus::Failed,
            completed_at: Some(now),
            failure: Some(reason),
            ..self.clone()
        }
    }
}

fn timestamp(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The file's content for `orders`.
pub fn render(format: ExportFormat, orders: &[Order]) -> Vec<u8> {
    let mut out = String::new();
    match format {
        ExportFormat::Ndjson => {
            for order in orders {
                let line = serde_json::json!({
                    "id": order.id.as_str(),
                    "status": order.status.as_str(),
                    "currency": order.currency.as_str(),
                    "items": order.items.iter().map(|item| serde_json::json!({
                        "sku": item.sku.as_str(),
                        "quantity": item.quantity.get(),
                        "unitPrice": String::from(item.unit_price),
                    })).collect::<Vec<_>>(),
                    "total": order.total.to_string(),
                    "createdAt": timestamp(order.created_at),
                    "updatedAt": timestamp(order.updated_at),
                });
                out.push_str(&line.to_string());
                out.push('\n');
            }
        }
        ExportFormat::Csv => {
            out.push_str("orderId,status,currency,createdAt,sku,quantity,unitPrice,orderTotal\r\n");
            for order in orders {
                for item in &order.items {
                    let fields = [
                        order.id.to_string(),
                        order.status.as_str().to_owned(),
                        order.currency.as_str().to_owned(),
                        timestamp(order.created_at),
                        item.sku.as_str().to_owned(),
                        item.quantity.get().to_string(),
                        String::from(item.unit_price),
                        order.total.to_string(),
                    ];
                    let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                    out.push_str(&row.join(","));
                    out.push_str("\r\n");
                }
            }
        }
    }
    out.into_bytes()
}

/// RFC 4180: quote fields with commas, quotes or line breaks; double inner quotes.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ItemInput, NewOrder};

    fn order() -> Order {
        let items = [
            ItemInput {
                sku: "A-1",
                quantity: 2,
                unit_price: "9.99",
            },
            ItemInput {
                sku: "B-2",
                quantity: 1,
                unit_price: "0.5",
            },
        ];
        let new = NewOrder::parse(&items, "EUR").unwrap();
        Order::create("alice", new, OffsetDateTime::UNIX_EPOCH)
    }

    #[test]
    fn ids_round_trip() {
        let id = ExportId::generate();
        assert_eq!(ExportId::parse(id.as_str()), Some(id));
        assert_eq!(ExportId::parse("o_123"), None);
    }

    #[test]
    fn ndjson_has_one_order_per_line() {
        let order = order();
        let text =
            String::from_utf8(render(ExportFormat::Ndjson, std::slice::from_ref(&order))).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1);
        let value: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(value["id"], order.id.as_str());
        assert_eq!(value["total"], "20.48");
        assert_eq!(value["items"][1]["unitPrice"], "0.5");
    }

    #[test]
    fn csv_has_a_row_per_item() {
        let text = String::from_utf8(render(ExportFormat::Csv, &[order()])).unwrap();
        let rows: Vec<&str> = text.split("\r\n").filter(|r| !r.is_empty()).collect();
        assert_eq!(rows.len(), 3);
        assert!(rows[1].contains(",A-1,2,9.99,20.48"));
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
    }

    #[test]
    fn status_changes_keep_the_job() {
        let job = ExportJob::create("alice", ExportFormat::Csv, None, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(job.status, ExportStatus::NotStarted);
        let done = job.running().succeeded(3, OffsetDateTime::UNIX_EPOCH);
        assert!(done.status.is_finished());
        assert_eq!(done.id, job.id);
        assert_eq!(done.file_name(), format!("{}.csv", job.id));
    }
}
