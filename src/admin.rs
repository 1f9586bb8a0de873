//! The admin listener, beside the pipeline rather than in it: `/healthz` (the
//! process is up), `/readyz` (the daemon's work progresses and the store answers;
//! see [`crate::health`]) and `/metrics` (Prometheus
//! text, rendered from the counters the stages record with the `metrics`
//! macros). Served only when `admin.listen` is set; bind it to loopback.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::health::Health;
use crate::store::Store;

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                warn!(error = %e, "metrics recorder not installed");
                None
            }
        })
        .clone()
}

#[derive(Clone)]
struct AdminState {
    store: Arc<dyn Store>,
    health: Arc<Health>,
    metrics: Option<PrometheusHandle>,
}

/// Binds `listen` and serves until `cancel`. Returns the bound address.
pub async fn serve(
    listen: &str,
    store: Arc<dyn Store>,
    health: Arc<Health>,
    cancel: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let state = AdminState {
        store,
        health,
        metrics: metrics_handle(),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("admin.listen {listen:?}: {e}"))?;
    let addr = listener.local_addr()?;
    info!(%addr, "admin listener up");
    tokio::spawn(async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            warn!(error = %e, "admin listener stopped");
        }
    });
    Ok(addr)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if let Some(why) = state.health.stuck() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("stuck: {why}\n"));
    }
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store unavailable: {e}\n"),
        ),
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    match &state.metrics {
        Some(h) => (StatusCode::OK, h.render()),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable\n".into(),
        ),
    }
}
