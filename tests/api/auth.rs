//! Bearer-token authentication and scope authorisation, against a local identity provider: an
//! OpenID configuration and JWKS server on a loopback port, with RSA and EC keys generated when
//! the tests start (no key files anywhere).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use crate::helpers::idp::{AUDIENCE, Idp, KEYS, b64, now, sign};
use crate::helpers::{Handler, TestApp, assert_error, header, sample_order, spawn, spawn_with};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use orders_api::config::Config;
use serde_json::{Value, json};

const BARE_CHALLENGE: &str = "Bearer realm=\"orders-api\"";

/// Production-mode settings for `idp`, read the way the process reads them.
fn production_config(idp: &Idp, extra: &[(&str, String)]) -> Config {
    let mut settings: HashMap<String, String> = HashMap::from([
        ("ORDERS_AUTH_ISSUER".to_owned(), idp.issuer()),
        ("ORDERS_AUTH_AUDIENCE".to_owned(), AUDIENCE.to_owned()),
    ]);
    for (name, value) in extra {
        settings.insert((*name).to_owned(), value.clone());
    }
    let mut config = Config::from_lookup(|name| settings.get(name).cloned()).unwrap();
    config.port = 0;
    config
}

async fn spawn_production(idp: &Idp) -> TestApp {
    spawn_with(production_config(idp, &[])).await
}

fn get_orders(app: &TestApp, token: &str) -> reqwest::RequestBuilder {
    app.anonymous("GET", "/api/orders").bearer_auth(token)
}

/// Asserts a 401 with `error="invalid_token"`, the description in the challenge and in the
/// JSON body, and no trace of the token in either.
async fn assert_invalid_token(response: reqwest::Response, token: &str, description: &str) {
    let challenge = header(&response, "www-authenticate");
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"orders-api\", error=\"invalid_token\", error_description=\"{description}\""
        )
    );
    let body = assert_error(response, 401, "Unauthorized").await;
    assert_eq!(body["message"], description);
    let signature = token.rsplit('.').next().unwrap_or_default();
    // Everything but the trace id, random hex in which a short junk token could appear.
    let mut quoted = body.clone();
    quoted.as_object_mut().unwrap().remove("traceId");
    let text = quoted.to_string();
    assert!(!text.contains(token) && (signature.len() < 8 || !text.contains(signature)));
}

async fn assert_forbidden(response: reqwest::Response, scope: &str) {
    assert_eq!(
        header(&response, "www-authenticate"),
        format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"")
    );
    let body = assert_error(response, 403, "Forbidden").await;
    assert!(body["message"].as_str().unwrap().contains(scope));
}

// ---------------------------------------------------------------------------------------------
// Validation

