//! `/api/orders`: thin handlers that parse, authorise, call the domain and the store, and shape
//! the response.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::any;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Reader, Writer};
use crate::domain::{
    self, ItemInput, NewOrder, Order, OrderChange, OrderId, OrderStatus, Violation,
};
use crate::error::{ApiError, ErrorBody, FieldError};
use crate::events::ChangeKind;
use crate::http::conditional::{self, IfMatch};
use crate::http::json::{ApiJson, MergePatch};
use crate::http::negotiate;
use crate::http::query::ApiQuery;
use crate::state::AppState;
use crate::store::{Claim, ListQuery, StoreError, StoredResponse};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orders, create_order))
        .routes(routes!(get_order, update_order, delete_order))
        .layer(middleware::from_fn(require_json_accept))
}

// ---------------------------------------------------------------------------------------------
// Representations

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
    #[schema(example = 2, minimum = 1, maximum = 10000)]
    #[serde(deserialize_with = "whole_number")]
    pub quantity: i64,
    /// Decimal string, at most 4 decimal places.
    #[schema(example = "9.99", pattern = "^(0|[1-9][0-9]{0,8})(\\.[0-9]{1,4})?$")]
    pub unit_price: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrderRequest {
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<ItemRequest>,
    /// ISO 4217 code.
    #[schema(example = "EUR", pattern = "^[A-Z]{3}$")]
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
    #[schema(value_type = String, required = false, pattern = "^[A-Z]{3}$")]
    pub currency: Option<String>,
}

// The representations borrow from the order: building them copies nothing, and numbers and
// times are written straight into the JSON.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ItemResource<'a> {
    pub sku: &'a str,
    pub quantity: u32,
    #[schema(value_type = String, example = "9.99")]
    #[serde(serialize_with = "as_text")]
    pub unit_price: rust_decimal::Decimal,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderResource<'a> {
    #[schema(example = "o_0190f3a1b2c37d4e8f9a0b1c2d3e4f50")]
    pub id: &'a str,
    #[schema(value_type = StatusName)]
    pub status: OrderStatus,
    pub currency: &'a str,
    pub items: Vec<ItemResource<'a>>,
    /// Sum of quantity × unit price, exact, as a decimal string.
    #[schema(value_type = String, example = "19.98")]
    #[serde(serialize_with = "as_text")]
    pub total: rust_decimal::Decimal,
    #[schema(value_type = String, format = DateTime)]
    #[serde(serialize_with = "as_rfc3339")]
    pub created_at: OffsetDateTime,
    #[schema(value_type = String, format = DateTime)]
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
    pub value: Vec<OrderResource<'a>>,
    /// Relative link to the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_link: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only orders in this status.
    #[param(inline, value_type = Option<StatusName>)]
    pub status: Option<String>,
    /// Page size, 1 to 100 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub top: Option<String>,
    /// From a previous page's `nextLink`.
    #[param(min_length = 1)]
    pub continuation_token: Option<String>,
}

