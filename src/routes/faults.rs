//! Fault injection (`ORDERS_FAULT_INJECTION=true`, refused in Azure): each fault takes one
//! failure path for real, so tests, the benchmark and operators can watch every 5xx happen.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;

use crate::error::{ApiError, FieldError};
use crate::http::query::ApiQuery;
use crate::state::AppState;

pub const PATH: &str = "/api/faults/{fault}";

pub fn router() -> Router<AppState> {
    Router::new().route(PATH, get(inject))
}

#[derive(Deserialize)]
struct FaultParams {
    /// How long `slow` sleeps.
    ms: Option<u64>,
}

/// Longest sleep `slow` takes.
const MAX_SLOW_MS: u64 = 600_000;

async fn inject(
    Path(fault): Path<String>,
    ApiQuery(params): ApiQuery<FaultParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    match fault.as_str() {
        "panic" => panic!("fault injection: deliberate panic in a handler"),
        "error" => {
            let cause = std::io::Error::other("fault injection: simulated failure deep inside");
            Err(ApiError::internal(format!(
                "while serving /api/faults/error: {cause}"
            )))
        }
        "slow" => {
            let ms = params.ms.unwrap_or(1_000);
            if ms > MAX_SLOW_MS {
                return Err(ApiError::validation(vec![FieldError::new(
                    "ms",
                    format!("must be at most {MAX_SLOW_MS}"),
                )]));
            }
            // Said in the log, so a test can tell the request is in flight.
            tracing::info!(ms, "fault injection: a slow request is sleeping");
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Json(serde_json::json!({ "sleptMs": ms })))
        }
        "bad-gateway" => Err(
            ApiError::new(StatusCode::BAD_GATEWAY, "dependency answered garbage")
                .with_internal("fault injection: a dependency answered with an unusable response"),
        ),
        "unavailable" => Err(ApiError::unavailable("dependency unreachable", 5)
            .with_internal("fault injection: a dependency could not be reached")),
        _ => Err(ApiError::not_found(
            "Known faults: panic, error, slow, bad-gateway, unavailable.",
        )),
    }
}
