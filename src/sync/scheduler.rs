//! The daemon's scheduling loop.
//!
//! In `sweep` mode tokio-cron-scheduler fires the schedule (`interval` or
//! `cron`), but each firing only drops a token into a one-slot channel:
//! firings that come while a sweep is still being queued coalesce, so runs
//! never pile up. In `adaptive` mode there is no schedule: each API's
//! sources are walked continuously, a few walks in flight per API (the
//! pacer spends the rate), each pick made by `adaptive::Planner` (the
//! interval bound first, then activity).
//!
//! Either way this loop owns all scheduling state: which sources are
//! queued or walking (never two walks of one source at once), which are
//! backed off after failures (without holding the others), and which need
//! a prompt second walk to confirm an absence. It also pings the systemd
//! watchdog, so a stuck loop trips it.
//!
//! Beside the configured sources it watches *found* ones (discovered in a
//! listing, or named by a callback), as [`Request`]s add them. Walks are
//! taken from three queues, in order: urgent (hints, confirmations,
//! retirement checks), fresh (found sources new to the loop), then the
//! sweep's (or the planner's pick). A hint never causes a walk of a source
//! within [`HINT_GAP`] of the start of its last walk: a flood of forged or
//! repeated callbacks costs at most one walk a second.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_cron_scheduler::{Job, JobScheduler};

use super::{SourceResult, Syncer};
use crate::adaptive::{Planner, Reason};
use crate::config::{FoundFilter, Mode, Schedule};
use crate::metrics::Metrics;
use crate::source::{SourceKind, SourceSpec};
use crate::store::{ScheduleRow, StoreError};
use crate::tencent::Api;

/// At most one hinted walk of a source per this long.
pub const HINT_GAP: Duration = Duration::from_secs(1);

/// How often the schedule (next walk and why, per source) is written for
/// `status`, and staleness is measured for `/metrics`.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);

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
    pub mode: Mode,
    pub sources: Vec<SourceSpec>,
    pub schedule: Schedule,
    pub confirm_delay: Duration,
    pub max_concurrent_walks: usize,
    /// Which found sources are watched.
    pub found_filter: FoundFilter,
    /// The found sources the store remembers (the filter picks from them),
    /// so that a reload and its found sources arrive together.
    pub found: Vec<SourceSpec>,
}

/// The list API a source kind's walks spend.
fn api_of(kind: SourceKind) -> Api {
    match kind {
        SourceKind::Group => Api::GroupBanList,
        SourceKind::Room => Api::RoomBanList,
        SourceKind::Blocklist => Api::BlockList,
    }
}

/// A queue of walks to start; entries whose source has started since (from
/// another queue) are skipped when popped.
#[derive(Default)]
struct Queues {
    urgent: VecDeque<SourceSpec>,
    fresh: VecDeque<SourceSpec>,
    sweep: VecDeque<SourceSpec>,
    /// What is queued, why, and in which lane (the most urgent it was
    /// queued for).
    queued: HashMap<SourceSpec, (Reason, Lane)>,
}

pub struct Scheduler {
    plan: Plan,
    /// Configured and admitted found sources: what is walked.
    watched: HashSet<SourceSpec>,
    /// The found ones among them.
    found: HashSet<SourceSpec>,
    queues: Queues,
    /// Walking now, and why.
    running: HashMap<SourceSpec, Reason>,
    /// When each source's last walk started, and why.
    last_start: HashMap<SourceSpec, (Instant, Reason)>,
    failures: HashMap<SourceSpec, u32>,
    /// Sources to walk again at a set time: after a backoff, or to confirm
    /// an absence.
    timers: BinaryHeap<Reverse<(Instant, SourceSpec)>>,
    /// Hinted within the gap: hinted again when it has passed.
    hint_timers: BinaryHeap<Reverse<(Instant, SourceSpec)>>,
    hint_waiting: HashSet<SourceSpec>,
    /// Hinted while walking: walk again after (the change may have come
    /// after the walk read its page).
    rewalk: HashSet<SourceSpec>,
    /// Walks that decide whether a found source is retired.
    checking: HashSet<SourceSpec>,
    /// Adaptive mode: one planner per list API.
    planners: HashMap<SourceKind, Planner>,
    /// Where the planners' clock starts.
    origin: Instant,
    /// When the last sweep was queued (sweep mode), for `status`.
    last_sweep: Instant,
    /// What was last written for `status`.
    written: HashMap<SourceSpec, (i64, &'static str, Option<&'static str>)>,
    metrics: Option<std::sync::Arc<Metrics>>,
    walks: JoinSet<(SourceSpec, Result<SourceResult, StoreError>)>,
    cron: Option<JobScheduler>,
    ticks_tx: mpsc::Sender<()>,
    ticks: mpsc::Receiver<()>,
}

