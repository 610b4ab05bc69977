//! `/api/exports`: asynchronous exports of the caller's orders (202 + status monitor + 302 to
//! the file), and `POST /export-worker`, the Functions host's invocation of the queue-triggered
//! worker.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};

use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::orders::StatusName;
use crate::auth::{Caller, Reader};
use crate::domain::{ExportFailure, ExportFormat, ExportId, ExportJob, ExportStatus, OrderStatus};
use crate::error::ApiError;
use crate::http::json::{ApiJson, Checked};
use crate::http::negotiate::AcceptsJson;
use crate::routes::openapi::responses::*;
use crate::state::AppState;
use crate::store::exports::{ExportMessage, FileLocation};

/// Seconds a client should wait before asking about an unfinished export again.
const POLL_AFTER_SECS: u64 = 2;

/// The handler-served file route (memory mode), not forwarded by any function.
pub const FILE_PATH: &str = "/api/exports/{id}/file";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_export))
        .routes(routes!(get_export))
        // A redirect has no representation to negotiate: any Accept may follow it.
        .routes(routes!(download_export))
}

/// The route outside the OpenAPI document: the file, when the handler holds it (memory mode).
pub fn file_route() -> axum::Router<AppState> {
    axum::Router::new().route(FILE_PATH, axum::routing::get(read_export_file))
}

// ---------------------------------------------------------------------------------------------
// Representations

/// The state of an export, as documented.
#[derive(ToSchema)]
#[schema(as = ExportStatus)]
#[allow(dead_code)]
pub enum ExportStatusName {
    NotStarted,
    Running,
    Succeeded,
    Failed,
}

/// Why an export failed, as documented.
#[derive(ToSchema)]
#[schema(as = ExportFailure)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
pub enum ExportFailureName {
    NotQueued,
    AttemptsExhausted,
}

/// A file format, as documented.
#[derive(ToSchema)]
#[schema(as = ExportFormat)]
#[allow(dead_code)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormatName {
    Ndjson,
    Csv,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateExportRequest {
    /// `ndjson` (one order per line) or `csv` (one line item per row).
    #[schema(value_type = ExportFormatName)]
    pub format: Checked<ExportFormat>,
    /// Only orders in this status.
    #[schema(value_type = Option<StatusName>)]
    pub status: Option<Checked<OrderStatus>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportResource {
    #[schema(
        example = "x_0190f3a1b2c37d4e8f9a0b1c2d3e4f50",
        min_length = 34,
        max_length = 34,
        pattern = "^x_[0-9a-f]{32}$"
    )]
    pub id: String,
    #[schema(value_type = ExportStatusName)]
    pub status: &'static str,
    #[schema(value_type = ExportFormatName)]
    pub format: &'static str,
    /// The order status filter, when one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<StatusName>, nullable = false)]
    pub order_status: Option<&'static str>,
    #[schema(format = DateTime, max_length = 64)]
    pub created_at: String,
    /// When the export succeeded or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime, nullable = false, max_length = 64)]
    pub completed_at: Option<String>,
    /// Why it failed, once failed: `notQueued` (it never started) or `attemptsExhausted`
    /// (every attempt to write the file failed). Start a new export either way.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ExportFailureName>, nullable = false)]
    pub failure_reason: Option<&'static str>,
    /// Orders in the file, once succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i32>, format = Int32, nullable = false, minimum = 0, maximum = 2147483647)]
    pub order_count: Option<usize>,
}

impl From<&ExportJob> for ExportResource {
    fn from(job: &ExportJob) -> Self {
        let timestamp = |t: OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        Self {
            id: job.id.to_string(),
            status: job.status.as_str(),
            format: job.format.as_str(),
            order_status: job.order_status.map(OrderStatus::as_str),
            created_at: timestamp(job.created_at),
            completed_at: job.completed_at.map(timestamp),
            order_count: job.order_count,
            failure_reason: job.failure.map(ExportFailure::as_str),
        }
    }
}

fn job_response(status: StatusCode, job: &ExportJob) -> Response {
    let mut response = (status, Json(ExportResource::from(job))).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if !job.status.is_finished() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(POLL_AFTER_SECS));
    }
    if status == StatusCode::ACCEPTED
        && let Ok(location) = HeaderValue::from_str(&format!("/api/exports/{}", job.id))
    {
        headers.insert(header::LOCATION, location);
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// Start an export of the caller's orders.
///
/// Answers 202 at once; the file is written in the background. Poll `Location` (the status
/// monitor) after `Retry-After` seconds until the export has succeeded or failed. Needs
/// Orders.Read.
#[utoipa::path(
    post,
    path = "/api/exports",
    operation_id = "createExport",
    tag = "exports",
    request_body(content = CreateExportRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted: the export runs in the background.", body = ExportResource,
            headers(("Location" = String, description = "The export's status monitor."),
                    ("Retry-After" = u64, description = "Seconds to wait before polling."))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 406, response = NotAcceptable),
        (status = 408, response = RequestTimeout),
        (status = 413, response = ContentTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
        (status = 500, response = InternalServerError),
        (status = 502, response = BadGateway),
        (status = 503, response = ServiceUnavailable),
        (status = 504, response = GatewayTimeout),
    )
)]
pub async fn create_export(
    _: AcceptsJson,
    Reader(caller): Reader,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateExportRequest>,
) -> Result<Response, ApiError> {
    let mut problems = Vec::new();
    let format = request.format.or_note("format", &mut problems);
    let order_status = request
        .status
        .and_then(|status| status.or_note("status", &mut problems));
    let Some(format) = format.filter(|_| problems.is_empty()) else {
        return Err(ApiError::validation(problems));
    };

    let job = ExportJob::create(
        &caller.owner,
        format,
        order_status,
        OffsetDateTime::now_utc(),
    );
    let exports = &state.exports;
    let job = exports
        .jobs
        .insert_job(&job)
        .await
        .map_err(ApiError::from)?;
    let message = ExportMessage {
        owner: job.owner.clone(),
        id: job.id.clone(),
    };
    if let Err(error) = exports.queue.send(&message.to_text()).await {
        // Without its message the job would never run: record that it failed (best effort)
        // and tell the client, who never learns its id.
        let failed = job.failed(ExportFailure::NotQueued, OffsetDateTime::now_utc());
        if let Err(mark) = exports.jobs.replace_job(&failed, &job.etag).await {
            tracing::warn!(error = %mark, "could not mark an unqueued export as failed");
        }
        return Err(ApiError::from(error));
    }
    Ok(job_response(StatusCode::ACCEPTED, &job))
}

