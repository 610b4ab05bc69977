//! One HTTP client for the account's three services: signs every attempt, retries transient
//! failures with backoff inside one deadline per call, records a dependency span, and turns
//! transport failures into [`StoreError`]s. Callers interpret the statuses they expect.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use tokio::time::Instant;
use tracing::Instrument;

use super::identity::TokenSource;
use super::signing;
use crate::config::storage::{Credential, StorageAccount};
use crate::store::StoreError;
use crate::telemetry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Table,
    Queue,
    Blob,
}

impl Service {
    fn dependency_type(self) -> &'static str {
        match self {
            Self::Table => "Azure table",
            Self::Queue => "Azure queue",
            Self::Blob => "Azure blob",
        }
    }

    fn version(self) -> &'static str {
        match self {
            Self::Table => "2019-02-02",
            Self::Queue | Self::Blob => "2021-12-02",
        }
    }
}

/// Timing of calls: the deadline covers every attempt of one call, backoff included.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub deadline: Duration,
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(10),
            max_attempts: 4,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// One request to send.
pub struct Call {
    pub service: Service,
    /// Operation name for telemetry, e.g. `InsertEntity`.
    pub operation: &'static str,
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl Call {
    pub fn new(service: Service, operation: &'static str, method: Method, url: Url) -> Self {
        Self {
            service,
            operation,
            method,
            url,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.push((HeaderName::from_static(name), value));
        }
        self
    }

    pub fn body(mut self, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        self.headers.push((
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        ));
        self.body = body.into();
        self
    }
}

/// What the service answered.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// An earlier attempt of this call failed in a way that does not prove it had no effect
    /// (its reply was lost or was a 5xx): a conflict now may be with that attempt's own write.
    pub retried: bool,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The storage error code (`x-ms-error-code`, else from a JSON or XML error body).
    pub fn error_code(&self) -> String {
        if let Some(code) = self.header("x-ms-error-code") {
            return code.to_owned();
        }
        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&self.body)
            && let Some(code) = json["odata.error"]["code"].as_str()
        {
            return code.to_owned();
        }
        let text = String::from_utf8_lossy(&self.body);
        super::xml::first(&text, "Code").unwrap_or_default()
    }

    /// A status the caller did not expect: the dependency answered with something unusable.
    pub fn unexpected(&self, operation: &str) -> StoreError {
        StoreError::BadResponse(format!(
            "{operation}: unexpected {} {}",
            self.status.as_u16(),
            self.error_code()
        ))
    }
}

pub struct StorageClient {
    http: reqwest::Client,
    pub account: StorageAccount,
    tokens: Option<Arc<dyn TokenSource>>,
    pub timing: Timing,
}