fn order_response(status: StatusCode, order: &Order) -> Response {
    let mut response = (status, Json(OrderResource::from(order))).into_response();
    let headers = response.headers_mut();
    headers.insert(header::ETAG, conditional::etag_header(&order.etag));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    if status == StatusCode::CREATED
        && let Ok(location) = HeaderValue::from_str(&format!("/api/orders/{}", order.id))
    {
        headers.insert(header::LOCATION, location);
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// List the caller's orders, oldest first.
#[utoipa::path(
    get,
    path = "/api/orders",
    operation_id = "listOrders",
    tag = "orders",
    params(ListParams),
    responses(
        (status = 200, description = "A page of orders.", body = OrderList),
        (status = 400, description = "A query parameter is not valid.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks Orders.Read.", body = ErrorBody),
        (status = 406, description = "The client does not accept JSON.", body = ErrorBody),
        (status = 429, description = "Too many requests.", body = ErrorBody),
        (status = 500, description = "Unexpected error.", body = ErrorBody),
        (status = 502, description = "Storage answered unexpectedly.", body = ErrorBody),
        (status = 503, description = "Storage unavailable, or the service is at capacity.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
        (status = 504, description = "Storage or the request did not finish in time.", body = ErrorBody),
    )
)]
pub async fn list_orders(
    State(state): State<AppState>,
    Reader(caller): Reader,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let mut problems = Vec::new();
    let status = match params.status.as_deref() {
        None => None,
        Some(text) => OrderStatus::parse(text).or_else(|| {
            problems.push(FieldError::new(
                "status",
                "must be one of pending, paid, shipped, delivered, cancelled",
            ));
            None
        }),
    };
    let top = match params.top.as_deref() {
        None => 50,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => {
                problems.push(FieldError::new(
                    "top",
                    "must be a whole number from 1 to 100",
                ));
                50
            }
        },
    };
    if params.continuation_token.as_deref() == Some("") {
        problems.push(FieldError::new("continuationToken", "must not be empty"));
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let query = ListQuery {
        status,
        top,
        continuation: params.continuation_token,
    };
    let page = state
        .store
        .list(&caller.owner, &query)
        .await
        .map_err(|e| match e {
            StoreError::BadContinuation => ApiError::validation(vec![FieldError::new(
                "continuationToken",
                "is not a token this service issued",
            )]),
            other => ApiError::from(other),
        })?;
    let next_link = page.continuation.map(|token| {
        let mut link = format!("/api/orders?top={top}");
        if let Some(status) = status {
            link.push_str("&status=");
            link.push_str(status.as_str());
        }
        link.push_str("&continuationToken=");
        link.push_str(&urlencode(&token));
        link
    });
    Ok(Json(OrderList {
        value: page.orders.iter().map(OrderResource::from).collect(),
        next_link,
    })
    .into_response())
}

/// Create an order. With `Idempotency-Key`, a retry returns the first response.
#[utoipa::path(
    post,
    path = "/api/orders",
    operation_id = "createOrder",
    tag = "orders",
    request_body(content = CreateOrderRequest, content_type = "application/json"),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key and body return the first response for 24 hours.",
            min_length = 1, max_length = 255, pattern = "^[!-~]+$"),
    ),
    responses(
        (status = 201, description = "Created.", body = OrderResource,
            headers(("Location" = String, description = "The new order."), ("ETag" = String, description = "Its version."))),
        (status = 400, description = "Malformed or invalid body.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks Orders.Write.", body = ErrorBody),
        (status = 406, description = "The client does not accept JSON.", body = ErrorBody),
        (status = 408, description = "The body arrived too slowly.", body = ErrorBody),
        (status = 409, description = "A request with the same Idempotency-Key is in progress.", body = ErrorBody),
        (status = 413, description = "The body is too large.", body = ErrorBody),
        (status = 415, description = "The body is not JSON.", body = ErrorBody),
        (status = 422, description = "The Idempotency-Key was used with a different body.", body = ErrorBody),
        (status = 429, description = "Too many requests.", body = ErrorBody),
        (status = 500, description = "Unexpected error.", body = ErrorBody),
        (status = 502, description = "Storage answered unexpectedly.", body = ErrorBody),
        (status = 503, description = "Storage unavailable, or the service is at capacity.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
        (status = 504, description = "Storage or the request did not finish in time.", body = ErrorBody),
    )
)]
pub async fn create_order(
    State(state): State<AppState>,
    Writer(caller): Writer,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateOrderRequest>,
) -> Result<Response, ApiError> {
    let items: Vec<ItemInput<'_>> = request.items.iter().map(item_input).collect();
    let new_order = NewOrder::parse(&items, &request.currency).map_err(validation_error)?;
    let key = idempotency_key(&headers)?;
    let now = OffsetDateTime::now_utc();

    let Some(key) = key else {
        let order = state
            .store
            .insert(&Order::create(&caller.owner, new_order, now))
            .await
            .map_err(ApiError::from)?;
        state.events.publish(ChangeKind::Created, &order);
        return Ok(order_response(StatusCode::CREATED, &order));
    };

    let fingerprint = fingerprint(&request);
    let store = &state.store;
    match store
        .claim_idempotency_key(&caller.owner, &key, &fingerprint, now)
        .await
        .map_err(ApiError::from)?
    {
        Claim::Completed { fingerprint: f, .. } | Claim::InProgress { fingerprint: f }
            if f != fingerprint =>
        {
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "This Idempotency-Key was already used with a different request body.",
            ))
        }
        Claim::InProgress { .. } => Err(ApiError::conflict(
            "A request with this Idempotency-Key is still in progress; retry later.",
        )
        .with_retry_after(1)),
        Claim::Completed { response, .. } => {
            let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::CREATED);
            Ok(order_response(status, &response.order))
        }
        Claim::Claimed => {
            let created = match store
                .insert(&Order::create(&caller.owner, new_order, now))
                .await
            {
                Ok(order) => order,
                Err(error) => {
                    // Free the key so the client's retry can run; the order was not stored.
                    if let Err(release) = store.release_idempotency_key(&caller.owner, &key).await {
                        tracing::warn!(error = %release, "could not release an idempotency key");
                    }
                    return Err(ApiError::from(error));
                }
            };
            let stored = StoredResponse {
                status: StatusCode::CREATED.as_u16(),
                order: created,
            };
            store
                .complete_idempotency_key(&caller.owner, &key, &fingerprint, &stored, now)
                .await
                .map_err(ApiError::from)?;
            state.events.publish(ChangeKind::Created, &stored.order);
            Ok(order_response(StatusCode::CREATED, &stored.order))
        }
    }
}

