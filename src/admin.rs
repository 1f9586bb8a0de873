//! The admin listener, beside the pipeline rather than in it: `/healthz` (the
//! process is up), `/readyz` (the daemon's work progresses and the store answers;
//! see [`crate::health`]) and `/metrics` (Prometheus text: the counters, histograms
//! and gauges the stages record with the `metrics` macros, and the outbox and
//! source gauges read from the store at each scrape). Served only when
//! `admin.listen` is set; bind it to loopback.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::Utc;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::health::Health;
use crate::store::{Store, StoreGauges};

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match recorder().install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                warn!(error = %e, "metrics recorder not installed");
                None
            }
        })
        .clone()
}

/// Buckets of the latency histograms, in seconds: a loopback fetch takes
/// milliseconds, a slow site or receiver tens of seconds, a delivery that waited for
/// retries hours.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0,
];

fn recorder() -> PrometheusBuilder {
    let builder = PrometheusBuilder::new();
    match builder.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS) {
        Ok(builder) => builder,
        // Only an empty bucket list is refused; the list above is not empty.
        Err(e) => {
            warn!(error = %e, "histogram buckets not set; latencies are summaries");
            PrometheusBuilder::new()
        }
    }
}

/// How long a scrape waits for the store's figures before it serves without them.
const STORE_GAUGES_TIMEOUT: Duration = Duration::from_secs(2);

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
    match tokio::time::timeout(STORE_GAUGES_TIMEOUT, state.store.gauges()).await {
        Ok(Ok(gauges)) => record_store_gauges(&gauges),
        Ok(Err(e)) => debug!(error = %e, "store gauges not read for /metrics"),
        Err(_) => debug!("store gauges not read for /metrics: the store took over 2 s"),
    }
    match &state.metrics {
        Some(h) => (StatusCode::OK, h.render()),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable\n".into(),
        ),
    }
}

/// Sets the gauges read from the store. Every status and state is set, those with
/// no rows to 0, so a series falls to 0 rather than keeping its last value.
fn record_store_gauges(gauges: &StoreGauges) {
    let count = |rows: &[(String, i64)], key: &str| {
        rows.iter()
            .find(|(k, _)| k == key)
            .map_or(0.0, |(_, n)| *n as f64)
    };
    for status in ["pending", "delivered", "dead"] {
        metrics::gauge!("feedwatch_outbox_deliveries", "status" => status)
            .set(count(&gauges.deliveries, status));
    }
    let age = gauges.oldest_pending.map_or(0.0, |t| {
        (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
    });
    metrics::gauge!("feedwatch_outbox_oldest_pending_age_seconds").set(age);
    for state in ["active", "blocked", "gone", "disabled"] {
        metrics::gauge!("feedwatch_sources", "state" => state).set(count(&gauges.sources, state));
    }
    metrics::gauge!("feedwatch_sources_failing").set(gauges.sources_failing as f64);
}
