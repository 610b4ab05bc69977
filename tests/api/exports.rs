//! Exports over HTTP: 202 with a status monitor, 302 to the file, 409 while unfinished, owner
//! isolation; the worker fed by the in-memory poller, and, against Azurite, by the Functions
//! host's invocation payload (`POST /export-worker` with a real dequeued message), including
//! retries and the last attempt.

use std::sync::Arc;
use std::time::Duration;

use crate::helpers::{TestApp, assert_error, eventually, header, sample_order};
use async_trait::async_trait;
use bytes::Bytes;
use orders_api::domain::{ExportId, ExportJob};
use orders_api::state::AppState;
use orders_api::store::ExportStores;
use orders_api::store::StoreError;
use orders_api::store::azure::client::{Call, Service};
use orders_api::store::azure::{Names, StorageJobQueue, TableExportStore, TableOrderStore};
use orders_api::store::exports::{ExportStore, FileLocation, JobQueue, QueuedMessage};
use orders_api::store::memory::MemoryOrderStore;
use orders_api::worker::poller::{self, PollerOptions};
use serde_json::{Value, json};

/// Polls `GET path` until `done(body)` holds.
async fn wait_for(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(&format!("{path} reaching the expected state"), || async {
        let response = app.get(path).send().await.unwrap();
        assert_eq!(response.status(), 200, "polling {path}");
        let body: Value = response.json().await.unwrap();
        if done(&body) {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await
}

async fn start_export(app: &TestApp, body: Value) -> (String, Value) {
    let response = app.post("/api/exports").json(&body).send().await.unwrap();
    assert_eq!(response.status(), 202);
    let location = header(&response, "location");
    assert_eq!(header(&response, "retry-after"), "2");
    let job: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/exports/{}", job["id"].as_str().unwrap())
    );
    assert_eq!(job["status"], "NotStarted");
    (location, job)
}

// ---------------------------------------------------------------------------------------------
// In memory

#[tokio::test]
async fn export_runs_in_the_background_in_memory() {
    let app = crate::helpers::spawn().await;
    for _ in 0..3 {
        app.create_order(&sample_order()).await;
    }
    let (location, _) = start_export(&app, json!({"format": "ndjson"})).await;

    // Not finished: the monitor says when to ask again and the download is a conflict.
    let monitor = app.get(&location).send().await.unwrap();
    assert_eq!(monitor.status(), 200);
    assert_eq!(header(&monitor, "retry-after"), "2");
    let early = app
        .get(&format!("{location}/download"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&early, "retry-after"), "2");
    assert_error(early, 409, "Conflict").await;

    let _poller = poller::spawn(
        app.state.store.clone(),
        app.state.exports.clone(),
        PollerOptions {
            idle_wait: Duration::from_millis(20),
            ..PollerOptions::default()
        },
    );
    let job = wait_for(&app, &location, |job| job["status"] == "Succeeded").await;
    assert_eq!(job["orderCount"], 3);
    assert!(job["completedAt"].is_string());
    let finished = app.get(&location).send().await.unwrap();
    assert!(finished.headers().get("retry-after").is_none());

    let download = app
        .get(&format!("{location}/download"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 302);
    let file_path = header(&download, "location");
    assert_eq!(file_path, format!("{location}/file"));
    let file = app.get(&file_path).send().await.unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(header(&file, "content-type"), "application/x-ndjson");
    let text = file.text().await.unwrap();
    assert_eq!(text.lines().count(), 3);
    for line in text.lines() {
        let order: Value = serde_json::from_str(line).unwrap();
        assert_eq!(order["total"], "19.98");
    }
}

#[tokio::test]
async fn csv_export_with_a_status_filter() {
    let app = crate::helpers::spawn().await;
    let (paid_id, etag, _) = app.create_order(&sample_order()).await;
    app.create_order(&sample_order()).await;
    let paid = app
        .patch(&format!("/api/orders/{paid_id}"))
        .header("if-match", etag)
        .json(&json!({"status": "paid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    let (location, job) = start_export(&app, json!({"format": "csv", "status": "paid"})).await;
    assert_eq!(job["orderStatus"], "paid");
    let _poller = poller::spawn(
        app.state.store.clone(),
        app.state.exports.clone(),
        PollerOptions {
            idle_wait: Duration::from_millis(20),
            ..PollerOptions::default()
        },
    );
    wait_for(&app, &location, |job| job["status"] == "Succeeded").await;
    let file = app.get(&format!("{location}/file")).send().await.unwrap();
    assert_eq!(header(&file, "content-type"), "text/csv; charset=utf-8");
    let text = file.text().await.unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(
        rows.len(),
        2,
        "header and the paid order's one item: {text}"
    );
    assert!(rows[1].starts_with(&format!("{paid_id},paid,EUR,")));
}

#[tokio::test]
async fn exports_are_validated_and_owner_isolated() {
    let app = crate::helpers::spawn().await;
    let bad = app
        .post("/api/exports")
        .json(&json!({"format": "xml", "status": "lost"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(bad, 400, "BadRequest").await;
    let fields: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["format", "status"]);
    let missing = app
        .post("/api/exports")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(missing, 400, "BadRequest").await;

    let (location, _) = start_export(&app, json!({"format": "csv"})).await;
    for path in [location.clone(), format!("{location}/download")] {
        let other = app.as_user("mallory", "GET", &path).send().await.unwrap();
        assert_error(other, 404, "NotFound").await;
    }
    let unknown = app.get("/api/exports/x_nope").send().await.unwrap();
    assert_error(unknown, 404, "NotFound").await;
    let anonymous = app.anonymous("GET", &location).send().await.unwrap();
    assert_error(anonymous, 401, "Unauthorized").await;
    let csv_only = app
        .get(&location)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_error(csv_only, 406, "NotAcceptable").await;
}

#[tokio::test]
async fn invocation_payload_in_memory_is_idempotent() {
    let app = crate::helpers::spawn().await;
    app.create_order(&sample_order()).await;
    let (location, job) = start_export(&app, json!({"format": "ndjson"})).await;
    let message = receive_one(app.state.exports.queue.as_ref(), Duration::from_secs(30)).await;
    let reply = invoke(&app, &message, Encoding::Twice).await;
    assert_eq!(reply.0, 200, "{:?}", reply.1);
    let finished = wait_for(&app, &location, |j| j["status"] == "Succeeded").await;
    // Redelivery: nothing changes.
    let again = invoke(&app, &message, Encoding::Once).await;
    assert_eq!(again.0, 200);
    assert!(
        again.1["Logs"][0]
            .as_str()
            .unwrap()
            .contains("already finished")
    );
    let after = wait_for(&app, &location, |_| true).await;
    assert_eq!(after, finished);
    assert_eq!(job["id"], finished["id"]);
}

// ---------------------------------------------------------------------------------------------
// The Functions host, emulated

#[derive(Clone, Copy)]
enum Encoding {
    /// `Data.job` is the message text (a JSON string holding the JSON object).
    Once,
    /// The message text JSON-encoded once more, as some hosts deliver strings.
    Twice,
}

/// What the host posts for a dequeued message.
fn payload(message: &QueuedMessage, encoding: Encoding) -> Value {
    let data = match encoding {
        Encoding::Once => Value::String(message.text.clone()),
        Encoding::Twice => Value::String(serde_json::to_string(&message.text).unwrap()),
    };
    json!({
        "Data": {"job": data},
        "Metadata": {
            "DequeueCount": message.dequeue_count,
            "Id": format!("\"{}\"", message.id),
            "PopReceipt": format!("\"{}\"", message.pop_receipt),
            "InsertionTime": message.insertion_time,
            "ExpirationTime": message.expiration_time,
            "NextVisibleTime": message.next_visible_time,
            "sys": {"MethodName": "export-worker", "UtcNow": "2026-11-24T10:00:00Z", "RandGuid": "0"}
        }
    })
}

/// Posts the invocation as the host does (no bearer token) and returns status and reply.
async fn invoke(app: &TestApp, message: &QueuedMessage, encoding: Encoding) -> (u16, Value) {
    let response = app
        .anonymous("POST", "/export-worker")
        .header("content-type", "application/json")
        .header(
            "x-azure-functions-invocationid",
            "11111111-2222-3333-4444-555555555555",
        )
        .json(&payload(message, encoding))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert!(body["Logs"].is_array(), "invocation reply shape: {body}");
    assert!(body.get("Outputs").is_some() && body.get("ReturnValue").is_some());
    (status, body)
}

/// The next message, polling until one is visible (bounded).
async fn receive_one(queue: &dyn JobQueue, visibility: Duration) -> QueuedMessage {
    eventually("a message on the queue", || async {
        let mut messages = queue.receive(1, visibility).await.unwrap();
        messages.pop().ok_or_else(|| "an empty queue".to_owned())
    })
    .await
}

struct AzureApp {
    app: TestApp,
    queue: Arc<StorageJobQueue>,
    names: Names,
}

/// The service over Azurite, with tables, queue and container of its own.
async fn spawn_azure(fail_files: bool) -> AzureApp {
    let client = crate::helpers::azure::shared_client();
    let names: Names = crate::helpers::azure::unique_names();
    let orders = Arc::new(TableOrderStore::new(client.clone(), &names.orders_table));
    let queue = Arc::new(StorageJobQueue::new(client.clone(), &names.export_queue));
    let table_exports = Arc::new(TableExportStore::new(
        client,
        &names.exports_table,
        &names.exports_container,
    ));
    let jobs: Arc<dyn ExportStore> = if fail_files {
        Arc::new(FailingFiles(table_exports))
    } else {
        table_exports
    };
    let state = AppState::new(crate::helpers::test_config(), orders).with_exports(ExportStores {
        jobs,
        queue: queue.clone(),
    });
    let app = crate::helpers::spawn_state(state, Arc::new(MemoryOrderStore::new())).await;
    AzureApp { app, queue, names }
}

/// Job storage that works but cannot write files: every worker attempt fails.
struct FailingFiles(Arc<TableExportStore>);

#[async_trait]
impl ExportStore for FailingFiles {
    async fn insert_job(&self, job: &ExportJob) -> Result<ExportJob, StoreError> {
        self.0.insert_job(job).await
    }
    async fn get_job(&self, owner: &str, id: &ExportId) -> Result<Option<ExportJob>, StoreError> {
        self.0.get_job(owner, id).await
    }
    async fn replace_job(&self, job: &ExportJob, if_match: &str) -> Result<ExportJob, StoreError> {
        self.0.replace_job(job, if_match).await
    }
    async fn put_file(&self, _job: &ExportJob, _content: Bytes) -> Result<(), StoreError> {
        Err(StoreError::Unavailable(
            "blob storage refused the file".to_owned(),
        ))
    }
    async fn file_location(&self, job: &ExportJob) -> Result<FileLocation, StoreError> {
        self.0.file_location(job).await
    }
    async fn read_file(&self, job: &ExportJob) -> Result<Option<Bytes>, StoreError> {
        self.0.read_file(job).await
    }
}

#[tokio::test]
async fn export_completes_through_the_invocation_payload_on_azurite() {
    let azure = spawn_azure(false).await;
    let app = &azure.app;
    for _ in 0..3 {
        app.create_order(&sample_order()).await;
    }
    let (location, _) = start_export(app, json!({"format": "ndjson"})).await;

    // On the wire the message is Base64, as the queue trigger expects by default (plain text
    // would go straight to the poison queue).
    let client = crate::helpers::azure::shared_client();
    let mut peek = client
        .url(
            Service::Queue,
            &format!("{}/messages", azure.names.export_queue),
        )
        .unwrap();
    peek.query_pairs_mut().append_pair("peekonly", "true");
    let raw = client
        .send(Call::new(
            Service::Queue,
            "PeekMessages",
            reqwest::Method::GET,
            peek,
        ))
        .await
        .unwrap();
    let xml = String::from_utf8_lossy(&raw.body).into_owned();
    let text = xml
        .split("<MessageText>")
        .nth(1)
        .and_then(|rest| rest.split("</MessageText>").next())
        .expect("one message");
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, text)
        .expect("the message text is Base64");
    let job: Value = serde_json::from_slice(&decoded).unwrap();
    assert!(job["id"].as_str().unwrap().starts_with("x_"));

    // The host dequeues the real message, and the trigger decodes it.
    // Hidden for ten minutes, so that no slowness of the machine brings it back before the
    // check below.
    let message = receive_one(azure.queue.as_ref(), Duration::from_secs(600)).await;
    assert_eq!(message.dequeue_count, 1);
    let raw = azure
        .queue
        .queue()
        .receive(1, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        raw.is_empty(),
        "the message is invisible while being processed"
    );
    let (status, reply) = invoke(app, &message, Encoding::Twice).await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply["Logs"][0]
            .as_str()
            .unwrap()
            .contains("succeeded with 3 orders")
    );
    azure.queue.delete(&message).await.unwrap();

    let job = wait_for(app, &location, |j| j["status"] == "Succeeded").await;
    assert_eq!(job["orderCount"], 3);
    let download = app
        .get(&format!("{location}/download"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 302);
    let link = header(&download, "location");
    assert!(link.contains("sig=") && link.contains("sp=r"), "{link}");
    // The link works without any credential, as a browser would follow it.
    let file = reqwest::get(&link).await.unwrap();
    assert_eq!(file.status(), 200);
    let text = file.text().await.unwrap();
    assert_eq!(text.lines().count(), 3);
    // A tampered link does not.
    let tampered = reqwest::get(link.replace("sp=r", "sp=rw")).await.unwrap();
    assert_eq!(tampered.status(), 403);

    // A redelivered message (the host retried after a lost reply) changes nothing.
    let (status, reply) = invoke(app, &message, Encoding::Once).await;
    assert_eq!(status, 200);
    assert!(
        reply["Logs"][0]
            .as_str()
            .unwrap()
            .contains("already finished")
    );
    let after = wait_for(app, &location, |_| true).await;
    assert_eq!(after, job);
}

#[tokio::test]
async fn failed_attempts_are_retried_and_the_last_marks_the_job_failed() {
    let azure = spawn_azure(true).await;
    let app = &azure.app;
    app.create_order(&sample_order()).await;
    let (location, _) = start_export(app, json!({"format": "csv"})).await;

    for attempt in 1..=5u32 {
        // Hidden for a second after each receive: a failed message comes back by itself.
        let message = receive_one(azure.queue.as_ref(), Duration::from_secs(1)).await;
        assert_eq!(message.dequeue_count, attempt);
        let (status, reply) = invoke(app, &message, Encoding::Once).await;
        if attempt < 5 {
            assert!(
                status >= 500,
                "attempt {attempt} must fail for a retry: {reply}"
            );
            let job = wait_for(app, &location, |_| true).await;
            assert_eq!(job["status"], "Running");
        } else {
            assert_eq!(status, 200, "the last attempt records the failure: {reply}");
            azure.queue.delete(&message).await.unwrap();
        }
    }
    let job = wait_for(app, &location, |_| true).await;
    assert_eq!(job["status"], "Failed");
    assert!(job["completedAt"].is_string());
    let download = app
        .get(&format!("{location}/download"))
        .send()
        .await
        .unwrap();
    assert_error(download, 409, "Conflict").await;
}

#[tokio::test]
async fn unreadable_invocations_are_refused_so_the_host_retries() {
    let app = crate::helpers::spawn().await;
    let response = app
        .anonymous("POST", "/export-worker")
        .header("content-type", "application/json")
        .json(&json!({"Data": {"job": "not an export"}, "Metadata": {"DequeueCount": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(body["Logs"].is_array());
    // A message for a job that does not exist is done with: nothing to retry.
    let missing = json!({"owner": "alice", "id": ExportId::generate()}).to_string();
    let response = app
        .anonymous("POST", "/export-worker")
        .json(&json!({"Data": {"job": missing}, "Metadata": {"DequeueCount": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
