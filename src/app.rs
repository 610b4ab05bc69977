//! The application: the routes under their middleware stack, the background export poller, and
//! the server loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::config::Config;
use crate::state::AppState;

/// The complete service: routes (with the OpenAPI document that describes them) plus the
/// middleware stack.
pub fn router(state: AppState) -> Router {
    let config = Arc::clone(&state.config);
    let routes = crate::routes::router(&config);
    let auth = state.auth.clone();
    let limits = state.rate_limits.clone();
    crate::http::apply_stack(routes.with_state(state), &config, auth, limits)
}

/// Keeps processing export jobs in the background unless the Functions host does it (see
/// [`crate::worker::start_background`]).
pub fn start_worker(state: &AppState) -> Option<tokio::task::JoinHandle<()>> {
    crate::worker::start_background(
        &state.config.storage,
        state.config.under_functions_host,
        Arc::clone(&state.store),
        state.exports.clone(),
    )
}

/// How the server treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// After shutdown starts, how long in-flight requests may still finish.
    pub grace: Duration,
    /// Time allowed to receive a request's headers; also closes idle keep-alive connections,
    /// since waiting for the next request is waiting for its headers.
    pub header_timeout: Duration,
}

impl From<&Config> for ServeOptions {
    fn from(config: &Config) -> Self {
        Self {
            grace: config.shutdown_grace,
            header_timeout: config.header_timeout,
        }
    }
}

impl From<Duration> for ServeOptions {
    fn from(grace: Duration) -> Self {
        Self {
            grace,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves until `shutdown` completes, then lets in-flight requests finish for at most the grace
/// period before returning.
///
/// The accept loop is written out (rather than `axum::serve`) to give hyper a timer, without
/// which it enforces no header read timeout: a client trickling its headers, or holding an idle
/// keep-alive connection, would keep a connection open forever.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    options: impl Into<ServeOptions>,
) -> std::io::Result<()> {
    let options = options.into();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        // Headers up to 16 KiB are checked (and answered with a rendered 431) by the middleware;
        // this larger buffer only bounds what a client can make the server hold at all.
        .max_buf_size(64 * 1024)
        // hyper's default of 100 fields would answer 431 without a body for a request of a
        // kilobyte; this many cannot fit in the 16 KiB the middleware answers for.
        .max_headers(crate::http::MAX_HEADER_COUNT);
    // Every connection task holds a receiver: it is told when shutdown starts, and the sender
    // sees all receivers gone once the last connection has finished.
    let (stopping, stop_signal) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(error) => {
                    // Per-connection failures (reset before accept, out of descriptors) must
                    // not stop the server; pause briefly so a persistent one cannot spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut stop_signal = stop_signal.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = async { drop(stop_signal.wait_for(|stop| *stop).await) } => {
                    // Finish the request in flight, then close instead of keeping alive.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(stop_signal);
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    let _ = stopping.send(true);
    tokio::select! {
        () = stopping.closed() => {}
        () = tokio::time::sleep(options.grace) => {
            tracing::warn!(grace_ms = options.grace.as_millis() as u64, "grace period over: closing remaining connections");
        }
    }
    Ok(())
}
