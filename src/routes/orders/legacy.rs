//! `/api/v1/orders[/{id}]`, moved to `/api/orders[/{id}]`.

use axum::Router;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::any;

use crate::state::AppState;

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
