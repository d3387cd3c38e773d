//! The sync engine: walk a source, apply the walk to the store, and the
//! loops that do so on a schedule and fire `ban.expired` on time.

pub mod expiry;
pub mod scheduler;

use std::sync::Arc;
use std::time::Instant;

use crate::config::{Initial, SyncSettings};
use crate::diff;
use crate::metrics::Metrics;
use crate::source::SourceSpec;
use crate::store::ops::{self, WalkOutcome, WalkReport};
use crate::store::{Store, StoreError, now_ms};
use crate::tencent::{TencentClient, WalkError, walk};

/// How one source's walk ended.
#[derive(Debug, Clone)]
pub struct SourceResult {
    pub spec: SourceSpec,
    pub report: WalkReport,
    /// The walk's error, if it did not complete (a gone source completes).
    pub error: Option<WalkError>,
    pub took: std::time::Duration,
}

impl SourceResult {
    pub fn failed(&self) -> bool {
        self.error.as_ref().is_some_and(|e| !e.is_gone())
    }
}

/// Walks sources and applies the result: shared by the daemon and `sync`.
#[derive(Clone)]
pub struct Syncer {
    pub client: Arc<TencentClient>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub page_size: u32,
    pub blocklist_page_size: u32,
    pub initial: Initial,
}

impl Syncer {
    pub fn new(
        client: Arc<TencentClient>,
        store: Store,
        metrics: Arc<Metrics>,
        sync: &SyncSettings,
    ) -> Self {
        Syncer {
            client,
            store,
            metrics,
            page_size: sync.page_size,
            blocklist_page_size: sync.blocklist_page_size,
            initial: sync.initial,
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
        let walked = walk::walk(
            &self.client,
            spec,
            self.page_size,
            self.blocklist_page_size,
            progress,
        )
        .await;
        let (outcome, error) = match walked {
            Ok(entries) => {
                let digest = diff::digest(&entries);
                (WalkOutcome::Complete { entries, digest }, None)
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
        let (s, initial, now) = (spec.clone(), self.initial, now_ms());
        let apply =
            move |ctx: &mut crate::store::Ctx<'_>| ops::apply_walk(ctx, &s, outcome, now, initial);
        let report = if dry_run {
            self.store.dry_run(apply).await?
        } else {
            self.store.write(apply).await?
        };
        let took = started.elapsed();
        let result = SourceResult {
            spec: spec.clone(),
            report,
            error,
            took,
        };
        self.log(&result, dry_run);
        Ok(result)
    }

    fn log(&self, r: &SourceResult, dry_run: bool) {
        let kind = r.spec.kind.as_str();
        let took_ms = r.took.as_millis() as u64;
        match &r.error {
            None => {
                let outcome = if r.report.unchanged {
                    "unchanged"
                } else {
                    "complete"
                };
                self.metrics.walk(kind, outcome, r.took);
                tracing::info!(source = %r.spec, outcome, entries = r.report.entries,
                    events = r.report.changes.len(), unconfirmed_absences = r.report.pending_absent, took_ms, dry_run, "walk");
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
