//! The service on Azure Storage (Azurite): orders survive a restart of the handler, exports
//! complete through the standalone poller, and storage failures map to 502/503/504 and heal
//! without a restart. Without Azurite these tests fail; they never skip.

use std::sync::Arc;
use std::time::Duration;

use crate::helpers::azure::Azurite;
use crate::helpers::{Handler, TestApp, assert_error, dev_token, eventually, header, sample_order};
use orders_api::config::storage::StorageAccount;
use orders_api::state::AppState;
use orders_api::store::azure::{self, Names, Timing};
use orders_api::store::memory::MemoryOrderStore;
use serde_json::{Value, json};

fn subject() -> String {
    format!("user-{}", crate::helpers::azure::unique_suffix())
}

/// The real binary on Azure storage, as a container host would run it (no Functions host).
fn start_handler(connection_string: &str) -> Handler {
    Handler::start(&[
        ("AzureWebJobsStorage", connection_string),
        ("ORDERS_STORAGE_TIMEOUT_MS", "5000"),
    ])
}

#[tokio::test]
async fn orders_survive_a_restart_of_the_handler() {
    let storage = crate::helpers::azure::connection_string();
    let client = reqwest::Client::new();
    let user = subject();
    let bearer = dev_token(&user, None);
    let first = start_handler(&storage);
    let created = client
        .post(format!("{}/api/orders", first.base()))
        .bearer_auth(&bearer)
        .json(&sample_order())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", first.stderr());
    let etag = header(&created, "etag");
    let location = header(&created, "location");
    let body: Value = created.json().await.unwrap();
    drop(first);

    let second = start_handler(&storage);
    let read = client
        .get(format!("{}{location}", second.base()))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "{}", second.stderr());
    assert_eq!(
        header(&read, "etag"),
        etag,
        "same version after the restart"
    );
    assert_eq!(read.json::<Value>().await.unwrap(), body);
    // The stored ETag still guards updates made through the new process.
    let stale = client
        .patch(format!("{}{location}", second.base()))
        .bearer_auth(&bearer)
        .header("if-match", "\"stale\"")
        .json(&json!({"status": "paid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let paid = client
        .patch(format!("{}{location}", second.base()))
        .bearer_auth(&bearer)
        .header("if-match", &etag)
        .json(&json!({"status": "paid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    assert_ne!(header(&paid, "etag"), etag);
}

#[tokio::test]
async fn export_completes_through_the_standalone_poller() {
    // An Azurite of its own: the binary uses the default queue name, and another test's handler
    // polling the same queue could take the message and then be stopped.
    let azurite = Azurite::start().await;
    let handler = start_handler(&azurite.connection_string());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let user = subject();
    let bearer = dev_token(&user, None);
    let base = handler.base();
    for _ in 0..2 {
        let created = client
            .post(format!("{base}/api/orders"))
            .bearer_auth(&bearer)
            .json(&sample_order())
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
    }
    let accepted = client
        .post(format!("{base}/api/exports"))
        .bearer_auth(&bearer)
        .json(&json!({"format": "csv"}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202, "{}", handler.stderr());
    let location = header(&accepted, "location");

    let job: Value = eventually("the export succeeding through the poller", || async {
        let job: Value = client
            .get(format!("{base}{location}"))
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["status"] == "Succeeded" {
            Ok(job)
        } else {
            Err(format!("{job}; handler: {}", handler.stderr()))
        }
    })
    .await;
    assert_eq!(job["orderCount"], 2);
    let download = client
        .get(format!("{base}{location}/download"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 302);
    let file = reqwest::get(header(&download, "location")).await.unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(
        file.text().await.unwrap().lines().count(),
        3,
        "header and two rows"
    );
}

/// The service in process over `connection_string`, with `timing` for storage calls.
async fn spawn_on(connection_string: &str, timing: Timing) -> TestApp {
    let account = StorageAccount::from_connection_string(connection_string).unwrap();
    let client = azure::connect(account, timing).unwrap();
    let (orders, exports) = orders_api::store::azure::open(
        client,
        &crate::helpers::azure::unique_names(),
        orders_api::config::storage::DEFAULT_IDEMPOTENCY_KEYS_PER_OWNER,
    );
    let state = AppState::new(crate::helpers::test_config(), orders).with_exports(exports);
    crate::helpers::spawn_state(state, Arc::new(MemoryOrderStore::new())).await
}

#[tokio::test]
async fn storage_outage_gives_503_and_recovery_needs_no_restart() {
    let mut azurite = Azurite::start().await;
    let app = spawn_on(
        &azurite.connection_string(),
        crate::helpers::azure::test_timing(),
    )
    .await;
    let (id, etag, before) = app.create_order(&sample_order()).await;
    let health = app.anonymous("GET", "/api/health").send().await.unwrap();
    assert_eq!(health.status(), 200);

    azurite.stop().await;
    let read = app.get(&format!("/api/orders/{id}")).send().await.unwrap();
    assert_eq!(header(&read, "retry-after"), "5");
    assert_error(read, 503, "ServiceUnavailable").await;
    // A write that storage did not take is never acknowledged.
    let write = app
        .post("/api/orders")
        .json(&sample_order())
        .send()
        .await
        .unwrap();
    assert_error(write, 503, "ServiceUnavailable").await;
    let export = app
        .post("/api/exports")
        .json(&json!({"format": "csv"}))
        .send()
        .await
        .unwrap();
    assert_error(export, 503, "ServiceUnavailable").await;
    let health = app.anonymous("GET", "/api/health").send().await.unwrap();
    assert_eq!(health.status(), 503);
    assert!(health.headers().contains_key("retry-after"));
    let report: Value = health.json().await.unwrap();
    assert_eq!(report["checks"]["store"]["status"], "unhealthy");
    assert_eq!(report["checks"]["store"]["reason"], "unreachable");

    azurite.restart().await;
    let read = app.get(&format!("/api/orders/{id}")).send().await.unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(header(&read, "etag"), etag, "nothing lost, nothing changed");
    assert_eq!(read.json::<Value>().await.unwrap(), before);
    let (second, _, _) = app.create_order(&sample_order()).await;
    let list: Value = app
        .get("/api/orders")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![id.as_str(), second.as_str()],
        "the refused write left nothing"
    );
    let health = app.anonymous("GET", "/api/health").send().await.unwrap();
    assert_eq!(health.status(), 200);
}

/// A fake storage endpoint: every request gets `answer` (raw HTTP), or no answer at all.
async fn fake_storage(answer: Option<&'static str>) -> String {
    fake_storage_counting(answer).await.0
}

/// [`fake_storage`], also counting the requests (one per connection) it receives.
async fn fake_storage_counting(
    answer: Option<&'static str>,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match answer {
                Some(text) => {
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buffer = vec![0u8; 65536];
                        // One request per connection is enough for these tests.
                        let _ = socket.read(&mut buffer).await;
                        let _ = socket.write_all(text.as_bytes()).await;
                        let _ = socket.shutdown().await;
                    });
                }
                // Accept, read nothing, answer nothing: a storage call that hangs.
                None => held.push(socket),
            }
        }
    });
    let connection_string = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};\
         TableEndpoint=http://127.0.0.1:{port}/devstoreaccount1;\
         QueueEndpoint=http://127.0.0.1:{port}/devstoreaccount1;\
         BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;",
        key = orders_api::config::storage::DEVELOPMENT_KEY
    );
    (connection_string, count)
}

