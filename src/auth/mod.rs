//! Who is calling, and what they may do.
//!
//! Handlers take a [`Caller`] as their first extractor: its presence in a signature is what
//! makes a route authenticated, and it runs before any body is read, so an unauthenticated
//! upload is answered 401 without its body (and without `100 Continue`).
//!
//! - [`jwt`]: checks on one token (algorithm allow-list, signature, `exp`/`nbf`, `iss`, `aud`).
//! - [`jwks`]: the identity provider's keys (production mode).
//! - [`dev`]: development mode and `handler token`.
//! - [`cache`]: tokens already verified, so repeated calls skip the signature check.
//!
//! Failures follow RFC 6750: 401 with `WWW-Authenticate: Bearer realm="orders-api"` when no
//! bearer token was sent, plus `error="invalid_token"` and a description when one was; 403 with
//! `error="insufficient_scope"` when the token lacks the route's scope. Tokens, keys and secrets
//! never appear in logs or responses.

pub mod cache;
pub mod dev;
mod entra;
pub mod jwks;
pub mod jwt;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use jsonwebtoken::DecodingKey;

use crate::config::{AuthMode, AuthSettings};
use crate::error::ApiError;
use cache::VerifiedTokens;
use jwks::{KeyCache, KeyError};
use jwt::{MAX_TOKEN_BYTES, Rules, TokenRejection};

/// `realm` of the 401 challenges.
pub const REALM: &str = "orders-api";

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
    /// The owner of the caller's orders: the token's `oid`, else its `sub`. Shared: callers
    /// are cloned on every request.
    pub owner: Arc<str>,
    /// Scopes (`scp`) and app roles (`roles`) the token grants.
    pub scopes: Arc<BTreeSet<String>>,
}

impl Caller {
    /// 403 unless the token grants `scope`, as a delegated scope or as an app role. Each scope
    /// stands alone: `Orders.Write` does not imply `Orders.Read`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(scope.as_str()) {
            return Ok(());
        }
        let challenge = format!(
            "Bearer error=\"insufficient_scope\", scope=\"{}\"",
            scope.as_str()
        );
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("The token lacks the scope '{}'.", scope.as_str()),
        )
        .with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&challenge).unwrap_or_else(|_| {
                HeaderValue::from_static("Bearer error=\"insufficient_scope\"")
            }),
        ))
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Auth: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = match parts.extensions.get::<Authenticated>() {
            Some(Authenticated(outcome)) => outcome.clone()?,
            None => Auth::from_ref(state).authenticate(&parts.headers).await?,
        };
        crate::telemetry::record_caller(&caller.owner);
        Ok(caller)
    }
}

/// A caller whose token grants `Orders.Read`. As an extractor it rejects (401/403) before any
/// body is read, so a refused upload never gets `100 Continue`.
#[derive(Debug, Clone)]
pub struct Reader(pub Caller);

/// A caller whose token grants `Orders.Write`; see [`Reader`].
#[derive(Debug, Clone)]
pub struct Writer(pub Caller);

impl<S> FromRequestParts<S> for Reader
where
    S: Send + Sync,
    Auth: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(Scope::Read)?;
        Ok(Self(caller))
    }
}

impl<S> FromRequestParts<S> for Writer
where
    S: Send + Sync,
    Auth: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(Scope::Write)?;
        Ok(Self(caller))
    }
}

/// The outcome of authenticating a request, computed once by [`identify`].
#[derive(Clone)]
struct Authenticated(Result<Caller, AuthError>);

/// Authenticates a request that carries credentials, before its body is read and before rate
/// limiting (which keys on the caller). The outcome is kept for the [`Caller`] extractor; this
/// rejects nothing, so anonymous routes stay anonymous.
pub async fn identify(auth: &Auth, req: &mut axum::extract::Request) {
    if req.headers().contains_key(header::AUTHORIZATION) {
        let outcome = auth.authenticate(req.headers()).await;
        req.extensions_mut().insert(Authenticated(outcome));
    }
}

