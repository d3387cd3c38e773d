//! The sync engine: walk a source, apply the walk to the store, and the
//! loops that do so on a schedule and fire `ban.expired` on time.

pub mod discovery;
pub mod expiry;
pub mod retention;
pub mod scheduler;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::clock::Clock;
use crate::config::SyncSettings;
use crate::diff;
use crate::diff::Initial;
use crate::metrics::Metrics;
use crate::source::SourceSpec;
use crate::store::{Store, StoreError, WalkOutcome, WalkReport};
use crate::tencent::{TencentClient, WalkError, walk};

/// How one source's walk ended.
#[derive(Debug, Clone)]
pub struct SourceResult {
    pub spec: SourceSpec,
    pub report: WalkReport,
    /// The walk's error, if it did not complete (a gone source completes).
    pub error: Option<WalkError>,
    pub took: std::time::Duration,
    /// Times the walk started over because the list shifted under it.
    pub restarts: u32,
    /// Calls the walk made (estimated from the entries and page size).
    pub pages: u32,
}

impl SourceResult {
    pub fn failed(&self) -> bool {
        self.error.as_ref().is_some_and(|e| !e.is_gone())
    }
}

/// Orders sources so that consecutive ones use different APIs: each kind
/// has its own rate limit, so a sweep keeps all three busy at once instead
/// of exhausting one kind before starting the next.
pub fn interleave_by_kind(sources: &[SourceSpec]) -> Vec<SourceSpec> {
    let mut by_kind: Vec<std::collections::VecDeque<&SourceSpec>> = crate::source::SourceKind::ALL
        .iter()
        .map(|k| sources.iter().filter(|s| s.kind == *k).collect())
        .collect();
    let mut out = Vec::with_capacity(sources.len());
    while out.len() < sources.len() {
        for q in by_kind.iter_mut() {
            if let Some(s) = q.pop_front() {
                out.push(s.clone());
            }
        }
    }
    out
}

/// A source's unchanged walk at a time (Unix ms), not yet written.
type Touch = (SourceSpec, i64);

/// Walks whose list is the same as the last committed walk's need no
/// transaction: their digests are remembered here (only after a commit),
/// and their walk times are written in batches.
#[derive(Default)]
struct Unchanged {
    digests: Mutex<HashMap<SourceSpec, [u8; 24]>>,
    /// Walk times not yet written, and when the oldest was taken.
    touched: Mutex<(Vec<Touch>, Option<Instant>)>,
}

/// Walk times wait at most this long, or this many, before being written.
const TOUCH_FLUSH_AGE: std::time::Duration = std::time::Duration::from_secs(1);
const TOUCH_FLUSH_LEN: usize = 1024;

/// Walks sources and applies the result: shared by the daemon and `sync`.
#[derive(Clone)]
pub struct Syncer {
    pub client: Arc<TencentClient>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub page_size: u32,
    pub blocklist_page_size: u32,
    pub initial: Initial,
    /// Stamps walks and decides which ban ends have passed.
    pub clock: Clock,
    unchanged: Arc<Unchanged>,
}

impl Syncer {
    pub fn new(
        client: Arc<TencentClient>,
        store: Store,
        metrics: Arc<Metrics>,
        sync: &SyncSettings,
        clock: Clock,
    ) -> Self {
        Syncer {
            clock,
            client,
            store,
            metrics,
            page_size: sync.page_size,
            blocklist_page_size: sync.blocklist_page_size,
            initial: sync.initial,
            unchanged: Arc::default(),
        }
    }

    /// Writes the walk times of unchanged walks not yet stored.
    pub async fn flush_touches(&self) -> Result<(), StoreError> {
        let batch = {
            let mut t = self.unchanged.touched.lock().unwrap();
            t.1 = None;
            std::mem::take(&mut t.0)
        };
        if batch.is_empty() {
            return Ok(());
        }
        self.store.touch_sources(batch.into_iter().collect()).await
    }

    async fn touch(&self, spec: &SourceSpec, at: i64) -> Result<(), StoreError> {
        let due = {
            let mut t = self.unchanged.touched.lock().unwrap();
            t.0.push((spec.clone(), at));
            let oldest = *t.1.get_or_insert_with(Instant::now);
            t.0.len() >= TOUCH_FLUSH_LEN || oldest.elapsed() >= TOUCH_FLUSH_AGE
        };
        if due {
            self.flush_touches().await
        } else {
            Ok(())
        }
    }