#[tokio::test]
async fn storage_answering_nonsense_gives_502() {
    let storage = fake_storage(Some(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\nConnection: close\r\n\r\n<html>?</html>",
    ))
    .await;
    let app = spawn_on(&storage, crate::helpers::azure::test_timing()).await;
    let id = orders_api::domain::OrderId::generate();
    let read = app.get(&format!("/api/orders/{id}")).send().await.unwrap();
    assert_error(read, 502, "BadGateway").await;
    let list = app.get("/api/orders").send().await.unwrap();
    assert_error(list, 502, "BadGateway").await;
    let health = app.anonymous("GET", "/api/health").send().await.unwrap();
    assert_eq!(health.status(), 503);
    let report: Value = health.json().await.unwrap();
    assert_eq!(report["checks"]["store"]["reason"], "invalid response");
}

#[tokio::test]
async fn storage_past_its_deadline_gives_504() {
    let storage = fake_storage(None).await;
    let timing = Timing {
        deadline: Duration::from_millis(300),
        ..crate::helpers::azure::test_timing()
    };
    let app = spawn_on(&storage, timing).await;
    let id = orders_api::domain::OrderId::generate();
    let read = app.get(&format!("/api/orders/{id}")).send().await.unwrap();
    assert_error(read, 504, "GatewayTimeout").await;
    let write = app
        .post("/api/orders")
        .json(&sample_order())
        .send()
        .await
        .unwrap();
    assert_error(write, 504, "GatewayTimeout").await;
}

