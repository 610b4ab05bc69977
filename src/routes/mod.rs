//! Every route of the service, grouped by who calls it. The OpenAPI document is produced from
//! the same chain, and the route catalog (for `handler functions check`) from both.

pub mod events;
pub mod exports;
pub mod faults;
pub mod orders;
pub mod system;

use axum::Router;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::config::Config;

/// The router (without middleware) and the OpenAPI document that describes it.
pub fn split(config: &Config) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (documented, openapi) = OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        // Platform: health, for probes and operators.
        .routes(routes!(system::health))
        // Clients: the orders resource.
        .merge(orders::router())
        // Clients: exports of their orders.
        .merge(exports::router())
        .split_for_parts();

    let mut router = documented
        // The Functions host's readiness probe.
        .route("/", get(system::readiness))
        .route("/api/openapi.json", get(crate::openapi::serve))
        .merge(orders::legacy_redirects())
        .merge(events::router())
        // The memory-mode export file and the export worker's invocation.
        .merge(exports::internal_routes());
    if config.fault_injection {
        router = router.merge(faults::router());
    }
    (router.fallback(not_found), openapi)
}

async fn not_found(uri: axum::http::Uri) -> crate::error::ApiError {
    crate::error::ApiError::not_found(format!("No resource at '{}'.", uri.path()))
}

/// Where a route may be hosted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hosting {
    /// Reachable through a Functions HTTP function.
    Functions,
    /// Served by the handler only when it runs on its own (not through the Functions host).
    StandaloneOnly,
    /// Called by the Functions host itself, not through an HTTP function (readiness probe).
    Host,
    /// The host's invocation payload for a non-HTTP function (`POST /<function name>`).
    Invocation,
}

/// One route the Router serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// Path template as the Router spells it, e.g. `/api/orders/{id}`.
    pub path: String,
    /// Upper-case methods.
    pub methods: Vec<String>,
    pub hosting: Hosting,
    /// Needs no token (and no function key).
    pub anonymous: bool,
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
    routes.push(route(
        exports::WORKER_PATH,
        vec!["POST".to_owned()],
        Hosting::Invocation,
        true,
    ));
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
