//! The delivery dispatcher.
//!
//! Every (webhook, source) pair is a *lane*: its deliveries go out strictly
//! one after another, in commit order, so a consumer sees a source's events
//! in `seq` order. Lanes are independent: one slow source or a receiver in
//! backoff for one source does not hold up the others, and each webhook has
//! its own bound on attempts in flight.
//!
//! New deliveries arrive as notices from the store's writer right after
//! their commit (no polling, low latency). A lane keeps at most
//! [`LANE_BUFFER`] deliveries in memory; beyond that it reads the rest from
//! the store as it drains, so memory stays bounded when a receiver is down.
//! Which rows a lane has taken in is kept by [`Lane`] (`lane.rs`), whose
//! low-water mark never lets it skip a row it owes. A periodic rescan picks
//! up work queued by other processes (`bansync deliveries retry`,
//! `bansync replay`); a notice of a later row finds it sooner.
//!
//! Each attempt's outcome is committed before its lane moves on. An attempt
//! cut short by shutdown is not recorded at all: it is neither lost (it stays
//! owed) nor counted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::lane::{Announced, LANE_BUFFER, Lane};
use super::schedule;
use super::sign;
use crate::clock::Clock;
use crate::config::WebhookSettings;
use crate::metrics::Metrics;
use crate::store::AttemptOutcome;
use crate::store::{Notice, OwedDelivery, Store};

/// How long a lane waits before reading the store again after a failed read,
/// or trying again an attempt whose outcome the store could not record.
const STORE_RETRY: Duration = Duration::from_secs(1);

type LaneKey = (Arc<str>, i64);

struct Hook {
    settings: WebhookSettings,
    keys: Vec<Vec<u8>>,
    disabled: AtomicBool,
}

/// Messages that change the dispatcher from outside.
pub enum Control {
    /// New webhook configuration (reload). Webhooks not named stop.
    Webhooks(Vec<WebhookSettings>),
}

enum Done {
    Attempt {
        key: LaneKey,
        outcome: Option<AttemptOutcome>,
    },
    Load {
        key: LaneKey,
        /// The rows read, or why the store could not be read.
        loaded: Result<Vec<OwedDelivery>, String>,
    },
}

pub struct Dispatcher {
    store: Store,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    hooks: HashMap<Arc<str>, Arc<Hook>>,
    lanes: HashMap<LaneKey, Lane>,
    ready: HashMap<Arc<str>, VecDeque<i64>>,
    in_flight: HashMap<Arc<str>, usize>,
    /// Lanes waiting, on the monotonic clock: a wall-clock step must not
    /// hold a retry back (or bring it forward) by the size of the step.
    timers: BinaryHeap<Reverse<(Instant, Arc<str>, i64)>>,
    tasks: JoinSet<Done>,
    rescan_every: Duration,
    clock: Clock,
}

fn user_agent() -> &'static str {
    concat!("bansync/", env!("CARGO_PKG_VERSION"))
}

impl Dispatcher {
    pub fn new(
        store: Store,
        webhooks: Vec<WebhookSettings>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        let http = webhook_client();
        let mut d = Dispatcher {
            store,
            http,
            metrics,
            hooks: HashMap::new(),
            lanes: HashMap::new(),
            ready: HashMap::new(),
            in_flight: HashMap::new(),
            timers: BinaryHeap::new(),
            tasks: JoinSet::new(),
            rescan_every: Duration::from_secs(5),
            clock,
        };
        d.set_webhooks(webhooks);
        d
    }

    /// How often the store is rescanned for work queued by other processes.
    pub fn with_rescan_every(mut self, every: Duration) -> Self {
        self.rescan_every = every;
        self
    }

    fn set_webhooks(&mut self, webhooks: Vec<WebhookSettings>) {
        let mut next = HashMap::new();
        for w in webhooks {
            let name: Arc<str> = w.name.as_str().into();
            next.insert(
                name,
                Arc::new(Hook {
                    keys: sign::raw_keys(&w.keys),
                    settings: w,
                    disabled: AtomicBool::new(false),
                }),
            );
        }
        self.hooks = next;
        // Lanes of webhooks no longer configured are forgotten; their
        // deliveries stay owed in the store until the webhook returns.
        let hooks = &self.hooks;
        self.lanes
            .retain(|(w, _), lane| hooks.contains_key(w) || lane.busy());
        self.ready.retain(|w, _| hooks.contains_key(w));
    }

    fn key_for(&self, webhook: &str) -> Option<Arc<str>> {
        self.hooks.get_key_value(webhook).map(|(k, _)| k.clone())
    }

