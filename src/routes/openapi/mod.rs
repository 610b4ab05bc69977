//! The OpenAPI document's frame (info, servers, security, shared components); the operations
//! come from the handlers' annotations through the `routes!` chain in [`super::split`], which
//! serves the document it produces at `/api/openapi.json` after [`Contract`] has added what every
//! operation has in common. Two copies are checked in: `openapi/openapi.json` (3.1, as served)
//! and `openapi/openapi-3.0.json` (3.0.3, for import into API Management, [`v3_0`]).

mod contract;
mod headers;
pub mod responses;
pub mod v3_0;

use axum::http::{HeaderValue, header};
use bytes::Bytes;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ApiError;
use crate::state::AppState;

pub use contract::Contract;
use responses::*;

/// The public entry point: API Management, with the API imported under the path `orders`.
pub const GATEWAY_URL: &str = "https://{apim}.azure-api.net/orders";
/// The Function App itself: needs a function key besides the token.
pub const FUNCTION_APP_URL: &str = "https://{functionApp}.azurewebsites.net";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Orders API",
        description = "Orders with exact money, ETags, idempotent creation and one JSON error shape for every failure.",
        license(name = "MIT", url = "https://opensource.org/license/mit"),
        contact(name = "Orders API maintainers", url = "https://github.com/orders-api/orders-api"),
    ),
    servers(
        (url = "https://{apim}.azure-api.net/orders", description = "Production: the API Management gateway, the public entry point.",
            variables(("apim" = (default = "orders-apim", description = "The API Management instance's name.")))),
        (url = "https://{functionApp}.azurewebsites.net", description = "Production backend: the Function App behind the gateway (a function key is needed besides the token).",
            variables(("functionApp" = (default = "orders-api", description = "The Function App's name.")))),
        (url = "http://localhost:7071", description = "Local development: `cargo run` or `func start`."),
    ),
    security(("bearer" = [])),
    modifiers(&BearerAuth, &ServerAudience),
    components(
        schemas(
            crate::error::ErrorBody,
            crate::error::FieldError,
            crate::error::ProblemDetails,
        ),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            NotAcceptable,
            RequestTimeout,
            Conflict,
            PreconditionFailed,
            ContentTooLarge,
            UnsupportedMediaType,
            UnprocessableContent,
            TooManyRequests,
            InternalServerError,
            BadGateway,
            ServiceUnavailable,
            GatewayTimeout,
        ),
    ),
    tags(
        (name = "orders", description = "The caller's orders."),
        (name = "exports", description = "Exports of the caller's orders to a file, run in the background."),
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
            "A JWT access token from the configured issuer (Microsoft Entra ID), validated as RFC8725 (JWT best current practices) recommends: signature with an allowed asymmetric algorithm only, exp, nbf, iss and aud required. Reads need the scope or app role Orders.Read, writes Orders.Write."
                .to_owned(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Which servers are meant for whom (`x-internal`): the gateway is public; the Function App is
/// reached through it, and a local run is for its developer.
struct ServerAudience;

impl Modify for ServerAudience {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for server in openapi.servers.iter_mut().flatten() {
            let internal = server.url != GATEWAY_URL;
            server.extensions = Some(ExtensionsBuilder::new().add("x-internal", internal).build());
        }
    }
}

/// Which OpenAPI version a rendering of the document follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecVersion {
    /// 3.1, as served and as `openapi/openapi.json`.
    V3_1,
    /// 3.0.3, as `openapi/openapi-3.0.json`, for API Management.
    V3_0,
}

/// The document as served: pretty JSON with a trailing newline, the form of the checked-in copy
/// (`openapi/openapi.json`, written by `handler openapi`).
pub fn to_json(document: &utoipa::openapi::OpenApi) -> Result<String, String> {
    render(document, SpecVersion::V3_1)
}

/// The document in `version`, as pretty JSON with a trailing newline.
pub fn render(document: &utoipa::openapi::OpenApi, version: SpecVersion) -> Result<String, String> {
    let problem =
        |e: serde_json::Error| format!("the OpenAPI document cannot be written as JSON: {e}");
    let mut text = match version {
        SpecVersion::V3_1 => document.to_pretty_json().map_err(problem)?,
        SpecVersion::V3_0 => {
            let value = serde_json::to_value(document).map_err(problem)?;
            serde_json::to_string_pretty(&v3_0::render(&value)).map_err(problem)?
        }
    };
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
