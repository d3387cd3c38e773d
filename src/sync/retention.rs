//! Retention (`store.retention`): delivered events older than the limit
//! are deleted, a few hundred per transaction so the writer is never held
//! long; events still owed to a webhook (or dead, which an operator may
//! retry), and those a mirror still names, are kept. The freed space goes
//! back to the file system.

use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::store::{Result, Store};

/// Events deleted per transaction.
const BATCH: usize = 500;
/// Free pages given back after a pass (4 KiB each).
const RECLAIM_PAGES: u32 = 10_000;
/// How often a pass runs.
const EVERY: Duration = Duration::from_secs(3600);

pub struct Retention {
    pub store: Store,
    pub clock: Clock,
    /// How long delivered events are kept; `None`: for ever (the current
    /// value: a reload changes it).
    pub keep: watch::Receiver<Option<Duration>>,
}

impl Retention {
    /// One pass: deletes what is old enough, batch by batch. Returns how
    /// many events were deleted. Tests drive this directly.
    pub async fn try_execute(&self) -> Result<usize> {
        let Some(keep) = *self.keep.borrow() else {
            return Ok(0);
        };
        let cutoff = self.clock.now_ms() - keep.as_millis() as i64;
        let mut total = 0;
        loop {
            let n = self.store.delete_old_events(cutoff, BATCH).await?;
            total += n;
            if n < BATCH {
                break;
            }
            // Let the walks' and deliveries' transactions in between.
            tokio::task::yield_now().await;
        }
        if total > 0 {
            self.store.reclaim_space(RECLAIM_PAGES).await?;
            tracing::info!(
                deleted = total,
                "retention: delivered events past store.retention deleted"
            );
        }
        Ok(total)
    }

    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.try_execute().await {
                tracing::warn!(error = %e, "retention: cannot delete old events; will try again");
            }
            tokio::select! {
                _ = tokio::time::sleep(EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}
