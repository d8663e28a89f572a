//! The anchor's HTTP port: `/metrics` (Prometheus text), `/healthz`, `/readyz`.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::{Anchor, AnchorError};

/// Binds `addr` and serves in the background until `stop` turns true; returns the bound
/// address.
pub async fn serve(
    anchor: Anchor,
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
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(anchor);
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

async fn metrics(State(anchor): State<Anchor>) -> String {
    anchor.refresh_gauges();
    anchor.metrics().render()
}

async fn ready(State(anchor): State<Anchor>) -> (StatusCode, &'static str) {
    if anchor.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "a hosted scope has no leader\n",
        )
    }
}
