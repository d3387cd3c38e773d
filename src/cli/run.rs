//! `bansync run` and `bansync sync`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::error::{CliError, CliResult};
use super::{load_settings, runtime};
use crate::config;
use crate::daemon::{self, DaemonControl, Grace};
use crate::delivery::Dispatcher;
use crate::metrics::Metrics;
use crate::propagate::Propagator;
use crate::source::SourceSpec;
use crate::store::Store;
use crate::sync::Syncer;
use crate::sync::expiry::ExpiryTimer;
use crate::tencent::{RetryPolicy, TencentClient};

pub fn run(config_path: &Option<PathBuf>) -> CliResult {
    let settings = load_settings(config_path)?;
    crate::logging::init(settings.log_format, &settings.log_level);
    let rt = runtime();
    rt.block_on(async move {
        let listener = match settings.http_listen {
            Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!(%addr, error = %e, "cannot listen on http.listen");
                    return Err(CliError::Reported);
                }
            },
            None => None,
        };
        let (stop_tx, stop) = watch::channel(false);
        let (reload_tx, reload) = mpsc::unbounded_channel();
        let path = settings.path.clone();
        let mut signals = signal_hook_tokio::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGHUP,
        ])
        .map_err(|e| {
            tracing::error!(error = %e, "cannot install signal handlers");
            CliError::Reported
        })?;
        tokio::spawn(async move {
            let mut stopping = false;
            while let Some(sig) = signals.next().await {
                match sig {
                    signal_hook::consts::SIGHUP => {
                        let _ = sd_notify::notify(&[
                            sd_notify::NotifyState::Reloading,
                            sd_notify::NotifyState::monotonic_usec_now().unwrap_or(sd_notify::NotifyState::Ready),
                        ]);
                        match config::load(&path) {
                            Ok(next) => {
                                tracing::info!(config = %path.display(), "SIGHUP: configuration validated; applying");
                                let _ = reload_tx.send(next);
                            }
                            Err(e) => {
                                tracing::error!(config = %path.display(), error = %e,
                                    "SIGHUP: the new configuration is invalid; keeping the running one");
                            }
                        }
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                    }
                    _ if stopping => {
                        eprintln!("bansync: second signal; exiting at once");
                        std::process::exit(1);
                    }
                    _ => {
                        stopping = true;
                        tracing::info!(signal = sig, "stop requested; a second signal exits at once");
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                        let _ = stop_tx.send(true);
                    }
                }
            }
        });
        let control = DaemonControl {
            stop,
            reload,
            on_ready: Box::new(|| {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            }),
            clock: crate::clock::Clock::system(),
        };
        match daemon::run(settings, listener, control, RetryPolicy::default(), Grace::default()).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "bansync stopped with an error");
                Err(CliError::Reported)
            }
        }
    })
}