#[tokio::test]
async fn transient_storage_answers_are_retried_then_mapped() {
    let cases: [(&'static str, u16, &str); 4] = [
        (
            "HTTP/1.1 503 Service Unavailable\r\nx-ms-error-code: ServerBusy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            503,
            "ServiceUnavailable",
        ),
        (
            "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            503,
            "ServiceUnavailable",
        ),
        (
            "HTTP/1.1 500 Internal Server Error\r\nx-ms-error-code: InternalError\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            502,
            "BadGateway",
        ),
        (
            "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            504,
            "GatewayTimeout",
        ),
    ];
    for (answer, status, error) in cases {
        let (storage, requests) = fake_storage_counting(Some(answer)).await;
        let timing = crate::helpers::azure::test_timing();
        let app = spawn_on(&storage, timing).await;
        let id = orders_api::domain::OrderId::generate();
        let read = app.get(&format!("/api/orders/{id}")).send().await.unwrap();
        if status == 503 {
            assert!(read.headers().contains_key("retry-after"));
        }
        assert_error(read, status, error).await;
        // Every attempt was made (the table's creation, the first call, failed each time).
        assert_eq!(
            requests.load(std::sync::atomic::Ordering::SeqCst),
            timing.max_attempts as usize,
            "{answer}"
        );
    }
}

#[test]
fn names_default_to_the_function_folders_queue() {
    let function: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/export-worker/function.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        function["bindings"][0]["queueName"],
        Names::default().export_queue.as_str()
    );
    assert_eq!(function["bindings"][0]["name"], "job");
    assert_eq!(function["bindings"][0]["connection"], "AzureWebJobsStorage");
    // The poison queue's function reads where the host (and the poller) park messages.
    let poison: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/export-poison/function.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        poison["bindings"][0]["queueName"],
        format!("{}-poison", Names::default().export_queue)
    );
    assert_eq!(poison["bindings"][0]["name"], "job");
}

struct FixedToken;

#[async_trait::async_trait]
impl orders_api::store::azure::identity::TokenSource for FixedToken {
    async fn token(&self) -> Result<String, orders_api::store::StoreError> {
        Ok("token-from-the-identity".to_owned())
    }
}

#[tokio::test]
async fn identity_connections_send_bearer_tokens() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buffer = vec![0u8; 65536];
        let n = socket.read(&mut buffer).await.unwrap();
        let _ = seen_tx.send(String::from_utf8_lossy(&buffer[..n]).into_owned());
        let body = "{\"value\":[]}";
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = socket.write_all(reply.as_bytes()).await;
    });
    let uri = format!("http://127.0.0.1:{port}/");
    let account = StorageAccount::from_identity_settings(
        Some("ordersprod"),
        Some(&uri),
        Some(&uri),
        Some(&uri),
        None,
    )
    .unwrap();
    let client = Arc::new(
        azure::StorageClient::new(
            account,
            Some(Arc::new(FixedToken)),
            crate::helpers::azure::test_timing(),
        )
        .unwrap(),
    );
    let store = azure::TableOrderStore::new(client, "orders");
    use orders_api::store::OrderStore;
    store.health().await.unwrap();
    let request = seen_rx.await.unwrap().to_ascii_lowercase();
    assert!(
        request.contains("authorization: bearer token-from-the-identity"),
        "{request}"
    );
    assert!(request.contains("x-ms-version: "));
}

