//! One GET of a discovery document or key set, bounded in size, as a Dependency in telemetry.

use tracing::Instrument;

use super::FetchError;

/// Largest discovery document or key set read. Entra ID's key set is about 10 KiB.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// One GET, as a Dependency in telemetry, with the body read up to [`MAX_DOCUMENT_BYTES`].
pub(super) async fn get(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, FetchError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| FetchError::BadResponse(format!("'{url}' is not a URL: {e}")))?;
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let target = format!("{host}{}", parsed.path());
    let span = crate::telemetry::dependency_span("HTTP", &host, &format!("GET {}", parsed.path()));
    let result = async {
        let mut response = client
            .get(parsed)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| (None, transport_error(&target, e)))?;
        let status = response.status();
        let fail = |error| Err((Some(status.as_u16()), error));
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::SERVICE_UNAVAILABLE
        {
            return fail(FetchError::Unreachable(format!(
                "GET {target} answered {status}"
            )));
        }
        if !status.is_success() {
            return fail(FetchError::BadResponse(format!(
                "GET {target} answered {status}"
            )));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_DOCUMENT_BYTES as u64)
        {
            return fail(FetchError::BadResponse(format!(
                "GET {target}: document too large"
            )));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                        return fail(FetchError::BadResponse(format!(
                            "GET {target}: document too large"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok((status.as_u16(), body)),
                Err(e) => return fail(transport_error(&target, e)),
            }
        }
    }
    .instrument(span.clone())
    .await;
    match result {
        Ok((status, body)) => {
            crate::telemetry::record_dependency_result(&span, Some(status), true);
            Ok(body)
        }
        Err((status, error)) => {
            crate::telemetry::record_dependency_result(&span, status, false);
            Err(error)
        }
    }
}

/// No connection (refused, reset, DNS, or not made in time) is "unreachable"; a connection
/// that then gave no answer in time is a timeout.
fn transport_error(target: &str, error: reqwest::Error) -> FetchError {
    let timeout = error.is_timeout() && !error.is_connect();
    let detail = format!("GET {target}: {}", error_chain(&error.without_url()));
    if timeout {
        FetchError::Timeout(detail)
    } else {
        FetchError::Unreachable(detail)
    }
}

/// "outer: inner: root cause": reqwest's own message rarely says what went wrong.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
