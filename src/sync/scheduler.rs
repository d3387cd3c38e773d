//! The daemon's scheduling loop.
//!
//! tokio-cron-scheduler fires the schedule (`interval` or `cron`), but each
//! firing only drops a token into a one-slot channel: firings that come
//! while a sweep is still being queued coalesce, so runs never pile up.
//! This loop owns all scheduling state: which sources are queued or
//! walking (never two walks of one source at once), which are backed off
//! after failures (without holding the others), and which need a prompt
//! second walk to confirm an absence. It also pings the systemd watchdog,
//! so a stuck loop trips it.
//!
//! Beside the configured sources it watches *found* ones (discovered in a
//! listing, or named by a callback), as [`Request`]s add them. Hints (from
//! callbacks) move a walk earlier, through an urgent queue, but never more
//! than one hinted walk of a source per [`HINT_GAP`]: a flood of forged or
//! repeated callbacks costs at most one walk a second.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler};

use super::{SourceResult, Syncer};
use crate::config::{FoundFilter, Schedule};
use crate::metrics::Metrics;
use crate::source::SourceSpec;
use crate::store::StoreError;

/// At most one hinted walk of a source per this long.
pub const HINT_GAP: Duration = Duration::from_secs(1);

/// What the discovery engine and the callback listener ask of the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Watch these found sources too (if the configuration admits them);
    /// the new ones are walked at once.
    Watch(Vec<SourceSpec>),
    /// Something may have changed there: walk it soon (coalesced).
    Hint(SourceSpec),
    /// Missing from two complete listings: walk once more, and retire it if
    /// the vendor says it no longer exists.
    Check(Vec<SourceSpec>),
}

/// A failing source waits 15 s, 30 s, 1 min, ... up to 30 min.
pub fn failure_backoff(consecutive_failures: u32) -> Duration {
    let secs = 15u64.saturating_mul(1 << consecutive_failures.saturating_sub(1).min(7));
    Duration::from_secs(secs.min(1800))
}

/// What the scheduler runs; replaced whole on reload.
#[derive(Clone)]
pub struct Plan {
    pub syncer: Syncer,
    pub sources: Vec<SourceSpec>,
    pub schedule: Schedule,
    pub confirm_delay: Duration,
    pub max_concurrent_walks: usize,
    /// Which found sources are watched.
    pub found_filter: FoundFilter,
}

pub struct Scheduler {
    plan: Plan,
    /// Configured and admitted found sources: what is walked.
    watched: HashSet<SourceSpec>,
    /// The found ones among them.
    found: HashSet<SourceSpec>,
    queue: VecDeque<SourceSpec>,
    /// Walks that go first: found sources new to the loop, hints,
    /// confirmations and retirement checks. Either queue may hold a source
    /// that has started since; `queued` says which entries still count.
    urgent: VecDeque<SourceSpec>,
    queued: HashSet<SourceSpec>,
    /// When each source's last hinted walk was queued.
    hinted: HashMap<SourceSpec, Instant>,
    /// Hinted within the gap: queued when it has passed.
    hint_timers: BinaryHeap<Reverse<(Instant, SourceSpec)>>,
    hint_waiting: HashSet<SourceSpec>,
    /// Hinted while walking: walk again after (the change may have come
    /// after the walk read its page).
    rewalk: HashSet<SourceSpec>,
    /// Walks that decide whether a found source is retired.
    checking: HashSet<SourceSpec>,
    metrics: Option<std::sync::Arc<Metrics>>,
    running: HashSet<SourceSpec>,
    failures: HashMap<SourceSpec, u32>,
    /// Sources to walk again at a set time: after a backoff, or to confirm
    /// an absence.
    timers: BinaryHeap<Reverse<(Instant, SourceSpec)>>,
    walks: JoinSet<(SourceSpec, Result<SourceResult, StoreError>)>,
    cron: Option<JobScheduler>,
    ticks_tx: mpsc::Sender<()>,
    ticks: mpsc::Receiver<()>,
}

