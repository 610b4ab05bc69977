//! An emulated Azure Functions host in front of the real `handler` binary, as strict as the
//! real one where this service depends on it (see the platform notes in the README):
//!
//! - It starts the binary with `FUNCTIONS_CUSTOMHANDLER_PORT` (0 here: the kernel picks the port,
//!   and the handler's log says which; the real host picks a free one itself) and polls
//!   `GET /` until any response arrives (the process exiting first fails the test).
//! - It reads the function folders of an app root, sorts them by function name (ordinal,
//!   ignoring case) and gives each request under `/api` to the first HTTP function whose route
//!   template and methods match: no ranking of literals above parameters, so a catch-all that
//!   sorts first takes everything (azure-functions-host #9876, #6062, #3153).
//! - `authLevel: function` needs a key in `x-functions-key` or `code=`; without one the host
//!   answers 401 with an empty body and the handler never sees the request
//!   (azure-functions-host `AuthenticationLevelHandler`). No route → the host's empty 404.
//! - Forwarded requests keep method, full path, query and headers, gain
//!   `X-Azure-Functions-InvocationId` and `X-Azure-Functions-HostVersion`, carry a body only when
//!   it is not empty; a handler that cannot be reached becomes an empty 500.
//! - Non-HTTP functions (queue triggers) get the invocation payload:
//!   `POST /<function name>` with `{"Data": {<binding>: message}, "Metadata": {...}}`.
//!
//! The routing rule is written here on its own, not borrowed from the service's
//! `functions check`, so that the two can catch each other's mistakes.

use std::cmp::Ordering;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

/// The host version the emulation announces.
pub const HOST_VERSION: &str = "4.1040.300.0";

/// One request the host handed to a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub function: String,
    pub id: String,
    pub method: String,
    pub path: String,
}

#[derive(Debug, Clone)]
enum Trigger {
    Http {
        template: Vec<Segment>,
        /// Upper-case; `None` = every method.
        methods: Option<Vec<String>>,
        anonymous: bool,
    },
    /// A trigger delivered through the invocation payload, with its binding name.
    Payload { binding: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Lower-cased: the host's routing ignores case.
    Literal(String),
    Parameter,
    OptionalParameter,
    CatchAll,
}

#[derive(Debug, Clone)]
struct FunctionFolder {
    name: String,
    trigger: Trigger,
}

/// The function folders of an app root, in the order the host registers them.
fn read_functions(root: &Path) -> Vec<FunctionFolder> {
    let mut functions = Vec::new();
    for entry in std::fs::read_dir(root)
        .expect("app root")
        .map(Result::unwrap)
    {
        let file = entry.path().join("function.json");
        if !file.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let definition: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("{name}/function.json: {e}"));
        let bindings = definition["bindings"].as_array().expect("bindings");
        let trigger = bindings
            .iter()
            .find(|b| {
                b["direction"] == "in" && b["type"].as_str().is_some_and(|t| t.ends_with("Trigger"))
            })
            .unwrap_or_else(|| panic!("{name}: no trigger"));
        let trigger = if trigger["type"] == "httpTrigger" {
            let route = trigger["route"].as_str().unwrap_or(&name).to_owned();
            Trigger::Http {
                template: parse_template(&route),
                methods: trigger["methods"].as_array().map(|methods| {
                    methods
                        .iter()
                        .map(|m| m.as_str().unwrap().to_ascii_uppercase())
                        .collect()
                }),
                anonymous: trigger["authLevel"] == "anonymous",
            }
        } else {
            Trigger::Payload {
                binding: trigger["name"].as_str().unwrap().to_owned(),
            }
        };
        functions.push(FunctionFolder { name, trigger });
    }
    // StringComparer.OrdinalIgnoreCase: upper-cased code points.
    functions.sort_by(|a, b| ordinal_ignore_case(&a.name, &b.name));
    functions
}

fn ordinal_ignore_case(a: &str, b: &str) -> Ordering {
    a.to_ascii_uppercase().cmp(&b.to_ascii_uppercase())
}

fn parse_template(route: &str) -> Vec<Segment> {
    route
        .split('/')
        .filter(|s| !s.is_empty())
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if name.starts_with('*') => Segment::CatchAll,
                Some(name) if name.ends_with('?') => Segment::OptionalParameter,
                Some(name) => {
                    assert!(
                        !name.contains([':', '=']),
                        "the emulation does not evaluate route constraints: {route}"
                    );
                    Segment::Parameter
                }
                None => Segment::Literal(segment.to_ascii_lowercase()),
            },
        )
        .collect()
}

