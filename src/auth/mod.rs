//! Who is calling, and what they may do.
//!
//! Handlers take a [`Caller`] as their first extractor: its presence in a signature is what
//! makes a route authenticated, and it runs before any body is read.

use std::collections::BTreeSet;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::ApiError;

/// What a route needs from the caller's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "Orders.Read",
            Self::Write => "Orders.Write",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The owner of the caller's orders: the token's `oid`, else its `sub`.
    pub owner: String,
    /// Scopes (`scp`) and app roles (`roles`) the token grants.
    pub scopes: BTreeSet<String>,
}

impl Caller {
    /// The identity used when no authentication is configured.
    pub fn development() -> Self {
        Self {
            owner: "dev-user".to_owned(),
            scopes: [Scope::Read, Scope::Write]
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
        }
    }

    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(scope.as_str()) {
            Ok(())
        } else {
            Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                format!("The token lacks the scope '{}'.", scope.as_str()),
            ))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(Caller::development))
    }
}