pub fn sync(config_path: &Option<PathBuf>, only: Vec<SourceSpec>, dry_run: bool) -> CliResult {
    let settings = load_settings(config_path)?;
    for s in &only {
        if !settings.sources.contains(s) {
            return Err(CliError::Usage(format!(
                "--source {s}: not a configured source (see `bansync check-config`)"
            )));
        }
    }
    let sources = if only.is_empty() {
        settings.sources.clone()
    } else {
        only
    };
    let terminal = std::io::stderr().is_terminal();
    // Log lines would tear the progress bar: on a terminal, warnings only.
    let level = if terminal {
        "warn"
    } else {
        settings.log_level.as_str()
    };
    crate::logging::init(settings.log_format, level);
    runtime().block_on(async move {
        let metrics = Arc::new(Metrics::new());
        let (notice_tx, notice_rx) = mpsc::unbounded_channel();
        let store = Store::open(&settings.store_path, daemon::emit_config(&settings), Some(notice_tx))
            .map_err(CliError::failed)?;
        let client = Arc::new(TencentClient::new(settings.tencent.clone(), metrics.clone()));
        let clock = crate::clock::Clock::system();
        let syncer = Syncer::new(client.clone(), store.clone(), metrics.clone(), &settings.sync, clock.clone());
        let bar = if terminal {
            let b = indicatif::ProgressBar::new(sources.len() as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} sources [{bar:30}] {elapsed} {msg}")
                    .unwrap()
                    .progress_chars("=> "),
            );
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let started = std::time::Instant::now();
        let results: Vec<_> = futures::stream::iter(crate::sync::interleave_by_kind(&sources))
            .map(|spec| {
                let syncer = syncer.clone();
                async move { syncer.sync_source(&spec, dry_run, &mut |_| {}).await.map_err(|e| (spec, e)) }
            })
            .buffer_unordered(settings.sync.max_concurrent_walks)
            .inspect(|r| {
                bar.inc(1);
                if let Ok(r) = r {
                    bar.set_message(r.spec.to_string());
                }
            })
            .collect()
            .await;
        bar.finish_and_clear();
        if let Err(e) = syncer.flush_touches().await {
            eprintln!("bansync: {e}");
        }
        let (mut complete, mut failed, mut unavailable, mut entries, mut events) = (0, 0, 0, 0i64, 0usize);
        for r in &results {
            match r {
                Ok(r) if r.failed() => {
                    failed += 1;
                    eprintln!("bansync: {}: {}", r.spec, r.error.as_ref().map(|e| e.to_string()).unwrap_or_default());
                }
                Ok(r) => {
                    if r.error.is_some() {
                        unavailable += 1;
                    } else {
                        complete += 1;
                    }
                    entries += r.report.entries;
                    events += r.report.changes.len();
                    if dry_run {
                        for c in &r.report.changes {
                            println!(
                                "would emit {} {} {}{}",
                                c.kind.as_str(),
                                r.spec,
                                c.account.as_deref().unwrap_or("-"),
                                c.value.map(|v| format!(" value={v}")).unwrap_or_default()
                            );
                        }
                        for (action, account, target, until) in &r.report.mirrors {
                            let until = until.map(|u| format!(" until {u}")).unwrap_or_default();
                            println!("would {action} {account} in {target}{until} (mirrored from {})", r.spec);
                        }
                    }
                }
                Err((spec, e)) => {
                    failed += 1;
                    eprintln!("bansync: {spec}: {e}");
                }
            }
        }
        let mut delivered_note = String::new();
        if !dry_run {
            let expiry = ExpiryTimer { store: store.clone(), metrics: metrics.clone(), clock: clock.clone() };
            if let Ok(n) = expiry.try_execute().await {
                events += n;
            }
            let propagator = Propagator { store: store.clone(), client: client.into(), metrics: metrics.clone(), clock: clock.clone() };
            if let Err(e) = propagator.try_execute().await {
                eprintln!("bansync: propagation: {e}");
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let (ptx, _p) = mpsc::unbounded_channel();
            let (etx, _e) = mpsc::unbounded_channel();
            crate::delivery::dispatcher::route_notices(notice_rx, tx, ptx, etx);
            let dispatcher = Dispatcher::new(store.clone(), settings.webhooks.clone(), metrics.clone(), clock.clone());
            dispatcher.drain(rx, Duration::from_secs(120)).await;
            let names: Vec<String> = settings.webhooks.iter().map(|w| w.name.clone()).collect();
            if let Ok(conn) = crate::store::Direct::open(&settings.store_path)
                && let Ok(hooks) = conn.webhooks(&names)
            {
                let owed: i64 = hooks.iter().map(|h| h.pending).sum();
                let dead: i64 = hooks.iter().map(|h| h.dead).sum();
                delivered_note = format!(", {owed} deliveries still owed, {dead} dead");
            }
        }
        println!(
            "sync{}: {} sources ({complete} complete, {unavailable} unavailable, {failed} failed), {entries} entries, {events} events{delivered_note} in {:.1}s",
            if dry_run { " (dry run: nothing stored)" } else { "" },
            results.len(),
            started.elapsed().as_secs_f64()
        );
        drop(store);
        if failed > 0 { Err(CliError::Reported) } else { Ok(()) }
    })
}
