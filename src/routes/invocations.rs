//! The Functions host's invocations of the queue-triggered functions: `POST /export-worker`
//! (one delivery of an export job's message) and `POST /export-poison` (a message the host moved
//! to `export-jobs-poison` after every delivery failed).
//!
//! Mounted only under the Functions host (`FUNCTIONS_CUSTOMHANDLER_PORT` set): the host calls
//! them on loopback and never forwards a client's request to them (they are outside the `api`
//! route prefix); on its own, the handler's queue poller does their work, and a client reaching
//! the port finds nothing here. Bodies are bounded like a queue message, and the replies' `Logs`
//! name ids, never the message's content.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::functions::invocation::{InvocationRequest, InvocationResponse};
use crate::http::render;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::exports::ExportMessage;
use crate::worker::{self, Outcome, WorkerError};

/// The worker's invocation route: `POST /<function name>`.
pub const WORKER_PATH: &str = "/export-worker";
/// The poison queue's function: `POST /<function name>`.
pub const POISON_PATH: &str = "/export-poison";
/// The trigger binding's name in both functions' `function.json`.
pub const TRIGGER_BINDING: &str = "job";

/// A queue message is at most 64 KiB; the payload adds metadata and one more level of JSON
/// encoding.
const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(WORKER_PATH, post(export_worker))
        .route(POISON_PATH, post(export_poison))
        .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES))
}

/// `POST /export-worker`: one delivery. 200 when the message is done with (processed, already
/// processed, or failed for good on its last attempt); non-2xx to have the host deliver it again.
async fn export_worker(State(state): State<AppState>, body: Bytes) -> Response {
    let (message, dequeue_count) = match read(&body) {
        Ok(read) => read,
        Err(problem) => return refuse(problem),
    };
    let outcome = worker::process(
        state.store.as_ref(),
        state.exports.jobs.as_ref(),
        &message,
        dequeue_count,
    )
    .await;
    match outcome {
        Ok(outcome) => reply(
            StatusCode::OK,
            describe(&message, &outcome, Some(dequeue_count)),
        ),
        Err(error) => {
            tracing::warn!(job = %message.id, %error, dequeue_count, "export attempt failed; the host will retry");
            let status = match &error {
                WorkerError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            reply(
                status,
                format!(
                    "export {} attempt {dequeue_count} failed; it will be retried",
                    message.id
                ),
            )
        }
    }
}

/// `POST /export-poison`: the message failed every delivery, perhaps without a word (a crash, a
/// timeout): its job is marked failed, so that it does not stay `Running` for ever.
async fn export_poison(State(state): State<AppState>, body: Bytes) -> Response {
    let (message, _) = match read(&body) {
        Ok(read) => read,
        Err(problem) => return refuse(problem),
    };
    match worker::give_up(state.exports.jobs.as_ref(), &message).await {
        Ok(outcome) => {
            if outcome == Outcome::Failed {
                tracing::error!(job = %message.id, "export message poisoned: the job is marked failed");
            }
            reply(StatusCode::OK, describe(&message, &outcome, None))
        }
        Err(error) => {
            tracing::warn!(job = %message.id, %error, "could not mark a poisoned export failed; the host will retry");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("export {} could not be marked failed yet", message.id),
            )
        }
    }
}

/// The message of an invocation, and which delivery it is; or what is wrong with it, in words
/// that never quote it.
fn read(body: &[u8]) -> Result<(ExportMessage, u32), &'static str> {
    let payload: InvocationRequest =
        serde_json::from_slice(body).map_err(|_| "not an invocation payload")?;
    let dequeue_count = payload
        .metadata_number("DequeueCount")
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1);
    let message = payload
        .trigger(TRIGGER_BINDING)
        .cloned()
        .and_then(|data| ExportMessage::from_value(data).ok())
        .ok_or("the message is not an export job")?;
    Ok((message, dequeue_count))
}

/// A payload that is not an invocation, or a message this service did not write: 400, so the
/// host retries it and then parks it.
fn refuse(problem: &'static str) -> Response {
    tracing::error!(problem, "refused an invocation");
    reply(StatusCode::BAD_REQUEST, format!("refused: {problem}"))
}

/// What became of `message`; `delivery` is the attempt this was, or `None` from the poison queue.
fn describe(message: &ExportMessage, outcome: &Outcome, delivery: Option<u32>) -> String {
    let id = &message.id;
    match outcome {
        Outcome::Succeeded { orders } => format!("export {id} succeeded with {orders} orders"),
        Outcome::AlreadyFinished(status) => {
            format!("export {id} had already finished ({})", status.as_str())
        }
        Outcome::Missing => format!("export {id} does not exist; nothing to do"),
        Outcome::Failed => match delivery {
            Some(attempt) => {
                format!("export {id} failed on attempt {attempt} and is marked failed")
            }
            None => format!("export {id} failed every attempt and is marked failed"),
        },
    }
}

/// The invocation reply keeps its own shape on failure too: the host reads `Logs` from it.
fn reply(status: StatusCode, line: String) -> Response {
    let mut response = (status, Json(InvocationResponse::default().log(line))).into_response();
    if !status.is_success() {
        response.extensions_mut().insert(render::OwnBody);
    }
    response
}
