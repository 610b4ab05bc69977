//! Why a real Entra ID token was refused, when the cause is a known mismatch between the app
//! registration and the settings: the token version (v1 or v2 issuer) or the audience form
//! (client id or App ID URI). The hint goes to the logs, naming the fix.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

/// Entra ID's v1 access tokens are issued by `https://sts.windows.net/{tenant}/`, v2 tokens by
/// `https://login.microsoftonline.com/{tenant}/v2.0`; an app registration issues v1 unless its
/// manifest sets `requestedAccessTokenVersion: 2`. A v2 token's `aud` is the API's client id,
/// a v1 token's whatever the client asked for (client id or App ID URI). Sources: Microsoft
/// identity platform "Access tokens" and "Access token claims reference".
const ENTRA_V1_ISSUER: &str = "https://sts.windows.net/";

/// For a signed token refused for its issuer or audience, the fix when the cause is a known
/// Entra ID mismatch (token version, audience form); `None` otherwise. Names only the issuer
/// and audience values, never the token.
pub fn hint(token: &str, issuer: &str, audiences: &[String]) -> Option<String> {
    #[derive(Deserialize)]
    struct Seen {
        iss: Option<String>,
        aud: Option<serde_json::Value>,
    }
    let payload = token.split('.').nth(1)?;
    let seen: Seen = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let iss = seen.iss.unwrap_or_default();
    let expects_v2 = issuer.trim_end_matches('/').ends_with("/v2.0");
    if iss != issuer && iss.starts_with(ENTRA_V1_ISSUER) && expects_v2 {
        return Some(format!(
            "an Entra ID v1 access token (iss {iss}) was refused: ORDERS_AUTH_ISSUER ({issuer}) expects v2 tokens. Fix the API's app registration: set \"requestedAccessTokenVersion\": 2 in its manifest (api section; accessTokenAcceptedVersion in the older manifest), then request a new token"
        ));
    }
    if iss != issuer && iss.ends_with("/v2.0") && issuer.starts_with(ENTRA_V1_ISSUER) {
        return Some(format!(
            "an Entra ID v2 access token (iss {iss}) was refused: ORDERS_AUTH_ISSUER ({issuer}) expects v1 tokens. Set ORDERS_AUTH_ISSUER={iss}"
        ));
    }
    if iss != issuer {
        return None;
    }
    let token_audiences: Vec<String> = match seen.aud {
        Some(serde_json::Value::String(aud)) => vec![aud],
        Some(serde_json::Value::Array(list)) => list
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => return None,
    };
    // A client id is a GUID in its hyphenated form (36 characters); uuid also parses others.
    let is_client_id = |aud: &str| aud.len() == 36 && uuid::Uuid::try_parse(aud).is_ok();
    let aud = token_audiences.first()?;
    let form = if is_client_id(aud) {
        "client id (the aud of every v2 access token)"
    } else if aud.starts_with("api://") {
        "App ID URI (the aud of v1 tokens requested for it)"
    } else {
        return None;
    };
    Some(format!(
        "a token for audience {aud} was refused: if that is this API's {form}, add it to ORDERS_AUTH_AUDIENCE, which takes the client id and the App ID URI comma-separated (now {})",
        audiences.join(",")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn entra_token_version_and_audience_mismatches_name_the_fix() {
        let token =
            |claims: serde_json::Value| format!("{}.{}.sig", part("{}"), part(&claims.to_string()));
        let v2 = "https://login.microsoftonline.com/t1/v2.0";
        let v1 = "https://sts.windows.net/t1/";
        let client = "6e3a1c2b-8a5d-4f7e-9b0c-1d2e3f405162";
        let audiences = ["api://orders-api".to_owned()];

        let found = hint(
            &token(serde_json::json!({"iss": v1, "aud": client})),
            v2,
            &audiences,
        )
        .unwrap();
        assert!(
            found.contains("requestedAccessTokenVersion") && found.contains(v1),
            "{found}"
        );
        let found = hint(
            &token(serde_json::json!({"iss": v2, "aud": client})),
            v1,
            &audiences,
        )
        .unwrap();
        assert!(
            found.contains(&format!("ORDERS_AUTH_ISSUER={v2}")),
            "{found}"
        );
        let found = hint(
            &token(serde_json::json!({"iss": v2, "aud": client})),
            v2,
            &audiences,
        )
        .unwrap();
        assert!(
            found.contains(client) && found.contains("ORDERS_AUTH_AUDIENCE"),
            "{found}"
        );
        let found = hint(
            &token(serde_json::json!({"iss": v2, "aud": ["api://other-api"]})),
            v2,
            &[client.to_owned()],
        )
        .unwrap();
        assert!(found.contains("App ID URI"), "{found}");
        // Nothing to say about someone else's issuer or audience.
        assert_eq!(
            hint(
                &token(serde_json::json!({"iss": "https://other.example/", "aud": client})),
                v2,
                &audiences
            ),
            None
        );
        assert_eq!(
            hint(
                &token(serde_json::json!({"iss": v2, "aud": "https://graph.microsoft.com"})),
                v2,
                &audiences
            ),
            None
        );
        assert_eq!(hint("not-a-token", v2, &audiences), None);
    }
}
