//! Every route of the service, grouped by who calls it. The OpenAPI document is produced from
//! the same chain and served by it, and the route catalog (for `handler functions check`) comes
//! from both.

pub mod events;
pub mod exports;
pub mod faults;
pub mod invocations;
pub mod openapi;
pub mod orders;
pub mod system;

use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Config;
use crate::error::ApiError;
use crate::functions::{Hosting, RouteInfo};
use crate::state::AppState;
use crate::store::StoreError;

/// The routes (without middleware).
pub fn router(config: &Config) -> Router<AppState> {
    split(config).0
}

/// The OpenAPI document, as served (and checked in): the routes' with default settings.
pub fn document() -> utoipa::openapi::OpenApi {
    split(&Config::defaults()).1
}

/// The router (without middleware) and the OpenAPI document that describes it, which the router
/// serves at `/api/openapi.json`.
pub fn split(config: &Config) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (documented, mut openapi) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        // Platform: health, for probes and operators.
        .routes(routes!(system::health))
        // Clients: the orders resource.
        .merge(orders::router())
        // Clients: exports of their orders.
        .merge(exports::router())
        .split_for_parts();
    utoipa::Modify::modify(&openapi::Contract, &mut openapi);

    let mut router = documented
        // The Functions host's readiness probe.
        .route("/", get(system::readiness))
        .route("/api/openapi.json", openapi::serve(&openapi))
        .merge(orders::legacy_redirects())
        .merge(events::router())
        // The memory-mode export file.
        .merge(exports::file_route());
    if config.under_functions_host {
        // The host's invocations of the queue-triggered functions.
        router = router.merge(invocations::router());
    }
    if config.fault_injection {
        router = router.merge(faults::router());
    }
    (router.fallback(not_found), openapi)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "No resource at '{}'.",
        crate::error::quoted(uri.path())
    ))
}

/// Storage failures, for every route that uses a store: 503 (unreachable, with `Retry-After`),
/// 504 (past the call's deadline), 502 (an unusable answer); anything else is a bug, 500. The
/// store's own detail goes to telemetry only. Here, above both, so that neither the error type
/// nor the stores know of the other.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => {
                ApiError::unavailable("Storage is unavailable.", 5).with_internal(error)
            }
            StoreError::Timeout(_) => ApiError::new(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                "Storage did not answer in time.",
            )
            .with_internal(error),
            StoreError::BadResponse(_) => ApiError::new(
                axum::http::StatusCode::BAD_GATEWAY,
                "Storage answered unexpectedly.",
            )
            .with_internal(error),
            other => ApiError::internal(other),
        }
    }
}

/// Every route the Router serves with every optional feature on, for checking the function
/// folders against.
pub fn catalog() -> Vec<RouteInfo> {
    let mut config = Config::defaults();
    config.fault_injection = true;
    let (_, openapi) = split(&config);
    let mut routes: Vec<RouteInfo> = openapi
        .paths
        .paths
        .iter()
        .map(|(path, item)| RouteInfo {
            path: path.clone(),
            methods: documented_methods(item),
            hosting: Hosting::Functions,
            anonymous: is_anonymous(item),
        })
        .collect();
    let get = || vec!["GET".to_owned(), "HEAD".to_owned()];
    let route = |path: &str, methods: Vec<String>, hosting, anonymous| RouteInfo {
        path: path.to_owned(),
        methods,
        hosting,
        anonymous,
    };
    routes.push(route("/", get(), Hosting::Host, true));
    routes.push(route("/api/openapi.json", get(), Hosting::Functions, true));
    let legacy_methods: Vec<String> = orders::LEGACY_METHODS
        .iter()
        .map(|m| m.to_string())
        .collect();
    for path in orders::LEGACY_PATHS {
        routes.push(route(
            path,
            legacy_methods.clone(),
            Hosting::Functions,
            false,
        ));
    }
    routes.push(route(faults::PATH, get(), Hosting::Functions, false));
    routes.push(route(
        exports::FILE_PATH,
        get(),
        Hosting::StandaloneOnly,
        false,
    ));
    routes.push(route(events::PATH, get(), Hosting::StandaloneOnly, false));
    for path in [invocations::WORKER_PATH, invocations::POISON_PATH] {
        routes.push(route(
            path,
            vec!["POST".to_owned()],
            Hosting::Invocation,
            true,
        ));
    }
    routes
}

fn documented_methods(item: &utoipa::openapi::PathItem) -> Vec<String> {
    let mut methods = Vec::new();
    let pairs = [
        ("GET", item.get.is_some()),
        ("PUT", item.put.is_some()),
        ("POST", item.post.is_some()),
        ("DELETE", item.delete.is_some()),
        ("OPTIONS", item.options.is_some()),
        ("HEAD", item.head.is_some()),
        ("PATCH", item.patch.is_some()),
        ("TRACE", item.trace.is_some()),
    ];
    for (method, present) in pairs {
        if present {
            methods.push(method.to_owned());
        }
    }
    // axum answers HEAD wherever it answers GET.
    if item.get.is_some() && item.head.is_none() {
        methods.push("HEAD".to_owned());
    }
    methods
}

/// An operation with an empty security requirement (`security(())`) needs no token.
fn is_anonymous(item: &utoipa::openapi::PathItem) -> bool {
    [&item.get, &item.post, &item.put, &item.patch, &item.delete]
        .into_iter()
        .flatten()
        .all(|op| {
            op.security.as_ref().is_some_and(|reqs| {
                reqs.iter().any(|r| {
                    serde_json::to_value(r)
                        .is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty()))
                })
            })
        })
}