    /// Reads from the store which lanes have owed work it does not know of.
    pub async fn rescan(&mut self) {
        let names: Vec<String> = self.hooks.keys().map(|k| k.to_string()).collect();
        let scanned = self.store.owed_lanes(names).await.map(|o| {
            o.into_iter()
                .map(|o| (o.webhook, o.disabled, o.lanes))
                .collect::<Vec<_>>()
        });
        let scanned = match scanned {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot read owed deliveries; will try again");
                return;
            }
        };
        for (name, disabled, lanes) in scanned {
            let Some(key) = self.key_for(&name) else {
                continue;
            };
            if let Some(h) = self.hooks.get(&key) {
                h.disabled.store(disabled, Ordering::Relaxed);
            }
            for (source, max_id) in lanes {
                let lk = (key.clone(), source);
                self.lanes
                    .entry(lk.clone())
                    .or_default()
                    .store_has_up_to(max_id);
                self.schedule(lk);
            }
        }
    }

    fn on_notice(&mut self, a: Announced) {
        let Some(key) = self.key_for(&a.delivery.webhook) else {
            return;
        };
        let lk = (key, a.delivery.source_id);
        self.lanes.entry(lk.clone()).or_default().announce(a);
        self.schedule(lk);
    }

    /// Puts a lane in its webhook's ready queue if it can make progress.
    fn schedule(&mut self, lk: LaneKey) {
        let Some(lane) = self.lanes.get_mut(&lk) else {
            return;
        };
        if lane.busy() || lane.queued || !lane.has_work() {
            return;
        }
        let now = Instant::now();
        if let Some(until) = lane.waiting_until {
            if until > now {
                return;
            }
            lane.waiting_until = None;
        }
        if let Some(head) = lane.buf.front() {
            let due = *lane.head_due.get_or_insert_with(|| {
                now + schedule::wait_for(
                    head.next_attempt_ms,
                    head.last_attempt_ms,
                    self.clock.now_ms(),
                )
            });
            if due > now {
                lane.waiting_until = Some(due);
                self.timers.push(Reverse((due, lk.0.clone(), lk.1)));
                return;
            }
        }
        lane.queued = true;
        self.ready.entry(lk.0.clone()).or_default().push_back(lk.1);
    }

    /// Starts attempts (or loads) on ready lanes within each webhook's bound.
    fn start_ready(&mut self) {
        let names: Vec<Arc<str>> = self.ready.keys().cloned().collect();
        for name in names {
            let Some(hook) = self.hooks.get(&name).cloned() else {
                continue;
            };
            if hook.disabled.load(Ordering::Relaxed) {
                continue;
            }
            loop {
                let in_flight = self.in_flight.get(&name).copied().unwrap_or(0);
                if in_flight >= hook.settings.max_in_flight {
                    break;
                }
                let Some(source) = self.ready.get_mut(&name).and_then(|q| q.pop_front()) else {
                    break;
                };
                let lk = (name.clone(), source);
                let Some(lane) = self.lanes.get_mut(&lk) else {
                    continue;
                };
                lane.queued = false;
                if lane.busy() {
                    continue;
                }
                *self.in_flight.entry(name.clone()).or_default() += 1;
                if let Some(d) = lane.buf.front().cloned() {
                    lane.attempting = true;
                    let (http, store, metrics, hook, clock) = (
                        self.http.clone(),
                        self.store.clone(),
                        self.metrics.clone(),
                        hook.clone(),
                        self.clock.clone(),
                    );
                    self.tasks.spawn(async move {
                        let outcome = attempt(&http, &store, &metrics, &hook, &clock, &d).await;
                        Done::Attempt { key: lk, outcome }
                    });
                } else {
                    lane.loading = true;
                    let store = self.store.clone();
                    let after = lane.load_after();
                    self.tasks.spawn(async move {
                        let (w, s) = (lk.0.to_string(), lk.1);
                        let loaded = store
                            .load_lane(w, s, after, LANE_BUFFER)
                            .await
                            .map_err(|e| e.to_string());
                        Done::Load { key: lk, loaded }
                    });
                }
            }
        }
    }

    fn on_done(&mut self, done: Done) {
        let lk = match &done {
            Done::Attempt { key, .. } | Done::Load { key, .. } => key.clone(),
        };
        if let Some(n) = self.in_flight.get_mut(&lk.0) {
            *n = n.saturating_sub(1);
        }
        let (now, now_ms) = (Instant::now(), self.clock.now_ms());
        let Some(lane) = self.lanes.get_mut(&lk) else {
            return;
        };
        match done {
            Done::Load {
                loaded: Ok(rows), ..
            } => lane.loaded(rows),
            Done::Load { loaded: Err(e), .. } => {
                // Nothing the load would have read is dropped: the lane
                // still owes it and reads again shortly.
                tracing::error!(webhook = %lk.0, error = %e, "cannot read owed deliveries; will try again");
                lane.load_failed();
                lane.waiting_until = Some(now + STORE_RETRY);
                self.timers
                    .push(Reverse((now + STORE_RETRY, lk.0.clone(), lk.1)));
            }
            Done::Attempt { outcome, .. } => {
                lane.attempting = false;
                match outcome {
                    Some(AttemptOutcome::Delivered { .. }) | Some(AttemptOutcome::Dead { .. }) => {
                        lane.buf.pop_front();
                        lane.head_due = None;
                    }
                    Some(AttemptOutcome::Failed {
                        next_attempt_ms,
                        retry_in,
                        ..
                    }) => {
                        if let Some(head) = lane.buf.front_mut() {
                            head.attempts += 1;
                            head.next_attempt_ms = next_attempt_ms;
                            head.last_attempt_ms = Some(now_ms);
                        }
                        lane.head_due = Some(now + retry_in);
                    }
                    Some(AttemptOutcome::Gone) => {
                        if let Some(h) = self.hooks.get(&lk.0) {
                            h.disabled.store(true, Ordering::Relaxed);
                        }
                    }
                    // Not recorded (the store refused): try again shortly.
                    None => lane.head_due = Some(now + STORE_RETRY),
                }
            }
        }
        self.schedule(lk);
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((due, _, _))) = self.timers.peek() {
            if *due > now {
                break;
            }
            let Reverse((_, w, s)) = self.timers.pop().unwrap();
            if let Some(lane) = self.lanes.get_mut(&(w.clone(), s))
                && lane.waiting_until.is_some_and(|u| u <= now)
            {
                lane.waiting_until = None;
            }
            self.schedule((w, s));
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((due, _, _))| *due)
    }

    /// True when nothing can be sent right now: no attempt in flight and
    /// every lane empty or waiting for a retry time (or its webhook disabled).
    pub fn is_idle(&self) -> bool {
        self.tasks.is_empty()
            && self.ready.iter().all(|(w, q)| {
                q.is_empty()
                    || self
                        .hooks
                        .get(w)
                        .is_none_or(|h| h.disabled.load(Ordering::Relaxed))
            })
    }

    /// Delivers until stopped. On stop, attempts in flight get `grace` to
    /// finish and be recorded; any still running then are abandoned
    /// unrecorded (they stay owed).
    pub async fn run(
        mut self,
        mut notices: mpsc::UnboundedReceiver<Announced>,
        mut control: mpsc::UnboundedReceiver<Control>,
        mut stop: tokio::sync::watch::Receiver<bool>,
        grace: Duration,
    ) {
        self.rescan().await;
        let mut rescan = tokio::time::interval(self.rescan_every);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.start_ready();
            let timer = self.next_timer();
            tokio::select! {
                biased;
                _ = stop.changed() => if *stop.borrow() { break },
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Ok(done) = done { self.on_done(done) }
                }
                n = notices.recv() => match n {
                    Some(d) => {
                        self.on_notice(d);
                        // Take in every notice already waiting before starting attempts.
                        while let Ok(d) = notices.try_recv() { self.on_notice(d) }
                    }
                    None => break,
                },
                Some(c) = control.recv() => match c {
                    Control::Webhooks(w) => { self.set_webhooks(w); self.rescan().await; }
                },
                _ = async { tokio::time::sleep_until(timer.unwrap()).await }, if timer.is_some() => self.fire_timers(),
                _ = rescan.tick() => self.rescan().await,
            }
        }
        self.finish(grace).await;
    }

    /// Delivers what is owed now, then returns: for `bansync sync`.
    /// Deliveries waiting for a later retry time are left to the daemon.
    pub async fn drain(
        mut self,
        mut notices: mpsc::UnboundedReceiver<Announced>,
        deadline: Duration,
    ) {
        let until = tokio::time::Instant::now() + deadline;
        while let Ok(d) = notices.try_recv() {
            self.on_notice(d);
        }
        self.rescan().await;
        loop {
            self.start_ready();
            if self.is_idle() {
                break;
            }
            tokio::select! {
                Some(done) = self.tasks.join_next() => if let Ok(done) = done { self.on_done(done) },
                _ = tokio::time::sleep_until(until) => break,
            }
            while let Ok(d) = notices.try_recv() {
                self.on_notice(d);
            }
        }
        self.finish(Duration::from_secs(5)).await;
    }

    async fn finish(&mut self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(done) = self.tasks.join_next() => if let Ok(done) = done { self.on_done(done) },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(abandoned = self.tasks.len(), "shutdown: attempts still in flight are abandoned unrecorded and stay owed");
                    self.tasks.abort_all();
                    break;
                }
            }
        }
    }
}

