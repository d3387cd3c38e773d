//! Adaptive scheduling (`sync.mode = "adaptive"`), pure: which source of
//! one API to walk next, and why. No I/O and no clock: times are seconds
//! from any origin, so the rules can be run in virtual time (see the tests,
//! which replay the benchmark's workload in a few seconds).
//!
//! Two rules, in this order:
//!
//! 1. **The bound.** Every source is walked at least once per `interval`.
//!    Sources in deadline order (oldest walk first) are checked against the
//!    calls it would take to walk each of them and every source due before
//!    it at the API's rate: when any would be late by less than a margin,
//!    the oldest goes now (`Reason::Bound`). Until then the bound costs
//!    nothing, so early in an interval every call is free for rule 2.
//! 2. **Activity.** Otherwise the source with the most changes likely to be
//!    waiting per call goes (`Reason::Activity`): its estimated change rate
//!    λ times the square of the time since its last walk, over its cost in
//!    pages. Walking each source when λ·age²/cost reaches a common level
//!    gives it a period ∝ √(cost/λ), which minimises the mean detection
//!    latency for a fixed budget of calls.
//!
//! λ is learnt from what the walks find: a slow estimate (changes over
//! observed time, decayed over 30 min, with the estate's average as a
//! prior worth 15 min of observation) and a burst estimate (the changes
//! one walk found over the time since the walk before, decayed over three
//! minutes) so a raid is followed within seconds of its first ban. The
//! constants were chosen in virtual time (`tests::tuning_table`). Hints (callbacks), confirmation walks
//! and sources new to the loop do not come from here: the scheduler walks
//! them first.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::source::SourceSpec;

/// Why a source is walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Its deadline (`interval` after its last walk) is near.
    Bound,
    /// It is likely to have changed.
    Activity,
    /// A callback named it.
    Hint,
    /// An absence waits for its confirming walk.
    Confirmation,
    /// A scheduled sweep (`sync.mode = "sweep"`).
    Sweep,
    /// New to the loop (found, configured by a reload), or a last walk
    /// before retirement.
    New,
    /// Again after failures, once its backoff has passed.
    Retry,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::Bound,
        Reason::Activity,
        Reason::Hint,
        Reason::Confirmation,
        Reason::Sweep,
        Reason::New,
        Reason::Retry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Bound => "bound",
            Reason::Activity => "activity",
            Reason::Hint => "hint",
            Reason::Confirmation => "confirmation",
            Reason::Sweep => "sweep",
            Reason::New => "new",
            Reason::Retry => "retry",
        }
    }
}

/// How fast the planner learns and forgets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    /// The slow estimate's memory (s).
    pub slow_tau: f64,
    /// The burst estimate's memory (s).
    pub burst_tau: f64,
    /// Weight of the estate-wide prior, in seconds of observation.
    pub prior_weight: f64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            slow_tau: 1800.0,
            burst_tau: 180.0,
            prior_weight: 900.0,
        }
    }
}
/// The prior before anything is known: one change a day per source.
const FIRST_PRIOR: f64 = 1.0 / 86_400.0;

/// What the planner knows of one source.
#[derive(Debug, Clone)]
struct Stat {
    /// When its last walk started; `None`: never walked.
    last: Option<f64>,
    /// When the walk before that started (the span the last walk covers).
    prev: Option<f64>,
    /// Calls per walk (pages): the larger of the last walk's and a decaying
    /// memory of earlier ones, so a list that grows is not under-costed.
    cost: f64,
    /// Changes seen and time observed (decayed over `SLOW_TAU`).
    ev: f64,
    obs: f64,
    updated: f64,
    /// Changes per second the last walk that found any implied, and when.
    burst: f64,
    burst_at: f64,
    running: bool,
}

impl Stat {
    fn new() -> Self {
        Stat {
            last: None,
            prev: None,
            cost: 1.0,
            ev: 0.0,
            obs: 0.0,
            updated: 0.0,
            burst: 0.0,
            burst_at: 0.0,
            running: false,
        }
    }

    fn key_time(&self) -> OrdF64 {
        OrdF64(self.last.unwrap_or(f64::NEG_INFINITY))
    }
}