#[tokio::test]
async fn identity_connections_sign_links_with_a_cached_user_delegation_key() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buffer = vec![0u8; 65536];
            let n = socket.read(&mut buffer).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buffer[..n]).into_owned();
            assert!(request.starts_with("POST /?restype=service&comp=userdelegationkey"));
            let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><UserDelegationKey>\
                <SignedOid>oid-1</SignedOid><SignedTid>tid-1</SignedTid>\
                <SignedStart>2026-11-24T10:00:00Z</SignedStart><SignedExpiry>2099-01-01T00:00:00Z</SignedExpiry>\
                <SignedService>b</SignedService><SignedVersion>2021-12-02</SignedVersion>\
                <Value>c2VjcmV0</Value></UserDelegationKey>";
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
        }
    });
    let uri = format!("http://127.0.0.1:{port}/");
    let account =
        StorageAccount::from_identity_settings(Some("ordersprod"), None, None, Some(&uri), None)
            .unwrap();
    let client = Arc::new(
        azure::StorageClient::new(
            account,
            Some(Arc::new(FixedToken)),
            crate::helpers::azure::test_timing(),
        )
        .unwrap(),
    );
    let container = azure::blob::Container::new(client, "exports");
    for _ in 0..3 {
        let link = container
            .read_url("owner/x_1.csv", Duration::from_secs(900))
            .await
            .unwrap();
        let pairs: std::collections::HashMap<String, String> =
            link.query_pairs().into_owned().collect();
        assert_eq!(link.path(), "/exports/owner/x_1.csv");
        assert_eq!(pairs["skoid"], "oid-1");
        assert_eq!(pairs["sktid"], "tid-1");
        assert_eq!(pairs["sp"], "r");
        assert!(!pairs["sig"].is_empty());
    }
    assert_eq!(requests.load(Ordering::SeqCst), 1, "the key is reused");
}

/// The worker marks a job failed on delivery `MAX_ATTEMPTS`, and enqueues Base64: host.json must
/// agree (its defaults do: maxDequeueCount 5, messageEncoding base64).
#[test]
fn host_json_queue_settings_agree_with_the_worker() {
    let host: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/host.json")).unwrap(),
    )
    .unwrap();
    let queues = &host["extensions"]["queues"];
    // Stated explicitly rather than left to the extension's defaults, which have changed before.
    assert_eq!(
        queues["maxDequeueCount"].as_u64(),
        Some(u64::from(orders_api::worker::MAX_ATTEMPTS))
    );
    let encoding = &queues["messageEncoding"];
    assert!(
        encoding
            .as_str()
            .is_some_and(|e| e.eq_ignore_ascii_case("base64")),
        "messages are enqueued Base64; host.json says {encoding}"
    );
    assert!(
        queues["visibilityTimeout"].is_string(),
        "a failed delivery waits before its retry"
    );
}