    /// Walks `spec` to the end and commits the diff, its events and their
    /// deliveries in one transaction. With `dry_run`, commits nothing.
    pub async fn sync_source(
        &self,
        spec: &SourceSpec,
        dry_run: bool,
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<SourceResult, StoreError> {
        let started = Instant::now();
        let started_ms = self.clock.now_ms();
        let walked = walk::walk_checked(
            &self.client,
            spec,
            self.page_size,
            self.blocklist_page_size,
            progress,
        )
        .await;
        // Fast path: the same list as the last committed walk, with no
        // absence awaiting confirmation, changes nothing but the walk time.
        let mut computed = None;
        let restarts = walked.as_ref().map(|w| w.restarts).unwrap_or(0);
        if let Ok(walk::Walked { entries, .. }) = &walked {
            let digest = diff::digest(entries);
            computed = Some(digest);
            let known = self.unchanged.digests.lock().unwrap().get(spec) == Some(&digest);
            if known && !dry_run {
                self.touch(spec, self.clock.now_ms()).await?;
                let report = WalkReport {
                    unchanged: true,
                    entries: entries.len() as i64,
                    ..Default::default()
                };
                let result = SourceResult {
                    spec: spec.clone(),
                    report,
                    error: None,
                    took: started.elapsed(),
                    restarts,
                    pages: self.pages(spec, entries.len(), restarts),
                };
                self.log(&result, dry_run);
                return Ok(result);
            }
        }
        let pages = match &walked {
            Ok(w) => self.pages(spec, w.entries.len(), restarts),
            Err(_) => 1,
        };
        let (outcome, error) = match walked {
            Ok(w) => {
                let digest = computed.expect("computed above for every complete walk");
                (
                    WalkOutcome::Complete {
                        entries: w.entries,
                        digest,
                        started_ms,
                        stable: w.stable,
                    },
                    None,
                )
            }
            Err(e @ WalkError::Gone { .. }) => {
                let WalkError::Gone { error, .. } = &e else {
                    unreachable!()
                };
                let (code, info) = match &error.kind {
                    crate::tencent::ApiErrorKind::Vendor { code, info } => (*code, info.clone()),
                    _ => (0, error.to_string()),
                };
                (WalkOutcome::Gone { code, info }, Some(e))
            }
            Err(e) => (
                WalkOutcome::Failed {
                    error: e.to_string(),
                },
                Some(e),
            ),
        };
        let now = self.clock.now_ms();
        let report = self
            .store
            .apply_walk(spec.clone(), outcome, now, self.initial, dry_run)
            .await?;
        if !dry_run {
            // Remember the fingerprint of what is stored only when a walk
            // that matches it is known to change nothing: no absence awaits
            // confirmation. It is the store's, not this walk's: a walk that
            // could not prove absences (`stable` false) skipped nothing out
            // of the store, so a later walk without those entries differs.
            let mut known = self.unchanged.digests.lock().unwrap();
            match report.digest {
                Some(d) if error.is_none() && report.pending_absent == 0 => {
                    known.insert(spec.clone(), d)
                }
                _ => known.remove(spec),
            };
        }
        let took = started.elapsed();
        let result = SourceResult {
            spec: spec.clone(),
            report,
            error,
            took,
            restarts,
            pages,
        };
        self.log(&result, dry_run);
        Ok(result)
    }

    /// The calls a walk of `entries` took: every page after the first
    /// starts one entry early, and a list ends on a page that is not full.
    fn pages(&self, spec: &SourceSpec, entries: usize, restarts: u32) -> u32 {
        let size = match spec.kind {
            crate::source::SourceKind::Blocklist => self.blocklist_page_size,
            _ => self.page_size,
        }
        .max(2) as usize;
        let one = (entries / (size - 1) + 1) as u32;
        one.saturating_mul(restarts + 1)
    }

    fn log(&self, r: &SourceResult, dry_run: bool) {
        let kind = r.spec.kind.as_str();
        let took_ms = r.took.as_millis() as u64;
        match &r.error {
            // The common case gets the short line: at 10,000 sources its
            // formatting was a tenth of the daemon's CPU per sweep.
            None if r.report.unchanged && r.restarts == 0 && !dry_run => {
                self.metrics.walk(kind, "unchanged", r.took);
                tracing::info!(source = %r.spec, outcome = "unchanged", entries = r.report.entries, took_ms, "walk");
            }
            None => {
                let outcome = if r.report.unchanged {
                    "unchanged"
                } else {
                    "complete"
                };
                self.metrics.walk(kind, outcome, r.took);
                tracing::info!(source = %r.spec, outcome, entries = r.report.entries,
                    events = r.report.changes.len(), unconfirmed_absences = r.report.pending_absent, shift_restarts = r.restarts, took_ms, dry_run, "walk");
            }
            Some(WalkError::Gone { error, .. }) => {
                self.metrics.walk(kind, "unavailable", r.took);
                if r.report.changes.is_empty() {
                    tracing::info!(source = %r.spec, outcome = "unavailable", error = %error, took_ms, dry_run,
                        "walk: source still does not exist");
                    return;
                }
                tracing::warn!(source = %r.spec, outcome = "unavailable", error = %error, events = r.report.changes.len(),
                    took_ms, dry_run, "walk: source does not exist; its entries are kept");
            }
            Some(e) => {
                self.metrics.walk(kind, "failed", r.took);
                tracing::warn!(source = %r.spec, outcome = "failed", error = %e, took_ms, dry_run,
                    "walk did not finish; nothing changed");
            }
        }
        for t in crate::event::EventType::ALL {
            let n = r.report.events.iter().filter(|e| e.kind == t).count();
            if n > 0 {
                self.metrics.events(t.as_str(), n as u64);
            }
        }
    }
}
