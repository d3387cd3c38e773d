//! The operator's HTTP endpoints: `/healthz` (the process answers),
//! `/readyz` (started and serving), `/metrics` (Prometheus text format).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    pub store_path: Arc<std::path::PathBuf>,
    pub webhook_names: Arc<std::sync::RwLock<Vec<String>>>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    let names = s.webhook_names.read().unwrap().clone();
    let path = s.store_path.clone();
    // Gauges come from a read-only connection of their own, off the runtime.
    let gauges = tokio::task::spawn_blocking(move || {
        crate::store::Direct::open_read_only(&path)?
            .gauges(&names, crate::clock::Clock::system().now_ms())
    })
    .await;
    let gauges = match gauges {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: cannot read the store");
            Default::default()
        }
        Err(_) => Default::default(),
    };
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(&gauges),
    )
}
