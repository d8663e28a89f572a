//! The anchor's HTTP port: `/metrics` (Prometheus text), `/healthz`, `/readyz`.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::AnchorError;

/// What the HTTP port shows of a running anchor.
pub trait Probe: Clone + Send + Sync + 'static {
    /// The metrics in Prometheus text, gauges refreshed first.
    fn metrics_text(&self) -> String;

    /// Whether the anchor is ready to serve (every hosted scope knows its leader).
    fn ready(&self) -> bool;
}

/// Binds `addr` and serves in the background until `stop` turns true; returns the bound
/// address.
pub async fn serve<P: Probe>(
    probe: P,
    addr: SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<SocketAddr, AnchorError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AnchorError::Io {
            path: format!("http {addr}"),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| AnchorError::Io {
        path: format!("http {addr}"),
        source,
    })?;
    let app = Router::new()
        .route("/metrics", get(metrics::<P>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready::<P>))
        .with_state(probe);
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    Ok(bound)
}

async fn metrics<P: Probe>(State(probe): State<P>) -> String {
    probe.metrics_text()
}

async fn ready<P: Probe>(State(probe): State<P>) -> (StatusCode, &'static str) {
    if probe.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "a hosted scope has no leader\n",
        )
    }
}
