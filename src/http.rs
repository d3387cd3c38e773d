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
    let mut gauges = match gauges {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: cannot read the store");
            Default::default()
        }
        Err(_) => Default::default(),
    };
    gauges.process = process_figures();
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(&gauges),
    )
}

/// The process's CPU, memory and descriptors, from `getrusage` and
/// `/proc/self` (Linux); `None` where they cannot be read.
pub fn process_figures() -> Option<crate::metrics::ProcessFigures> {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct it is given and nothing else.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(crate::metrics::ProcessFigures {
        cpu_seconds: secs(usage.ru_utime) + secs(usage.ru_stime),
        resident_bytes: rss_kib * 1024,
        open_fds,
        max_fds,
        start_time_seconds: *START_TIME,
    })
}

/// Takes the process's start time now (the daemon calls it as it starts).
pub fn note_start() {
    std::sync::LazyLock::force(&START_TIME);
}

/// When the process started (Unix seconds), taken the first time asked.
static START_TIME: std::sync::LazyLock<f64> =
    std::sync::LazyLock::new(|| crate::clock::Clock::system().now_ms() as f64 / 1000.0);

/// Connections served at once; more are closed at once (a scraper needs
/// one, a health check another).
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// No connection lives longer than this.
pub const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves `app` on `listener` until `stop`: HTTP/1.1, headers read within
/// [`HEADER_READ_TIMEOUT`], at most [`MAX_CONNECTIONS`] connections, none
/// longer than [`CONNECTION_LIFETIME`], so idle or slow clients cannot
/// starve the endpoints (or the process of file descriptors).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    serve_capped(listener, app, stop, MAX_CONNECTIONS).await
}

/// [`serve`] with its own connection cap (the callback listener takes the
/// vendor's bursts, so it allows more than the operator's endpoints).
pub async fn serve_capped(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
    max_connections: usize,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let permits = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let sock = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((sock, _)) => sock,
                Err(e) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "http: cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(sock); // over the cap: closed at once
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = http.serve_connection(TokioIo::new(sock), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
    }
}
