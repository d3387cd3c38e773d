//! `bansync run`: every part of the daemon started together, reloaded
//! together, and stopped in order. Tests start it whole on port 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::callback::{CallbackPlan, Worker};
use crate::clock::Clock;
use crate::config::Settings;
use crate::delivery::{Control, Dispatcher};
use crate::metrics::Metrics;
use crate::propagate::Propagator;
use crate::source::SourceSpec;
use crate::store::{EmitConfig, Store, StoreError};
use crate::sync::Syncer;
use crate::sync::discovery::{Discovery, DiscoveryPlan};
use crate::sync::expiry::ExpiryTimer;
use crate::sync::retention::Retention;
use crate::sync::scheduler::{Plan, Scheduler};
use crate::tencent::{RetryPolicy, SharedClient, TencentClient};

/// How the outside steers a running daemon.
pub struct DaemonControl {
    /// Set to true to stop.
    pub stop: watch::Receiver<bool>,
    /// Validated configurations to switch to.
    pub reload: mpsc::UnboundedReceiver<Settings>,
    /// Called once everything is up (systemd's READY=1).
    pub on_ready: Box<dyn FnOnce() + Send>,
    /// The wall clock every part reads (tests step it).
    pub clock: Clock,
}

/// How long walks and deliveries in flight may take to finish on stop.
#[derive(Debug, Clone, Copy)]
pub struct Grace {
    pub walks: Duration,
    pub deliveries: Duration,
}

impl Default for Grace {
    fn default() -> Self {
        Grace {
            walks: Duration::from_secs(20),
            deliveries: Duration::from_secs(10),
        }
    }
}

pub fn emit_config(s: &Settings) -> EmitConfig {
    EmitConfig {
        app: s.tencent.sdkappid,
        webhooks: s.webhooks.clone(),
        propagate: s.propagate.clone(),
    }
}

fn plan(s: &Settings, syncer: Syncer, found: Vec<SourceSpec>) -> Plan {
    Plan {
        syncer,
        mode: s.sync.mode,
        found,
        sources: s.sources.clone(),
        schedule: s.sync.schedule.clone(),
        confirm_delay: s.sync.confirm_delay,
        max_concurrent_walks: s.sync.max_concurrent_walks,
        found_filter: s.found_filter(),
    }
}

fn sync_interval(s: &Settings) -> Option<Duration> {
    match &s.sync.schedule {
        crate::config::Schedule::Interval(d) => Some(*d),
        crate::config::Schedule::Cron(_) => None,
    }
}

fn discovery_plan(s: &Settings) -> DiscoveryPlan {
    DiscoveryPlan {
        settings: s.discovery.clone(),
        configured: s.sources.iter().cloned().collect(),
    }
}

fn callback_plan(s: &Settings) -> Option<CallbackPlan> {
    Some(CallbackPlan {
        app: s.tencent.sdkappid,
        settings: s.callback.clone()?,
        filter: s.found_filter(),
        configured: s.sources.iter().cloned().collect(),
    })
}

/// The callback listener: its task, its own stop, and what it serves.
struct CallbackListener {
    task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
    plan: watch::Sender<CallbackPlan>,
    at: (std::net::SocketAddr, String),
}

/// Context for (re)starting the callback listener.
struct CallbackParts {
    work: crate::callback::WorkSender,
    metrics: Arc<Metrics>,
    clock: Clock,
    stop: watch::Receiver<bool>,
}

