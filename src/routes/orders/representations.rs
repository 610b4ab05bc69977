//! What `/api/orders` reads and writes: request bodies and parameters as documented, and the
//! order's representation, which borrows from the order so that building it copies nothing.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::domain::{ItemInput, Order, OrderStatus, PageSize};
use crate::http::strict::Objects;

/// The status of an order, as documented (the domain's `OrderStatus` stays free of API docs).
#[derive(ToSchema)]
#[schema(as = OrderStatus)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
pub enum StatusName {
    Pending,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ItemRequest {
    /// 1 to 64 of `A-Z a-z 0-9 - _`.
    #[schema(
        example = "A-1",
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9_-]{1,64}$"
    )]
    pub sku: String,
    #[schema(value_type = i32, format = Int32, example = 2, minimum = 1, maximum = 10000)]
    #[serde(deserialize_with = "crate::http::strict::whole_number")]
    pub quantity: i64,
    /// Decimal string, at most 4 decimal places.
    #[schema(
        example = "9.99",
        max_length = 14,
        pattern = "^(0|[1-9][0-9]{0,8})(\\.[0-9]{1,4})?$"
    )]
    pub unit_price: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrderRequest {
    #[schema(value_type = Vec<ItemRequest>, min_items = 1, max_items = 100)]
    pub items: Objects<ItemRequest>,
    /// ISO 4217 code.
    #[schema(
        example = "EUR",
        min_length = 3,
        max_length = 3,
        pattern = "^[A-Z]{3}$"
    )]
    pub currency: String,
}

/// A JSON merge patch (RFC 7396) of an order: any of these members; `null` is not allowed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderPatch {
    #[schema(value_type = StatusName, required = false)]
    pub status: Option<OrderStatus>,
    #[schema(value_type = Vec<ItemRequest>, required = false, min_items = 1, max_items = 100)]
    pub items: Option<Vec<ItemRequest>>,
    #[schema(value_type = String, required = false, min_length = 3, max_length = 3, pattern = "^[A-Z]{3}$")]
    pub currency: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemResource<'a> {
    #[schema(
        example = "A-1",
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9_-]{1,64}$"
    )]
    pub sku: &'a str,
    #[schema(value_type = i32, format = Int32, example = 2, minimum = 1, maximum = 10000)]
    pub quantity: u32,
    #[schema(value_type = String, example = "9.99", max_length = 14, pattern = "^(0|[1-9][0-9]{0,8})(\\.[0-9]{1,4})?$")]
    #[serde(serialize_with = "as_text")]
    pub unit_price: rust_decimal::Decimal,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderResource<'a> {
    #[schema(
        example = "o_0190f3a1b2c37d4e8f9a0b1c2d3e4f50",
        min_length = 34,
        max_length = 34,
        pattern = "^o_[0-9a-f]{32}$"
    )]
    pub id: &'a str,
    #[schema(value_type = StatusName)]
    pub status: OrderStatus,
    #[schema(
        example = "EUR",
        min_length = 3,
        max_length = 3,
        pattern = "^[A-Z]{3}$"
    )]
    pub currency: &'a str,
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<ItemResource<'a>>,
    /// Sum of quantity × unit price, exact, as a decimal string.
    #[schema(value_type = String, example = "19.98", max_length = 24, pattern = "^[0-9]{1,19}(\\.[0-9]{1,4})?$")]
    #[serde(serialize_with = "as_text")]
    pub total: rust_decimal::Decimal,
    #[schema(value_type = String, format = DateTime, max_length = 64)]
    #[serde(serialize_with = "as_rfc3339")]
    pub created_at: OffsetDateTime,
    #[schema(value_type = String, format = DateTime, max_length = 64)]
    #[serde(serialize_with = "as_rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl<'a> From<&'a Order> for OrderResource<'a> {
    fn from(order: &'a Order) -> Self {
        Self {
            id: order.id.as_str(),
            status: order.status,
            currency: order.currency.as_str(),
            items: order
                .items
                .iter()
                .map(|item| ItemResource {
                    sku: item.sku.as_str(),
                    quantity: item.quantity.get(),
                    unit_price: item.unit_price.amount(),
                })
                .collect(),
            total: order.total,
            created_at: order.created_at,
            updated_at: order.updated_at,
        }
    }
}

/// A decimal as a JSON string (`"9.99"`), written without an intermediate `String`.
fn as_text<S: serde::Serializer>(
    value: &rust_decimal::Decimal,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// A time as an RFC 3339 JSON string, formatted on the stack.
fn as_rfc3339<S: serde::Serializer>(
    value: &OffsetDateTime,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut buffer = [0u8; 64];
    let mut cursor = std::io::Cursor::new(&mut buffer[..]);
    value
        .format_into(&mut cursor, &time::format_description::well_known::Rfc3339)
        .map_err(serde::ser::Error::custom)?;
    let written = usize::try_from(cursor.position()).unwrap_or(0);
    let text = std::str::from_utf8(&buffer[..written]).map_err(serde::ser::Error::custom)?;
    serializer.serialize_str(text)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderList<'a> {
    /// At most `top` orders.
    #[schema(max_items = 100)]
    pub value: Vec<OrderResource<'a>>,
    /// Relative link to the next page (its `continuationToken` is what a pager passes on);
    /// absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, max_length = 2048, format = "uri-reference")]
    pub next_link: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only orders in this status.
    #[param(value_type = Option<StatusName>)]
    pub status: Option<OrderStatus>,
    /// Page size, 1 to 100 (default 50).
    #[param(value_type = Option<i32>, format = Int32, minimum = 1, maximum = 100)]
    pub top: Option<PageSize>,
    /// From a previous page's `nextLink`.
    #[param(value_type = Option<String>, min_length = 1, max_length = 1024)]
    pub continuation_token: Option<ContinuationToken>,
}

/// A page's continuation token as the client sent it back: opaque, but never empty.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct ContinuationToken(String);

impl TryFrom<String> for ContinuationToken {
    type Error = &'static str;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value.is_empty() {
            Err("must not be empty")
        } else {
            Ok(Self(value))
        }
    }
}

impl From<ContinuationToken> for String {
    fn from(token: ContinuationToken) -> Self {
        token.0
    }
}

pub(super) fn item_input(item: &ItemRequest) -> ItemInput<'_> {
    ItemInput {
        sku: &item.sku,
        quantity: item.quantity,
        unit_price: &item.unit_price,
    }
}
