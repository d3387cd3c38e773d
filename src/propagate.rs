//! Ban propagation: `[[propagate]]` rules mirror an origin's bans to
//! targets. Mirror actions are queued in the same transaction as the event
//! that causes them, so none is lost across a crash, then applied by
//! [`Propagator`] in batches of 20 under the per-API rate limit.
//!
//! No echo: every ban bansync applies is remembered in `mirrors`; when the
//! target's own walk later reports it, it is recognised and not mirrored
//! again, so rules that form a cycle settle at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{OptionalExtension, params};

use crate::event::{Change, EventType};
use crate::source::SourceSpec;
use crate::store::ops::{self, CommittedEvent};
use crate::store::{Ctx, Notice, Result, Store, StoreError};
use crate::tencent::{ErrorClass, SharedClient, walk};

/// The vendor computes a ban's end from the duration we send, so the end
/// it reports may differ from ours by the request's latency.
pub const END_TOLERANCE_SECS: i64 = 5;
/// Transient failures are retried this many times, then reported failed.
pub const MAX_ATTEMPTS: i64 = 6;

/// Queues the mirror actions `event` causes. Runs inside the event's savepoint.
pub fn queue_for_event(
    ctx: &mut Ctx<'_>,
    source_id: i64,
    spec: &SourceSpec,
    event: &CommittedEvent,
    now_ms: i64,
) -> Result<()> {
    let (Some(account), rules) = (event.account.as_deref(), &ctx.emit.propagate) else {
        return Ok(());
    };
    let action = match event.kind {
        EventType::BanAdded | EventType::BanUpdated => "ban",
        EventType::BanLifted => "unban",
        _ => return Ok(()),
    };
    let source = spec.to_string();
    if action == "ban" && is_echo(ctx.conn, &source, account, event.value.unwrap_or(0))? {
        return Ok(());
    }
    let mut queued = false;
    let now_s = now_ms / 1000;
    let targets: Vec<SourceSpec> = rules
        .iter()
        .filter(|r| r.from.contains(spec) && (action == "ban" || r.lift))
        .flat_map(|r| r.to.iter().cloned())
        .collect();
    for target in targets {
        let target_s = target.to_string();
        let (mut act, mut until) = (action, event.value);
        if action == "ban" {
            if holds_at_least(ctx.conn, &target_s, account, until.unwrap_or(0))? {
                continue;
            }
        } else {
            // Lift only what this origin's mirroring caused; where the mirror
            // extended the target's own ban, give that ban back instead.
            let caused: Option<(String, Option<i64>)> = ctx
                .conn
                .prepare_cached("SELECT origin_source, prior_until FROM mirrors WHERE target = ?1 AND account = ?2")?
                .query_row(params![target_s, account], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            match caused {
                Some((origin, prior)) if origin == source => {
                    if let Some(p) = prior.filter(|p| *p > now_s + 1) {
                        (act, until) = ("restore", Some(p));
                    }
                }
                _ => continue,
            }
        }
        ctx.conn
            .prepare_cached(
                "INSERT INTO propagations (origin_event, origin_source_id, target, account, action, banned_until, next_attempt_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![event.rowid, source_id, target_s, account, act, until, now_ms])?;
        queued = true;
    }
    if queued {
        ctx.notify(Notice::Propagation);
    }
    Ok(())
}

/// A ban seen on `source` that bansync itself applied there.
fn is_echo(conn: &rusqlite::Connection, source: &str, account: &str, until: i64) -> Result<bool> {
    let mirrored: Option<i64> = conn
        .prepare_cached("SELECT banned_until FROM mirrors WHERE target = ?1 AND account = ?2")?
        .query_row(params![source, account], |r| r.get(0))
        .optional()?;
    Ok(mirrored.is_some_and(|m| (m - until).abs() <= END_TOLERANCE_SECS))
}

/// Whether `target` already holds a ban on `account` ending no earlier.
fn holds_at_least(
    conn: &rusqlite::Connection,
    target: &str,
    account: &str,
    until: i64,
) -> Result<bool> {
    let listed: Option<i64> = conn
        .prepare_cached(
            "SELECT e.value FROM entries e JOIN sources s ON s.id = e.source_id
             WHERE s.spec = ?1 AND e.account = ?2 AND e.state != 2",
        )?
        .query_row(params![target, account], |r| r.get(0))
        .optional()?;
    let mirrored: Option<i64> = conn
        .prepare_cached("SELECT banned_until FROM mirrors WHERE target = ?1 AND account = ?2")?
        .query_row(params![target, account], |r| r.get(0))
        .optional()?;
    Ok(listed
        .into_iter()
        .chain(mirrored)
        .any(|v| v >= until - END_TOLERANCE_SECS))
}

#[derive(Debug, Clone)]
struct Job {
    id: i64,
    origin_event: i64,
    origin_source_id: i64,
    target: String,
    account: String,
    action: String,
    banned_until: Option<i64>,
    attempts: i64,
}

/// Applies queued mirror actions.
pub struct Propagator {
    pub store: Store,
    /// Read at the start of each pass, so a reloaded key or region applies.
    pub client: SharedClient,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// What one pass did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub requests: usize,
    pub applied: usize,
    pub failed: usize,
    pub retrying: usize,
    pub skipped: usize,
}

impl Propagator {
    /// One pass over the due queue: every due job tried once. Tests drive
    /// this directly; the daemon calls it when notified and on a timer.
    pub async fn try_execute(&self) -> Result<PassReport> {
        let now = crate::store::now_ms();
        let jobs: Vec<Job> = self
            .store
            .write(move |ctx| {
                let mut stmt = ctx.conn.prepare_cached(
                    "SELECT id, origin_event, origin_source_id, target, account, action, banned_until, attempts
                     FROM propagations WHERE state = 0 AND next_attempt_ms <= ?1 ORDER BY id LIMIT 2000",
                )?;
                let rows = stmt.query_map([now], |r| {
                    Ok(Job {
                        id: r.get(0)?,
                        origin_event: r.get(1)?,
                        origin_source_id: r.get(2)?,
                        target: r.get(3)?,
                        account: r.get(4)?,
                        action: r.get(5)?,
                        banned_until: r.get(6)?,
                        attempts: r.get(7)?,
                    })
                })?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        let mut report = PassReport::default();
        let client = self.client.get();
        // One request carries one duration: group by target, action and end.
        let mut groups: BTreeMap<(String, String, Option<i64>), Vec<Job>> = BTreeMap::new();
        for j in jobs {
            groups
                .entry((j.target.clone(), j.action.clone(), j.banned_until))
                .or_default()
                .push(j);
        }
        for ((target, action, until), jobs) in groups {
            let spec: SourceSpec = target.parse().map_err(StoreError::Invalid)?;
            let now_s = crate::store::now_ms() / 1000;
            if action != "unban" && until.is_none_or(|u| u <= now_s) {
                // The origin's ban ended before it could be mirrored.
                let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
                report.skipped += ids.len();
                self.store
                    .write(move |ctx| {
                        for id in ids {
                            ctx.conn.execute(
                                "UPDATE propagations SET state = 3, done_ms = ?2 WHERE id = ?1",
                                params![id, now],
                            )?;
                        }
                        Ok(())
                    })
                    .await?;
                continue;
            }
            for chunk in jobs.chunks(crate::tencent::api::MAX_ACCOUNTS_PER_BAN) {
                let accounts: Vec<String> = chunk.iter().map(|j| j.account.clone()).collect();
                report.requests += 1;
                let outcome = if action != "unban" {
                    let until = until.unwrap_or(0);
                    let origin = self.origin_name(chunk[0].origin_source_id).await?;
                    let reason = if action == "restore" {
                        format!("bansync: own ban restored after {origin} lifted its mirror")
                    } else {
                        format!("bansync: mirrored from {origin}")
                    };
                    walk::ban(
                        &client,
                        &spec,
                        &accounts,
                        (until - now_s).max(1) as u64,
                        &reason,
                    )
                    .await
                } else {
                    walk::unban(&client, &spec, &accounts).await
                };
                let chunk = chunk.to_vec();
                let r = self
                    .store
                    .write(move |ctx| record(ctx, &chunk, &outcome, now))
                    .await?;
                report.applied += r.applied;
                report.failed += r.failed;
                report.retrying += r.retrying;
            }
        }
        self.metrics.propagation("applied", report.applied as u64);
        self.metrics.propagation("failed", report.failed as u64);
        self.metrics.propagation("retrying", report.retrying as u64);
        if report.requests > 0 {
            tracing::info!(
                requests = report.requests,
                applied = report.applied,
                failed = report.failed,
                retrying = report.retrying,
                skipped = report.skipped,
                "propagation pass"
            );
        }
        Ok(report)
    }

    async fn origin_name(&self, source_id: i64) -> Result<String> {
        self.store
            .write(move |ctx| {
                Ok(ctx.conn.query_row(
                    "SELECT spec FROM sources WHERE id = ?1",
                    [source_id],
                    |r| r.get(0),
                )?)
            })
            .await
    }

    /// When the next queued job is due (Unix ms), if any.
    pub async fn next_due(&self) -> Result<Option<i64>> {
        self.store
            .write(|ctx| {
                Ok(ctx.conn.query_row(
                    "SELECT MIN(next_attempt_ms) FROM propagations WHERE state = 0",
                    [],
                    |r| r.get(0),
                )?)
            })
            .await
    }

    /// Runs passes until `stop`: when notified, and when a retry is due.
    pub async fn run(
        self,
        mut wake: tokio::sync::mpsc::UnboundedReceiver<()>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            if let Err(e) = self.try_execute().await {
                tracing::error!(error = %e, "propagation pass failed");
            }
            let wait = match self.next_due().await {
                Ok(Some(due)) => {
                    Duration::from_millis((due - crate::store::now_ms()).clamp(50, 60_000) as u64)
                }
                _ => Duration::from_secs(60),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                w = wake.recv() => if w.is_none() { return },
                _ = stop.changed() => return,
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}

#[derive(Default)]
struct Recorded {
    applied: usize,
    failed: usize,
    retrying: usize,
}

fn record(
    ctx: &mut Ctx<'_>,
    jobs: &[Job],
    outcome: &walk::BatchOutcome,
    now: i64,
) -> Result<Recorded> {
    let mut r = Recorded::default();
    for j in jobs {
        let origin: String = ctx.conn.query_row(
            "SELECT spec FROM sources WHERE id = ?1",
            [j.origin_source_id],
            |x| x.get(0),
        )?;
        let origin_spec: SourceSpec = origin.parse().map_err(StoreError::Invalid)?;
        let failure = outcome
            .failed
            .iter()
            .find(|(a, _)| a == &j.account)
            .map(|(_, e)| e);
        let mut change = Change::entry(
            EventType::PropagationApplied,
            &j.account,
            j.banned_until.unwrap_or(0),
            None,
            now,
        );
        change.value = if j.action == "ban" {
            j.banned_until
        } else {
            None
        };
        change.target = Some(j.target.clone());
        match failure {
            None => {
                ctx.conn.execute("UPDATE propagations SET state = 1, attempts = attempts + 1, done_ms = ?2 WHERE id = ?1", params![j.id, now])?;
                if j.action == "ban" {
                    // The target's own running ban, if it had one before any mirror.
                    let prior: Option<i64> = ctx
                        .conn
                        .query_row(
                            "SELECT e.value FROM entries e JOIN sources s ON s.id = e.source_id
                             WHERE s.spec = ?1 AND e.account = ?2 AND e.state != 2 AND e.value > ?3",
                            params![j.target, j.account, now / 1000],
                            |r| r.get(0),
                        )
                        .optional()?;
                    ctx.conn.execute(
                        "INSERT INTO mirrors (target, account, banned_until, origin_source, origin_event, applied_ms, prior_until)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                         ON CONFLICT (target, account) DO UPDATE SET banned_until = excluded.banned_until,
                         origin_source = excluded.origin_source, origin_event = excluded.origin_event, applied_ms = excluded.applied_ms",
                        params![j.target, j.account, j.banned_until, origin, j.origin_event, now, prior],
                    )?;
                } else {
                    ctx.conn.execute(
                        "DELETE FROM mirrors WHERE target = ?1 AND account = ?2",
                        params![j.target, j.account],
                    )?;
                }
                ops::emit(ctx, j.origin_source_id, &origin_spec, &change, now)?;
                r.applied += 1;
            }
            Some(e) => {
                let transient = matches!(e.class(), ErrorClass::Retry | ErrorClass::BackOff);
                if transient && j.attempts + 1 < MAX_ATTEMPTS {
                    let delay = 1000i64 << (j.attempts + 1).min(10);
                    ctx.conn.execute(
                        "UPDATE propagations SET attempts = attempts + 1, next_attempt_ms = ?2, error_code = ?3, error_info = ?4 WHERE id = ?1",
                        params![j.id, now + delay, e.code(), e.to_string()],
                    )?;
                    r.retrying += 1;
                } else {
                    // Refused for good (or out of attempts): report once, never retry.
                    ctx.conn.execute(
                        "UPDATE propagations SET state = 2, attempts = attempts + 1, done_ms = ?2, error_code = ?3, error_info = ?4 WHERE id = ?1",
                        params![j.id, now, e.code(), e.to_string()],
                    )?;
                    change.kind = EventType::PropagationFailed;
                    change.error_code = e.code();
                    change.error_info = Some(e.to_string());
                    ops::emit(ctx, j.origin_source_id, &origin_spec, &change, now)?;
                    r.failed += 1;
                }
            }
        }
    }
    Ok(r)
}
