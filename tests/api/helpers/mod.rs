//! Shared test harness: the real service on a loopback port, or the real binary as a child
//! process. Every test gets its own instance, port and data, so tests run in parallel.

pub mod azure;
pub mod ingestion;

pub mod host;
pub mod idp;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use orders_api::app;
use orders_api::config::Config;
use orders_api::http::rate_limit::RateClock;
use orders_api::state::AppState;
use orders_api::store::memory::MemoryOrderStore;
use serde_json::Value;
use tokio::sync::oneshot;

/// Serves `app` on a free loopback port from a thread and runtime of its own, so that it answers
/// whatever the test's runtime is doing (a stand-in for a server outside the service: an
/// ingestion endpoint, a storage account). Runs until the test process ends.
pub fn serve_on_own_thread(app: axum::Router) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr
}

/// A running service on 127.0.0.1 with an in-memory store the test can inspect.
pub struct TestApp {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub client: reqwest::Client,
    pub store: Arc<MemoryOrderStore>,
    pub state: AppState,
    /// The rate limiter's clock: it stands still until a test advances it, so bucket contents
    /// never depend on how fast the test runs.
    pub clock: RateClock,
    /// Dropped with the app: the server then stops.
    _shutdown: oneshot::Sender<()>,
}

/// Defaults, with fault injection on so every failure path can be taken, and the Functions
/// host's invocation routes mounted.
pub fn test_config() -> Config {
    let mut config = Config::defaults();
    config.fault_injection = true;
    // As under the Functions host: the queue functions' invocation routes are mounted.
    config.under_functions_host = true;
    config.port = 0;
    config
}

pub async fn spawn() -> TestApp {
    spawn_with(test_config()).await
}

pub async fn spawn_with(config: Config) -> TestApp {
    let store = Arc::new(MemoryOrderStore::new());
    let state = AppState::new(config, store.clone());
    spawn_state(state, store).await
}

pub async fn spawn_state(state: AppState, store: Arc<MemoryOrderStore>) -> TestApp {
    let clock = RateClock::manual();
    let state = state.with_rate_clock(clock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let router = app::router(state.clone());
    let options = app::ServeOptions::from(&*state.config);
    tokio::spawn(app::serve(
        listener,
        router,
        async move {
            let _ = rx.await;
        },
        options,
    ));
    TestApp {
        base: format!("http://{addr}"),
        addr,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        store,
        state,
        clock,
        _shutdown: tx,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Requests as the default caller, `alice`, with both scopes.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.request("GET", path)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.request("POST", path)
    }

    pub fn patch(&self, path: &str) -> reqwest::RequestBuilder {
        self.request("PATCH", path)
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.request("DELETE", path)
    }

    pub fn request(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        self.as_user("alice", method, path)
    }

    /// A request as `subject` (both scopes).
    pub fn as_user(&self, subject: &str, method: &str, path: &str) -> reqwest::RequestBuilder {
        self.anonymous(method, path)
            .bearer_auth(self.token(subject))
    }

    /// A request without any Authorization header.
    pub fn anonymous(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        self.client.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            self.url(path),
        )
    }

    /// A development-mode bearer token for `subject` with both scopes.
    pub fn token(&self, subject: &str) -> String {
        self.token_with(subject, &["Orders.Read", "Orders.Write"])
    }

    /// A development-mode bearer token for `subject` with exactly `scopes`.
    pub fn token_with(&self, subject: &str, scopes: &[&str]) -> String {
        let request = orders_api::auth::dev::TokenRequest::new(subject, scopes);
        orders_api::auth::dev::issue_token(&self.state.config.auth, &request)
            .expect("a development-mode app (production-mode tests sign their own tokens)")
    }

    /// Creates an order and returns (id, etag, body).
    pub async fn create_order(&self, body: &Value) -> (String, String, Value) {
        let response = self.post("/api/orders").json(body).send().await.unwrap();
        assert_eq!(response.status(), 201, "creating an order");
        let etag = header(&response, "etag");
        let json: Value = response.json().await.unwrap();
        (json["id"].as_str().unwrap().to_owned(), etag, json)
    }
}

/// Longest wait for something that happens in the background (a worker, an exporter, a process
/// starting); reaching it fails the test. It bounds a wait and decides no order.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `probe` until it returns `Ok`; fails the test after [`PATIENCE`], naming `what` and the
/// last state the probe saw (its `Err`).
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {PATIENCE:?}; last seen: {last}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn sample_order() -> Value {
    serde_json::json!({
        "items": [{"sku": "A-1", "quantity": 2, "unitPrice": "9.99"}],
        "currency": "EUR"
    })
}

pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
        .to_owned()
}

/// Asserts the exact error shape: status, error name, a non-empty message, a 32-hex traceId and
/// no members beyond `details`. Returns the body.
pub async fn assert_error(response: reqwest::Response, status: u16, error: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    assert_eq!(
        header(&response, "content-type"),
        "application/json",
        "error content type"
    );
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_error_body(&body, status, error);
    assert_error_snapshot(&body);
    body
}

/// Compares an error body with its snapshot in `tests/api/snapshots`, exactly, with what differs
/// between runs masked: trace ids, order and export ids, seconds to wait. Snapshots are named
/// after the test and the call's place in it (`errors__unknown_route_is_404-1`).
pub fn assert_error_snapshot(body: &Value) {
    thread_local! {
        static CALLS: std::cell::RefCell<(String, usize)> = const { std::cell::RefCell::new((String::new(), 0)) };
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .replace("::", "__");
    let name = CALLS.with(|calls| {
        let mut calls = calls.borrow_mut();
        if calls.0 != test {
            *calls = (test.clone(), 0);
        }
        calls.1 += 1;
        format!("{test}-{}", calls.1)
    });
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("../snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.add_filter(r#""traceId": "[0-9a-f]{32}""#, r#""traceId": "[trace id]""#);
    settings.add_filter(r"\bo_[0-9a-f]{32}\b", "o_[id]");
    settings.add_filter(r"\bx_[0-9a-f]{32}\b", "x_[id]");
    settings.add_filter(r"retry in \d+ s", "retry in [n] s");
    settings.bind(|| insta::assert_json_snapshot!(name, body));
}

pub fn assert_error_body(body: &Value, status: u16, error: &str) {
    let object = body.as_object().expect("error body is an object");
    assert_eq!(body["status"], status, "body status in {body}");
    assert_eq!(body["error"], error, "error name in {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message in {body}"
    );
    let trace = body["traceId"].as_str().expect("traceId");
    assert_eq!(trace.len(), 32);
    assert!(trace.bytes().all(|b| b.is_ascii_hexdigit()));
    for key in object.keys() {
        assert!(
            ["status", "error", "message", "traceId", "details"].contains(&key.as_str()),
            "unexpected member {key} in {body}"
        );
    }
}

/// The port in the handler's "listening" log line: `address=127.0.0.1:port` in text logs,
/// `"address":"127.0.0.1:port"` in JSON.
pub fn listening_port(line: &str) -> Option<u16> {
    if !line.contains("listening") {
        return None;
    }
    let address = line
        .split("address=")
        .nth(1)
        .map(|rest| rest.split_whitespace().next().unwrap_or_default())
        .or_else(|| line.split("\"address\":\"").nth(1)?.split('"').next())?;
    address
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_matches('"').parse::<u16>().ok())
}

/// The real `handler` binary as a command, with an empty environment but `PATH`: each test
/// says exactly which settings it runs with.
pub fn handler_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_handler"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

/// A development token for `subject` with both scopes, from `handler token` as a user gets one;
/// signed with `secret` (`ORDERS_AUTH_DEV_SECRET`), or the built-in key with `None`.
pub fn dev_token(subject: &str, secret: Option<&str>) -> String {
    let mut command = handler_command();
    if let Some(secret) = secret {
        command.env("ORDERS_AUTH_DEV_SECRET", secret);
    }
    let output = command
        .args([
            "token",
            "--sub",
            subject,
            "--scope",
            "Orders.Read",
            "--scope",
            "Orders.Write",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "handler token: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The real `handler` binary, started with `env` on an ephemeral port (PORT=0); the port is read
/// from its "listening" log line.
pub struct Handler {
    pub child: Child,
    pub port: u16,
    pub stderr_lines: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Handler {
    pub fn start(env: &[(&str, &str)]) -> Handler {
        let mut command = handler_command();
        command
            .env("PORT", "0")
            .env("ORDERS_LOG_FORMAT", "text")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start handler");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = listening_port(&line)
                    && let Some(tx) = port_tx.take()
                {
                    let _ = tx.send(port);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let port = port_rx.recv_timeout(PATIENCE).unwrap_or_else(|_| {
            panic!(
                "handler did not report its port; stderr: {:?}",
                lines.lock().unwrap()
            )
        });
        Handler {
            child,
            port,
            stderr_lines: lines,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
    }

    pub fn stderr(&self) -> String {
        self.stderr_lines.lock().unwrap().join("\n")
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