fn template_matches(template: &[Segment], path: &[&str]) -> bool {
    let mut rest = path;
    for segment in template {
        match segment {
            Segment::CatchAll => return true,
            Segment::Literal(text) => match rest.split_first() {
                Some((first, tail)) if first.to_ascii_lowercase() == *text => rest = tail,
                _ => return false,
            },
            Segment::Parameter | Segment::OptionalParameter => match rest.split_first() {
                Some((first, tail)) if !first.is_empty() => rest = tail,
                None => return *segment == Segment::OptionalParameter,
                _ => return false,
            },
        }
    }
    rest.is_empty()
}

struct Shared {
    /// `extensions.http.routePrefix` from host.json (`api` when absent).
    prefix: String,
    functions: Vec<FunctionFolder>,
    key: String,
    handler: String,
    client: reqwest::Client,
    invocations: Mutex<Vec<Invocation>>,
}

impl Shared {
    /// The function the host gives `method path` to.
    fn pick(&self, method: &str, path: &str) -> Option<&FunctionFolder> {
        let mut segments = path.trim_start_matches('/').split('/');
        if !segments
            .next()
            .is_some_and(|s| s.eq_ignore_ascii_case(&self.prefix))
        {
            return None;
        }
        let mut rest: Vec<&str> = segments.collect();
        if rest.last() == Some(&"") {
            rest.pop();
        }
        self.functions
            .iter()
            .find(|function| match &function.trigger {
                Trigger::Http {
                    template, methods, ..
                } => {
                    template_matches(template, &rest)
                        && methods
                            .as_ref()
                            .is_none_or(|m| m.iter().any(|m| m.eq_ignore_ascii_case(method)))
                }
                Trigger::Payload { .. } => false,
            })
    }

    fn has_key(&self, request: &Request) -> bool {
        let header = request
            .headers()
            .get("x-functions-key")
            .and_then(|v| v.to_str().ok());
        let query = request
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|pair| {
                pair.split_once('=')
                    .filter(|(name, _)| *name == "code")
                    .map(|(_, value)| value)
            });
        header == Some(self.key.as_str()) || query == Some(self.key.as_str())
    }
}