/// Sources ordered by their last walk, oldest (and never walked) first.
#[derive(Debug, Clone, Copy)]
struct OrdF64(f64);
impl PartialEq for OrdF64 {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The planner for one API's sources.
#[derive(Debug, Clone)]
pub struct Planner {
    interval: f64,
    margin: f64,
    stats: HashMap<SourceSpec, Stat>,
    order: BTreeSet<(OrdF64, SourceSpec)>,
    /// The estate's changes and observed source-time (the prior), decayed.
    all_ev: f64,
    all_obs: f64,
    all_updated: f64,
    /// The priority of the last activity pick: the level a source's
    /// λ·age²/cost must reach to be walked (for `explain`).
    level: f64,
    tuning: Tuning,
}

/// When a source is next expected to be walked, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Due {
    pub at: f64,
    pub reason: Reason,
}

fn decay(value: f64, from: f64, to: f64, tau: f64) -> f64 {
    value * (-(to - from).max(0.0) / tau).exp()
}

impl Planner {
    pub fn new(interval: Duration) -> Self {
        let interval = interval.as_secs_f64().max(1.0);
        Planner {
            interval,
            // A walk found late breaks the promise: leave room for walks in
            // flight and a slow answer or two.
            margin: (interval * 0.05).max(2.0),
            stats: HashMap::new(),
            order: BTreeSet::new(),
            all_ev: 0.0,
            all_obs: 0.0,
            all_updated: 0.0,
            level: f64::INFINITY,
            tuning: Tuning::default(),
        }
    }

    pub fn with_tuning(mut self, tuning: Tuning) -> Self {
        self.tuning = tuning;
        self
    }

    pub fn interval(&self) -> f64 {
        self.interval
    }

    pub fn len(&self) -> usize {
        self.stats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stats.is_empty()
    }

    pub fn contains(&self, spec: &SourceSpec) -> bool {
        self.stats.contains_key(spec)
    }

    /// A source to plan for (never walked: due at once).
    pub fn insert(&mut self, spec: SourceSpec) {
        if self.stats.contains_key(&spec) {
            return;
        }
        let s = Stat::new();
        self.order.insert((s.key_time(), spec.clone()));
        self.stats.insert(spec, s);
    }

    pub fn remove(&mut self, spec: &SourceSpec) {
        if let Some(s) = self.stats.remove(spec) {
            self.order.remove(&(s.key_time(), spec.clone()));
        }
    }

    /// Keeps only the sources `keep` admits.
    pub fn retain(&mut self, keep: impl Fn(&SourceSpec) -> bool) {
        let gone: Vec<SourceSpec> = self.stats.keys().filter(|s| !keep(s)).cloned().collect();
        for s in gone {
            self.remove(&s);
        }
    }

    /// A walk of `spec` starts at `now`, whoever asked for it: the list is
    /// read as of now, so the bound counts from here.
    pub fn started(&mut self, spec: &SourceSpec, now: f64) {
        let Some(s) = self.stats.get_mut(spec) else {
            return;
        };
        self.order.remove(&(s.key_time(), spec.clone()));
        s.running = true;
        s.prev = s.last;
        s.last = Some(now);
        self.order.insert((s.key_time(), spec.clone()));
    }

    /// The walk of `spec` ended: `pages` calls, `changes` events found
    /// (`ok` false: it failed, and teaches nothing).
    pub fn finished(&mut self, spec: &SourceSpec, pages: u32, changes: u32, ok: bool) {
        let Some(s) = self.stats.get_mut(spec) else {
            return;
        };
        s.running = false;
        if !ok {
            return;
        }
        let pages = f64::from(pages.max(1));
        s.cost = pages.max(0.8 * s.cost + 0.2 * pages);
        let (Some(start), Some(prev)) = (s.last, s.prev) else {
            // A first walk is a baseline: it covers no span.
            return;
        };
        let span = (start - prev).max(0.0);
        let changes = f64::from(changes);
        let tau = self.tuning.slow_tau;
        s.ev = decay(s.ev, s.updated, start, tau) + changes;
        s.obs = decay(s.obs, s.updated, start, tau) + span;
        s.updated = start;
        self.all_ev = decay(self.all_ev, self.all_updated, start, tau) + changes;
        self.all_obs = decay(self.all_obs, self.all_updated, start, tau) + span;
        self.all_updated = self.all_updated.max(start);
        if changes > 0.0 {
            s.burst = changes / span.max(1.0);
            s.burst_at = start;
        }
    }