#[tokio::test]
async fn a_valid_token_is_accepted_and_its_verification_is_cached() {
    let keys = &*KEYS;
    let idp = Idp::start(&[&keys.a]).await;
    let app = spawn_production(&idp).await;
    let token = idp.token(&keys.a, "alice", "Orders.Read Orders.Write");

    let response = get_orders(&app, &token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let created = app
        .anonymous("POST", "/api/orders")
        .bearer_auth(&token)
        .json(&sample_order())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(
        app.state.auth.verified_tokens(),
        1,
        "one token, verified once"
    );
    let list: Value = get_orders(&app, &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
    assert_eq!(idp.discovery_hits(), 1, "keys found by OpenID discovery");
    assert_eq!(idp.jwks_hits(), 1, "keys fetched once");
}

#[tokio::test]
async fn time_issuer_and_audience_are_checked() {
    let keys = &*KEYS;
    let idp = Idp::start(&[&keys.a]).await;
    let app = spawn_production(&idp).await;
    let base = idp.claims("alice", "Orders.Read");
    let with = |change: &dyn Fn(&mut Value)| {
        let mut claims = base.clone();
        change(&mut claims);
        sign(&keys.a, Some("key-a"), &claims)
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "The token has expired.",
            with(&|c| {
                c["exp"] = json!(now() - 3600);
                c["nbf"] = json!(now() - 7200);
            }),
        ),
        (
            "The token is not valid yet (nbf).",
            with(&|c| c["nbf"] = json!(now() + 600)),
        ),
        (
            "The token issuer is not accepted.",
            with(&|c| c["iss"] = json!("https://login.example/other/v2.0")),
        ),
        (
            "The token audience is not accepted.",
            with(&|c| c["aud"] = json!("api://someone-else")),
        ),
        (
            "The token has no audience (aud).",
            with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        (
            "The token has no issuer (iss).",
            with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
        ),
        (
            "The token has no expiry (exp).",
            with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "The token identifies no subject (oid or sub).",
            with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
    ];
    for (description, token) in cases {
        let response = get_orders(&app, &token).send().await.unwrap();
        assert_invalid_token(response, &token, description).await;
    }

    // Inside the 60 s leeway both ways: expired a second ago, valid in a second. (The check
    // reads the system clock; this holds unless the request takes most of a minute.)
    let token = with(&|c| {
        c["exp"] = json!(now() - 1);
        c["nbf"] = json!(now() + 1);
    });
    assert_eq!(get_orders(&app, &token).send().await.unwrap().status(), 200);
    // An audience array containing ours is accepted.
    let token = with(&|c| c["aud"] = json!(["api://other", AUDIENCE]));
    assert_eq!(get_orders(&app, &token).send().await.unwrap().status(), 200);
}

/// The API's client id: the `aud` of every Entra ID v2 access token for it.
const CLIENT_ID: &str = "6e3a1c2b-8a5d-4f7e-9b0c-1d2e3f405162";

/// Entra ID issues v2 tokens with the client id as `aud`, v1 tokens with whatever the client
/// asked for (often the App ID URI): one setting lists both, and either passes.
#[tokio::test]
async fn both_audience_forms_are_accepted() {
    let keys = &*KEYS;
    let idp = Idp::start(&[&keys.a]).await;
    let both = format!("{CLIENT_ID}, {AUDIENCE}");
    let app = spawn_with(production_config(&idp, &[("ORDERS_AUTH_AUDIENCE", both)])).await;
    for audience in [json!(CLIENT_ID), json!(AUDIENCE), json!([CLIENT_ID])] {
        let mut claims = idp.claims("alice", "Orders.Read");
        claims["aud"] = audience.clone();
        let token = sign(&keys.a, Some("key-a"), &claims);
        let response = get_orders(&app, &token).send().await.unwrap();
        assert_eq!(response.status(), 200, "aud {audience}");
    }
    let mut claims = idp.claims("alice", "Orders.Read");
    claims["aud"] = json!("00000000-0000-0000-0000-000000000000");
    let token = sign(&keys.a, Some("key-a"), &claims);
    let response = get_orders(&app, &token).send().await.unwrap();
    assert_invalid_token(response, &token, "The token audience is not accepted.").await;
}

/// An app registration without `requestedAccessTokenVersion: 2` issues v1 tokens (issuer
/// `https://sts.windows.net/{tenant}/`): they are refused with 401, and the log says what to
/// change. So does a v2 token whose audience form is missing from the settings.
#[tokio::test]
async fn entra_version_and_audience_mismatches_are_401_and_the_log_names_the_fix() {
    let keys = &*KEYS;
    let idp = Idp::start(&[&keys.a]).await;
    let handler = Handler::start(&[
        ("ORDERS_AUTH_ISSUER", idp.issuer().as_str()),
        ("ORDERS_AUTH_AUDIENCE", CLIENT_ID),
    ]);
    let client = reqwest::Client::new();
    let url = format!("{}/api/orders", handler.base());

    let v1_issuer = "https://sts.windows.net/tenant/";
    let mut claims = idp.claims("alice", "Orders.Read");
    claims["iss"] = json!(v1_issuer);
    claims["aud"] = json!(CLIENT_ID);
    claims["ver"] = json!("1.0");
    let v1 = sign(&keys.a, Some("key-a"), &claims);
    let response = client.get(&url).bearer_auth(&v1).send().await.unwrap();
    assert_invalid_token(response, &v1, "The token issuer is not accepted.").await;

    // A v2 token, but the settings list only the client id and the token names the App ID URI.
    let app_id_uri = idp.token(&keys.a, "alice", "Orders.Read");
    let response = client
        .get(&url)
        .bearer_auth(&app_id_uri)
        .send()
        .await
        .unwrap();
    assert_invalid_token(response, &app_id_uri, "The token audience is not accepted.").await;

    // Stop the process so every log line it wrote has come through the pipe.
    handler.terminate();
    let handler = tokio::task::spawn_blocking(move || {
        let mut handler = handler;
        handler.child.wait().unwrap();
        handler
    })
    .await
    .unwrap();
    // The process has exited; its last lines are on their way through the pipe.
    crate::helpers::eventually("the handler's last log line", || async {
        let stderr = handler.stderr();
        if stderr.contains("stopped") {
            Ok(())
        } else {
            Err(stderr)
        }
    })
    .await;
    let stderr = handler.stderr();
    let v1_line = stderr
        .lines()
        .find(|line| line.contains("v1 access token"))
        .unwrap_or_else(|| panic!("no v1 hint in the log: {stderr}"));
    assert!(v1_line.contains("WARN"), "{v1_line}");
    assert!(
        v1_line.contains("requestedAccessTokenVersion") && v1_line.contains(v1_issuer),
        "{v1_line}"
    );
    let audience_line = stderr
        .lines()
        .find(|line| line.contains("for audience"))
        .unwrap_or_else(|| panic!("no audience hint in the log: {stderr}"));
    assert!(
        audience_line.contains(AUDIENCE) && audience_line.contains("ORDERS_AUTH_AUDIENCE"),
        "{audience_line}"
    );
    for token in [&v1, &app_id_uri] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!stderr.contains(signature), "a token reached the logs");
    }
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let keys = &*KEYS;
    let idp = Idp::start(&[&keys.a]).await;
    let app = spawn_production(&idp).await;
    let valid = idp.token(&keys.a, "alice", "Orders.Read");
    let parts: Vec<&str> = valid.split('.').collect();

    // Payload changed after signing.
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(&idp.claims("bob", "Orders.Read Orders.Write")),
        parts[2]
    );
    let response = get_orders(&app, &tampered).send().await.unwrap();
    assert_invalid_token(response, &tampered, "The token signature is invalid.").await;

    // Signed by a key the provider never published, under a published kid.
    let stranger = sign(
        &keys.stranger,
        Some("key-a"),
        &idp.claims("alice", "Orders.Read"),
    );
    let response = get_orders(&app, &stranger).send().await.unwrap();
    assert_invalid_token(response, &stranger, "The token signature is invalid.").await;

    // Signed by a key the provider never published, under its own kid.
    let unknown = idp.token(&keys.stranger, "alice", "Orders.Read");
    let response = get_orders(&app, &unknown).send().await.unwrap();
    assert_invalid_token(
        response,
        &unknown,
        "The token was signed with an unknown key.",
    )
    .await;

    // alg: none, with and without a signature part.
    let header = json!({"alg": "none", "typ": "JWT", "kid": "key-a"});
    let payload = idp.claims("alice", "Orders.Read Orders.Write");
    for none in [
        format!("{}.{}.", b64(&header), b64(&payload)),
        format!("{}.{}.{}", b64(&header), b64(&payload), parts[2]),
    ] {
        let response = get_orders(&app, &none).send().await.unwrap();
        assert_invalid_token(
            response,
            &none,
            "The token signing algorithm is not accepted.",
        )
        .await;
    }
    let response = get_orders(&app, &format!("{}.{}", b64(&header), b64(&payload)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Algorithm confusion: HS256 with the RSA public key as the HMAC secret.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("key-a".to_owned());
    for secret in [
        keys.a.public_pem.as_bytes().to_vec(),
        keys.a.jwk["n"].to_string().into_bytes(),
    ] {
        let confused =
            jsonwebtoken::encode(&hs, &payload, &EncodingKey::from_secret(&secret)).unwrap();
        let response = get_orders(&app, &confused).send().await.unwrap();
        assert_invalid_token(
            response,
            &confused,
            "The token signing algorithm is not accepted.",
        )
        .await;
    }

    // Not a JWT at all.
    for junk in ["abc", "a.b.c", "a.b.c.d.e"] {
        let response = get_orders(&app, junk).send().await.unwrap();
        assert_invalid_token(response, junk, "The token is malformed.").await;
    }
    // No kid: the only published key is tried, and the signature does not match it.
    let no_kid = "eyJhbGciOiJSUzI1NiJ9.e30.c2ln";
    let response = get_orders(&app, no_kid).send().await.unwrap();
    assert_invalid_token(response, no_kid, "The token signature is invalid.").await;
    assert_eq!(
        app.state.auth.verified_tokens(),
        0,
        "nothing forged was cached"
    );
}

#[tokio::test]
async fn allowed_algorithms_come_from_configuration() {
    let keys = &*KEYS;
    let idp = Idp::start(&[&keys.a, &keys.ec]).await;
    let es256 = idp.token(&keys.ec, "alice", "Orders.Read");

    // Default: RS256 only, whatever the key set offers.
    let app = spawn_production(&idp).await;
    let response = get_orders(&app, &es256).send().await.unwrap();
    assert_invalid_token(
        response,
        &es256,
        "The token signing algorithm is not accepted.",
    )
    .await;

    // RS256 and ES256, keys from an explicit JWKS URI (no discovery).
    let config = production_config(
        &idp,
        &[
            ("ORDERS_AUTH_ALGORITHMS", "RS256,ES256".to_owned()),
            ("ORDERS_AUTH_JWKS_URI", idp.jwks_uri()),
        ],
    );
    let discovery_before = idp.discovery_hits();
    let app = spawn_with(config).await;
    assert_eq!(get_orders(&app, &es256).send().await.unwrap().status(), 200);
    let rs256 = idp.token(&keys.a, "alice", "Orders.Read");
    assert_eq!(get_orders(&app, &rs256).send().await.unwrap().status(), 200);
    assert_eq!(idp.discovery_hits(), discovery_before);

    // An ES256 token naming the RSA key.
    let mut wrong = Header::new(Algorithm::ES256);
    wrong.kid = Some("key-a".to_owned());
    let token = jsonwebtoken::encode(
        &wrong,
        &idp.claims("alice", "Orders.Read"),
        &keys.ec.encoding,
    )
    .unwrap();
    let response = get_orders(&app, &token).send().await.unwrap();
    assert_invalid_token(
        response,
        &token,
        "The token signing algorithm is not accepted.",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Keys: rotation, floods, outages

#[tokio::test]
async fn an_unknown_kid_picks_up_rotated_keys_and_drops_the_old_ones() {
    let keys = &*KEYS;
    let idp = Idp::start(&[&keys.a]).await;
    let mut config = production_config(&idp, &[]);
    // Rotation right after start-up: no minimum wait between refreshes here.
    config.auth.key_refresh.min_interval = Duration::ZERO;
    let app = spawn_with(config).await;

    let old = idp.token(&keys.a, "alice", "Orders.Read");
    assert_eq!(get_orders(&app, &old).send().await.unwrap().status(), 200);
    assert_eq!(app.state.auth.verified_tokens(), 1);

    idp.publish(&[&keys.b]);
    let new = idp.token(&keys.b, "alice", "Orders.Read");
    assert_eq!(
        get_orders(&app, &new).send().await.unwrap().status(),
        200,
        "the new key was fetched when a token named it"
    );

    // The old token was cached as verified, but its key is gone: it is refused.
    let response = get_orders(&app, &old).send().await.unwrap();
    assert_invalid_token(response, &old, "The token was signed with an unknown key.").await;
    assert_eq!(get_orders(&app, &new).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_thousand_random_kids_cause_at_most_one_key_fetch_per_window() {
    let keys = &*KEYS;
    let idp = Idp::start(&[&keys.a]).await;
    // The flood is about key fetches, not the per-caller rate limit.
    let mut config = production_config(
        &idp,
        &[("ORDERS_RATE_LIMIT_PER_MINUTE", "1000000".to_owned())],
    );
    // A window longer than any test run, so the bound below does not depend on timing.
    config.auth.key_refresh.min_interval = Duration::from_secs(3600);
    let app = spawn_with(config).await;
    let valid = idp.token(&keys.a, "alice", "Orders.Read");
    assert_eq!(get_orders(&app, &valid).send().await.unwrap().status(), 200);
    let jwks_before = idp.jwks_hits();
    let discovery_before = idp.discovery_hits();

    // The kid is looked up before the signature is checked, so any signature will do.
    let payload = b64(&idp.claims("mallory", "Orders.Read"));
    let signature = valid.rsplit('.').next().unwrap().to_owned();
    let statuses: Vec<u16> = futures_util::stream::iter(0..1000)
        .map(|_| {
            let kid = format!("kid-{:016x}", rand::random::<u64>());
            let header = b64(&json!({"alg": "RS256", "typ": "JWT", "kid": kid}));
            let token = format!("{header}.{payload}.{signature}");
            let request = get_orders(&app, &token);
            async move { request.send().await.unwrap().status().as_u16() }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert!(
        idp.jwks_hits() - jwks_before <= 1,
        "{} key set fetches",
        idp.jwks_hits() - jwks_before
    );
    assert!(idp.discovery_hits() - discovery_before <= 1);
    // Known keys keep working throughout.
    assert_eq!(get_orders(&app, &valid).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn identity_provider_down_at_start_is_503_with_retry_after_then_recovers() {
    let keys = &*KEYS;
    let idp = Idp::start(&[&keys.a]).await;
    idp.set_down(true);
    let mut config = production_config(&idp, &[]);
    // Retry on the next request rather than after a pause.
    config.auth.key_refresh.retry_interval = Duration::ZERO;
    let app = spawn_with(config).await;
    // Start-up did not wait for the identity provider.
    assert_eq!(
        app.anonymous("GET", "/").send().await.unwrap().status(),
        200
    );

    let token = idp.token(&keys.a, "alice", "Orders.Read");
    let response = get_orders(&app, &token).send().await.unwrap();
    let retry_after: u64 = header(&response, "retry-after").parse().unwrap();
    assert!(retry_after >= 1);
    assert!(!response.headers().contains_key("www-authenticate"));
    let body = assert_error(response, 503, "ServiceUnavailable").await;
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "no detail leaks: {body}"
    );

    idp.set_down(false);
    assert_eq!(get_orders(&app, &token).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn identity_provider_answering_garbage_is_502() {
    let keys = &*KEYS;
    let idp = Idp::start(&[&keys.a]).await;
    idp.set_garbage(true);
    let mut config = production_config(&idp, &[]);
    config.auth.key_refresh.retry_interval = Duration::ZERO;
    let app = spawn_with(config).await;

    let token = idp.token(&keys.a, "alice", "Orders.Read");
    let response = get_orders(&app, &token).send().await.unwrap();
    let body = assert_error(response, 502, "BadGateway").await;
    assert!(!body.to_string().contains("maintenance"));

    idp.set_garbage(false);
    assert_eq!(get_orders(&app, &token).send().await.unwrap().status(), 200);
}

// ---------------------------------------------------------------------------------------------
// The Authorization header

#[tokio::test]
async fn malformed_authorization_headers_are_401() {
    let app = spawn().await;

    // No token, or another scheme: the bare challenge.
    let response = app.anonymous("GET", "/api/orders").send().await.unwrap();
    assert_eq!(header(&response, "www-authenticate"), BARE_CHALLENGE);
    assert_error(response, 401, "Unauthorized").await;
    let response = app
        .anonymous("GET", "/api/orders")
        .header("Authorization", "Basic YWxpY2U6c2VjcmV0")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&response, "www-authenticate"), BARE_CHALLENGE);
    assert_error(response, 401, "Unauthorized").await;

    let token = app.token("alice");
    let cases = [
        (
            "Bearer".to_owned(),
            "The Authorization header has no token after Bearer.",
        ),
        (
            "Bearer ".to_owned(),
            "The Authorization header has no token after Bearer.",
        ),
        (format!("Bearer {token} {token}"), "The token is malformed."),
        (
            format!("Bearer {token}, Bearer {token}"),
            "The token is malformed.",
        ),
        (
            format!("Bearer {}", "a".repeat(9 * 1024)),
            "The token is larger than 8192 bytes.",
        ),
    ];
    for (value, description) in cases {
        let response = app
            .anonymous("GET", "/api/orders")
            .header("Authorization", &value)
            .send()
            .await
            .unwrap();
        assert_invalid_token(response, &token, description).await;
    }

    // Two Authorization headers.
    let response = app
        .anonymous("GET", "/api/orders")
        .header("Authorization", format!("Bearer {token}"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_invalid_token(response, &token, "The token is malformed.").await;

    // The scheme is case-insensitive.
    let response = app
        .anonymous("GET", "/api/orders")
        .header("Authorization", format!("bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn anonymous_routes_need_no_token() {
    let app = spawn().await;
    for path in ["/", "/api/health", "/api/openapi.json"] {
        let response = app.anonymous("GET", path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

/// Sends `head` (no body bytes) on a raw connection and returns the first response line.
async fn first_response_line(addr: SocketAddr, head: String) -> String {
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        let mut buffer = [0u8; 4096];
        let mut text = String::new();
        while !text.contains("\r\n") {
            let n = stream.read(&mut buffer).unwrap();
            assert!(n > 0, "connection closed without a response");
            text.push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
        text.lines().next().unwrap().to_owned()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn authentication_comes_before_the_body() {
    let app = spawn().await;

    // Expect: 100-continue without a token: 401 straight away, no 100.
    let head = "POST /api/orders HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n".to_owned();
    assert_eq!(
        first_response_line(app.addr, head).await,
        "HTTP/1.1 401 Unauthorized"
    );

    // With a token the body is wanted.
    let head = format!(
        "POST /api/orders HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
        app.token("alice")
    );
    assert_eq!(
        first_response_line(app.addr, head).await,
        "HTTP/1.1 100 Continue"
    );

    // An anonymous body over the limit: 401, not 413.
    let head = "POST /api/orders HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n".to_owned();
    assert_eq!(
        first_response_line(app.addr, head).await,
        "HTTP/1.1 401 Unauthorized"
    );
}

// ---------------------------------------------------------------------------------------------
// Authorisation

#[tokio::test]
async fn reads_need_orders_read_and_writes_orders_write() {
    let app = spawn().await;
    let read_only = app.token_with("alice", &["Orders.Read"]);
    let write_only = app.token_with("alice", &["Orders.Write"]);
    let nothing = app.token_with("alice", &[]);

    assert_eq!(
        get_orders(&app, &read_only).send().await.unwrap().status(),
        200
    );
    let response = app
        .anonymous("POST", "/api/orders")
        .bearer_auth(&read_only)
        .json(&sample_order())
        .send()
        .await
        .unwrap();
    assert_forbidden(response, "Orders.Write").await;

    // Write does not imply read.
    let response = get_orders(&app, &write_only).send().await.unwrap();
    assert_forbidden(response, "Orders.Read").await;
    let response = app
        .anonymous("POST", "/api/orders")
        .bearer_auth(&write_only)
        .json(&sample_order())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = app
        .anonymous("GET", &format!("/api/orders/{id}"))
        .bearer_auth(&write_only)
        .send()
        .await
        .unwrap();
    assert_forbidden(response, "Orders.Read").await;
    let response = app
        .anonymous("DELETE", &format!("/api/orders/{id}"))
        .bearer_auth(&read_only)
        .send()
        .await
        .unwrap();
    assert_forbidden(response, "Orders.Write").await;

    let response = get_orders(&app, &nothing).send().await.unwrap();
    assert_forbidden(response, "Orders.Read").await;
}

#[tokio::test]
async fn app_roles_grant_like_scopes_and_oid_is_the_owner() {
    let keys = &*KEYS;
    let idp = Idp::start(&[&keys.a]).await;
    let app = spawn_production(&idp).await;

    // An application token: roles, no scp.
    let mut claims = idp.claims("daemon-app", "");
    claims.as_object_mut().unwrap().remove("scp");
    claims["roles"] = json!(["Orders.Read"]);
    let reader = sign(&keys.a, Some("key-a"), &claims);
    assert_eq!(
        get_orders(&app, &reader).send().await.unwrap().status(),
        200
    );
    let response = app
        .anonymous("POST", "/api/orders")
        .bearer_auth(&reader)
        .json(&sample_order())
        .send()
        .await
        .unwrap();
    assert_forbidden(response, "Orders.Write").await;

    // The owner is `oid` when present: two tokens with different `sub` but the same `oid`
    // see the same orders.
    let mut first = idp.claims("pairwise-sub-1", "Orders.Read Orders.Write");
    first["oid"] = json!("00000000-0000-0000-0000-0000000000b0");
    let mut second = idp.claims("pairwise-sub-2", "Orders.Read");
    second["oid"] = first["oid"].clone();
    let first = sign(&keys.a, Some("key-a"), &first);
    let second = sign(&keys.a, Some("key-a"), &second);
    let created = app
        .anonymous("POST", "/api/orders")
        .bearer_auth(&first)
        .json(&sample_order())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let list: Value = get_orders(&app, &second)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
    let list: Value = get_orders(&app, &reader)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["value"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn alice_cannot_reach_bobs_orders() {
    let app = spawn().await;
    let created = app
        .as_user("bob", "POST", "/api/orders")
        .json(&sample_order())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let etag = header(&created, "etag");
    let original: Value = created.json().await.unwrap();
    let path = format!("/api/orders/{}", original["id"].as_str().unwrap());

    let response = app.as_user("alice", "GET", &path).send().await.unwrap();
    assert_error(response, 404, "NotFound").await;
    let response = app
        .as_user("alice", "PATCH", &path)
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"status":"cancelled"}"#)
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "NotFound").await;
    let response = app
        .as_user("alice", "PATCH", &path)
        .header("Content-Type", "application/merge-patch+json")
        .header("If-Match", &etag)
        .body(r#"{"status":"paid"}"#)
        .send()
        .await
        .unwrap();
    assert_error(response, 404, "NotFound").await;
    let response = app.as_user("alice", "DELETE", &path).send().await.unwrap();
    assert_error(response, 404, "NotFound").await;
    let list: Value = app
        .as_user("alice", "GET", "/api/orders")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["value"], json!([]));

    let response = app.as_user("bob", "GET", &path).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "etag"), etag, "Bob's order is unchanged");
    assert_eq!(response.json::<Value>().await.unwrap(), original);
}

// ---------------------------------------------------------------------------------------------
// Development mode and the binary

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[test]
fn handler_token_prints_a_development_token() {
    let output = crate::helpers::handler_command()
        .args([
            "token",
            "--sub",
            "alice",
            "--scope",
            "Orders.Read",
            "--scope",
            "Orders.Write",
            "--roles",
            "Auditor",
            "Support",
            "--expires-in",
            "120",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let claims = claims_of(&token);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["scp"], "Orders.Read Orders.Write");
    assert_eq!(claims["roles"], json!(["Auditor", "Support"]));
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 120);
}

#[test]
fn handler_token_refuses_production_mode_and_azure() {
    let output = crate::helpers::handler_command()
        .args(["token", "--sub", "alice"])
        .env("ORDERS_AUTH_ISSUER", "https://login.example/t/v2.0")
        .env("ORDERS_AUTH_AUDIENCE", AUDIENCE)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("development mode"));

    let output = crate::helpers::handler_command()
        .args(["token", "--sub", "alice"])
        .env("WEBSITE_INSTANCE_ID", "0123456789abcdef")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
}

#[test]
fn development_mode_is_refused_in_azure_with_one_line() {
    let output = crate::helpers::handler_command()
        .env("WEBSITE_INSTANCE_ID", "0123456789abcdef")
        .env("PORT", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("ORDERS_AUTH_ISSUER"), "{stderr}");
}

#[tokio::test]
async fn development_mode_warns_and_keeps_tokens_and_secrets_out_of_logs() {
    let secret = "a-development-secret-only-this-test-knows-0123456789";
    let handler_process =
        Handler::start(&[("ORDERS_AUTH_DEV_SECRET", secret), ("RUST_LOG", "debug")]);
    let token_output = crate::helpers::handler_command()
        .args(["token", "--sub", "alice", "--scope", "Orders.Read"])
        .env("ORDERS_AUTH_DEV_SECRET", secret)
        .output()
        .unwrap();
    let token = String::from_utf8(token_output.stdout)
        .unwrap()
        .trim()
        .to_owned();
    let foreign = crate::helpers::handler_command()
        .args(["token", "--sub", "alice", "--scope", "Orders.Read"])
        .output()
        .unwrap();
    let foreign = String::from_utf8(foreign.stdout).unwrap().trim().to_owned();

    let client = reqwest::Client::new();
    let url = format!("{}/api/orders", handler_process.base());
    let ok = client.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    // Signed with the built-in key, not this instance's secret.
    let refused = client.get(&url).bearer_auth(&foreign).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let body = refused.text().await.unwrap();
    assert!(!body.contains(&foreign));

    // The log lines arrive through a pipe; wait for the rejection's.
    crate::helpers::eventually("the rejection in the log", || async {
        let stderr = handler_process.stderr();
        if stderr.contains("bearer token rejected") {
            Ok(())
        } else {
            Err(stderr)
        }
    })
    .await;
    let stderr = handler_process.stderr();
    assert!(stderr.contains("DEVELOPMENT AUTHENTICATION"), "{stderr}");
    for secret_text in [secret, token.as_str(), foreign.as_str()] {
        assert!(!stderr.contains(secret_text), "a secret reached the logs");
    }
    let signature = token.rsplit('.').next().unwrap();
    assert!(!stderr.contains(signature));
}
