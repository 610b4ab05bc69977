//! The queue functions' invocation routes (`POST /export-worker`, `POST /export-poison`): only
//! under the Functions host, bounded, quiet about what they were sent; and a message that failed
//! every delivery marks its job failed, through the host's poison-queue function and through the
//! standalone poller alike.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::azure::Azurite;
use crate::helpers::host::FunctionsHost;
use crate::helpers::{assert_error, dev_token, header, spawn_with, test_config};
use orders_api::config::Config;
use orders_api::domain::{ExportFormat, ExportJob, ExportStatus};
use orders_api::store::ExportStores;
use orders_api::store::exports::{ExportStore, JobQueue};
use orders_api::store::memory::{MemoryExportStore, MemoryJobQueue, MemoryOrderStore};
use orders_api::worker::poller::{self, PollerOptions};
use serde_json::{Value, json};
use time::OffsetDateTime;

#[tokio::test]
async fn on_its_own_the_handler_has_no_invocation_routes() {
    let mut config = Config::defaults();
    config.port = 0;
    let app = spawn_with(config).await;
    for path in ["/export-worker", "/export-poison"] {
        let response = app
            .anonymous("POST", path)
            .json(&json!({"Data": {"job": "{}"}, "Metadata": {}}))
            .send()
            .await
            .unwrap();
        assert_error(response, 404, "NotFound").await;
    }
}

#[tokio::test]
async fn invocations_are_bounded_and_never_echo_their_input() {
    let app = spawn_with(test_config()).await;
    let marker = "secret-looking-input-0123456789";
    for message in [
        json!({"owner": "alice", "id": marker}).to_string(),
        format!("not even json {marker}"),
    ] {
        let response = app
            .anonymous("POST", "/export-worker")
            .json(&json!({"Data": {"job": message}, "Metadata": {"DequeueCount": 1}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let text = response.text().await.unwrap();
        assert!(!text.contains(marker), "the reply quotes its input: {text}");
        let reply: Value = serde_json::from_str(&text).unwrap();
        assert!(reply["Logs"].is_array());
    }
    // A queue message is at most 64 KiB: a payload far past that is refused unread.
    let huge = "x".repeat(2 * 1024 * 1024);
    let response = app
        .anonymous("POST", "/export-worker")
        .header("content-type", "application/json")
        .body(format!(r#"{{"Data": {{"job": "{huge}"}}}}"#))
        .send()
        .await
        .unwrap();
    assert_error(response, 413, "ContentTooLarge").await;
}

/// Under the emulated host, on Azurite (so the handler runs no poller and nothing but the host
/// touches the queue): the host moves the message of a job that never finished to the poison
/// queue, and its `export-poison` function marks the job failed.
#[tokio::test]
async fn a_poisoned_message_marks_its_job_failed_through_the_host() {
    let azurite = Azurite::start().await;
    let storage = azurite.connection_string();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let host = FunctionsHost::start(&root, &[("AzureWebJobsStorage", storage.as_str())]).await;
    let token = dev_token("poisoned-user", None);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let call = |method: reqwest::Method, path: &str| {
        client
            .request(method, host.url(path))
            .header("x-functions-key", &host.key)
            .bearer_auth(&token)
    };
    let accepted = call(reqwest::Method::POST, "/api/exports")
        .json(&json!({"format": "csv"}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let location = header(&accepted, "location");
    let job: Value = accepted.json().await.unwrap();
    let message = json!({"owner": "poisoned-user", "id": job["id"]}).to_string();

    let (status, reply) = host
        .deliver_queue_message("export-poison", &message, 1)
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply["Logs"][0].as_str().unwrap().contains("marked failed"),
        "{reply}"
    );
    let job: Value = call(reqwest::Method::GET, &location)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "Failed", "{job}");
    assert_eq!(job["failureReason"], "attemptsExhausted");
    assert!(job["completedAt"].is_string());
    let download = call(reqwest::Method::GET, &format!("{location}/download"))
        .send()
        .await
        .unwrap();
    assert_error(download, 409, "Conflict").await;

    // The host may deliver a poison message again: the failed job stays as it is.
    let (status, reply) = host
        .deliver_queue_message("export-poison", &message, 2)
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply["Logs"][0]
            .as_str()
            .unwrap()
            .contains("already finished")
    );
}

/// On its own, the poller parks a message that outlived its attempts in the poison queue, as the
/// host would, and marks its job failed, as the host's poison function would.
#[tokio::test]
async fn the_poller_parks_an_exhausted_message_and_fails_its_job() {
    let jobs = Arc::new(MemoryExportStore::new());
    let queue = Arc::new(MemoryJobQueue::new());
    let exports = ExportStores {
        jobs: jobs.clone(),
        queue: queue.clone(),
    };
    let job = ExportJob::create("alice", ExportFormat::Csv, None, OffsetDateTime::now_utc());
    let job = jobs.insert_job(&job).await.unwrap();
    let message = json!({"owner": "alice", "id": job.id}).to_string();
    queue.send(&message).await.unwrap();
    // Five deliveries that died without a word (a crash, a timeout): nothing deleted them.
    for attempt in 1..=5 {
        let received = queue.receive(1, Duration::ZERO).await.unwrap();
        assert_eq!(received[0].dequeue_count, attempt);
    }
    let options = PollerOptions {
        visibility: Duration::from_secs(30),
        idle_wait: Duration::from_millis(10),
        batch: 1,
    };
    let orders = MemoryOrderStore::new();
    let received = poller::poll_once(&orders, &exports, &options)
        .await
        .unwrap();
    assert_eq!(received, 1);
    assert_eq!(queue.poisoned(), vec![message]);
    let job = jobs.get_job("alice", &job.id).await.unwrap().unwrap();
    assert_eq!(job.status, ExportStatus::Failed);
    assert_eq!(
        job.failure,
        Some(orders_api::domain::ExportFailure::AttemptsExhausted)
    );
    assert!(queue.receive(1, Duration::ZERO).await.unwrap().is_empty());
}