/// Which queue a walk waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Lane {
    Urgent,
    Fresh,
    Sweep,
}

impl Queues {
    fn lane(&mut self, lane: Lane) -> &mut VecDeque<SourceSpec> {
        match lane {
            Lane::Urgent => &mut self.urgent,
            Lane::Fresh => &mut self.fresh,
            Lane::Sweep => &mut self.sweep,
        }
    }

    /// Queues `spec` in `lane` unless it waits in that lane or a more
    /// urgent one already.
    fn push(&mut self, spec: SourceSpec, reason: Reason, lane: Lane) {
        if let Some((_, l)) = self.queued.get(&spec)
            && *l <= lane
        {
            return;
        }
        self.queued.insert(spec.clone(), (reason, lane));
        self.lane(lane).push_back(spec);
    }

    /// The next source of `lane` still queued there.
    fn pop(&mut self, lane: Lane) -> Option<(SourceSpec, Reason)> {
        while let Some(spec) = self.lane(lane).pop_front() {
            if let Some((reason, l)) = self.queued.get(&spec).copied()
                && l == lane
            {
                self.queued.remove(&spec);
                return Some((spec, reason));
            }
        }
        None
    }

    fn retain(&mut self, keep: &HashSet<SourceSpec>) {
        self.urgent.retain(|s| keep.contains(s));
        self.fresh.retain(|s| keep.contains(s));
        self.sweep.retain(|s| keep.contains(s));
        self.queued.retain(|s, _| keep.contains(s));
    }
}

impl Scheduler {
    pub fn new(plan: Plan) -> Self {
        let (ticks_tx, ticks) = mpsc::channel(1);
        let now = Instant::now();
        let mut s = Scheduler {
            watched: HashSet::new(),
            found: HashSet::new(),
            plan,
            queues: Queues::default(),
            running: HashMap::new(),
            last_start: HashMap::new(),
            failures: HashMap::new(),
            timers: BinaryHeap::new(),
            hint_timers: BinaryHeap::new(),
            hint_waiting: HashSet::new(),
            rewalk: HashSet::new(),
            checking: HashSet::new(),
            planners: HashMap::new(),
            origin: now,
            last_sweep: now,
            written: HashMap::new(),
            metrics: None,
            walks: JoinSet::new(),
            cron: None,
            ticks_tx,
            ticks,
        };
        s.rewatch(&[]);
        s
    }