impl Scheduler {
    pub fn new(plan: Plan) -> Self {
        let (ticks_tx, ticks) = mpsc::channel(1);
        Scheduler {
            watched: plan.sources.iter().cloned().collect(),
            found: HashSet::new(),
            plan,
            queue: VecDeque::new(),
            urgent: VecDeque::new(),
            hinted: HashMap::new(),
            hint_timers: BinaryHeap::new(),
            hint_waiting: HashSet::new(),
            rewalk: HashSet::new(),
            checking: HashSet::new(),
            metrics: None,
            queued: HashSet::new(),
            running: HashSet::new(),
            failures: HashMap::new(),
            timers: BinaryHeap::new(),
            walks: JoinSet::new(),
            cron: None,
            ticks_tx,
            ticks,
        }
    }

    /// Counts hinted walks and retirements in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    async fn start_cron(&mut self) -> Result<(), String> {
        if let Some(mut old) = self.cron.take() {
            // shutdown() does not wait for running jobs; ours only send a token.
            let _ = old.shutdown().await;
        }
        let tx = self.ticks_tx.clone();
        let fire = move |_, _| {
            let tx = tx.clone();
            Box::pin(async move {
                // Full: a sweep is already due; this firing coalesces with it.
                let _ = tx.try_send(());
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        };
        let job = match &self.plan.schedule {
            Schedule::Interval(d) => Job::new_repeated_async(*d, fire),
            Schedule::Cron(expr) => Job::new_async(expr.as_str(), fire),
        }
        .map_err(|e| format!("schedule: {e:?}"))?;
        let sched = JobScheduler::new()
            .await
            .map_err(|e| format!("scheduler: {e:?}"))?;
        sched
            .add(job)
            .await
            .map_err(|e| format!("scheduler: {e:?}"))?;
        sched
            .start()
            .await
            .map_err(|e| format!("scheduler: {e:?}"))?;
        self.cron = Some(sched);
        Ok(())
    }

    fn enqueue(&mut self, spec: SourceSpec) {
        if self.running.contains(&spec)
            || self.queued.contains(&spec)
            || !self.watched.contains(&spec)
        {
            return;
        }
        self.queued.insert(spec.clone());
        self.queue.push_back(spec);
    }

    /// Queues a walk ahead of the sweep (or moves a queued one ahead).
    fn enqueue_urgent(&mut self, spec: SourceSpec) {
        if self.running.contains(&spec) || !self.watched.contains(&spec) {
            return;
        }
        self.queued.insert(spec.clone());
        self.urgent.push_back(spec);
    }

    /// A hint: walk `spec` soon, but not twice within [`HINT_GAP`].
    fn hint(&mut self, spec: SourceSpec) {
        if !self.watched.contains(&spec) {
            return;
        }
        if self.running.contains(&spec) {
            self.rewalk.insert(spec);
            return;
        }
        if self.hint_waiting.contains(&spec) {
            return;
        }
        let now = Instant::now();
        match self.hinted.get(&spec) {
            Some(last) if now < *last + HINT_GAP => {
                self.hint_waiting.insert(spec.clone());
                self.hint_timers.push(Reverse((*last + HINT_GAP, spec)));
            }
            _ => {
                if self.urgent.contains(&spec) && self.queued.contains(&spec) {
                    return;
                }
                self.hinted.insert(spec.clone(), now);
                if let Some(m) = &self.metrics {
                    m.hinted_walk(spec.kind.as_str());
                }
                self.enqueue_urgent(spec);
            }
        }
    }

    fn fire_hint_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((due, _))) = self.hint_timers.peek() {
            if *due > now {
                break;
            }
            let Reverse((_, spec)) = self.hint_timers.pop().unwrap();
            self.hint_waiting.remove(&spec);
            self.hint(spec);
        }
    }

    fn on_request(&mut self, r: Request) {
        match r {
            Request::Watch(specs) => {
                let mut added = 0;
                for s in specs {
                    if self.watched.contains(&s) || !self.plan.found_filter.admits(&s) {
                        continue;
                    }
                    self.found.insert(s.clone());
                    self.watched.insert(s.clone());
                    self.enqueue_urgent(s);
                    added += 1;
                }
                if added > 0 {
                    tracing::info!(
                        added,
                        watched = self.watched.len(),
                        "watching found sources"
                    );
                }
            }
            Request::Hint(spec) => self.hint(spec),
            Request::Check(specs) => {
                for s in specs {
                    if self.found.contains(&s) {
                        self.checking.insert(s.clone());
                        self.enqueue_urgent(s);
                    }
                }
            }
        }
    }

    /// A found source the vendor no longer has, after two listings missed
    /// it: no longer walked (its entries are kept; nothing is lifted).
    fn retire(&mut self, spec: &SourceSpec) {
        self.found.remove(spec);
        self.watched.remove(spec);
        self.hinted.remove(spec);
        self.timers.retain(|Reverse((_, s))| s != spec);
        tracing::info!(source = %spec, "retired: two complete listings missed it and the vendor says it does not exist");
        if let Some(m) = &self.metrics {
            m.retired(spec.kind.as_str());
        }
        let store = self.plan.syncer.store.clone();
        let now = self.plan.syncer.clock.now_ms();
        let spec = spec.clone();
        tokio::spawn(async move {
            if let Err(e) = store.retire(spec.clone(), now).await {
                tracing::error!(source = %spec, error = %e, "cannot record the retirement; it is checked again at the next listings");
            }
        });
    }

    /// A scheduled sweep: every source not walking, queued or backed off.
    fn sweep(&mut self) {
        let backed_off: HashSet<&SourceSpec> = self
            .timers
            .iter()
            .map(|Reverse((_, s))| s)
            .filter(|s| self.failures.contains_key(*s))
            .collect();
        let mut all = self.plan.sources.clone();
        let mut found: Vec<&SourceSpec> = self.found.iter().collect();
        found.sort();
        all.extend(found.into_iter().cloned());
        let due: Vec<SourceSpec> = super::interleave_by_kind(&all)
            .into_iter()
            .filter(|s| !backed_off.contains(s))
            .collect();
        for s in due {
            self.enqueue(s);
        }
    }

    fn start_walks(&mut self) {
        while self.running.len() < self.plan.max_concurrent_walks {
            let Some(spec) = self.urgent.pop_front().or_else(|| self.queue.pop_front()) else {
                break;
            };
            // An entry left behind by a walk that started from the other queue.
            if !self.queued.remove(&spec) {
                continue;
            }
            self.running.insert(spec.clone());
            let syncer = self.plan.syncer.clone();
            self.walks.spawn(async move {
                let r = syncer.sync_source(&spec, false, &mut |_| {}).await;
                (spec, r)
            });
        }
    }

    fn on_walk_done(&mut self, spec: SourceSpec, result: Result<SourceResult, StoreError>) {
        self.running.remove(&spec);
        let now = Instant::now();
        if self.checking.remove(&spec)
            && matches!(&result, Ok(r) if r.error.as_ref().is_some_and(|e| e.is_gone()))
        {
            self.retire(&spec);
            return;
        }
        if self.rewalk.remove(&spec) {
            self.hint(spec.clone());
        }
        match result {
            Ok(r) if !r.failed() => {
                self.failures.remove(&spec);
                if r.report.pending_absent > 0 {
                    // Confirm (or clear) the absence soon, not a whole interval later.
                    self.timers
                        .push(Reverse((now + self.plan.confirm_delay, spec)));
                }
            }
            other => {
                if let Err(e) = &other {
                    tracing::error!(source = %spec, error = %e, "cannot store a walk");
                }
                let fatal =
                    matches!(&other, Ok(r) if r.error.as_ref().is_some_and(|e| e.is_fatal()));
                let n = self.failures.entry(spec.clone()).or_default();
                *n += 1;
                // A configuration fault will not heal in seconds: wait longest.
                let delay = if fatal {
                    failure_backoff(8)
                } else {
                    failure_backoff(*n)
                };
                tracing::info!(source = %spec, consecutive_failures = *n, retry_in_s = delay.as_secs(), "source backed off");
                self.timers.push(Reverse((now + delay, spec)));
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((due, _))) = self.timers.peek() {
            if *due > now {
                break;
            }
            let Reverse((_, spec)) = self.timers.pop().unwrap();
            // A confirmation goes first (a lift must not wait behind a
            // sweep); a source backed off after failures queues as usual.
            if self.failures.contains_key(&spec) {
                self.enqueue(spec);
            } else {
                self.enqueue_urgent(spec);
            }
        }
    }

    pub async fn reload(&mut self, plan: Plan) -> Result<(), String> {
        let schedule_changed = plan.schedule != self.plan.schedule;
        let added: Vec<SourceSpec> = plan
            .sources
            .iter()
            .filter(|s| !self.plan.sources.contains(s))
            .cloned()
            .collect();
        let removed = self
            .plan
            .sources
            .iter()
            .filter(|s| !plan.sources.contains(s))
            .count();
        self.plan = plan;
        let filter = &self.plan.found_filter;
        self.found.retain(|s| filter.admits(s));
        self.watched = self.plan.sources.iter().cloned().collect();
        self.watched.extend(self.found.iter().cloned());
        let keep = &self.watched;
        self.queue.retain(|s| keep.contains(s));
        self.urgent.retain(|s| keep.contains(s));
        self.queued.retain(|s| keep.contains(s));
        self.timers.retain(|Reverse((_, s))| keep.contains(s));
        if schedule_changed {
            self.start_cron().await?;
        }
        tracing::info!(
            added = added.len(),
            removed,
            schedule_changed,
            "scheduler reloaded"
        );
        for s in added {
            self.enqueue(s);
        }
        Ok(())
    }

    /// Runs until `stop`. Walks in progress then get `grace` to finish;
    /// any still running are abandoned, which is safe: a walk commits all of
    /// its changes at once or none.
    pub async fn run(
        mut self,
        mut plans: mpsc::UnboundedReceiver<Plan>,
        mut requests: mpsc::Receiver<Request>,
        mut stop: watch::Receiver<bool>,
        grace: Duration,
    ) -> Result<(), String> {
        self.start_cron().await?;
        self.sweep();
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        let mut dog = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        let mut last_sweep = Instant::now();
        let mut flush = tokio::time::interval(Duration::from_secs(1));
        loop {
            self.start_walks();
            let next_timer = self.timers.peek().map(|Reverse((d, _))| *d);
            let next_hint = self.hint_timers.peek().map(|Reverse((d, _))| *d);
            // A safety net under the cron crate: an interval schedule that has
            // not fired for two intervals is swept anyway, with a warning.
            let overdue = match &self.plan.schedule {
                Schedule::Interval(d) => Some(last_sweep + *d * 2 + Duration::from_secs(1)),
                Schedule::Cron(_) => None,
            };
            tokio::select! {
                _ = stop.changed() => if *stop.borrow() { break },
                Some(()) = self.ticks.recv() => {
                    last_sweep = Instant::now();
                    self.sweep();
                }
                _ = async { tokio::time::sleep_until(overdue.unwrap()).await }, if overdue.is_some() => {
                    tracing::warn!("the schedule did not fire for two intervals; sweeping anyway");
                    last_sweep = Instant::now();
                    self.sweep();
                }
                Some(done) = self.walks.join_next(), if !self.walks.is_empty() => match done {
                    Ok((spec, r)) => self.on_walk_done(spec, r),
                    Err(e) => tracing::error!(error = %e, "a walk task panicked"),
                },
                _ = async { tokio::time::sleep_until(next_timer.unwrap()).await }, if next_timer.is_some() => self.fire_timers(),
                _ = async { tokio::time::sleep_until(next_hint.unwrap()).await }, if next_hint.is_some() => self.fire_hint_timers(),
                Some(r) = requests.recv() => self.on_request(r),
                Some(plan) = plans.recv() => if let Err(e) = self.reload(plan).await {
                    tracing::error!(error = %e, "cannot apply the new schedule; keeping the old one");
                },
                _ = flush.tick() => {
                    let syncer = self.plan.syncer.clone();
                    tokio::spawn(async move {
                        if let Err(e) = syncer.flush_touches().await {
                            tracing::error!(error = %e, "cannot store walk times");
                        }
                    });
                }
                _ = dog.tick() => if watchdog.is_some() {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                },
            }
        }
        if let Some(mut c) = self.cron.take() {
            let _ = c.shutdown().await;
        }
        let syncer = self.plan.syncer.clone();
        let deadline = Instant::now() + grace;
        if !self.walks.is_empty() {
            tracing::info!(
                walks = self.walks.len(),
                "stopping: letting walks in progress finish"
            );
        }
        while !self.walks.is_empty() {
            tokio::select! {
                Some(done) = self.walks.join_next() => if let Ok((spec, r)) = done { self.on_walk_done(spec, r) },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(walks = self.walks.len(), "stopping: abandoning walks in progress (nothing partial is stored)");
                    self.walks.abort_all();
                    while self.walks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        if let Err(e) = syncer.flush_touches().await {
            tracing::error!(error = %e, "cannot store walk times");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(failure_backoff(1), Duration::from_secs(15));
        assert_eq!(failure_backoff(2), Duration::from_secs(30));
        assert_eq!(failure_backoff(30), Duration::from_secs(1800));
    }
}
