//! The expiry timer: `ban.expired` at the moment a ban's end passes,
//! whether or not a walk runs then, once only (the entry leaves the
//! running set in the same transaction as its event). At start-up it
//! reports bans that ended while the daemon was down.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::store::{Result, Store};

/// Expiries emitted per transaction; more are taken in the next round.
const BATCH: usize = 5_000;
/// Look again at least this often, whatever the store says.
const MAX_SLEEP: Duration = Duration::from_secs(60);

pub struct ExpiryTimer {
    pub store: Store,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    pub clock: Clock,
}

impl ExpiryTimer {
    /// Emits every expiry due now. Tests drive this directly.
    pub async fn try_execute(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let now = self.clock.now_ms();
            let events = self.store.expire_due(now, BATCH).await?;
            total += events.len();
            if !events.is_empty() {
                self.metrics.events("ban.expired", events.len() as u64);
                tracing::info!(count = events.len(), "ban.expired emitted");
            }
            if events.len() < BATCH {
                return Ok(total);
            }
        }
    }

    /// When the next ban ends (Unix ms).
    pub async fn next_due(&self) -> Result<Option<i64>> {
        Ok(self
            .store
            .next_expiry()
            .await?
            .map(|s| s.saturating_mul(1000)))
    }

    pub async fn run(self, mut wake: mpsc::UnboundedReceiver<()>, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.try_execute().await {
                tracing::error!(error = %e, "expiry pass failed; will try again");
            }
            let sleep = match self.next_due().await {
                Ok(Some(due)) => {
                    Duration::from_millis((due - self.clock.now_ms()).max(0) as u64).min(MAX_SLEEP)
                }
                Ok(None) => MAX_SLEEP,
                Err(_) => Duration::from_secs(1),
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                w = wake.recv() => {
                    if w.is_none() { return }
                    while wake.try_recv().is_ok() {}
                }
                _ = stop.changed() => return,
            }
        }
    }
}
