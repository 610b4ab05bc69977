//! Query strings read straight into typed parameters; a parameter that does not parse is a 400
//! whose `details` name it, through the one error path.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};

#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse(parts.uri.query().unwrap_or_default()).map(ApiQuery)
    }
}

/// Parses `query`, naming the parameter that failed (its own name, as the client spelled it).
pub fn parse<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let deserializer =
        serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." {
            "query".to_owned()
        } else {
            path
        };
        ApiError::validation(vec![FieldError::new(field, error.into_inner().to_string())])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Params {
        top: Option<crate::domain::PageSize>,
        status: Option<crate::domain::OrderStatus>,
    }

    #[test]
    fn each_problem_names_its_parameter() {
        let params: Params = parse("top=5&status=paid").unwrap();
        assert_eq!(params.top.map(|t| t.get()), Some(5));
        assert_eq!(params.status, Some(crate::domain::OrderStatus::Paid));
        let error = parse::<Params>("top=0").unwrap_err();
        assert_eq!(error.details()[0].field, "top");
        assert_eq!(
            error.details()[0].message,
            "must be a whole number from 1 to 100"
        );
        let error = parse::<Params>("top=5&status=lost").unwrap_err();
        assert_eq!(error.details()[0].field, "status");
        assert_eq!(
            error.details()[0].message,
            crate::domain::OrderStatus::EXPECTED
        );
    }
}
