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
use crate::error::{ApiError, FieldError};
use crate::events::ChangeKind;
use crate::http::conditional::{self, Conditions, IfMatch};
use crate::http::json::{ApiJson, MergePatch};
use crate::http::negotiate::{self, AcceptsJson};
use crate::http::query::ApiQuery;
use crate::http::rendered::Rendered;
use crate::routes::openapi::responses::*;
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
///
/// A page holds up to `top` orders (default 50); `nextLink` leads to the next page and is absent
/// on the last. Needs Orders.Read.
#[utoipa::path(
    get,
    path = "/api/orders",
    operation_id = "listOrders",
    tag = "orders",
    params(ListParams),
    extensions(("x-ms-pageable" = json!({"nextLinkName": "nextLink", "itemName": "value"}))),
    responses(
        (status = 200, description = "A page of orders.", body = OrderList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 406, response = NotAcceptable),
        (status = 429, response = TooManyRequests),
        (status = 500, response = InternalServerError),
        (status = 502, response = BadGateway),
        (status = 503, response = ServiceUnavailable),
        (status = 504, response = GatewayTimeout),
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

/// Create an order.
///
/// The total is computed exactly from the items. With `Idempotency-Key`, a retry with the same
/// body gets the first response again (24 hours, per caller), another body 422, and a retry
/// while the first request still runs 409 with Retry-After. Needs Orders.Write.
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
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 406, response = NotAcceptable),
        (status = 408, response = RequestTimeout),
        (status = 409, response = Conflict),
        (status = 413, response = ContentTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = UnprocessableContent),
        (status = 429, response = TooManyRequests),
        (status = 500, response = InternalServerError),
        (status = 502, response = BadGateway),
        (status = 503, response = ServiceUnavailable),
        (status = 504, response = GatewayTimeout),
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
        .0
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
///
/// The ETag identifies this version; with `If-None-Match` naming it, the answer is 304 without a
/// body. Another caller's order does not exist for this one (404). Needs Orders.Read.
#[utoipa::path(
    get,
    path = "/api/orders/{id}",
    operation_id = "getOrder",
    tag = "orders",
    params(
        ("id" = String, Path, description = "Order id: o_ and 32 hex digits.", min_length = 34, max_length = 34, pattern = "^o_[0-9a-f]{32}$"),
        ("If-None-Match" = Option<String>, Header, description = "ETag(s) the client holds: entity tags, comma-separated, or *.", max_length = 1024, pattern = "^(\\*|(W/)?\"[!#-~]*\"( *, *(W/)?\"[!#-~]*\")*)$"),
    ),
    responses(
        (status = 200, description = "The order.", body = OrderResource,
            headers(("ETag" = String, description = "Its version."))),
        (status = 304, description = "The client's copy is current.",
            headers(("ETag" = String, description = "Its version."))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 406, response = NotAcceptable),
        (status = 429, response = TooManyRequests),
        (status = 500, response = InternalServerError),
        (status = 502, response = BadGateway),
        (status = 503, response = ServiceUnavailable),
        (status = 504, response = GatewayTimeout),
    )
)]
pub async fn get_order(
    _: AcceptsJson,
    State(state): State<AppState>,
    Reader(caller): Reader,
    Path(id): Path<String>,
    conditions: Conditions,
) -> Result<Response, ApiError> {
    let order = load(&state, &caller, &id).await?;
    if conditions.if_none_match(&order.etag) {
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

/// Change an order's status, items or currency.
///
/// A JSON merge patch (RFC 7396). Status moves pending → paid → shipped → delivered, or pending
/// and paid → cancelled (else 409); items and currency change only while pending. With
/// `If-Match`, the change applies only to that version (else 412). Needs Orders.Write.
#[utoipa::path(
    patch,
    path = "/api/orders/{id}",
    operation_id = "updateOrder",
    tag = "orders",
    params(
        ("id" = String, Path, description = "Order id: o_ and 32 hex digits.", min_length = 34, max_length = 34, pattern = "^o_[0-9a-f]{32}$"),
        ("If-Match" = Option<String>, Header, description = "Apply only if the order still has this ETag (strong comparison), or * for any.", max_length = 1024, pattern = "^(\\*|(W/)?\"[!#-~]*\"( *, *(W/)?\"[!#-~]*\")*)$"),
    ),
    request_body(content = OrderPatch, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "The updated order.", body = OrderResource,
            headers(("ETag" = String, description = "Its new version."))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 406, response = NotAcceptable),
        (status = 408, response = RequestTimeout),
        (status = 409, response = Conflict),
        (status = 412, response = PreconditionFailed),
        (status = 413, response = ContentTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
        (status = 500, response = InternalServerError),
        (status = 502, response = BadGateway),
        (status = 503, response = ServiceUnavailable),
        (status = 504, response = GatewayTimeout),
    )
)]
pub async fn update_order(
    _: AcceptsJson,
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(id): Path<String>,
    conditions: Conditions,
    MergePatch(patch): MergePatch<Box<serde_json::value::RawValue>>,
) -> Result<Response, ApiError> {
    let change = patch::parse_patch(&patch)?;
    // Without If-Match the client asked for "whatever is there now": re-read and re-apply if
    // another writer got in between, rather than overwrite its change.
    for _attempt in 0..5 {
        let current = load(&state, &caller, &id).await?;
        let condition = conditions.if_match(&current.etag);
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
///
/// With `If-Match`, only that version is deleted (else 412). Needs Orders.Write.
#[utoipa::path(
    delete,
    path = "/api/orders/{id}",
    operation_id = "deleteOrder",
    tag = "orders",
    params(
        ("id" = String, Path, description = "Order id: o_ and 32 hex digits.", min_length = 34, max_length = 34, pattern = "^o_[0-9a-f]{32}$"),
        ("If-Match" = Option<String>, Header, description = "Delete only if the order still has this ETag (strong comparison), or * for any.", max_length = 1024, pattern = "^(\\*|(W/)?\"[!#-~]*\"( *, *(W/)?\"[!#-~]*\")*)$"),
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 406, response = NotAcceptable),
        (status = 412, response = PreconditionFailed),
        (status = 429, response = TooManyRequests),
        (status = 500, response = InternalServerError),
        (status = 502, response = BadGateway),
        (status = 503, response = ServiceUnavailable),
        (status = 504, response = GatewayTimeout),
    )
)]
pub async fn delete_order(
    _: AcceptsJson,
    State(state): State<AppState>,
    Writer(caller): Writer,
    Path(id): Path<String>,
    conditions: Conditions,
) -> Result<StatusCode, ApiError> {
    let current = load(&state, &caller, &id).await?;
    let if_match = match conditions.if_match(&current.etag) {
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
    ApiError::not_found(format!(
        "Order '{}' was not found.",
        crate::error::quoted(id)
    ))
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
