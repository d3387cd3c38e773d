//! What the engines ask of the store, each named for what it is for. This
//! is the store's whole surface towards the engines: no SQL, no connection
//! and no transaction leaves `src/store/`, so a second backend implements
//! these methods and nothing else. Each runs as one job of the writer (one
//! savepoint: all of it or none of it).

use super::found::{self, ListingDelta};
use super::mirrors::{self, Job};
use super::ops::{self, AttemptOutcome, CommittedEvent, WalkOutcome, WalkReport};
use super::propagation::Planned;
use super::{OwedDelivery, Result, Store};
use crate::diff::Initial;
use crate::mirror::{Answer, Read, Request, Window};
use crate::source::{Origin, SourceKind, SourceSpec};

/// A webhook's owed work as the dispatcher rescans it.
#[derive(Debug, Clone)]
pub struct OwedLanes {
    pub webhook: String,
    /// Disabled by a 410 Gone (and not enabled again by configuration).
    pub disabled: bool,
    /// Each lane with owed deliveries: (source id, its newest owed id).
    pub lanes: Vec<(i64, i64)>,
}

/// A mirror request's outcome, as the propagator hands it back.
#[derive(Debug, Clone)]
pub struct Finished {
    pub job: Job,
    pub answer: Answer,
    /// The ends the request may have set.
    pub window: Window,
    /// The vendor's code and message when it failed.
    pub error: Option<(Option<i64>, String)>,
}

impl Store {
    /// Lets webhooks disabled by a 410 Gone deliver again (the operator
    /// listed them in the configuration). Returns how many were disabled.
    pub async fn enable_webhooks(&self, names: Vec<String>) -> Result<usize> {
        self.write(move |ctx| ops::enable_webhooks(ctx.conn, &names))
            .await
    }

    /// Makes sure every configured source has its row (and its `seq`).
    pub async fn register_sources(&self, sources: Vec<SourceSpec>) -> Result<()> {
        self.write(move |ctx| {
            for s in &sources {
                ops::source_row(ctx, s)?;
            }
            found::configured(ctx, &sources)
        })
        .await
    }

    /// Applies one listing of `kind` (see `found::record_listing`).
    pub async fn record_listing(
        &self,
        kind: SourceKind,
        listed: Vec<SourceSpec>,
        admitted: Vec<SourceSpec>,
        complete: bool,
        error: Option<String>,
        now_ms: i64,
    ) -> Result<ListingDelta> {
        self.write(move |ctx| {
            found::record_listing(
                ctx,
                kind,
                &listed,
                &admitted,
                complete,
                error.as_deref(),
                now_ms,
            )
        })
        .await
    }

