//! `Idempotency-Key` on `POST /api/orders`: the first request with a key creates the order and
//! its response is kept (24 h, per owner); a retry with the same body gets that response again,
//! one with another body 422, one while the first is still running 409. An owner holds at most
//! `ORDERS_IDEMPOTENCY_KEYS_PER_CALLER` keys at a time: a new key beyond that is 429 with
//! `Retry-After` (when the oldest is forgotten), while the keys it holds keep answering.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::auth::Caller;
use crate::domain::{NewOrder, Order};
use crate::error::{ApiError, FieldError};
use crate::events::ChangeKind;
use crate::state::AppState;
use crate::store::{Claim, StoredResponse};

use super::order_response;

pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
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

/// Hash of the order as parsed, so retries that differ only in whitespace, member order or the
/// spelling of a number still count as the same request.
fn fingerprint(order: &NewOrder) -> String {
    let mut hasher = Sha256::new();
    hasher.update(order.currency.as_str());
    for item in &order.items {
        hasher.update(format!(
            "\n{}\t{}\t{}",
            item.sku.as_str(),
            item.quantity.get(),
            item.unit_price.amount()
        ));
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Creates `new_order` once for `key`, or answers as the first request with that key did.
pub(super) async fn create_once(
    state: &AppState,
    caller: &Caller,
    key: &str,
    new_order: NewOrder,
    now: OffsetDateTime,
) -> Result<Response, ApiError> {
    let fingerprint = fingerprint(&new_order);
    let store = &state.store;
    match store
        .claim_idempotency_key(&caller.owner, key, &fingerprint, now)
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
        Claim::LimitReached { limit, retry_after } => {
            let seconds = u64::try_from(retry_after.whole_seconds())
                .unwrap_or(0)
                .saturating_add(u64::from(retry_after.subsec_nanoseconds() > 0))
                .max(1);
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "This caller already holds {limit} Idempotency-Keys from the last 24 hours, \
                     the most allowed: retry in {seconds} s, reuse a key for its own request, or \
                     send the request without a key."
                ),
            )
            .with_retry_after(seconds))
        }
        Claim::Completed { response, .. } => {
            let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::CREATED);
            Ok(order_response(&state.rendered, status, &response.order))
        }
        Claim::Claimed => {
            let created = match store
                .insert(&Order::create(&caller.owner, new_order, now))
                .await
            {
                Ok(order) => order,
                Err(error) => {
                    // Free the key so the client's retry can run; the order was not stored.
                    if let Err(release) = store.release_idempotency_key(&caller.owner, key).await {
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
                .complete_idempotency_key(&caller.owner, key, &fingerprint, &stored, now)
                .await
                .map_err(ApiError::from)?;
            state.events.publish(ChangeKind::Created, &stored.order);
            Ok(order_response(
                &state.rendered,
                StatusCode::CREATED,
                &stored.order,
            ))
        }
    }
}