/// Starts, moves, updates or stops the callback listener to match `plan`.
/// A new address that cannot be bound keeps the old listener.
async fn apply_callback(
    current: Option<CallbackListener>,
    plan: Option<CallbackPlan>,
    parts: &CallbackParts,
) -> Option<CallbackListener> {
    let Some(plan) = plan else {
        if let Some(c) = current {
            let _ = c.stop.send(true);
            let _ = c.task.await;
            tracing::info!("callback listener stopped");
        }
        return None;
    };
    let at = (plan.settings.listen, plan.settings.path.clone());
    let mut current = current;
    if let Some(c) = &current {
        // The token, app and filters apply at once, whatever else changes.
        let _ = c.plan.send(plan.clone());
        if c.at == at {
            return current;
        }
        // Same address, new path: the old listener must let go first.
        if c.at.0 == at.0 {
            let c = current.take().expect("checked above");
            let _ = c.stop.send(true);
            let _ = c.task.await;
        }
    }
    let listener = match tokio::net::TcpListener::bind(at.0).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %at.0, error = %e, "cannot listen for callbacks; keeping what was");
            return current;
        }
    };
    if let Some(c) = current {
        let _ = c.stop.send(true);
        let _ = c.task.await;
    }
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(listen = %bound, path = %at.1, signed = plan.settings.token.is_some(), "listening for vendor callbacks");
    let (plan_tx, plan_rx) = watch::channel(plan);
    let (stop_tx, own_stop) = watch::channel(false);
    let mut outer = parts.stop.clone();
    let (work, metrics, clock) = (
        parts.work.clone(),
        parts.metrics.clone(),
        parts.clock.clone(),
    );
    let task = tokio::spawn(async move {
        // Stops with the daemon or on its own signal.
        let (merged_tx, merged) = watch::channel(false);
        let mut own = own_stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = outer.wait_for(|s| *s) => {}
                _ = own.wait_for(|s| *s) => {}
            }
            let _ = merged_tx.send(true);
        });
        crate::callback::serve(listener, plan_rx, work, metrics, clock, merged).await
    });
    Some(CallbackListener {
        task,
        stop: stop_tx,
        plan: plan_tx,
        at,
    })
}

/// What the store takes from a configuration, at start-up and on every
/// reload: what events are owed to and mirrored by, webhooks that a 410
/// Gone disabled enabled again, and a row (and `seq`) for every source.
pub async fn configure_store(store: &Store, settings: &Settings) -> Result<(), StoreError> {
    store.set_emit_config(emit_config(settings));
    let names = settings.webhooks.iter().map(|w| w.name.clone()).collect();
    let enabled = store.enable_webhooks(names).await?;
    if enabled > 0 {
        tracing::info!(
            webhooks = enabled,
            "webhooks disabled by 410 Gone are enabled again by this configuration"
        );
    }
    store.register_sources(settings.sources.clone()).await
}

