//! `/api/orders`: thin handlers that parse, authorise, call the domain and the store, and shape
//! the response.

mod idempotency;
mod legacy;
mod patch;
mod representations;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Reader, Writer};
use crate::domain::{ItemInput, NewOrder, Order, OrderId, Violation};
use crate::error::{ApiError, ErrorBody, FieldError};
use crate::events::ChangeKind;
use crate::http::conditional::{self, IfMatch};
use crate::http::json::{ApiJson, MergePatch};
use crate::http::negotiate::{self, AcceptsJson};
use crate::http::query::ApiQuery;
use crate::http::rendered::Rendered;
use crate::state::AppState;
use crate::store::{ListQuery, StoreError};

pub use legacy::{LEGACY_METHODS, LEGACY_PATHS, legacy_redirects};
pub use representations::{
    CreateOrderRequest, ItemRequest, ItemResource, ListParams, OrderList, OrderPatch,
    OrderResource, StatusName,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_orders, create_order))
        .routes(routes!(get_order, update_order, delete_order))
}

/// An order as the response body, with its ETag. The body of a version already rendered is
/// reused ([`Rendered`]): reads of an unchanged order do not serialize it again.
fn order_response(rendered: &Rendered, status: StatusCode, order: &Order) -> Response {
    let body = rendered.get_or_render(order.id.as_str(), &order.etag, || {
        serde_json::to_vec(&OrderResource::from(order))
    });
    let body = match body {
        Ok(body) => body,
        // Unreachable in practice: the representation holds strings and numbers only.
        Err(error) => {
            return ApiError::internal(format!("could not serialize an order: {error}"))
                .into_response();
        }
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    // Room for these and for what the middleware adds (request id, rate limit): one allocation
    // rather than a table that grows on the way out.
    headers.reserve(8);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(negotiate::JSON),
    );
    headers.insert(header::ETAG, conditional::etag_header(&order.etag));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    if status == StatusCode::CREATED
        && let Ok(location) = HeaderValue::from_str(&format!("/api/orders/{}", order.id))
    {
        headers.insert(header::LOCATION, location);
    }
    response
}

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
    _: AcceptsJson,
    State(state): State<AppState>,
    Reader(caller): Reader,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let status = params.status;
    let top = params.top.unwrap_or_default().get();
    let query = ListQuery {
        status,
        top,
        continuation: params.continuation_token.map(String::from),
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
    _: AcceptsJson,
    State(state): State<AppState>,
    Writer(caller): Writer,
    headers: HeaderMap,
    ApiJson(request): ApiJson<CreateOrderRequest>,
) -> Result<Response, ApiError> {
    let items: Vec<ItemInput<'_>> = request
        .items
        .iter()
        .map(representations::item_input)
        .collect();
    let new_order = NewOrder::parse(&items, &request.currency).map_err(validation_error)?;
    let key = idempotency::idempotency_key(&headers)?;
    let now = OffsetDateTime::now_utc();

    let Some(key) = key else {
        let order = state
            .store
            .insert(&Order::create(&caller.owner, new_order, now))
            .await
            .map_err(ApiError::from)?;
        state.events.publish(ChangeKind::Created, &order);
        return Ok(order_response(&state.rendered, StatusCode::CREATED, &order));
    };

    idempotency::create_once(&state, &caller, &key, new_order, now).await
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
    _: AcceptsJson,
    State(state): State<AppState>,
    Reader(caller): Reader,
    Path(id): Path<String>,
    if_none_match: conditional::IfNoneMatch,
) -> Result<Response, ApiError> {
    let order = load(&state, &caller, &id).await?;
    if if_none_match.matches(&order.etag) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response
            .headers_mut()
            .insert(header::ETAG, conditional::etag_header(&order.etag));
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
        return Ok(response);
    }
    Ok(order_response(&state.rendered, StatusCode::OK, &order))
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
    _: AcceptsJson,
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(id): Path<String>,
    headers: HeaderMap,
    MergePatch(patch): MergePatch<serde_json::Value>,
) -> Result<Response, ApiError> {
    let change = patch::parse_patch(&patch)?;
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
            return Ok(order_response(&state.rendered, StatusCode::OK, &current));
        }
        match state.store.replace(&next, &current.etag).await {
            Ok(updated) => {
                state.events.publish(ChangeKind::Updated, &updated);
                return Ok(order_response(&state.rendered, StatusCode::OK, &updated));
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
    _: AcceptsJson,
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

fn validation_error(violations: Vec<Violation>) -> ApiError {
    ApiError::validation(
        violations
            .into_iter()
            .map(|v| FieldError::new(v.field, v.message))
            .collect(),
    )
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
