//! The real `handler` binary: start-up, settings errors, graceful shutdown, the Functions
//! host's view of it (readiness probe, forwarded requests), and `handler functions check`.

use std::path::{Path, PathBuf};

use crate::helpers::host::FunctionsHost;
use crate::helpers::{Handler, dev_token, eventually, handler_command};

#[test]
fn a_bad_setting_stops_start_up_with_one_line() {
    for (setting, value) in [
        ("PORT", "seventy"),
        ("ORDERS_MAX_BODY_BYTES", "-1"),
        ("ORDERS_REQUEST_TIMEOUT_MS", "300000"),
        ("ORDERS_BIND", "localhost:80"),
    ] {
        let output = handler_command().env(setting, value).output().unwrap();
        assert!(!output.status.success(), "{setting}={value} must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(lines[0].contains(setting), "names {setting}: {stderr}");
    }
}

#[test]
fn fault_injection_is_refused_in_azure() {
    let output = handler_command()
        .env("ORDERS_FAULT_INJECTION", "true")
        .env("WEBSITE_INSTANCE_ID", "0123456789abcdef")
        .env("PORT", "0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ORDERS_FAULT_INJECTION"), "{stderr}");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_zero() {
    let handler = Handler::start(&[("ORDERS_FAULT_INJECTION", "true")]);
    let base = handler.base();
    let client = reqwest::Client::new();
    let token = dev_token("alice", None);
    let slow = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/api/faults/slow?ms=1500");
        async move { client.get(url).bearer_auth(token).send().await }
    });
    // SIGTERM once the request is in flight: the handler says so in its log.
    eventually("the slow request in flight", || async {
        let stderr = handler.stderr();
        if stderr.contains("a slow request is sleeping") {
            Ok(())
        } else {
            Err(stderr)
        }
    })
    .await;
    handler.terminate();

    let response = slow.await.unwrap().expect("in-flight request completes");
    assert_eq!(response.status(), 200);
    let status = tokio::task::spawn_blocking(move || {
        let mut handler = handler;
        let status = handler.child.wait().unwrap();
        (status, handler)
    })
    .await
    .unwrap();
    assert!(
        status.0.success(),
        "exit status {:?}; stderr: {}",
        status.0,
        status.1.stderr()
    );
    assert!(status.1.stderr().contains("shutting down"));
    // Nothing listens any more.
    assert!(reqwest::get(format!("{base}/")).await.is_err());
}

