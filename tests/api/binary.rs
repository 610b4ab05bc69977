//! The real `handler` binary: start-up, settings errors, graceful shutdown, the Functions
//! host's view of it (readiness probe, forwarded requests), and `handler functions check`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::helpers::Handler;

fn handler() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_handler"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line() {
    for (setting, value) in [
        ("PORT", "seventy"),
        ("ORDERS_MAX_BODY_BYTES", "-1"),
        ("ORDERS_REQUEST_TIMEOUT_MS", "300000"),
        ("ORDERS_BIND", "localhost:80"),
    ] {
        let output = handler().env(setting, value).output().unwrap();
        assert!(!output.status.success(), "{setting}={value} must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(lines[0].contains(setting), "names {setting}: {stderr}");
    }
}

#[test]
fn fault_injection_is_refused_in_azure() {
    let output = handler()
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
    let token = dev_token();
    let slow = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/api/faults/slow?ms=1500");
        async move { client.get(url).bearer_auth(token).send().await }
    });
    // Give the request time to reach the server (this orders events; it bounds nothing).
    tokio::time::sleep(Duration::from_millis(400)).await;
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

/// A development token from the binary itself, as a user would get one.
fn dev_token() -> String {
    let output = handler()
        .args([
            "token",
            "--sub",
            "alice",
            "--scope",
            "Orders.Read",
            "--scope",
            "Orders.Write",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "handler token: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Emulates the Functions host: it picks the port, starts the process, polls `GET /` every
/// 25 ms until any response arrives, then forwards requests with the full `/api/...` path and
/// its own headers.
#[tokio::test]
async fn functions_host_emulation() {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut child = handler()
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("PORT", "1") // must be ignored in favour of the host's port
        .env("FUNCTIONS_WORKER_RUNTIME", "custom")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut polls = 0;
    let ready = loop {
        polls += 1;
        if let Ok(response) = client.get(format!("{base}/")).send().await {
            break response;
        }
        assert!(polls < 2_400, "no readiness answer after {polls} polls");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(ready.status(), 200);

    let invocation = "8d4a5a5e-8a6f-4a1b-9e0d-1c2b3a4d5e6f";
    let response = client
        .get(format!("{base}/api/orders?top=5"))
        .header("X-Azure-Functions-InvocationId", invocation)
        .header("X-Azure-Functions-HostVersion", "4.1040.300.0")
        .header("x-functions-key", "host-checked-key")
        .header("Host", "orders-app.azurewebsites.net")
        .bearer_auth(dev_token())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["value"].is_array());

    // Unknown paths arrive through the catch-all function and get the JSON 404.
    let response = client
        .get(format!("{base}/api/no/such/thing"))
        .header("X-Azure-Functions-InvocationId", invocation)
        .send()
        .await
        .unwrap();
    crate::helpers::assert_error(response, 404, "NotFound").await;
    let _ = child.kill();
    let _ = child.wait();
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
    let output = handler()
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
    let cases: [(&str, Breakage, &str); 4] = [
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
            |root| std::fs::remove_dir_all(root.join("catch-all")).unwrap(),
            "no catch-all",
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
