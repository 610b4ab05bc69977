//! Routes for the platform rather than for clients: the Functions host's readiness probe and
//! health. (The OpenAPI document is served by [`super::openapi`].)

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::render;
use crate::routes::openapi::responses::*;
use crate::state::AppState;

/// `GET /`: the Functions host polls this until any response arrives; it must answer at once
/// and touch nothing else.
pub async fn readiness() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ready" }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    #[schema(value_type = HealthStatus)]
    pub status: &'static str,
    /// One entry per dependency: `healthy`, or `unhealthy` with a short reason.
    #[schema(value_type = Checks)]
    pub checks: serde_json::Map<String, serde_json::Value>,
    /// The service's version.
    #[schema(max_length = 64, pattern = "^[0-9A-Za-z.+-]{1,64}$", example = "0.1.0")]
    pub version: &'static str,
}

/// Whether a dependency, or the whole service, is usable.
#[derive(ToSchema)]
#[schema(as = HealthStatus)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
enum HealthStatus {
    Healthy,
    Unhealthy,
}

/// The dependencies health looks at, as documented.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Checks {
    /// The orders and exports store (Table, Queue and Blob Storage, or memory).
    store: Check,
}

/// One dependency's health, as documented.
#[derive(ToSchema)]
#[allow(dead_code)]
struct Check {
    status: HealthStatus,
    /// Why it is unhealthy, in a few words (no addresses or account names).
    #[schema(max_length = 64, nullable = false)]
    reason: Option<String>,
}

/// Health of the service and its dependencies.
///
/// Anonymous, outside the rate limit, and answered under load: for probes and operators. 503
/// with the failing checks and Retry-After when a dependency is not usable.
#[utoipa::path(
    get,
    path = "/api/health",
    operation_id = "getHealth",
    tag = "system",
    security(()),
    responses(
        (status = 200, description = "All dependencies are usable.", body = Health,
            headers(("Cache-Control" = String, description = "no-store: health changes."))),
        (status = 503, description = "A dependency is not usable.", body = Health,
            headers(("Retry-After" = u64, description = "Seconds to wait before asking again."),
                ("Cache-Control" = String, description = "no-store: health changes."))),
        (status = 500, response = InternalServerError),
    )
)]
pub async fn health(State(state): State<AppState>) -> Response {
    let mut checks = serde_json::Map::new();
    let mut healthy = true;
    match state.store.health().await {
        Ok(()) => {
            checks.insert("store".into(), serde_json::json!({ "status": "healthy" }));
        }
        Err(problem) => {
            healthy = false;
            checks.insert(
                "store".into(),
                serde_json::json!({ "status": "unhealthy", "reason": problem.public_reason() }),
            );
        }
    }
    let body = Health {
        status: if healthy { "healthy" } else { "unhealthy" },
        checks,
        version: env!("CARGO_PKG_VERSION"),
    };
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !healthy {
        // Health answers 503 with its own body (the checks) rather than the error shape: load
        // balancers and operators read it, and it is not an error of the request.
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response.extensions_mut().insert(render::OwnBody);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    response
}