    /// Records sources a callback named (a created group or room); returns
    /// those that are new or back from retirement.
    pub async fn found_by_callback(&self, specs: Vec<SourceSpec>) -> Result<Vec<SourceSpec>> {
        self.write(move |ctx| {
            let mut out = Vec::new();
            for s in specs {
                if found::found(ctx, &s, Origin::Callback)? {
                    out.push(s);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Enrols a blocklist named by a callback at `at_s`, with the accounts
    /// its first walk reports.
    pub async fn enrol(
        &self,
        spec: SourceSpec,
        accounts: Vec<String>,
        at_s: i64,
    ) -> Result<found::Enrolled> {
        self.write(move |ctx| found::enrol(ctx, &spec, &accounts, at_s))
            .await
    }

    /// Records the scheduler's plan (next walk and why) for `status`.
    pub async fn record_schedule(&self, rows: Vec<found::ScheduleRow>) -> Result<()> {
        self.write(move |ctx| found::record_schedule(ctx, &rows))
            .await
    }

    /// Stops walking a found source the vendor no longer has.
    pub async fn retire(&self, spec: SourceSpec, now_ms: i64) -> Result<bool> {
        self.write(move |ctx| found::retire(ctx, &spec, now_ms))
            .await
    }

    /// Every found source not retired, with how it was found.
    pub async fn found_sources(&self) -> Result<Vec<(SourceSpec, Origin)>> {
        self.write(move |ctx| found::found_sources(ctx.conn)).await
    }

    /// Commits a walk's outcome: the diff, its events and the deliveries
    /// they owe, in one transaction. `dry_run`: computed, then rolled back.
    pub async fn apply_walk(
        &self,
        spec: SourceSpec,
        outcome: WalkOutcome,
        now_ms: i64,
        initial: Initial,
        dry_run: bool,
    ) -> Result<WalkReport> {
        let apply =
            move |ctx: &mut super::Ctx<'_>| ops::apply_walk(ctx, &spec, outcome, now_ms, initial);
        if dry_run {
            self.dry_run(apply).await
        } else {
            self.write(apply).await
        }
    }

    /// Records complete, unchanged walks: (source, when) each.
    pub async fn touch_sources(&self, walks: Vec<(SourceSpec, i64)>) -> Result<()> {
        self.write(move |ctx| ops::touch_sources(ctx.conn, &walks))
            .await
    }

    /// Emits `ban.expired` for up to `limit` bans whose end has passed.
    pub async fn expire_due(&self, now_ms: i64, limit: usize) -> Result<Vec<CommittedEvent>> {
        self.write(move |ctx| ops::expire_due(ctx, now_ms, limit))
            .await
    }

    /// When the next stored ban ends (Unix s).
    pub async fn next_expiry(&self) -> Result<Option<i64>> {
        self.read(|ctx| ops::next_expiry(ctx.conn)).await
    }

    /// Every webhook's owed lanes, for the dispatcher's rescan.
    pub async fn owed_lanes(&self, webhooks: Vec<String>) -> Result<Vec<OwedLanes>> {
        self.read(move |ctx| {
            let disabled = ops::disabled_webhooks(ctx.conn)?;
            let mut out = Vec::new();
            for webhook in webhooks {
                out.push(OwedLanes {
                    disabled: disabled.contains(&webhook),
                    lanes: ops::lanes_with_work(ctx.conn, &webhook)?,
                    webhook,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Up to `limit` owed deliveries of one lane after `after_id`, in order.
    pub async fn load_lane(
        &self,
        webhook: String,
        source_id: i64,
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<OwedDelivery>> {
        self.read(move |ctx| ops::load_lane(ctx.conn, &webhook, source_id, after_id, limit))
            .await
    }

    /// Records a delivery attempt: delivered, retry later, or dead.
    pub async fn record_attempt(
        &self,
        delivery_id: i64,
        webhook: String,
        outcome: AttemptOutcome,
        now_ms: i64,
    ) -> Result<()> {
        self.write(move |ctx| ops::record_attempt(ctx, delivery_id, &webhook, &outcome, now_ms))
            .await
    }

    /// Forgets mirrors that ended, then takes up to `limit` due jobs.
    pub async fn due_mirror_jobs(
        &self,
        now_ms: i64,
        max_retry_delay_ms: i64,
        limit: usize,
    ) -> Result<Vec<Job>> {
        self.write(move |ctx| {
            mirrors::forget_ended(ctx.conn, now_ms.div_euclid(1000))?;
            mirrors::due(ctx.conn, now_ms, max_retry_delay_ms, limit)
        })
        .await
    }

    /// When the next mirror job is due (Unix ms).
    pub async fn next_mirror_due(
        &self,
        now_ms: i64,
        max_retry_delay_ms: i64,
    ) -> Result<Option<i64>> {
        self.read(move |ctx| mirrors::next_due(ctx.conn, now_ms, max_retry_delay_ms))
            .await
    }

    /// Decides each job against a fresh read of its target and commits the
    /// plan; returns what to send and the events the plans emitted.
    pub async fn plan_mirror_jobs(
        &self,
        jobs: Vec<(Job, Read)>,
        now_ms: i64,
        max_call_s: i64,
    ) -> Result<Vec<(Job, Planned, Vec<CommittedEvent>)>> {
        self.write(move |ctx| {
            let mut out = Vec::new();
            for (job, read) in jobs {
                let (p, events) = ops::plan_mirror_job(ctx, &job, read, now_ms, max_call_s)?;
                out.push((job, p, events));
            }
            Ok(out)
        })
        .await
    }

    /// The target could not be read for these jobs: retry, or give up
    /// (`gone`: the vendor says the target no longer exists).
    pub async fn mirror_reads_failed(
        &self,
        jobs: Vec<Job>,
        gone: Option<(Option<i64>, String)>,
        error: String,
        now_ms: i64,
    ) -> Result<Vec<CommittedEvent>> {
        self.write(move |ctx| {
            let mut out = Vec::new();
            for job in &jobs {
                out.extend(ops::mirror_read_failed(
                    ctx,
                    job,
                    gone.clone(),
                    &error,
                    now_ms,
                )?);
            }
            Ok(out)
        })
        .await
    }

    /// Records the answers to one request's jobs.
    pub async fn finish_mirror_jobs(
        &self,
        request: Request,
        finished: Vec<Finished>,
        now_ms: i64,
    ) -> Result<Vec<CommittedEvent>> {
        self.write(move |ctx| {
            let mut out = Vec::new();
            for f in finished {
                out.extend(ops::finish_mirror_job(
                    ctx, &f.job, request, f.answer, f.window, f.error, now_ms,
                )?);
            }
            Ok(out)
        })
        .await
    }

    /// Deletes up to `limit` events committed before `cutoff_ms` that no
    /// delivery, queued mirror job or mirror still needs (one short job:
    /// retention never holds the writer long). Returns how many.
    pub async fn delete_old_events(&self, cutoff_ms: i64, limit: usize) -> Result<usize> {
        self.write(move |ctx| ops::delete_old_events(ctx.conn, cutoff_ms, limit))
            .await
    }

    /// Gives free pages back to the file system, a few at a time.
    pub async fn reclaim_space(&self, pages: u32) -> Result<()> {
        self.write(move |ctx| ops::reclaim_space(ctx.conn, pages))
            .await
    }

    /// Test hook: the disk is full from now on (`true`), or not.
    #[doc(hidden)]
    pub async fn fill_disk(&self, full: bool) -> Result<()> {
        self.write(move |ctx| {
            if full {
                let pages: i64 = ctx.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                ctx.conn
                    .execute_batch(&format!("PRAGMA max_page_count = {pages}"))?;
            } else {
                ctx.conn
                    .execute_batch("PRAGMA max_page_count = 1073741823")?;
            }
            Ok(())
        })
        .await
    }
}
