//! Checking one JWT: its shape, the algorithm it claims, the signature, the time and audience
//! claims, and the identity it carries.
//!
//! `jsonwebtoken` does the cryptography and the claim checks; this module decides which checks
//! run. Its pitfalls are handled here: `iss` and `aud` are checked only when required, `nbf`
//! only when asked, and a `Validation` listing algorithms of two families rejects every token,
//! so each verification lists exactly the one algorithm already accepted for the token.

use std::collections::BTreeSet;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Longest token accepted. Real access tokens are 1 to 3 KiB; the limit keeps hashing and
/// parsing cheap for whatever a client sends.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Tolerated clock difference with the identity provider for `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 60;

/// Why a token was refused. [`TokenRejection::description`] goes to the client in
/// `error_description`, so it never quotes the token or any of its claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    /// `Authorization: Bearer` with nothing after it.
    Empty,
    /// Not three base64url parts, an unreadable header, two tokens, a second Authorization header.
    Malformed,
    TooLarge,
    /// `alg` outside the configured list (`none` included), or not matching the key's type.
    AlgorithmNotAccepted,
    /// A `crit` header: the service understands no JWS extensions, so it must refuse them.
    CriticalHeader,
    /// No `kid` while several keys could have signed the token.
    MissingKeyId,
    /// `kid` not among the identity provider's current keys.
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    MissingClaim(&'static str),
    /// A claim of the wrong type (`exp` as text, `roles` not an array, ...).
    BadClaims,
    /// Neither `oid` nor `sub`.
    NoSubject,
}

impl TokenRejection {
    /// For `error_description`: plain ASCII without quotes or backslashes (RFC 6750, 3).
    pub fn description(self) -> &'static str {
        match self {
            Self::Empty => "The Authorization header has no token after Bearer.",
            Self::Malformed => "The token is malformed.",
            Self::TooLarge => "The token is larger than 8192 bytes.",
            Self::AlgorithmNotAccepted => "The token signing algorithm is not accepted.",
            Self::CriticalHeader => "The token requires unsupported extensions (crit).",
            Self::MissingKeyId => "The token does not name its signing key (kid).",
            Self::UnknownKey => "The token was signed with an unknown key.",
            Self::BadSignature => "The token signature is invalid.",
            Self::Expired => "The token has expired.",
            Self::NotYetValid => "The token is not valid yet (nbf).",
            Self::WrongIssuer => "The token issuer is not accepted.",
            Self::WrongAudience => "The token audience is not accepted.",
            Self::MissingClaim("exp") => "The token has no expiry (exp).",
            Self::MissingClaim("iss") => "The token has no issuer (iss).",
            Self::MissingClaim("aud") => "The token has no audience (aud).",
            Self::MissingClaim(_) => "The token lacks a required claim.",
            Self::BadClaims => "The token has a claim of the wrong type.",
            Self::NoSubject => "The token identifies no subject (oid or sub).",
        }
    }

    /// Short reason for logs and telemetry.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::AlgorithmNotAccepted => "algorithm",
            Self::CriticalHeader => "crit",
            Self::MissingKeyId => "no_kid",
            Self::UnknownKey => "unknown_kid",
            Self::BadSignature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "issuer",
            Self::WrongAudience => "audience",
            Self::MissingClaim(_) => "missing_claim",
            Self::BadClaims => "claims",
            Self::NoSubject => "no_subject",
        }
    }
}

/// What the service reads from the JOSE header before choosing a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    pub alg: String,
    pub kid: Option<String>,
}

/// Reads the header without trusting it: it only picks the key and is checked against the
/// configuration, never the other way round.
pub fn peek_header(token: &str) -> Result<TokenHeader, TokenRejection> {
    #[derive(Deserialize)]
    struct RawHeader {
        alg: String,
        kid: Option<String>,
        crit: Option<serde_json::Value>,
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenRejection::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenRejection::Malformed)?;
    let raw: RawHeader = serde_json::from_slice(&bytes).map_err(|_| TokenRejection::Malformed)?;
    if raw.crit.is_some() {
        return Err(TokenRejection::CriticalHeader);
    }
    Ok(TokenHeader {
        alg: raw.alg,
        kid: raw.kid,
    })
}

