//! A stand-in identity provider on a loopback port: an OpenID configuration and a JWKS, with RSA
//! and EC keys generated when the tests start (no key files anywhere). It can publish other keys,
//! answer garbage, or refuse connections, and counts what it was asked.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

/// The audience the tests' production-mode service is configured with.
pub const AUDIENCE: &str = "api://orders-test";

// ---------------------------------------------------------------------------------------------
// Keys

pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub encoding: EncodingKey,
    /// The public half as published in the JWKS.
    pub jwk: Value,
    /// The public key as PEM, for the algorithm-confusion attack.
    pub public_pem: String,
}

pub fn pem(label: &str, der: &[u8]) -> String {
    let text = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub fn rsa_key(kid: &str) -> SigningKey {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let private = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
    let encoding =
        EncodingKey::from_rsa_pem(pem("PRIVATE KEY", private.as_ref()).as_bytes()).unwrap();
    let public = pair.public_key();
    let components = PublicKeyComponents::<Vec<u8>>::from(public);
    let spki = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(public).unwrap();
    SigningKey {
        kid: kid.to_owned(),
        algorithm: Algorithm::RS256,
        encoding,
        jwk: json!({
            "kty": "RSA",
            "use": "sig",
            "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(&components.n),
            "e": URL_SAFE_NO_PAD.encode(&components.e),
        }),
        public_pem: pem("PUBLIC KEY", spki.as_ref()),
    }
}

pub fn ec_key(kid: &str) -> SigningKey {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let pkcs8 = pair.to_pkcs8v1().unwrap();
    let point = pair.public_key().as_ref().to_vec();
    assert_eq!(point.len(), 65, "uncompressed P-256 point");
    SigningKey {
        kid: kid.to_owned(),
        algorithm: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({
            "kty": "EC",
            "use": "sig",
            "crv": "P-256",
            "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        }),
        public_pem: String::new(),
    }
}

/// Generated once per test run: RSA key generation is the slow part.
pub struct Keys {
    pub a: SigningKey,
    pub b: SigningKey,
    pub stranger: SigningKey,
    pub ec: SigningKey,
}

pub static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    a: rsa_key("key-a"),
    b: rsa_key("key-b"),
    stranger: rsa_key("key-stranger"),
    ec: ec_key("key-ec"),
});

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn sign(key: &SigningKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(key.algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

pub fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

// ---------------------------------------------------------------------------------------------
// The identity provider

pub struct IdpShared {
    base: String,
    keys: Mutex<Vec<Value>>,
    garbage: AtomicBool,
    down: Arc<AtomicBool>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
}

pub struct Idp {
    shared: Arc<IdpShared>,
}

/// Accepts connections and, while `down` is set, closes them at once: the client sees the
/// identity provider as unreachable.
pub struct FlakyListener {
    inner: TcpListener,
    down: Arc<AtomicBool>,
}

impl axum::serve::Listener for FlakyListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            if let Ok((stream, addr)) = self.inner.accept().await {
                if self.down.load(Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                return (stream, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

async fn discovery(State(shared): State<Arc<IdpShared>>) -> Json<Value> {
    shared.discovery_hits.fetch_add(1, Ordering::SeqCst);
    Json(json!({
        "issuer": format!("{}/tenant/v2.0", shared.base),
        "jwks_uri": format!("{}/tenant/discovery/v2.0/keys", shared.base),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn jwks(State(shared): State<Arc<IdpShared>>) -> Response {
    shared.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if shared.garbage.load(Ordering::SeqCst) {
        return "<html>maintenance</html>".into_response();
    }
    let keys = shared.keys.lock().unwrap().clone();
    Json(json!({ "keys": keys })).into_response()
}

impl Idp {
    pub async fn start(keys: &[&SigningKey]) -> Idp {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", inner.local_addr().unwrap());
        let down = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(IdpShared {
            base,
            keys: Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect()),
            garbage: AtomicBool::new(false),
            down: down.clone(),
            discovery_hits: AtomicUsize::new(0),
            jwks_hits: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route(
                "/tenant/v2.0/.well-known/openid-configuration",
                get(discovery),
            )
            .route("/tenant/discovery/v2.0/keys", get(jwks))
            .with_state(shared.clone());
        tokio::spawn(async move {
            axum::serve(FlakyListener { inner, down }, router)
                .await
                .unwrap();
        });
        Idp { shared }
    }

    pub fn issuer(&self) -> String {
        format!("{}/tenant/v2.0", self.shared.base)
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/tenant/discovery/v2.0/keys", self.shared.base)
    }

    pub fn publish(&self, keys: &[&SigningKey]) {
        *self.shared.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// Whether the key set answers garbage instead of keys.
    pub fn set_garbage(&self, garbage: bool) {
        self.shared.garbage.store(garbage, Ordering::SeqCst);
    }

    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    pub fn jwks_hits(&self) -> usize {
        self.shared.jwks_hits.load(Ordering::SeqCst)
    }

    pub fn discovery_hits(&self) -> usize {
        self.shared.discovery_hits.load(Ordering::SeqCst)
    }

    /// Claims of a valid token for `sub` with `scp`.
    pub fn claims(&self, sub: &str, scp: &str) -> Value {
        let now = now();
        json!({
            "iss": self.issuer(),
            "aud": AUDIENCE,
            "sub": sub,
            "scp": scp,
            "iat": now,
            "nbf": now - 10,
            "exp": now + 3600,
        })
    }

    pub fn token(&self, key: &SigningKey, sub: &str, scp: &str) -> String {
        sign(key, Some(&key.kid), &self.claims(sub, scp))
    }
}
