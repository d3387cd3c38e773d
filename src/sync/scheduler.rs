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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler};

use super::{SourceResult, Syncer};
use crate::config::Schedule;
use crate::source::SourceSpec;
use crate::store::StoreError;

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
}

pub struct Scheduler {
    plan: Plan,
    queue: VecDeque<SourceSpec>,
    queued: HashSet<SourceSpec>,
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
            plan,
            queue: VecDeque::new(),
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
            || !self.plan.sources.contains(&spec)
        {
            return;
        }
        self.queued.insert(spec.clone());
        self.queue.push_back(spec);
    }

    /// A scheduled sweep: every source not walking, queued or backed off.
    fn sweep(&mut self) {
        let backed_off: HashSet<&SourceSpec> = self
            .timers
            .iter()
            .map(|Reverse((_, s))| s)
            .filter(|s| self.failures.contains_key(*s))
            .collect();
        let due: Vec<SourceSpec> = super::interleave_by_kind(&self.plan.sources)
            .into_iter()
            .filter(|s| !backed_off.contains(s))
            .collect();
        for s in due {
            self.enqueue(s);
        }
    }

    fn start_walks(&mut self) {
        while self.running.len() < self.plan.max_concurrent_walks {
            let Some(spec) = self.queue.pop_front() else {
                break;
            };
            self.queued.remove(&spec);
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
            self.enqueue(spec);
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
        let keep = &self.plan.sources;
        self.queue.retain(|s| keep.contains(s));
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