/// The claims the service uses; `jsonwebtoken` checks `exp`, `nbf`, `iss` and `aud` itself.
#[derive(Debug, Deserialize)]
pub struct Claims {
    /// Seconds since the epoch, possibly fractional. Read loosely so that a missing or
    /// mistyped `exp` is reported by the claim checks with its own reason.
    #[serde(default)]
    pub exp: Option<serde_json::Value>,
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub oid: Option<String>,
    #[serde(default)]
    pub scp: Option<ScopeClaim>,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
}

/// `scp` is one space-separated string; a few identity providers send an array instead.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ScopeClaim {
    Text(String),
    List(Vec<String>),
}

/// Who the token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `oid`, else `sub`.
    pub owner: std::sync::Arc<str>,
    /// Scopes from `scp` and app roles from `roles`.
    pub grants: std::sync::Arc<BTreeSet<String>>,
    /// `exp`, whole seconds.
    pub expires_at: u64,
}

impl Claims {
    pub fn identity(self) -> Result<Identity, TokenRejection> {
        let non_empty = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
        let owner = non_empty(self.oid)
            .or_else(|| non_empty(self.sub))
            .ok_or(TokenRejection::NoSubject)?;
        let mut grants = BTreeSet::new();
        match self.scp {
            Some(ScopeClaim::Text(text)) => {
                grants.extend(text.split_whitespace().map(str::to_owned));
            }
            Some(ScopeClaim::List(list)) => grants.extend(list),
            None => {}
        }
        grants.extend(self.roles.unwrap_or_default());
        Ok(Identity {
            owner: owner.into(),
            grants: grants.into(),
            // The claim checks accepted it as a non-negative number; fractions are cut.
            expires_at: self
                .exp
                .as_ref()
                .and_then(serde_json::Value::as_f64)
                .map_or(0, |exp| exp as u64),
        })
    }
}

/// The checks for one issuer and audience.
pub struct Rules {
    allowed: Vec<Algorithm>,
    /// One `Validation` per allowed algorithm.
    validations: Vec<(Algorithm, Validation)>,
    /// For [`super::entra::hint`]: what the configuration expects.
    issuer: String,
    audiences: Vec<String>,
}

impl Rules {
    pub fn new(issuer: &str, audiences: &[String], allowed: &[Algorithm]) -> Self {
        let validations = allowed
            .iter()
            .map(|&algorithm| {
                let mut validation = Validation::new(algorithm);
                validation.leeway = LEEWAY_SECS;
                validation.validate_exp = true;
                validation.validate_nbf = true;
                validation.validate_aud = true;
                // Without this `iss` and `aud` are only compared when present.
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                validation.set_issuer(&[issuer]);
                validation.set_audience(audiences);
                (algorithm, validation)
            })
            .collect();
        Self {
            allowed: allowed.to_vec(),
            validations,
            issuer: issuer.to_owned(),
            audiences: audiences.to_vec(),
        }
    }

    /// The token's `alg`, if the configuration allows it.
    pub fn algorithm(&self, header: &TokenHeader) -> Result<Algorithm, TokenRejection> {
        Algorithm::from_str(&header.alg)
            .ok()
            .filter(|algorithm| self.allowed.contains(algorithm))
            .ok_or(TokenRejection::AlgorithmNotAccepted)
    }

    /// Signature first, then the claims: a forged token learns nothing about what else would
    /// have been wrong with it.
    pub fn verify(
        &self,
        token: &str,
        algorithm: Algorithm,
        key: &DecodingKey,
    ) -> Result<Claims, TokenRejection> {
        // An RSA public key used as an HMAC secret is the classic algorithm confusion.
        if key.family() != algorithm.family() {
            return Err(TokenRejection::AlgorithmNotAccepted);
        }
        let validation = self
            .validations
            .iter()
            .find(|(a, _)| *a == algorithm)
            .map(|(_, v)| v)
            .ok_or(TokenRejection::AlgorithmNotAccepted)?;
        jsonwebtoken::decode::<Claims>(token, key, validation)
            .map(|data| data.claims)
            .map_err(|error| {
                let rejection = rejection(error.kind());
                if matches!(
                    rejection,
                    TokenRejection::WrongIssuer | TokenRejection::WrongAudience
                ) {
                    // The signature verified (it is checked before the claims), so the
                    // token is the identity provider's and its iss and aud say how the
                    // deployment is misconfigured.
                    if let Some(hint) = super::entra::hint(token, &self.issuer, &self.audiences) {
                        tracing::warn!(reason = rejection.reason(), "{hint}");
                    }
                }
                rejection
            })
    }
}