/// Runs the daemon until `control.stop`. `listener` serves `/healthz`,
/// `/readyz` and `/metrics` (bound by the caller, so tests can use port 0).
pub async fn run(
    settings: Settings,
    listener: Option<tokio::net::TcpListener>,
    control: DaemonControl,
    retry: RetryPolicy,
    grace: Grace,
) -> anyhow::Result<()> {
    let DaemonControl {
        stop,
        mut reload,
        on_ready,
        clock,
    } = control;
    let metrics = Arc::new(Metrics::new());
    crate::http::note_start();
    metrics.set_sync_interval(sync_interval(&settings));
    let (notice_tx, notice_rx) = mpsc::unbounded_channel();
    let store = Store::open(
        &settings.store_path,
        emit_config(&settings),
        Some(notice_tx),
    )?;
    for w in settings.warnings() {
        tracing::warn!("{w}");
    }
    configure_store(&store, &settings).await?;
    let names: Vec<String> = settings.webhooks.iter().map(|w| w.name.clone()).collect();

    let ready = Arc::new(AtomicBool::new(false));
    let webhook_names = Arc::new(std::sync::RwLock::new(names));
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(listener) = listener {
        let app = crate::http::router(crate::http::HttpState {
            metrics: metrics.clone(),
            ready: ready.clone(),
            store_path: Arc::new(settings.store_path.clone()),
            webhook_names: webhook_names.clone(),
        });
        tasks.spawn(crate::http::serve(listener, app, stop.clone()));
    }

    let client = Arc::new(TencentClient::with_retry(
        settings.tencent.clone(),
        metrics.clone(),
        retry.clone(),
    ));
    let (delivery_tx, delivery_rx) = mpsc::unbounded_channel();
    let (prop_tx, prop_rx) = mpsc::unbounded_channel();
    let (expiry_tx, expiry_rx) = mpsc::unbounded_channel();
    crate::delivery::dispatcher::route_notices(notice_rx, delivery_tx, prop_tx, expiry_tx);

    let (dispatch_ctl, dispatch_ctl_rx) = mpsc::unbounded_channel();
    let dispatcher = Dispatcher::new(
        store.clone(),
        settings.webhooks.clone(),
        metrics.clone(),
        clock.clone(),
    );
    let dispatch_task =
        tokio::spawn(dispatcher.run(delivery_rx, dispatch_ctl_rx, stop.clone(), grace.deliveries));

    let expiry = ExpiryTimer {
        store: store.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
    };
    tasks.spawn(expiry.run(expiry_rx, stop.clone()));

    let (retention_tx, keep) = watch::channel(settings.retention);
    let retention = Retention {
        store: store.clone(),
        clock: clock.clone(),
        keep,
    };
    tasks.spawn(retention.run(stop.clone()));

    let shared_client = SharedClient::new(client.clone());
    let propagator = Propagator {
        store: store.clone(),
        client: shared_client.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
    };
    let (prop_stop_tx, prop_stop) = watch::channel(false);
    let prop_task = tokio::spawn(propagator.run(prop_rx, prop_stop));

    let syncer = Syncer::new(
        client.clone(),
        store.clone(),
        metrics.clone(),
        &settings.sync,
        clock.clone(),
    );
    let (plan_tx, plan_rx) = mpsc::unbounded_channel();
    let (requests, requests_rx) = mpsc::channel(crate::callback::QUEUE);
    // Sources found before (discovered, enrolled) are remembered.
    let found = found_sources(&store).await;
    let scheduler = Scheduler::new(plan(&settings, syncer, found)).with_metrics(metrics.clone());
    let sched_task = tokio::spawn(scheduler.run(plan_rx, requests_rx, stop.clone(), grace.walks));

    let (discovery_tx, discovery_rx) = watch::channel(discovery_plan(&settings));
    let discovery = Discovery {
        client: shared_client.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
        requests: requests.clone(),
    };
    tasks.spawn(discovery.run(discovery_rx, stop.clone()));

    let (work_tx, work_rx) = crate::callback::queue();
    let first_callback_plan = callback_plan(&settings).unwrap_or_else(|| CallbackPlan {
        app: settings.tencent.sdkappid,
        settings: crate::config::CallbackSettings {
            listen: ([127, 0, 0, 1], 0).into(),
            path: String::new(),
            token: None,
            token_origin: None,
            enrol_blocklists: false,
        },
        filter: settings.found_filter(),
        configured: Default::default(),
    });
    let (worker_plan_tx, worker_plan) = watch::channel(first_callback_plan);
    let worker = Worker::new(
        store.clone(),
        shared_client.clone(),
        requests.clone(),
        metrics.clone(),
        clock.clone(),
    );
    let worker_task = tokio::spawn(worker.run(worker_plan, work_rx));
    let callback_parts = CallbackParts {
        work: work_tx,
        metrics: metrics.clone(),
        clock: clock.clone(),
        stop: stop.clone(),
    };
    let mut callbacks = apply_callback(None, callback_plan(&settings), &callback_parts).await;
    if let Some(c) = &settings.callback
        && callbacks.is_none()
    {
        anyhow::bail!("callback.listen: cannot listen on {}", c.listen);
    }

    ready.store(true, Ordering::Relaxed);
    on_ready();
    tracing::info!(sources = settings.sources.len(), webhooks = settings.webhooks.len(),
        store = %settings.store_path.display(), "bansync running");

    let mut current = settings;
    let mut stop_wait = stop.clone();
    loop {
        tokio::select! {
            _ = async { let _ = stop_wait.wait_for(|s| *s).await; } => break,
            Some(next) = reload.recv() => {
                apply_reload(&current, &next, &shared_client, &store, &metrics, &plan_tx, &dispatch_ctl, &webhook_names, retry.clone(), &clock).await;
                let _ = retention_tx.send(next.retention);
                metrics.set_sync_interval(sync_interval(&next));
                let d = discovery_plan(&next);
                discovery_tx.send_if_modified(|p| if *p != d { *p = d; true } else { false });
                if let Some(p) = callback_plan(&next) {
                    let _ = worker_plan_tx.send(p);
                }
                callbacks = apply_callback(callbacks, callback_plan(&next), &callback_parts).await;
                current = next;
            }
        }
    }
    tracing::info!("stopping: no new walks; finishing walks and deliveries in flight");
    match sched_task.await {
        Ok(Err(e)) => tracing::error!(error = %e, "scheduler stopped with an error"),
        Err(e) => tracing::error!(error = %e, "scheduler task failed"),
        Ok(Ok(())) => {}
    }
    let _ = prop_stop_tx.send(true);
    let _ = prop_task.await;
    if let Some(c) = callbacks.take() {
        let _ = c.stop.send(true);
        let _ = c.task.await;
    }
    drop(callback_parts);
    worker_task.abort();
    let _ = dispatch_task.await;
    tasks.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Every found source the store remembers (the scheduler's filter picks).
async fn found_sources(store: &Store) -> Vec<SourceSpec> {
    match store.found_sources().await {
        Ok(found) => found.into_iter().map(|(s, _)| s).collect(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the found sources");
            Vec::new()
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn apply_reload(
    old: &Settings,
    new: &Settings,
    client: &SharedClient,
    store: &Store,
    metrics: &Arc<Metrics>,
    plans: &mpsc::UnboundedSender<Plan>,
    dispatcher: &mpsc::UnboundedSender<Control>,
    webhook_names: &std::sync::RwLock<Vec<String>>,
    retry: RetryPolicy,
    clock: &Clock,
) {
    if new.store_path != old.store_path {
        tracing::warn!(old = %old.store_path.display(), new = %new.store_path.display(),
            "store.path changed: a restart is needed to move the store; keeping the old one");
    }
    if let Err(e) = configure_store(store, new).await {
        tracing::error!(error = %e, "cannot apply the new configuration to the store; walks will retry");
    }
    let names: Vec<String> = new.webhooks.iter().map(|w| w.name.clone()).collect();
    *webhook_names.write().unwrap() = names;
    let _ = dispatcher.send(Control::Webhooks(new.webhooks.clone()));
    // Only a changed vendor section gets a fresh client (new key, region,
    // rate). Otherwise the client, and with it each API's pacer, carries
    // on: walks still in flight and new ones share one rate limit, where
    // two clients would each pace to the full limit.
    if new.tencent != old.tencent {
        client.replace(Arc::new(TencentClient::with_retry(
            new.tencent.clone(),
            metrics.clone(),
            retry,
        )));
    }
    let syncer = Syncer::new(
        client.get(),
        store.clone(),
        metrics.clone(),
        &new.sync,
        clock.clone(),
    );
    // The plan carries the found sources, so that the new filter and
    // what it picks from arrive together.
    let _ = plans.send(plan(new, syncer, found_sources(store).await));
    let added = new
        .sources
        .iter()
        .filter(|s| !old.sources.contains(s))
        .count();
    let removed = old
        .sources
        .iter()
        .filter(|s| !new.sources.contains(s))
        .count();
    tracing::info!(
        sources = new.sources.len(),
        added,
        removed,
        webhooks = new.webhooks.len(),
        "configuration reloaded"
    );
}
