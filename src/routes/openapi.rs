//! The OpenAPI document's frame (info, security, shared components); the operations come from
//! the handlers' annotations through the `routes!` chain in [`super::split`], which serves the
//! document it produces at `/api/openapi.json`. A copy is checked in (`openapi/openapi.json`) for
//! import into API Management.

use axum::http::{HeaderValue, header};
use bytes::Bytes;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ApiError;
use crate::state::AppState;

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

/// The document as served: pretty JSON with a trailing newline, the form of the checked-in copy
/// (`openapi/openapi.json`, written by `handler openapi`).
pub fn to_json(document: &utoipa::openapi::OpenApi) -> Result<String, String> {
    let mut text = document
        .to_pretty_json()
        .map_err(|e| format!("the OpenAPI document cannot be written as JSON: {e}"))?;
    text.push('\n');
    Ok(text)
}

/// `GET /api/openapi.json`: the document rendered once, when the router was built.
pub fn serve(document: &utoipa::openapi::OpenApi) -> axum::routing::MethodRouter<AppState> {
    let rendered: Result<Bytes, ApiError> = to_json(document)
        .map(Bytes::from)
        .map_err(ApiError::internal);
    axum::routing::get(move || {
        let rendered = rendered.clone();
        async move {
            rendered.map(|json| {
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    json,
                )
            })
        }
    })
}