fn rejection(kind: &ErrorKind) -> TokenRejection {
    match kind {
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => TokenRejection::Malformed,
        ErrorKind::ExpiredSignature => TokenRejection::Expired,
        ErrorKind::ImmatureSignature => TokenRejection::NotYetValid,
        ErrorKind::InvalidIssuer => TokenRejection::WrongIssuer,
        ErrorKind::InvalidAudience => TokenRejection::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => {
            TokenRejection::MissingClaim(match claim.as_str() {
                "exp" => "exp",
                "iss" => "iss",
                "aud" => "aud",
                _ => "other",
            })
        }
        ErrorKind::InvalidClaimFormat(_) => TokenRejection::BadClaims,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => TokenRejection::AlgorithmNotAccepted,
        // A signature that does not verify, or a key that cannot verify it.
        _ => TokenRejection::BadSignature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn header_is_read_without_trusting_it() {
        let token = format!(
            "{}.{}.sig",
            part(r#"{"alg":"RS256","kid":"k1"}"#),
            part("{}")
        );
        let header = peek_header(&token).unwrap();
        assert_eq!(header.alg, "RS256");
        assert_eq!(header.kid.as_deref(), Some("k1"));
        assert_eq!(peek_header("a.b"), Err(TokenRejection::Malformed));
        assert_eq!(peek_header("a.b.c.d"), Err(TokenRejection::Malformed));
        let crit = format!(
            "{}.{}.",
            part(r#"{"alg":"RS256","crit":["x"]}"#),
            part("{}")
        );
        assert_eq!(peek_header(&crit), Err(TokenRejection::CriticalHeader));
    }

    #[test]
    fn only_configured_algorithms_are_accepted() {
        let rules = Rules::new("iss", &["aud".to_owned()], &[Algorithm::RS256]);
        let header = |alg: &str| TokenHeader {
            alg: alg.to_owned(),
            kid: None,
        };
        assert_eq!(rules.algorithm(&header("RS256")), Ok(Algorithm::RS256));
        for alg in ["none", "None", "HS256", "ES256", ""] {
            assert_eq!(
                rules.algorithm(&header(alg)),
                Err(TokenRejection::AlgorithmNotAccepted)
            );
        }
    }

    #[test]
    fn owner_is_oid_else_sub_and_grants_merge_scopes_and_roles() {
        let claims: Claims = serde_json::from_str(
            r#"{"exp": 10, "sub": "s", "oid": "o", "scp": "Orders.Read  Orders.Write", "roles": ["Admin"]}"#,
        )
        .unwrap();
        let identity = claims.identity().unwrap();
        assert_eq!(identity.owner.as_ref(), "o");
        assert_eq!(identity.grants.len(), 3);
        let claims: Claims =
            serde_json::from_str(r#"{"exp": 10.5, "sub": "s", "oid": ""}"#).unwrap();
        assert_eq!(claims.identity().unwrap().owner.as_ref(), "s");
        let claims: Claims = serde_json::from_str(r#"{"exp": 10}"#).unwrap();
        assert_eq!(claims.identity(), Err(TokenRejection::NoSubject));
    }

    #[test]
    fn descriptions_are_safe_header_parameters() {
        let all = [
            TokenRejection::Empty,
            TokenRejection::Malformed,
            TokenRejection::TooLarge,
            TokenRejection::AlgorithmNotAccepted,
            TokenRejection::CriticalHeader,
            TokenRejection::MissingKeyId,
            TokenRejection::UnknownKey,
            TokenRejection::BadSignature,
            TokenRejection::Expired,
            TokenRejection::NotYetValid,
            TokenRejection::WrongIssuer,
            TokenRejection::WrongAudience,
            TokenRejection::MissingClaim("aud"),
            TokenRejection::BadClaims,
            TokenRejection::NoSubject,
        ];
        for rejection in all {
            let text = rejection.description();
            assert!(
                text.bytes()
                    .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\'),
                "{text}"
            );
        }
    }
}