/// Read one order.
#[utoipa::path(
    get,
    path = "/api/orders/{id}",
    operation_id = "getOrder",
    tag = "orders",
    params(
        ("id" = String, Path, description = "Order id."),
        ("If-None-Match" = Option<String>, Header, description = "ETag(s) the client holds."),
    ),
    responses(
        (status = 200, description = "The order.", body = OrderResource,
            headers(("ETag" = String, description = "Its version."))),
        (status = 304, description = "The client's copy is current.",
            headers(("ETag" = String, description = "Its version."))),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks Orders.Read.", body = ErrorBody),
        (status = 404, description = "No such order for this caller.", body = ErrorBody),
        (status = 406, description = "The client does not accept JSON.", body = ErrorBody),
        (status = 429, description = "Too many requests.", body = ErrorBody),
        (status = 500, description = "Unexpected error.", body = ErrorBody),
        (status = 502, description = "Storage answered unexpectedly.", body = ErrorBody),
        (status = 503, description = "Storage unavailable, or the service is at capacity.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
        (status = 504, description = "Storage or the request did not finish in time.", body = ErrorBody),
    )
)]
pub async fn get_order(
    State(state): State<AppState>,
    Reader(caller): Reader,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let order = load(&state, &caller, &id).await?;
    if conditional::if_none_match(&headers, &order.etag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response
            .headers_mut()
            .insert(header::ETAG, conditional::etag_header(&order.etag));
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        return Ok(response);
    }
    Ok(order_response(StatusCode::OK, &order))
}

/// Change an order's status, items or currency (JSON merge patch).
#[utoipa::path(
    patch,
    path = "/api/orders/{id}",
    operation_id = "updateOrder",
    tag = "orders",
    params(
        ("id" = String, Path, description = "Order id."),
        ("If-Match" = Option<String>, Header, description = "Apply only if the order still has this ETag."),
    ),
    request_body(content = OrderPatch, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The updated order.", body = OrderResource,
            headers(("ETag" = String, description = "Its new version."))),
        (status = 400, description = "Malformed or invalid patch.", body = ErrorBody),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks Orders.Write.", body = ErrorBody),
        (status = 404, description = "No such order for this caller.", body = ErrorBody),
        (status = 406, description = "The client does not accept JSON.", body = ErrorBody),
        (status = 408, description = "The body arrived too slowly.", body = ErrorBody),
        (status = 409, description = "The change is not allowed in the order's status.", body = ErrorBody),
        (status = 412, description = "If-Match does not match the current ETag.", body = ErrorBody),
        (status = 413, description = "The body is too large.", body = ErrorBody),
        (status = 415, description = "Not a merge patch or JSON body.", body = ErrorBody,
            headers(("Accept-Patch" = String, description = "The accepted patch formats."))),
        (status = 429, description = "Too many requests.", body = ErrorBody),
        (status = 500, description = "Unexpected error.", body = ErrorBody),
        (status = 502, description = "Storage answered unexpectedly.", body = ErrorBody),
        (status = 503, description = "Storage unavailable, or the service is at capacity.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
        (status = 504, description = "Storage or the request did not finish in time.", body = ErrorBody),
    )
)]
pub async fn update_order(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(id): Path<String>,
    headers: HeaderMap,
    MergePatch(patch): MergePatch<serde_json::Value>,
) -> Result<Response, ApiError> {
    let change = parse_patch(&patch)?;
    // Without If-Match the client asked for "whatever is there now": re-read and re-apply if
    // another writer got in between, rather than overwrite its change.
    for _attempt in 0..5 {
        let current = load(&state, &caller, &id).await?;
        let condition = conditional::if_match(&headers, &current.etag);
        if condition == IfMatch::Fails {
            return Err(ApiError::precondition_failed());
        }
        let next = current
            .apply(change.clone(), OffsetDateTime::now_utc())
            .map_err(|e| ApiError::conflict(e.to_string()))?;
        if next == current {
            return Ok(order_response(StatusCode::OK, &current));
        }
        match state.store.replace(&next, &current.etag).await {
            Ok(updated) => {
                state.events.publish(ChangeKind::Updated, &updated);
                return Ok(order_response(StatusCode::OK, &updated));
            }
            Err(StoreError::EtagMismatch) if condition == IfMatch::Absent => continue,
            Err(StoreError::EtagMismatch) => return Err(ApiError::precondition_failed()),
            Err(StoreError::NotFound) => return Err(order_not_found(&id)),
            Err(other) => return Err(ApiError::from(other)),
        }
    }
    Err(ApiError::conflict(
        "The order is being changed by others; retry the request.",
    ))
}

