//! The application: shared state, the router with its OpenAPI document, and the server loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::store::OrderStore;
use crate::store::memory::MemoryStore;

/// State every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn OrderStore>,
}

impl AppState {
    /// The state for `config`, with the in-memory store.
    pub fn in_memory(config: Config) -> Self {
        Self {
            config: Arc::new(config),
            store: Arc::new(MemoryStore::new()),
        }
    }
}

/// The complete service: routes plus the middleware stack.
pub fn router(state: AppState) -> Router {
    let config = Arc::clone(&state.config);
    let (routes, _openapi) = crate::routes::split(&config);
    crate::http::apply_stack(routes.with_state(state), &config)
}

/// Serves until `shutdown` completes, then lets in-flight requests finish for at most
/// `grace` before returning.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        let _ = signalled.send(());
    });
    let grace_expired = async move {
        if on_signal.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = server.into_future() => result,
        () = grace_expired => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "grace period over: closing remaining connections");
            Ok(())
        }
    }
}