/// The Functions host, emulated around the real binary: it sets FUNCTIONS_CUSTOMHANDLER_PORT
/// (so the handler runs no poller of its own), forwards HTTP requests, dequeues the export
/// message itself and posts the invocation payload to `/export-worker`.
#[tokio::test]
async fn export_completes_through_the_emulated_functions_host() {
    let azurite = Azurite::start().await;
    let storage = azurite.connection_string();
    // The host's port variable; 0 lets the kernel choose, and the log says which.
    let handler = Handler::start(&[
        ("AzureWebJobsStorage", storage.as_str()),
        ("FUNCTIONS_CUSTOMHANDLER_PORT", "0"),
    ]);
    let base = handler.base();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    assert_eq!(
        client
            .get(format!("{base}/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let user = subject();
    let bearer = dev_token(&user, None);
    let forward = |method: reqwest::Method, path: &str| {
        client
            .request(method, format!("{base}{path}"))
            .bearer_auth(&bearer)
            .header(
                "x-azure-functions-invocationid",
                "6a1b6c0e-0000-4000-8000-000000000001",
            )
            .header("x-functions-key", "host-key")
    };
    let created = forward(reqwest::Method::POST, "/api/orders")
        .json(&sample_order())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", handler.stderr());
    let accepted = forward(reqwest::Method::POST, "/api/exports")
        .json(&json!({"format": "ndjson"}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let location = header(&accepted, "location");

    // The host's queue trigger: receive, decode, invoke, delete on success.
    let queue = azure::StorageJobQueue::new(
        crate::helpers::azure::client_for(&storage),
        &Names::default().export_queue,
    );
    use orders_api::store::exports::JobQueue;
    let message = eventually(
        "the export message on the queue, untouched by the handler",
        || async {
            queue
                .receive(1, Duration::from_secs(30))
                .await
                .unwrap()
                .pop()
                .ok_or_else(|| "an empty queue".to_owned())
        },
    )
    .await;
    let invocation = client
        .post(format!("{base}/export-worker"))
        .json(&json!({
            "Data": {"job": serde_json::to_string(&message.text).unwrap()},
            "Metadata": {
                "DequeueCount": message.dequeue_count,
                "Id": message.id,
                "PopReceipt": message.pop_receipt,
                "sys": {"MethodName": "export-worker"}
            }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(invocation.status(), 200, "{}", handler.stderr());
    let reply: Value = invocation.json().await.unwrap();
    assert_eq!(reply["ReturnValue"], Value::Null);
    assert!(
        reply["Logs"][0]
            .as_str()
            .unwrap()
            .contains("succeeded with 1 orders")
    );
    queue.delete(&message).await.unwrap();

    let job: Value = forward(reqwest::Method::GET, &location)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "Succeeded");
    let download = forward(reqwest::Method::GET, &format!("{location}/download"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 302);
    let file = reqwest::get(header(&download, "location")).await.unwrap();
    assert_eq!(file.text().await.unwrap().lines().count(), 1);
}

/// A proxy in front of Azurite's table port that closes every upstream connection after one
/// request, and swallows the reply to the first request whose request line starts with
/// `drop_line`: the write happens, but the client never hears of it.
async fn reply_losing_proxy(
    upstream: u16,
    drop_line: String,
) -> (u16, Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dropped = Arc::new(AtomicBool::new(false));
    let seen = dropped.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let dropped = dropped.clone();
            let drop_line = drop_line.clone();
            tokio::spawn(async move {
                let mut first = vec![0u8; 65536];
                let n = client.read(&mut first).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                let text = String::from_utf8_lossy(&first[..n]).into_owned();
                // One request per upstream connection: then the response ends at EOF.
                let forwarded = text.replacen("\r\n", "\r\nConnection: close\r\n", 1);
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let _ = server.write_all(forwarded.as_bytes()).await;
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let lose = text.starts_with(&drop_line) && !dropped.swap(true, Ordering::SeqCst);
                if lose {
                    let mut sink = Vec::new();
                    let _ = server_read.read_to_end(&mut sink).await;
                    // Dropping the client's socket here: the reply is lost.
                } else {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    let _ = client_write.shutdown().await;
                }
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn a_write_whose_reply_was_lost_is_not_reported_as_a_conflict() {
    use orders_api::store::OrderStore;
    let shared = crate::helpers::azure::connection_string();
    let table_port: u16 = shared
        .split("TableEndpoint=http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the test connection string has an explicit TableEndpoint");
    let names = crate::helpers::azure::unique_names();
    let (proxy, lost) = reply_losing_proxy(
        table_port,
        format!("POST /devstoreaccount1/{} ", names.orders_table),
    )
    .await;
    let account = StorageAccount::from_connection_string(&format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};TableEndpoint=http://127.0.0.1:{proxy}/devstoreaccount1;",
        orders_api::config::storage::DEVELOPMENT_KEY
    ))
    .unwrap();
    let client = azure::connect(account, crate::helpers::azure::test_timing()).unwrap();
    let store = azure::TableOrderStore::new(client, &names.orders_table);

    let items = [orders_api::domain::ItemInput {
        sku: "A-1",
        quantity: 1,
        unit_price: "1.00",
    }];
    let new = orders_api::domain::NewOrder::parse(&items, "EUR").unwrap();
    let order = orders_api::domain::Order::create(&subject(), new, time::OffsetDateTime::now_utc());
    // The first insert's reply is lost; the retry meets the order it wrote itself.
    let stored = store.insert(&order).await.unwrap();
    assert!(
        lost.load(std::sync::atomic::Ordering::SeqCst),
        "a reply was lost"
    );
    let read = store.get(&order.owner, &order.id).await.unwrap().unwrap();
    assert_eq!(read, stored, "the returned ETag is the stored one");
    // Without a lost reply, a duplicate is still a conflict.
    assert!(matches!(
        store.insert(&order).await,
        Err(orders_api::store::StoreError::AlreadyExists)
    ));
}