impl StorageClient {
    pub fn new(
        account: StorageAccount,
        tokens: Option<Arc<dyn TokenSource>>,
        timing: Timing,
    ) -> Result<Self, String> {
        if matches!(account.credential, Credential::ManagedIdentity { .. }) && tokens.is_none() {
            return Err("an identity-based connection needs a token source".to_owned());
        }
        let http = reqwest::Client::builder()
            .connect_timeout(timing.deadline.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build the storage HTTP client: {e}"))?;
        Ok(Self {
            http,
            account,
            tokens,
            timing,
        })
    }

    /// The base URL of `service` with `path` segments appended (already percent-safe).
    pub fn url(&self, service: Service, path: &str) -> Result<Url, StoreError> {
        let base = match service {
            Service::Table => &self.account.endpoints.table,
            Service::Queue => &self.account.endpoints.queue,
            Service::Blob => &self.account.endpoints.blob,
        };
        let mut text = base.as_str().trim_end_matches('/').to_owned();
        text.push('/');
        text.push_str(path.trim_start_matches('/'));
        Url::parse(&text).map_err(|e| StoreError::BadResponse(format!("bad storage URL: {e}")))
    }

    pub fn account_key(&self) -> Option<&[u8]> {
        match &self.account.credential {
            Credential::SharedKey(key) => Some(key),
            Credential::ManagedIdentity { .. } => None,
        }
    }

    /// Sends `call`, retrying 408, 429, 5xx, connection failures and attempt timeouts with
    /// exponential backoff until it succeeds, attempts run out, or the deadline passes.
    pub async fn send(&self, call: Call) -> Result<Reply, StoreError> {
        let host = call.url.host_str().unwrap_or_default().to_owned();
        let span =
            telemetry::dependency_span(call.service.dependency_type(), &host, call.operation);
        let result = self.send_with_retries(&call).instrument(span.clone()).await;
        match &result {
            Ok(reply) => telemetry::record_dependency_result(
                &span,
                Some(reply.status.as_u16()),
                reply.status.is_success() || matches!(reply.status.as_u16(), 404 | 409 | 412),
            ),
            Err(_) => telemetry::record_dependency_result(&span, None, false),
        }
        result
    }

    async fn send_with_retries(&self, call: &Call) -> Result<Reply, StoreError> {
        let started = Instant::now();
        let deadline = started + self.timing.deadline;
        let mut backoff = self.timing.first_backoff;
        let mut attempt = 1;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(timeout(call, started));
            }
            let failure = match tokio::time::timeout(remaining, self.attempt(call)).await {
                Err(_) => return Err(timeout(call, started)),
                Ok(Ok(reply)) if !is_transient(reply.status) => {
                    return Ok(Reply {
                        retried: attempt > 1,
                        ..reply
                    });
                }
                Ok(Ok(reply)) => status_failure(call, &reply),
                Ok(Err(error)) => error,
            };
            // Full jitter keeps many instances from retrying in step.
            let pause = backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0);
            let out_of_time = Instant::now() + pause >= deadline;
            if attempt >= self.timing.max_attempts || out_of_time {
                return Err(failure);
            }
            tracing::debug!(attempt, error = %failure, "storage call failed; retrying");
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(self.timing.max_backoff);
            attempt += 1;
        }
    }

    async fn attempt(&self, call: &Call) -> Result<Reply, StoreError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &call.headers {
            headers.insert(name.clone(), value.clone());
        }
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        if let Ok(date) = HeaderValue::from_str(&date) {
            headers.insert("x-ms-date", date);
        }
        headers.insert(
            "x-ms-version",
            HeaderValue::from_static(call.service.version()),
        );
        headers.insert(
            reqwest::header::CONTENT_LENGTH,
            HeaderValue::from(call.body.len()),
        );
        let authorization = match &self.account.credential {
            Credential::SharedKey(key) => {
                let text = match call.service {
                    Service::Table => signing::table_string_to_sign(
                        call.method.as_str(),
                        &headers,
                        &call.url,
                        &self.account.name,
                    ),
                    Service::Queue | Service::Blob => signing::blob_queue_string_to_sign(
                        call.method.as_str(),
                        &headers,
                        &call.url,
                        &self.account.name,
                    ),
                };
                format!(
                    "SharedKey {}:{}",
                    self.account.name,
                    signing::sign(key, &text)
                )
            }
            Credential::ManagedIdentity { .. } => {
                let Some(tokens) = &self.tokens else {
                    return Err(StoreError::Unavailable("no token source".to_owned()));
                };
                format!("Bearer {}", tokens.token().await?)
            }
        };
        if let Ok(value) = HeaderValue::from_str(&authorization) {
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let response = self
            .http
            .request(call.method.clone(), call.url.clone())
            .headers(headers)
            .body(call.body.clone())
            .send()
            .await
            .map_err(|e| transport_failure(call, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_failure(call, &e))?;
        Ok(Reply {
            status,
            headers,
            body,
            retried: false,
        })
    }
}

fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500..=599)
}

/// The error for a transient status that was not retried away: busy or down is unavailable,
/// storage's own timeout is a timeout, any other 5xx is an unusable answer.
fn status_failure(call: &Call, reply: &Reply) -> StoreError {
    let what = format!(
        "{} answered {} {}",
        call.operation,
        reply.status.as_u16(),
        reply.error_code()
    );
    match reply.status.as_u16() {
        429 | 503 => StoreError::Unavailable(what),
        408 | 504 => StoreError::Timeout(what),
        _ => StoreError::BadResponse(what),
    }
}

fn transport_failure(call: &Call, error: &reqwest::Error) -> StoreError {
    let what = format!("{}: {}", call.operation, error_chain(error));
    if error.is_timeout() {
        StoreError::Timeout(what)
    } else if error.is_decode() {
        StoreError::BadResponse(what)
    } else {
        // Refused, reset or unresolvable: the service cannot be reached now.
        StoreError::Unavailable(what)
    }
}

fn timeout(call: &Call, started: Instant) -> StoreError {
    StoreError::Timeout(format!(
        "{} did not complete within its deadline ({} ms)",
        call.operation,
        started.elapsed().as_millis()
    ))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
