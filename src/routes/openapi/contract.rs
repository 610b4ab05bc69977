//! What every operation's responses have in common, added to the document in one place rather
//! than repeated per handler: the headers every response carries, the rate-limit headers of the
//! client routes, `Cache-Control` on authenticated answers, and header parameters typed as the
//! strings they are (an optional header is absent, never `null`).

use utoipa::Modify;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{SchemaType, Type};
use utoipa::openapi::{OpenApi, RefOr, Schema};

use super::headers;

pub struct Contract;

impl Modify for Contract {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            // Health answers probes under any load: it is outside the rate limiter.
            let rate_limited = path.starts_with("/api/") && path != "/api/health";
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                plain_header_parameters(operation);
                let authenticated = !is_anonymous(operation);
                for response in operation.responses.responses.values_mut() {
                    // Shared responses (references) declare their headers themselves.
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    let headers = &mut response.headers;
                    for (name, header) in headers.iter_mut() {
                        let description = match header {
                            RefOr::T(h) => h.description.clone().unwrap_or_default(),
                            RefOr::Ref(_) => continue,
                        };
                        if let Some(refined) = headers::refined(name, &description) {
                            *header = refined.into();
                        }
                    }
                    headers.insert("x-request-id".to_owned(), headers::request_id().into());
                    headers.insert(
                        "X-Content-Type-Options".to_owned(),
                        headers::no_sniff().into(),
                    );
                    if authenticated {
                        headers
                            .entry("Cache-Control".to_owned())
                            .or_insert_with(|| headers::cache_control().into());
                    }
                    if rate_limited {
                        for (name, header) in headers::rate_limit() {
                            headers.insert(name.to_owned(), header.into());
                        }
                    }
                }
            }
        }
    }
}

/// `security: [{}]` marks an operation that needs no token.
fn is_anonymous(operation: &Operation) -> bool {
    operation.security.as_ref().is_some_and(|requirements| {
        requirements.iter().any(|r| {
            serde_json::to_value(r).is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty()))
        })
    })
}

/// utoipa types an optional header as `["string", "null"]`; a header has no null, and generated
/// clients would send the text `null`.
fn plain_header_parameters(operation: &mut Operation) {
    for parameter in operation.parameters.iter_mut().flatten() {
        let RefOr::T(parameter) = parameter else {
            continue;
        };
        if parameter.parameter_in != ParameterIn::Header {
            continue;
        }
        if let Some(RefOr::T(Schema::Object(schema))) = &mut parameter.schema
            && let SchemaType::Array(types) = &schema.schema_type
        {
            let types: Vec<Type> = types
                .iter()
                .filter(|t| **t != Type::Null)
                .cloned()
                .collect();
            if let [only] = types.as_slice() {
                schema.schema_type = SchemaType::Type(only.clone());
            }
        }
    }
}
