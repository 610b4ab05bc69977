//! The OpenAPI document: generated from the handlers' annotations, served at
//! `/api/openapi.json`, and checked in (`openapi/openapi.json`, written by `handler openapi`) for
//! import into API Management.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Orders API",
        description = "Orders with exact money, ETags, idempotent creation and one JSON error shape for every failure.",
        license(name = "MIT", identifier = "MIT"),
    ),
    servers((url = "/", description = "This service, or the API Management gateway in front of it")),
    security(("bearer" = [])),
    modifiers(&BearerAuth),
    components(schemas(crate::error::ErrorBody, crate::error::FieldError)),
    tags(
        (name = "orders", description = "The caller's orders."),
        (name = "system", description = "Health and metadata."),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        scheme.description = Some(
            "A JWT from the configured issuer. Reads need the scope or role Orders.Read, writes Orders.Write."
                .to_owned(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document as served and checked in.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut config = crate::config::Config::defaults();
    config.fault_injection = false;
    crate::routes::split(&config).1
}

/// Pretty JSON with a trailing newline, the form of the checked-in copy.
pub fn document_json() -> String {
    // infallible: the document is plain data.
    let mut text = document()
        .to_pretty_json()
        .unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    text
}

/// `GET /api/openapi.json`. The document is built on first use and kept: it never changes
/// while the process runs.
pub async fn serve() -> Json<serde_json::Value> {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    Json(
        DOCUMENT
            .get_or_init(|| serde_json::to_value(document()).unwrap_or_default())
            .clone(),
    )
}
