//! Discovery: walks the app's group and room listings every
//! `discovery.interval` and hands what they find to the scheduler.
//!
//! Each kind has a loop of its own (the two listings use different APIs,
//! each paced to its own limit, apart from the ban-list walks). A listing
//! that failed or was partial retires nothing; found sources are recorded
//! and watched either way. Sources two complete listings in a row missed
//! are sent for a last walk (`Request::Check`): the scheduler retires them
//! only if the vendor says they no longer exist.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::scheduler::Request;
use crate::clock::Clock;
use crate::config::DiscoverySettings;
use crate::metrics::Metrics;
use crate::source::{SourceKind, SourceSpec};
use crate::store::{ListingDelta, Store, StoreError};
use crate::tencent::SharedClient;
use crate::tencent::listing;

/// What discovery runs with; replaced whole on reload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiscoveryPlan {
    pub settings: Option<DiscoverySettings>,
    /// Listed in `[sources]`: watched anyway, never recorded as found.
    pub configured: HashSet<SourceSpec>,
}

#[derive(Clone)]
pub struct Discovery {
    pub client: SharedClient,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub requests: mpsc::Sender<Request>,
}

impl Discovery {
    /// One listing of `kind`, recorded, its news sent to the scheduler.
    pub async fn try_execute(
        &self,
        kind: SourceKind,
        plan: &DiscoveryPlan,
    ) -> Result<ListingDelta, StoreError> {
        let Some(settings) = &plan.settings else {
            return Ok(ListingDelta::default());
        };
        let started = std::time::Instant::now();
        let l = listing::list(&self.client.get(), kind).await;
        let admitted: Vec<SourceSpec> = l
            .found
            .iter()
            .filter(|s| settings.admits(s) && !plan.configured.contains(*s))
            .cloned()
            .collect();
        let outcome = if l.complete { "complete" } else { "partial" };
        self.metrics.listing(kind.as_str(), outcome);
        let delta = self
            .store
            .record_listing(
                kind,
                l.found.clone(),
                admitted.clone(),
                l.complete,
                l.error.clone(),
                self.clock.now_ms(),
            )
            .await?;
        let took_ms = started.elapsed().as_millis() as u64;
        match &l.error {
            None => tracing::info!(
                kind = kind.as_str(),
                found = l.found.len(),
                watched = admitted.len(),
                new = delta.watch.len(),
                missing_twice = delta.check.len(),
                pages = l.pages,
                took_ms,
                "listing"
            ),
            Some(e) => {
                tracing::warn!(kind = kind.as_str(), found = l.found.len(), new = delta.watch.len(), pages = l.pages,
                took_ms, error = %e, "listing did not finish: what it found is watched, nothing is retired")
            }
        }
        // Every admitted source, not only the new ones: the scheduler
        // ignores what it watches already, and takes back any it dropped.
        if !admitted.is_empty() {
            let _ = self.requests.send(Request::Watch(admitted)).await;
        }
        if !delta.check.is_empty() {
            let _ = self
                .requests
                .send(Request::Check(delta.check.clone()))
                .await;
        }
        Ok(delta)
    }

    /// Lists `kind` every interval while the plan has it on, until `stop`.
    async fn run_kind(
        self,
        kind: SourceKind,
        mut plans: watch::Receiver<DiscoveryPlan>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let plan = plans.borrow_and_update().clone();
            let on = plan.settings.as_ref().map(|s| match kind {
                SourceKind::Group => s.groups,
                SourceKind::Room => s.rooms,
                SourceKind::Blocklist => false,
            });
            let wait = match (on, &plan.settings) {
                (Some(true), Some(s)) => {
                    if let Err(e) = self.try_execute(kind, &plan).await {
                        tracing::error!(kind = kind.as_str(), error = %e, "cannot record a listing");
                    }
                    Some(s.interval)
                }
                _ => None,
            };
            tokio::select! {
                _ = async { tokio::time::sleep(wait.unwrap()).await }, if wait.is_some() => {}
                changed = plans.changed() => if changed.is_err() { return },
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            }
        }
    }

    /// The listings' loops, one per kind, until `stop`.
    pub async fn run(self, plans: watch::Receiver<DiscoveryPlan>, stop: watch::Receiver<bool>) {
        let groups = self
            .clone()
            .run_kind(SourceKind::Group, plans.clone(), stop.clone());
        let rooms = self.run_kind(SourceKind::Room, plans, stop);
        tokio::join!(groups, rooms);
    }
}