/// The caller [`identify`] authenticated for this request, if it did.
pub fn identified(req: &axum::extract::Request) -> Option<&Caller> {
    match req.extensions().get::<Authenticated>() {
        Some(Authenticated(Ok(caller))) => Some(caller),
        _ => None,
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer` header (none at all, or another scheme such as Basic).
    NoToken,
    /// A bearer token was sent and refused.
    Rejected(TokenRejection),
    /// The identity provider's keys are not available (502/503/504).
    KeysUnavailable(jwks::FetchError, std::time::Duration),
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::NoToken => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "A bearer token is required (Authorization: Bearer <token>).",
            )
            .with_header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"orders-api\""),
            ),
            AuthError::Rejected(rejection) => {
                let description = rejection.description();
                let challenge = format!(
                    "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{description}\""
                );
                ApiError::new(StatusCode::UNAUTHORIZED, description).with_header(
                    header::WWW_AUTHENTICATE,
                    // Descriptions are fixed ASCII text (a unit test checks them).
                    HeaderValue::from_str(&challenge).unwrap_or_else(|_| {
                        HeaderValue::from_static(
                            "Bearer realm=\"orders-api\", error=\"invalid_token\"",
                        )
                    }),
                )
            }
            AuthError::KeysUnavailable(error, retry_after) => error.to_api_error(retry_after),
        }
    }
}

/// Checks bearer tokens. Cheap to clone; one per application.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Keys,
    rules: Rules,
    verified: VerifiedTokens,
}

enum Keys {
    Development(Arc<DecodingKey>),
    Published(Arc<KeyCache>),
}

impl Auth {
    /// Ready at once: in production mode the keys are fetched in the background (when a Tokio
    /// runtime is running) and on first use, never during start-up.
    pub fn new(settings: &AuthSettings) -> Self {
        let (keys, rules) = match &settings.mode {
            AuthMode::Development { secret, .. } => (
                Keys::Development(Arc::new(DecodingKey::from_secret(
                    secret.expose().as_bytes(),
                ))),
                Rules::new(
                    dev::DEV_ISSUER,
                    &[dev::DEV_AUDIENCE.to_owned()],
                    &[dev::DEV_ALGORITHM],
                ),
            ),
            AuthMode::Production {
                issuer,
                audiences,
                jwks_uri,
            } => {
                let cache = Arc::new(KeyCache::new(
                    issuer,
                    jwks_uri.as_deref(),
                    settings.key_refresh,
                ));
                cache.start_background_refresh();
                (
                    Keys::Published(cache),
                    Rules::new(issuer, audiences, &settings.algorithms),
                )
            }
        };
        Self {
            inner: Arc::new(Inner {
                keys,
                rules,
                verified: VerifiedTokens::new(settings.verified_token_cache),
            }),
        }
    }

    /// The caller of a request with these headers.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let result = self.check(headers).await;
        if let Err(error) = &result {
            match error {
                AuthError::NoToken => tracing::debug!("request without a bearer token"),
                AuthError::Rejected(rejection) => {
                    tracing::debug!(reason = rejection.reason(), "bearer token rejected");
                }
                AuthError::KeysUnavailable(..) => {}
            }
        }
        result
    }

    async fn check(&self, headers: &HeaderMap) -> Result<Caller, AuthError> {
        let token = bearer_token(headers)?;
        let inner = &*self.inner;
        let digest = cache::digest(token);
        let now = unix_now();
        if let Some(identity) = inner.verified.get(&digest, now, self.generation()) {
            return Ok(caller(identity));
        }
        // Only a token that passed this check was ever cached, so a cached one needs no
        // second look at each of its bytes.
        if !is_compact_jws(token) {
            return Err(AuthError::Rejected(TokenRejection::Malformed));
        }

        let header = jwt::peek_header(token).map_err(AuthError::Rejected)?;
        let algorithm = inner
            .rules
            .algorithm(&header)
            .map_err(AuthError::Rejected)?;
        let (key, generation) = match &inner.keys {
            Keys::Development(key) => (Arc::clone(key), 0),
            Keys::Published(cache) => cache
                .key_for(header.kid.as_deref(), algorithm)
                .await
                .map_err(|error| match error {
                    KeyError::Unknown => AuthError::Rejected(TokenRejection::UnknownKey),
                    KeyError::Ambiguous => AuthError::Rejected(TokenRejection::MissingKeyId),
                    KeyError::Incompatible => {
                        AuthError::Rejected(TokenRejection::AlgorithmNotAccepted)
                    }
                    KeyError::Provider { error, retry_after } => {
                        AuthError::KeysUnavailable(error, retry_after)
                    }
                })?,
        };
        let identity = inner
            .rules
            .verify(token, algorithm, &key)
            .and_then(jwt::Claims::identity)
            .map_err(AuthError::Rejected)?;
        inner
            .verified
            .insert(digest, identity.clone(), generation, now);
        Ok(caller(identity))
    }

    fn generation(&self) -> u64 {
        match &self.inner.keys {
            Keys::Development(_) => 0,
            Keys::Published(cache) => cache.generation(),
        }
    }

    /// Tokens currently remembered as verified.
    pub fn verified_tokens(&self) -> usize {
        self.inner.verified.len()
    }
}

fn caller(identity: jwt::Identity) -> Caller {
    Caller {
        owner: identity.owner,
        scopes: identity.grants,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The token of the one `Authorization: Bearer <token>` header.
///
/// Another scheme (Basic, ...) counts as no bearer token at all, which RFC 6750 answers with a
/// bare challenge; a second header, a second token or stray characters are a malformed token.
fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(AuthError::NoToken);
    };
    if values.next().is_some() {
        return Err(AuthError::Rejected(TokenRejection::Malformed));
    }
    // Checked on the raw bytes first so an oversized header costs nothing more.
    if value.len() > MAX_TOKEN_BYTES + "Bearer ".len() + 16 {
        return Err(AuthError::Rejected(TokenRejection::TooLarge));
    }
    let text = value
        .to_str()
        .map_err(|_| AuthError::Rejected(TokenRejection::Malformed))?
        .trim();
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NoToken);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(AuthError::Rejected(TokenRejection::Empty));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Rejected(TokenRejection::TooLarge));
    }
    // Its characters are checked by [`is_compact_jws`] before it is verified; a cached token
    // passed that check already.
    Ok(token)
}

/// A JWS in compact form is base64url parts joined by dots; anything else (a space, a comma
/// before a second token) is not one token.
fn is_compact_jws(token: &str) -> bool {
    token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer_token(&headers(&[])), Err(AuthError::NoToken));
        assert_eq!(
            bearer_token(&headers(&["Basic dXNlcjpwYXNz"])),
            Err(AuthError::NoToken)
        );
        assert_eq!(bearer_token(&headers(&["bearer a.b.c"])), Ok("a.b.c"));
        assert_eq!(bearer_token(&headers(&["Bearer   a.b.c  "])), Ok("a.b.c"));
        let rejected = |v: &[&str]| match bearer_token(&headers(v)) {
            Err(AuthError::Rejected(r)) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(rejected(&["Bearer"]), TokenRejection::Empty);
        assert_eq!(rejected(&["Bearer "]), TokenRejection::Empty);
        // Two tokens in one header: not one compact JWS.
        for two in ["Bearer a.b.c d.e.f", "Bearer a.b.c, Bearer d.e.f"] {
            let map = headers(&[two]);
            assert!(!is_compact_jws(bearer_token(&map).unwrap()), "{two}");
        }
        assert!(is_compact_jws("eyJh-_.eyJ0.c2ln"));
        assert_eq!(
            rejected(&["Bearer a.b.c", "Bearer d.e.f"]),
            TokenRejection::Malformed
        );
        let big = format!("Bearer {}", "a".repeat(9 * 1024));
        assert_eq!(rejected(&[&big]), TokenRejection::TooLarge);
    }

    #[test]
    fn insufficient_scope_names_the_scope() {
        let caller = Caller {
            owner: "alice".into(),
            scopes: Arc::new(["Orders.Write".to_owned()].into()),
        };
        assert!(caller.require(Scope::Write).is_ok());
        let error = caller.require(Scope::Read).unwrap_err();
        assert_eq!(error.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            error.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"insufficient_scope\", scope=\"Orders.Read\""
        );
    }

    #[tokio::test]
    async fn development_tokens_round_trip() {
        let settings = crate::config::Config::defaults().auth;
        let auth = Auth::new(&settings);
        let token = dev::issue_token(
            &settings,
            &dev::TokenRequest::new("alice", &["Orders.Read"]),
        )
        .unwrap();
        let mut map = HeaderMap::new();
        map.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        let caller = auth.authenticate(&map).await.unwrap();
        assert_eq!(caller.owner.as_ref(), "alice");
        assert!(caller.scopes.contains("Orders.Read"));
        assert_eq!(auth.verified_tokens(), 1);
        // Served from the cache the second time.
        assert_eq!(auth.authenticate(&map).await.unwrap(), caller);
    }
}