/// The emulated host: its front door on a loopback port, the handler behind it.
pub struct FunctionsHost {
    /// `http://127.0.0.1:<port>`: where clients (or APIM) call the host.
    pub base: String,
    /// The handler's own address, which only the host calls.
    pub handler: String,
    /// The key `authLevel: function` routes require.
    pub key: String,
    shared: Arc<Shared>,
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl FunctionsHost {
    /// Starts the handler as the host does, waits for its readiness answer, and opens the front
    /// door for the function folders under `app_root`.
    pub async fn start(app_root: &Path, env: &[(&str, &str)]) -> FunctionsHost {
        let functions = read_functions(app_root);
        let host_json: Value = std::fs::read_to_string(app_root.join("host.json"))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or(Value::Null);
        let prefix = host_json["extensions"]["http"]["routePrefix"]
            .as_str()
            .unwrap_or("api")
            .trim_matches('/')
            .to_owned();
        // The real host picks a free port itself; here the kernel does (port 0), and the
        // handler's log says which, so no other process can take the port in between.
        let mut command = super::handler_command();
        command
            .env("FUNCTIONS_CUSTOMHANDLER_PORT", "0")
            .env("FUNCTIONS_WORKER_RUNTIME", "custom")
            .env("ORDERS_LOG_FORMAT", "text")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start handler");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let pipe = child.stderr.take().unwrap();
            let sink = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        let port = super::eventually("the handler's listening address", || {
            let exited = child.try_wait().unwrap();
            let lines = stderr.lock().unwrap().clone();
            async move {
                if let Some(status) = exited {
                    panic!("the handler exited ({status}) before listening: {lines:?}");
                }
                lines
                    .iter()
                    .find_map(|line| super::listening_port(line))
                    .ok_or_else(|| format!("{lines:?}"))
            }
        })
        .await;
        let handler = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        // The host's readiness probe: any HTTP answer counts, every 25 ms.
        loop {
            if client.get(format!("{handler}/")).send().await.is_ok() {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the handler exited ({status}) before answering the readiness probe: {:?}",
                    stderr.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }

        let shared = Arc::new(Shared {
            prefix,
            functions,
            key: format!("host-key-{}", uuid::Uuid::now_v7().simple()),
            handler: handler.clone(),
            client,
            invocations: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = axum::Router::new()
            .fallback(front_door)
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        FunctionsHost {
            base,
            handler,
            key: shared.key.clone(),
            shared,
            child,
            stderr,
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The function the host would give `method path` to.
    pub fn route_for(&self, method: &str, path: &str) -> Option<String> {
        self.shared.pick(method, path).map(|f| f.name.clone())
    }

    /// Every request forwarded to the handler so far, in order.
    pub fn invocations(&self) -> Vec<Invocation> {
        self.shared.invocations.lock().unwrap().clone()
    }

    /// The handler's log lines so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Delivers a queue message to a queue-triggered function as the host does, and returns
    /// the handler's status and reply. `message` is the text the host dequeued.
    pub async fn deliver_queue_message(
        &self,
        function: &str,
        message: &str,
        dequeue_count: u32,
    ) -> (u16, Value) {
        let folder = self
            .shared
            .functions
            .iter()
            .find(|f| f.name == function)
            .unwrap_or_else(|| panic!("no function folder '{function}'"));
        let Trigger::Payload { binding } = &folder.trigger else {
            panic!("'{function}' is an HTTP function, not a queue trigger");
        };
        let id = uuid::Uuid::now_v7().to_string();
        let payload = json!({
            "Data": {binding.as_str(): message},
            "Metadata": {
                "DequeueCount": dequeue_count,
                "Id": format!("\"{}\"", uuid::Uuid::now_v7()),
                "sys": {"MethodName": function, "UtcNow": "2026-11-24T10:00:00Z", "RandGuid": id},
            }
        });
        self.shared.invocations.lock().unwrap().push(Invocation {
            function: function.to_owned(),
            id: id.clone(),
            method: "POST".to_owned(),
            path: format!("/{function}"),
        });
        let response = self
            .shared
            .client
            .post(format!("{}/{function}", self.handler))
            .header("X-Azure-Functions-InvocationId", &id)
            .header("X-Azure-Functions-HostVersion", HOST_VERSION)
            .json(&payload)
            .send()
            .await
            .expect("the handler answers invocations");
        let status = response.status().as_u16();
        let reply: Value = response.json().await.expect("an invocation reply is JSON");
        (status, reply)
    }
}

impl Drop for FunctionsHost {
    fn drop(&mut self) {
        self.server.abort();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn empty(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// Hop-by-hop and framing headers the host does not pass along as they are.
fn passes(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection" | "transfer-encoding" | "content-length" | "keep-alive" | "upgrade" | "host"
    )
}

async fn front_door(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let Some(function) = shared.pick(method.as_str(), &path) else {
        return empty(StatusCode::NOT_FOUND);
    };
    let Trigger::Http { anonymous, .. } = &function.trigger else {
        return empty(StatusCode::NOT_FOUND);
    };
    if !anonymous && !shared.has_key(&request) {
        return empty(StatusCode::UNAUTHORIZED);
    }
    let id = uuid::Uuid::now_v7().to_string();
    shared.invocations.lock().unwrap().push(Invocation {
        function: function.name.clone(),
        id: id.clone(),
        method: method.to_string(),
        path: path.clone(),
    });

    let target = format!(
        "{}{}",
        shared.handler,
        request
            .uri()
            .path_and_query()
            .map_or(path.as_str(), |p| p.as_str())
    );
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 100 * 1024 * 1024).await else {
        return empty(StatusCode::PAYLOAD_TOO_LARGE);
    };
    let mut forwarded = shared.client.request(parts.method, target);
    for (name, value) in &parts.headers {
        if passes(name) {
            forwarded = forwarded.header(name, value);
        }
    }
    if let Some(host) = parts.headers.get("host") {
        // The handler sees the caller's Host, as behind the real front end.
        forwarded = forwarded.header("host", host);
    }
    forwarded = forwarded
        .header("X-Azure-Functions-InvocationId", &id)
        .header("X-Azure-Functions-HostVersion", HOST_VERSION);
    if !body.is_empty() {
        forwarded = forwarded.body(body);
    }
    let Ok(answer) = forwarded.send().await else {
        // A crashed or unreachable handler: the host's empty 500.
        return empty(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let Ok(bytes) = answer.bytes().await else {
        return empty(StatusCode::INTERNAL_SERVER_ERROR);
    };
    // Buffered, as the host does: no streaming.
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if passes(name) {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
}