/// The Functions host in front of the binary, reading the repository's function folders:
/// readiness probe, routing by function-name order, function keys, forwarded requests.
#[tokio::test]
async fn under_the_functions_host_api_routes_need_the_function_key() {
    let host = FunctionsHost::start(&repo_root(), &[("PORT", "1")]).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token = dev_token("alice", None);

    // No key, or a wrong one: the host's own 401 with an empty body; the handler never sees it.
    for key in [None, Some("not-the-key")] {
        let mut request = client.get(host.url("/api/orders")).bearer_auth(&token);
        if let Some(key) = key {
            request = request.header("x-functions-key", key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "key {key:?}");
        assert!(
            response.bytes().await.unwrap().is_empty(),
            "the host's 401 has no body"
        );
    }
    assert!(host.invocations().is_empty(), "{:?}", host.invocations());

    // With the key, in the header or as `code=`, the orders function forwards to the handler.
    let response = client
        .get(host.url("/api/orders?top=5"))
        .header("x-functions-key", &host.key)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["value"].is_array());
    let response = client
        .get(host.url(&format!("/api/orders?code={}&top=5", host.key)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "code= in the query is the key too");
    let response = client
        .get(host.url("/api/orders/o_missing"))
        .header("x-functions-key", &host.key)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    crate::helpers::assert_error(response, 404, "NotFound").await;
    let response = client
        .post(host.url("/api/v1/orders"))
        .header("x-functions-key", &host.key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308, "legacy path through orders-v1");

    // Anonymous functions need no key.
    let response = client.get(host.url("/api/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);

    // Unknown paths and methods reach the handler through the catch-all, which sorts last:
    // its JSON 404 and 405, not the host's empty ones.
    let response = client
        .get(host.url("/api/no/such/thing"))
        .send()
        .await
        .unwrap();
    let body = crate::helpers::assert_error(response, 404, "NotFound").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("/api/no/such/thing")
    );
    let response = client
        .put(host.url("/api/orders"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("allow"));
    crate::helpers::assert_error(response, 405, "MethodNotAllowed").await;

    let names: Vec<(String, String)> = host
        .invocations()
        .into_iter()
        .map(|i| (i.function, i.path))
        .collect();
    let expected = [
        ("orders", "/api/orders"),
        ("orders", "/api/orders"),
        ("order", "/api/orders/o_missing"),
        ("orders-v1", "/api/v1/orders"),
        ("health", "/api/health"),
        ("zz-catch-all", "/api/no/such/thing"),
        ("zz-catch-all", "/api/orders"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(f, p)| ((*f).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(
        names,
        expected,
        "the function the host picked for each request; handler log:\n{}",
        host.stderr()
    );
    let ids: std::collections::BTreeSet<String> =
        host.invocations().into_iter().map(|i| i.id).collect();
    assert_eq!(ids.len(), expected.len(), "one invocation id per request");
}

/// The emulation is as unforgiving as the host: with the catch-all named so that it sorts
/// first, it takes every request, anonymously, and `functions check` names it.
#[tokio::test]
async fn a_catch_all_that_sorts_first_takes_every_request_past_the_keys() {
    let dir = tempdir();
    copy_app(&dir);
    std::fs::rename(dir.join("zz-catch-all"), dir.join("catch-all")).unwrap();
    let host = FunctionsHost::start(&dir, &[]).await;
    assert_eq!(
        host.route_for("GET", "/api/orders").as_deref(),
        Some("catch-all")
    );
    let response = reqwest::get(host.url("/api/orders")).await.unwrap();
    // Not the host's empty 401: the request went past the key check to the handler.
    crate::helpers::assert_error(response, 401, "Unauthorized").await;
    assert_eq!(host.invocations()[0].function, "catch-all");

    let (ok, stdout) = functions_check(&dir);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("catch-all: the catch-all sorts before") && stdout.contains("orders"),
        "{stdout}"
    );
    assert!(
        stdout.contains("catch-all: shadows orders: the host would give GET /api/orders"),
        "{stdout}"
    );
    drop(host);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Queue-triggered functions get the host's invocation payload at `POST /<function name>`.
#[tokio::test]
async fn a_queue_message_reaches_the_export_worker_as_an_invocation() {
    let host = FunctionsHost::start(&repo_root(), &[]).await;
    let client = reqwest::Client::new();
    let response = client
        .post(host.url("/api/exports"))
        .header("x-functions-key", &host.key)
        .bearer_auth(dev_token("alice", None))
        .json(&serde_json::json!({"format": "ndjson"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let job: serde_json::Value = response.json().await.unwrap();
    let id = job["id"].as_str().unwrap();
    let message = serde_json::json!({"owner": "alice", "id": id}).to_string();
    let (status, reply) = host
        .deliver_queue_message("export-worker", &message, 1)
        .await;
    assert_eq!(status, 200, "{reply}");
    let logs = reply["Logs"].as_array().unwrap();
    // In memory mode the handler's own poller may have run the job first: either way it is done.
    assert!(
        logs.iter().any(|line| {
            let line = line.as_str().unwrap_or("");
            line.contains(id) && (line.contains("succeeded") || line.contains("already finished"))
        }),
        "{reply}"
    );
    assert_eq!(
        host.invocations().last().map(|i| i.function.as_str()),
        Some("export-worker")
    );
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_app(to: &Path) {
    for entry in std::fs::read_dir(repo_root()).unwrap().map(Result::unwrap) {
        let function_json = entry.path().join("function.json");
        if function_json.is_file() {
            let dir = to.join(entry.file_name());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(&function_json, dir.join("function.json")).unwrap();
        }
    }
}

fn functions_check(root: &Path) -> (bool, String) {
    let output = handler_command()
        .args(["functions", "check", "--root"])
        .arg(root)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn functions_check_passes_on_the_repository() {
    let (ok, stdout) = functions_check(&repo_root());
    assert!(ok, "{stdout}");
}

#[test]
fn functions_check_fails_on_broken_function_folders() {
    type Breakage = fn(&Path);
    let cases: [(&str, Breakage, &str); 7] = [
        (
            "route the handler does not serve",
            |root| {
                rewrite(root, "order", |s| {
                    s.replace("orders/{id}", "orders/{id}/lines")
                })
            },
            "not served by the handler",
        ),
        (
            "method the handler does not serve",
            |root| rewrite(root, "orders", |s| s.replace("\"post\"", "\"put\"")),
            "POST /api/orders is not forwarded",
        ),
        (
            "missing catch-all",
            |root| std::fs::remove_dir_all(root.join("zz-catch-all")).unwrap(),
            "no catch-all",
        ),
        (
            "catch-all sorting first",
            |root| std::fs::rename(root.join("zz-catch-all"), root.join("catch-all")).unwrap(),
            "catch-all: shadows order:",
        ),
        (
            "anonymous API function",
            |root| {
                rewrite(root, "orders", |s| {
                    s.replace("\"function\"", "\"anonymous\"")
                })
            },
            "orders: authLevel is \"anonymous\", expected \"function\"",
        ),
        (
            "a parameter route sorting before a more specific one",
            |root| {
                // 'export' sorts before 'export-download': with an optional segment its route
                // takes exports/{id}/download too, as the host tries it first.
                rewrite(root, "export", |s| {
                    s.replace("exports/{id}\"", "exports/{id}/{part?}\"")
                })
            },
            "export: shadows export-download: the host would give GET /api/exports/{id}/download to 'export'",
        ),
        (
            "two outputs",
            |root| {
                rewrite(root, "health", |s| {
                    let mut doc: serde_json::Value = serde_json::from_str(s).unwrap();
                    let extra =
                        serde_json::json!({"type": "http", "direction": "out", "name": "res2"});
                    doc["bindings"].as_array_mut().unwrap().push(extra);
                    doc.to_string()
                })
            },
            "exactly one httpTrigger in and one http out",
        ),
    ];
    for (name, breakage, expected) in cases {
        let dir = tempdir();
        copy_app(&dir);
        assert!(
            functions_check(&dir).0,
            "the copy passes before breaking it ({name})"
        );
        breakage(&dir);
        let (ok, stdout) = functions_check(&dir);
        assert!(!ok, "{name}: must fail");
        assert!(
            stdout.contains(expected),
            "{name}: expected '{expected}' in\n{stdout}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

fn rewrite(root: &Path, function: &str, edit: impl Fn(&str) -> String) {
    let file = root.join(function).join("function.json");
    let text = std::fs::read_to_string(&file).unwrap();
    let changed = edit(&text);
    assert_ne!(text, changed, "the edit must change {function}");
    std::fs::write(file, changed).unwrap();
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orders-fn-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}