/// A client for webhooks: no redirects (a 3xx is a failed attempt),
/// bansync's user agent.
pub fn webhook_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent())
        .pool_max_idle_per_host(64)
        .build()
        .expect("TLS backend initialises")
}

/// A delivery's request: `body` POSTed to `url` with the Standard Webhooks
/// headers, signed with every key (`sign::raw_keys`).
pub fn signed_post(
    http: &reqwest::Client,
    url: &str,
    keys: &[Vec<u8>],
    id: &str,
    timestamp: i64,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    let signature = sign::signature_header(keys, id, timestamp, &body);
    http.post(url)
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .header("content-type", "application/json")
        .body(body)
}

/// What went wrong with a request that got no answer, for logs and the
/// store: never the URL (a webhook's may hold a token).
pub fn describe_send_error(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection refused or failed".to_string()
    } else {
        e.without_url().to_string()
    }
}

/// One attempt: sign, send, classify, record. `None` if the outcome could
/// not be recorded (the lane retries; at-least-once).
async fn attempt(
    http: &reqwest::Client,
    store: &Store,
    metrics: &Metrics,
    hook: &Hook,
    clock: &Clock,
    d: &OwedDelivery,
) -> Option<AttemptOutcome> {
    let w = &hook.settings;
    let timestamp = clock.now_s();
    let started = std::time::Instant::now();
    let response = signed_post(
        http,
        &w.url,
        &hook.keys,
        &d.event_id,
        timestamp,
        d.body.as_bytes().to_vec(),
    )
    .timeout(w.timeout)
    .send()
    .await;
    let attempts = d.attempts + 1;
    let (status, error, retry_after) = match response {
        Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None, None),
        Ok(r) => {
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    schedule::parse_retry_after(
                        v,
                        chrono::DateTime::from_timestamp_millis(clock.now_ms()).unwrap_or_default(),
                    )
                });
            (Some(status), Some(format!("HTTP {status}")), retry_after)
        }
        Err(e) => (None, Some(describe_send_error(e)), None),
    };
    let now = clock.now_ms();
    let outcome = match (status, error) {
        (Some(s), None) => AttemptOutcome::Delivered { status: s },
        (Some(410), _) => AttemptOutcome::Gone,
        (status, Some(error)) => {
            match schedule::next_delay(&w.retry_schedule, attempts, retry_after, schedule::jitter())
            {
                Some(delay) => AttemptOutcome::Failed {
                    status,
                    error,
                    next_attempt_ms: now + delay.as_millis() as i64,
                    retry_in: delay,
                },
                None => AttemptOutcome::Dead { status, error },
            }
        }
        (None, None) => unreachable!("a response without status is an error"),
    };
    let (id, webhook, o) = (d.id, w.name.clone(), outcome.clone());
    if let Err(e) = store.record_attempt(id, webhook, o, now).await {
        tracing::error!(webhook = %w.name, delivery = d.id, error = %e, "cannot record a delivery attempt; it stays owed");
        return None;
    }
    let took_ms = started.elapsed().as_millis() as u64;
    match &outcome {
        AttemptOutcome::Delivered { status } => {
            let latency = Duration::from_millis((now - d.committed_ms).max(0) as u64);
            metrics.delivery(&w.name, "delivered", Some(latency));
            tracing::debug!(webhook = %w.name, event = %d.event_id, status, took_ms, "delivered");
        }
        AttemptOutcome::Failed {
            status,
            error,
            retry_in,
            ..
        } => {
            metrics.delivery(&w.name, "failed", None);
            tracing::warn!(webhook = %w.name, event = %d.event_id, attempt = attempts, status, error = %error,
                retry_in_s = retry_in.as_secs(), took_ms, "delivery failed; will retry");
        }
        AttemptOutcome::Dead { status, error } => {
            metrics.delivery(&w.name, "dead", None);
            tracing::error!(webhook = %w.name, event = %d.event_id, attempt = attempts, status, error = %error,
                "delivery ran out of attempts; see `bansync deliveries dead`");
        }
        AttemptOutcome::Gone => {
            metrics.delivery(&w.name, "gone", None);
            tracing::error!(webhook = %w.name, event = %d.event_id,
                "receiver answered 410 Gone: webhook disabled until the configuration is reloaded with it");
        }
    }
    Some(outcome)
}

/// Splits store notices: deliveries to the dispatcher, the rest to their owners.
pub fn route_notices(
    mut rx: mpsc::UnboundedReceiver<Notice>,
    deliveries: mpsc::UnboundedSender<Announced>,
    propagation: mpsc::UnboundedSender<()>,
    expiry: mpsc::UnboundedSender<()>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(n) = rx.recv().await {
            match n {
                Notice::Delivery(a) => {
                    let _ = deliveries.send(a);
                }
                Notice::Propagation => {
                    let _ = propagation.send(());
                }
                Notice::ExpiryChanged => {
                    let _ = expiry.send(());
                }
            }
        }
    })
}
