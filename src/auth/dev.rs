//! Development mode: HS256 tokens signed with `ORDERS_AUTH_DEV_SECRET` (or the built-in, public
//! development key), with a fixed issuer and audience, issued by `handler token`.
//!
//! It lets a newcomer run the service with nothing else installed. It is refused at start-up in
//! Azure (see `config.rs`) and announced loudly at start-up everywhere else.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use thiserror::Error;

use crate::config::{AuthMode, AuthSettings};

/// `iss` of development tokens.
pub const DEV_ISSUER: &str = "orders-api-development";
/// `aud` of development tokens.
pub const DEV_AUDIENCE: &str = "api://orders-api-development";
/// The only algorithm of development mode.
pub const DEV_ALGORITHM: Algorithm = Algorithm::HS256;

/// What `handler token` puts in a token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub subject: String,
    /// Into `scp`, space-separated.
    pub scopes: Vec<String>,
    /// Into `roles`.
    pub roles: Vec<String>,
    pub expires_in: Duration,
}

impl TokenRequest {
    /// A token for `subject` with `scopes`, valid for an hour.
    pub fn new(subject: impl Into<String>, scopes: &[&str]) -> Self {
        Self {
            subject: subject.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            roles: Vec::new(),
            expires_in: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IssueError {
    #[error(
        "tokens can only be issued in development mode; ORDERS_AUTH_ISSUER is set, so get a token from the identity provider"
    )]
    NotDevelopmentMode,
    #[error("the subject must not be empty")]
    EmptySubject,
    #[error("could not sign the token: {0}")]
    Signing(String),
}

#[derive(Serialize)]
struct DevClaims<'a> {
    iss: &'static str,
    aud: &'static str,
    sub: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    scp: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    roles: &'a [String],
}

/// A token the service accepts when it runs with `settings` (development mode only).
pub fn issue_token(settings: &AuthSettings, request: &TokenRequest) -> Result<String, IssueError> {
    let AuthMode::Development { secret, .. } = &settings.mode else {
        return Err(IssueError::NotDevelopmentMode);
    };
    if request.subject.trim().is_empty() {
        return Err(IssueError::EmptySubject);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let scopes: Vec<&str> = request
        .scopes
        .iter()
        .flat_map(|s| s.split_whitespace())
        .collect();
    let claims = DevClaims {
        iss: DEV_ISSUER,
        aud: DEV_AUDIENCE,
        sub: &request.subject,
        iat: now,
        nbf: now,
        exp: now.saturating_add(request.expires_in.as_secs()),
        scp: (!scopes.is_empty()).then(|| scopes.join(" ")),
        roles: &request.roles,
    };
    jsonwebtoken::encode(
        &Header::new(DEV_ALGORITHM),
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .map_err(|e| IssueError::Signing(e.to_string()))
}

/// The start-up announcement of how tokens are checked: a loud warning in development mode.
pub fn announce(settings: &AuthSettings) {
    match &settings.mode {
        AuthMode::Development { built_in: true, .. } => tracing::warn!(
            issuer = DEV_ISSUER,
            "DEVELOPMENT AUTHENTICATION: tokens are signed with the built-in development key, which is public; anyone can mint tokens with `handler token`. Set ORDERS_AUTH_ISSUER and ORDERS_AUTH_AUDIENCE for real use."
        ),
        AuthMode::Development {
            built_in: false, ..
        } => tracing::warn!(
            issuer = DEV_ISSUER,
            "DEVELOPMENT AUTHENTICATION: tokens are signed with ORDERS_AUTH_DEV_SECRET (HS256). Set ORDERS_AUTH_ISSUER and ORDERS_AUTH_AUDIENCE for real use."
        ),
        AuthMode::Production {
            issuer,
            audiences,
            jwks_uri,
        } => tracing::info!(
            issuer = %issuer,
            audiences = ?audiences,
            keys = jwks_uri.as_deref().unwrap_or("OpenID discovery"),
            algorithms = ?settings.algorithms,
            "bearer tokens are verified with the identity provider's published keys"
        ),
    }
}