/// Delete an order.
#[utoipa::path(
    delete,
    path = "/api/orders/{id}",
    operation_id = "deleteOrder",
    tag = "orders",
    params(
        ("id" = String, Path, description = "Order id."),
        ("If-Match" = Option<String>, Header, description = "Delete only if the order still has this ETag."),
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "No valid bearer token.", body = ErrorBody),
        (status = 403, description = "The token lacks Orders.Write.", body = ErrorBody),
        (status = 404, description = "No such order for this caller.", body = ErrorBody),
        (status = 406, description = "The client does not accept JSON.", body = ErrorBody),
        (status = 412, description = "If-Match does not match the current ETag.", body = ErrorBody),
        (status = 429, description = "Too many requests.", body = ErrorBody),
        (status = 500, description = "Unexpected error.", body = ErrorBody),
        (status = 502, description = "Storage answered unexpectedly.", body = ErrorBody),
        (status = 503, description = "Storage unavailable, or the service is at capacity.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
        (status = 504, description = "Storage or the request did not finish in time.", body = ErrorBody),
    )
)]
pub async fn delete_order(
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let current = load(&state, &caller, &id).await?;
    let if_match = match conditional::if_match(&headers, &current.etag) {
        IfMatch::Fails => return Err(ApiError::precondition_failed()),
        IfMatch::Matches => Some(current.etag.as_str()),
        IfMatch::Absent => None,
    };
    match state
        .store
        .delete(&caller.owner, &current.id, if_match)
        .await
    {
        Ok(()) => {
            state.events.publish(ChangeKind::Deleted, &current);
            Ok(StatusCode::NO_CONTENT)
        }
        Err(StoreError::EtagMismatch) => Err(ApiError::precondition_failed()),
        Err(StoreError::NotFound) => Err(order_not_found(&id)),
        Err(other) => Err(ApiError::from(other)),
    }
}

// ---------------------------------------------------------------------------------------------
// Moved URLs

pub const LEGACY_PATHS: [&str; 2] = ["/api/v1/orders", "/api/v1/orders/{id}"];
pub const LEGACY_METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

/// `/api/v1/orders[/{id}]` moved to `/api/orders[/{id}]`: 301 for GET and HEAD, 308 for other
/// methods so clients repeat them with the same method and body.
pub fn legacy_redirects() -> Router<AppState> {
    Router::new()
        .route(LEGACY_PATHS[0], any(redirect_legacy))
        .route(LEGACY_PATHS[1], any(redirect_legacy))
}

async fn redirect_legacy(method: Method, uri: Uri) -> Response {
    let path = uri.path().replacen("/api/v1/orders", "/api/orders", 1);
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    if method == Method::GET || method == Method::HEAD {
        Redirect::permanent(&target)
            .into_response()
            .map_status(StatusCode::MOVED_PERMANENTLY)
    } else {
        Redirect::permanent(&target).into_response()
    }
}

trait MapStatus {
    fn map_status(self, status: StatusCode) -> Self;
}