    /// Counts hinted walks, calls by reason and staleness in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Seconds on the planners' clock.
    fn now_s(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    /// The configured sources, plus the found ones (kept and the plan's)
    /// the filter admits; planners follow. Returns the sources new to the
    /// loop.
    fn rewatch(&mut self, kept: &[SourceSpec]) -> Vec<SourceSpec> {
        let before = std::mem::take(&mut self.watched);
        self.watched = self.plan.sources.iter().cloned().collect();
        let filter = &self.plan.found_filter;
        let configured = &self.watched;
        self.found = kept
            .iter()
            .chain(self.plan.found.iter())
            .filter(|s| filter.admits(s) && !configured.contains(*s))
            .cloned()
            .collect();
        self.watched.extend(self.found.iter().cloned());
        self.queues.retain(&self.watched);
        let keep = &self.watched;
        self.timers.retain(|Reverse((_, s))| keep.contains(s));
        self.rebuild_planners();
        self.watched
            .iter()
            .filter(|s| !before.contains(*s))
            .cloned()
            .collect()
    }

    /// Adaptive mode: a planner per kind over the watched sources; what a
    /// kept planner learnt stays, a source it had not seen starts from its
    /// last walk (if it had one).
    fn rebuild_planners(&mut self) {
        let Schedule::Interval(interval) = self.plan.schedule.clone() else {
            self.planners.clear();
            return;
        };
        if self.plan.mode != Mode::Adaptive {
            self.planners.clear();
            return;
        }
        if self
            .planners
            .values()
            .any(|p| (p.interval() - interval.as_secs_f64()).abs() > 1e-9)
        {
            self.planners.clear();
        }
        let watched = &self.watched;
        for p in self.planners.values_mut() {
            p.retain(|s| watched.contains(s));
        }
        let all: Vec<SourceSpec> = self.watched.iter().cloned().collect();
        for spec in &all {
            self.plan_for(spec);
        }
    }

    /// Adaptive mode: puts `spec` in its kind's planner (if not there),
    /// from its last walk if it had one, and as walking if it is.
    fn plan_for(&mut self, spec: &SourceSpec) {
        let (Mode::Adaptive, Schedule::Interval(interval)) = (self.plan.mode, &self.plan.schedule)
        else {
            return;
        };
        let now = self.now_s();
        let p = self
            .planners
            .entry(spec.kind)
            .or_insert_with(|| Planner::new(*interval));
        if p.contains(spec) {
            return;
        }
        p.insert(spec.clone());
        if let Some((t, _)) = self.last_start.get(spec) {
            p.started(spec, now - t.elapsed().as_secs_f64());
            // A walk still going stays walking: its end finishes it.
            if !self.running.contains_key(spec) {
                p.finished(spec, 1, 0, true);
            }
        }
    }

    async fn start_cron(&mut self) -> Result<(), String> {
        if let Some(mut old) = self.cron.take() {
            // shutdown() does not wait for running jobs; ours only send a token.
            let _ = old.shutdown().await;
        }
        if self.plan.mode == Mode::Adaptive {
            return Ok(());
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

    /// Queues a walk of a watched source that is not walking.
    fn enqueue(&mut self, spec: SourceSpec, reason: Reason, lane: Lane) {
        if self.running.contains_key(&spec) || !self.watched.contains(&spec) {
            return;
        }
        self.queues.push(spec, reason, lane);
    }

    /// A hint: walk `spec` soon, but never within [`HINT_GAP`] of the start
    /// of its last walk.
    fn hint(&mut self, spec: SourceSpec) {
        if !self.watched.contains(&spec) {
            return;
        }
        if self.running.contains_key(&spec) {
            self.rewalk.insert(spec);
            return;
        }
        if self.hint_waiting.contains(&spec)
            || matches!(self.queues.queued.get(&spec), Some((_, Lane::Urgent)))
        {
            return;
        }
        if let Some((last, _)) = self.last_start.get(&spec)
            && Instant::now() < *last + HINT_GAP
        {
            let at = *last + HINT_GAP;
            self.hint_waiting.insert(spec.clone());
            self.hint_timers.push(Reverse((at, spec)));
            return;
        }
        self.enqueue(spec, Reason::Hint, Lane::Urgent);
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
                    self.plan_for(&s);
                    self.enqueue(s, Reason::New, Lane::Fresh);
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
                        self.enqueue(s, Reason::New, Lane::Urgent);
                    }
                }
            }
        }
    }

    /// A found source the vendor no longer has, after two listings missed
    /// it: no longer walked (its entries are kept; nothing is lifted). A
    /// source configured meanwhile stays watched.
    fn retire(&mut self, spec: &SourceSpec, record: bool) {
        self.found.remove(spec);
        if self.plan.sources.contains(spec) {
            return;
        }
        self.watched.remove(spec);
        self.last_start.remove(spec);
        self.timers.retain(|Reverse((_, s))| s != spec);
        if let Some(p) = self.planners.get_mut(&spec.kind) {
            p.remove(spec);
        }
        if let Some(m) = &self.metrics {
            m.retired(spec.kind.as_str());
        }
        if !record {
            tracing::info!(source = %spec, "retired: named by a callback or listing, but the vendor never had it");
            return;
        }
        tracing::info!(source = %spec, "retired: two complete listings missed it and the vendor says it does not exist");
        let store = self.plan.syncer.store.clone();
        let now = self.plan.syncer.clock.now_ms();
        let spec = spec.clone();
        tokio::spawn(async move {
            if let Err(e) = store.retire(spec.clone(), now).await {
                tracing::error!(source = %spec, error = %e, "cannot record the retirement; the source is walked again after a restart");
            }
        });
    }

    /// A scheduled sweep: every source not walking, queued or backed off.
    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        let mut all = self.plan.sources.clone();
        let mut found: Vec<&SourceSpec> = self.found.iter().collect();
        found.sort();
        all.extend(found.into_iter().cloned());
        for s in super::interleave_by_kind(&all) {
            if !self.failures.contains_key(&s) {
                self.enqueue(s, Reason::Sweep, Lane::Sweep);
            }
        }
    }

    /// Calls a second this API may spend now.
    fn rate(&self, kind: SourceKind) -> f64 {
        self.plan
            .syncer
            .client
            .pacer(api_of(kind))
            .rate(Instant::now())
    }

    fn start_walks(&mut self) {
        let max = self.plan.max_concurrent_walks;
        while self.running.len() < max {
            let Some((spec, reason)) = self
                .queues
                .pop(Lane::Urgent)
                .or_else(|| self.queues.pop(Lane::Fresh))
            else {
                break;
            };
            self.start(spec, reason);
        }
        if self.plan.mode == Mode::Sweep {
            while self.running.len() < max {
                let Some((spec, reason)) = self.queues.pop(Lane::Sweep) else {
                    break;
                };
                self.start(spec, reason);
            }
            return;
        }
        for kind in SourceKind::ALL {
            let rate = self.rate(kind);
            // Enough walks in flight to keep the pacer busy (a walk waits
            // for its slot), few enough that picks are made late.
            let cap = ((rate * 0.05).ceil() as usize + 1).clamp(2, max.max(2));
            loop {
                let in_flight = self.running.keys().filter(|s| s.kind == kind).count();
                if in_flight >= cap || self.running.len() >= max {
                    break;
                }
                let now = self.now_s();
                let Scheduler {
                    planners,
                    queues,
                    failures,
                    running,
                    ..
                } = self;
                let Some(p) = planners.get_mut(&kind) else {
                    break;
                };
                // Never a second walk of a source already walking.
                let pick = p.next(now, rate, |s| {
                    running.contains_key(s)
                        || queues.queued.contains_key(s)
                        || failures.contains_key(s)
                });
                let Some((spec, reason)) = pick else { break };
                self.start(spec, reason);
            }
        }
    }

    fn start(&mut self, spec: SourceSpec, reason: Reason) {
        let now = Instant::now();
        self.running.insert(spec.clone(), reason);
        self.last_start.insert(spec.clone(), (now, reason));
        let at = self.now_s();
        if let Some(p) = self.planners.get_mut(&spec.kind) {
            p.started(&spec, at);
        }
        if reason == Reason::Hint
            && let Some(m) = &self.metrics
        {
            m.hinted_walk(spec.kind.as_str());
        }
        let syncer = self.plan.syncer.clone();
        self.walks.spawn(async move {
            let r = syncer.sync_source(&spec, false, &mut |_| {}).await;
            (spec, r)
        });
    }

    fn on_walk_done(&mut self, spec: SourceSpec, result: Result<SourceResult, StoreError>) {
        let reason = self.running.remove(&spec).unwrap_or(Reason::Sweep);
        let now = Instant::now();
        let (pages, changes, ok) = match &result {
            Ok(r) => (r.pages, r.report.changes.len() as u32, !r.failed()),
            Err(_) => (1, 0, false),
        };
        if let Some(m) = &self.metrics {
            m.walk_calls(spec.kind.as_str(), reason.as_str(), u64::from(pages));
        }
        if let Some(p) = self.planners.get_mut(&spec.kind) {
            p.finished(&spec, pages, changes, ok);
        }
        if matches!(&result, Ok(r) if r.report.retired) {
            self.checking.remove(&spec);
            self.retire(&spec, false);
            return;
        }
        if self.checking.remove(&spec)
            && matches!(&result, Ok(r) if r.error.as_ref().is_some_and(|e| e.is_gone()))
        {
            self.retire(&spec, true);
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
                let lane = match self.plan.mode {
                    Mode::Sweep => Lane::Sweep,
                    Mode::Adaptive => Lane::Fresh,
                };
                self.enqueue(spec, Reason::Retry, lane);
            } else {
                self.enqueue(spec, Reason::Confirmation, Lane::Urgent);
            }
        }
    }

    pub async fn reload(&mut self, plan: Plan) -> Result<(), String> {
        let schedule_changed = plan.schedule != self.plan.schedule || plan.mode != self.plan.mode;
        let removed = self
            .plan
            .sources
            .iter()
            .filter(|s| !plan.sources.contains(s))
            .count();
        let kept: Vec<SourceSpec> = self.found.iter().cloned().collect();
        self.plan = plan;
        let added = self.rewatch(&kept);
        if schedule_changed {
            self.start_cron().await?;
        }
        tracing::info!(
            added = added.len(),
            removed,
            schedule_changed,
            mode = ?self.plan.mode,
            "scheduler reloaded"
        );
        for s in added {
            self.enqueue(s, Reason::New, Lane::Fresh);
        }
        Ok(())
    }

    /// When each watched source is next expected to be walked, and why,
    /// written for `status` where it changed; staleness for `/metrics`.
    fn snapshot(&mut self) {
        let now = Instant::now();
        let now_s = self.now_s();
        let wall = self.plan.syncer.clock.now_ms();
        let at = |t: Instant| wall + (t.saturating_duration_since(now).as_millis() as i64);
        let mut timers: HashMap<&SourceSpec, (Instant, Reason)> = HashMap::new();
        for Reverse((t, s)) in &self.timers {
            let r = if self.failures.contains_key(s) {
                Reason::Retry
            } else {
                Reason::Confirmation
            };
            timers.entry(s).or_insert((*t, r));
        }
        for Reverse((t, s)) in &self.hint_timers {
            timers.entry(s).or_insert((*t, Reason::Hint));
        }
        let mut rows = Vec::new();
        let mut oldest: HashMap<SourceKind, f64> = HashMap::new();
        for spec in &self.watched {
            let age = self
                .last_start
                .get(spec)
                .map_or(now.duration_since(self.origin), |(t, _)| {
                    now.duration_since(*t)
                })
                .as_secs_f64();
            let o = oldest.entry(spec.kind).or_default();
            *o = o.max(age);
            let (due, reason) = if let Some(r) = self.running.get(spec) {
                (Some(wall), *r)
            } else if let Some((r, _)) = self.queues.queued.get(spec) {
                (Some(wall), *r)
            } else if let Some((t, r)) = timers.get(spec) {
                (Some(at(*t)), *r)
            } else if let Some(p) = self.planners.get(&spec.kind) {
                match p.explain(spec, now_s) {
                    Some(d) => (
                        Some(wall + ((d.at - now_s).max(0.0) * 1000.0) as i64),
                        d.reason,
                    ),
                    None => (None, Reason::Bound),
                }
            } else {
                match &self.plan.schedule {
                    Schedule::Interval(d) => {
                        let mut next = self.last_sweep + *d;
                        while next < now {
                            next += *d;
                        }
                        (Some(at(next)), Reason::Sweep)
                    }
                    Schedule::Cron(_) => (None, Reason::Sweep),
                }
            };
            let last = self.last_start.get(spec).map(|(_, r)| r.as_str());
            // Whole seconds: a row is rewritten when its plan moves, not
            // on every snapshot.
            let row = (due.map_or(-1, |d| d / 1000), reason.as_str(), last);
            if self.written.get(spec) != Some(&row) {
                self.written.insert(spec.clone(), row);
                rows.push(ScheduleRow {
                    spec: spec.clone(),
                    next_walk_ms: due,
                    reason: reason.as_str(),
                    last_reason: last,
                });
            }
        }
        if let Some(m) = &self.metrics {
            for kind in SourceKind::ALL {
                m.oldest_walk_age(kind.as_str(), oldest.get(&kind).copied());
            }
        }
        if !rows.is_empty() {
            let store = self.plan.syncer.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.record_schedule(rows).await {
                    tracing::warn!(error = %e, "cannot store the schedule for status");
                }
            });
        }
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
        if self.plan.mode == Mode::Sweep {
            self.sweep();
        }
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        let mut dog = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        let mut last_sweep = Instant::now();
        let mut flush = tokio::time::interval(Duration::from_secs(1));
        let mut snapshot = tokio::time::interval(SNAPSHOT_EVERY);
        loop {
            self.start_walks();
            let next_timer = self.timers.peek().map(|Reverse((d, _))| *d);
            let next_hint = self.hint_timers.peek().map(|Reverse((d, _))| *d);
            // A safety net under the cron crate: an interval schedule that has
            // not fired for two intervals is swept anyway, with a warning.
            let overdue = match (&self.plan.schedule, self.plan.mode) {
                (Schedule::Interval(d), Mode::Sweep) => {
                    Some(last_sweep + *d * 2 + Duration::from_secs(1))
                }
                _ => None,
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
                _ = snapshot.tick() => self.snapshot(),
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