    /// The estate's average change rate per source (the prior).
    fn prior(&self) -> f64 {
        if self.all_obs > 0.0 {
            (self.all_ev / self.all_obs).max(FIRST_PRIOR / 10.0)
        } else {
            FIRST_PRIOR
        }
    }

    /// A source's estimated changes per second at `now`.
    fn rate_of(&self, s: &Stat, now: f64, prior: f64) -> f64 {
        let w = self.tuning.prior_weight;
        let slow = (s.ev + prior * w) / (s.obs + w);
        let burst = decay(s.burst, s.burst_at, now, self.tuning.burst_tau);
        slow.max(burst)
    }

    /// Changes per second this source is estimated to see.
    pub fn rate(&self, spec: &SourceSpec, now: f64) -> f64 {
        self.stats
            .get(spec)
            .map_or(0.0, |s| self.rate_of(s, now, self.prior()))
    }

    /// Picks the next source to walk at `now`, with `rate` calls a second
    /// to spend on this API; `skip` names sources that cannot be walked now
    /// (backed off after failures, or queued for another reason).
    pub fn next(
        &mut self,
        now: f64,
        rate: f64,
        skip: impl Fn(&SourceSpec) -> bool,
    ) -> Option<(SourceSpec, Reason)> {
        let rate = rate.max(0.01);
        let eligible = |spec: &SourceSpec, s: &Stat| !s.running && !skip(spec);
        // The bound: walked in deadline order at the full rate, would any
        // source be late by less than the margin?
        let total: f64 = self
            .stats
            .iter()
            .filter(|(k, s)| eligible(k, s))
            .map(|(_, s)| s.cost)
            .sum();
        let mut first: Option<&SourceSpec> = None;
        let mut cum = 0.0;
        for (t, spec) in &self.order {
            let s = &self.stats[spec];
            if !eligible(spec, s) {
                continue;
            }
            first.get_or_insert(spec);
            cum += s.cost;
            let deadline = t.0 + self.interval;
            if deadline - now - cum / rate < self.margin {
                let pick = first.expect("set above").clone();
                return Some((pick, Reason::Bound));
            }
            // Every later source is due later and adds no more than what is
            // left: none of them can be short of time.
            if deadline - now - total / rate >= self.margin {
                break;
            }
        }
        // Activity: the most changes likely waiting per call.
        let prior = self.prior();
        let mut best: Option<(f64, &SourceSpec)> = None;
        for (spec, s) in &self.stats {
            if !eligible(spec, s) {
                continue;
            }
            let age = now - s.last.unwrap_or(f64::NEG_INFINITY);
            let p = self.rate_of(s, now, prior) * age * age / s.cost;
            if best.is_none_or(|(b, bs)| p > b || (p == b && spec < bs)) {
                best = Some((p, spec));
            }
        }
        let (p, spec) = best?;
        let spec = spec.clone();
        self.level = p;
        Some((spec, Reason::Activity))
    }

    /// When `spec` is next expected to be walked by these rules, and why.
    pub fn explain(&self, spec: &SourceSpec, now: f64) -> Option<Due> {
        let s = self.stats.get(spec)?;
        let Some(last) = s.last else {
            return Some(Due {
                at: now,
                reason: Reason::Bound,
            });
        };
        let deadline = last + self.interval;
        let rate = self.rate_of(s, now, self.prior());
        if self.level.is_finite() && rate > 0.0 {
            let at = last + (self.level * s.cost / rate).sqrt();
            if at < deadline {
                return Some(Due {
                    at: at.max(now),
                    reason: Reason::Activity,
                });
            }
        }
        Some(Due {
            at: deadline.max(now),
            reason: Reason::Bound,
        })
    }

    /// The longest any source has gone since its last walk started
    /// (never walked: `None` while any is).
    pub fn oldest_age(&self, now: f64) -> Option<f64> {
        self.order
            .first()
            .and_then(|(t, _)| t.0.is_finite().then_some(now - t.0))
    }
}

pub mod workload;

#[cfg(test)]
mod tests;