impl MapStatus for Response {
    fn map_status(mut self, status: StatusCode) -> Self {
        *self.status_mut() = status;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// 406 when the client accepts no JSON: every success here is JSON.
async fn require_json_accept(req: Request, next: Next) -> Response {
    if negotiate::accepts(req.headers(), negotiate::JSON) {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "This resource is available as application/json only.",
        )
        .into_response()
    }
}

/// The caller's order, or 404 — also when the order exists but belongs to someone else, so that
/// ids cannot be probed.
async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<Order, ApiError> {
    let Some(order_id) = OrderId::parse(id) else {
        return Err(order_not_found(id));
    };
    state
        .store
        .get(&caller.owner, &order_id)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| order_not_found(id))
}

fn order_not_found(id: &str) -> ApiError {
    let shown: String = id.chars().take(64).collect();
    ApiError::not_found(format!("Order '{shown}' was not found."))
}

/// JSON Schema's `integer` is any number without a fractional part, so `2.0` is a valid
/// quantity; serde's `i64` alone would refuse it.
fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(n) = number.as_i64() {
        return Ok(n);
    }
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(serde::de::Error::custom(format!(
            "invalid value: {number}, expected a whole number"
        ))),
    }
}

fn item_input(item: &ItemRequest) -> ItemInput<'_> {
    ItemInput {
        sku: &item.sku,
        quantity: item.quantity,
        unit_price: &item.unit_price,
    }
}

fn validation_error(violations: Vec<Violation>) -> ApiError {
    ApiError::validation(
        violations
            .into_iter()
            .map(|v| FieldError::new(v.field, v.message))
            .collect(),
    )
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key)
            if !key.is_empty() && key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::validation(vec![FieldError::new(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )])),
    }
}

/// Hash of the request as parsed, so retries that differ only in whitespace or member order
/// still count as the same request.
fn fingerprint(request: &CreateOrderRequest) -> String {
    let canonical = serde_json::to_vec(request).unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Interprets a merge patch: the members `status`, `items` and `currency`; `null` (removal) is
/// not allowed for any of them and other members are read-only or unknown.
fn parse_patch(patch: &serde_json::Value) -> Result<OrderChange, ApiError> {
    let serde_json::Value::Object(members) = patch else {
        return Err(ApiError::validation(vec![FieldError::new(
            "$",
            "a merge patch must be a JSON object",
        )]));
    };
    let mut problems = Vec::new();
    let mut change = OrderChange::default();
    for (name, value) in members {
        if value.is_null() {
            problems.push(FieldError::new(name.as_str(), "cannot be removed"));
            continue;
        }
        match name.as_str() {
            "status" => match value.as_str().and_then(OrderStatus::parse) {
                Some(status) => change.status = Some(status),
                None => problems.push(FieldError::new(
                    "status",
                    "must be one of pending, paid, shipped, delivered, cancelled",
                )),
            },
            "currency" => match value.as_str().map(domain::Currency::parse) {
                Some(Ok(currency)) => change.currency = Some(currency),
                Some(Err(message)) => problems.push(FieldError::new("currency", message)),
                None => problems.push(FieldError::new("currency", "must be a string")),
            },
            "items" => {
                let parsed: Result<Vec<ItemRequest>, _> = serde_path_to_error::deserialize(value);
                match parsed {
                    Ok(items) => {
                        let inputs: Vec<ItemInput<'_>> = items.iter().map(item_input).collect();
                        let mut violations = Vec::new();
                        match domain::parse_items(&inputs, &mut violations) {
                            Some(items) => change.items = Some(items),
                            None => problems.extend(
                                violations
                                    .into_iter()
                                    .map(|v| FieldError::new(v.field, v.message)),
                            ),
                        }
                    }
                    Err(error) => {
                        let path = error.path().to_string();
                        problems.push(FieldError::new(
                            format!(
                                "items{}",
                                if path == "." {
                                    String::new()
                                } else {
                                    format!(
                                        "{}{path}",
                                        if path.starts_with('[') { "" } else { "." }
                                    )
                                }
                            ),
                            error.into_inner().to_string(),
                        ));
                    }
                }
            }
            "id" | "total" | "createdAt" | "updatedAt" => {
                problems.push(FieldError::new(name.as_str(), "is read-only"));
            }
            _ => problems.push(FieldError::new(
                name.as_str(),
                "is not a member of an order",
            )),
        }
    }
    if problems.is_empty() {
        Ok(change)
    } else {
        Err(ApiError::validation(problems))
    }
}