/// An export's status.
///
/// `Retry-After` is sent while the export is unfinished. Needs Orders.Read.
#[utoipa::path(
    get,
    path = "/api/exports/{id}",
    operation_id = "getExport",
    tag = "exports",
    params(("id" = String, Path, description = "Export id: x_ and 32 hex digits.", min_length = 34, max_length = 34, pattern = "^x_[0-9a-f]{32}$")),
    responses(
        (status = 200, description = "The export.", body = ExportResource,
            headers(("Retry-After" = u64, description = "While unfinished: seconds to wait before polling again."))),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 406, response = NotAcceptable),
        (status = 404, response = NotFound),
        (status = 429, response = TooManyRequests),
        (status = 500, response = InternalServerError),
        (status = 502, response = BadGateway),
        (status = 503, response = ServiceUnavailable),
        (status = 504, response = GatewayTimeout),
    )
)]
pub async fn get_export(
    _: AcceptsJson,
    Reader(caller): Reader,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load(&state, &caller, &id).await?;
    Ok(job_response(StatusCode::OK, &job))
}

/// Download a finished export.
///
/// A redirect (302) to where the file is now: a short-lived, read-only link. 409 while the
/// export is unfinished (with Retry-After) or after it failed. Needs Orders.Read.
#[utoipa::path(
    get,
    path = "/api/exports/{id}/download",
    operation_id = "downloadExport",
    tag = "exports",
    params(("id" = String, Path, description = "Export id: x_ and 32 hex digits.", min_length = 34, max_length = 34, pattern = "^x_[0-9a-f]{32}$")),
    responses(
        (status = 302, description = "The file is at `Location` (a short-lived, read-only link).",
            headers(("Location" = String, description = "Where to read the file."))),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 429, response = TooManyRequests),
        (status = 500, response = InternalServerError),
        (status = 502, response = BadGateway),
        (status = 503, response = ServiceUnavailable),
        (status = 504, response = GatewayTimeout),
    )
)]
pub async fn download_export(
    Reader(caller): Reader,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load(&state, &caller, &id).await?;
    match job.status {
        ExportStatus::Succeeded => {}
        ExportStatus::Failed => {
            return Err(ApiError::conflict(
                "The export failed and has no file; start a new export.",
            ));
        }
        ExportStatus::NotStarted | ExportStatus::Running => {
            return Err(ApiError::conflict("The export has not finished yet.")
                .with_retry_after(POLL_AFTER_SECS));
        }
    }
    let location = match state
        .exports
        .jobs
        .file_location(&job)
        .await
        .map_err(ApiError::from)?
    {
        FileLocation::Url(url) => url,
        FileLocation::Handler => format!("/api/exports/{}/file", job.id),
    };
    let location = HeaderValue::from_str(&location)
        .map_err(|e| ApiError::internal(format!("file location is not a header value: {e}")))?;
    let mut response = StatusCode::FOUND.into_response();
    response.headers_mut().insert(header::LOCATION, location);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The file itself, when the handler holds it (in-memory store).
async fn read_export_file(
    Reader(caller): Reader,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = load(&state, &caller, &id).await?;
    let content = match job.status {
        ExportStatus::Succeeded => state
            .exports
            .jobs
            .read_file(&job)
            .await
            .map_err(ApiError::from)?,
        _ => None,
    };
    let Some(content) = content else {
        return Err(ApiError::not_found(format!(
            "Export '{}' has no file here.",
            job.id
        )));
    };
    let mut response = Response::new(Body::from(content));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(job.format.media_type()),
    );
    if let Ok(disposition) =
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", job.file_name()))
    {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The caller's export, or 404 — also when it belongs to someone else.
async fn load(state: &AppState, caller: &Caller, id: &str) -> Result<ExportJob, ApiError> {
    let not_found = || {
        let shown: String = id.chars().take(64).collect();
        ApiError::not_found(format!("Export '{shown}' was not found."))
    };
    let Some(export_id) = ExportId::parse(id) else {
        return Err(not_found());
    };
    state
        .exports
        .jobs
        .get_job(&caller.owner, &export_id)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(not_found)
}
