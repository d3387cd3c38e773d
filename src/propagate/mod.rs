//! Ban propagation: `[[propagate]]` rules mirror an origin's bans to
//! targets, and with `lift = true` lift the mirrors bansync still owns
//! when the origin's ban is lifted early.
//!
//! Who owns what is decided in [`crate::mirror`] (pure) and kept in the store's
//! mirror records, which the walks of origins and targets update inside
//! the transactions of their events: an origin's ban queues a mirror job;
//! a target's walk showing one of bansync's own ends is an echo, never
//! mirrored back or onward; any other end hands the mirror to the
//! target's moderators. Jobs are queued in the same transaction as the
//! event that causes them, so none is lost across a crash.
//!
//! [`Propagator`] runs the jobs. Per target with due jobs it reads the
//! target's list once (so a job acts on what the target holds now, not on
//! the last walk), decides each job against it, commits the plan (a ban
//! request is recorded as out before it is sent, so a walk that sees it
//! land first still knows it as bansync's), sends 20 accounts a request,
//! one attempt each, and commits each answer with the window of ends the
//! request may have set. The job's own retries re-decide every time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::event::EventType;
use crate::mirror::{Answer, Read, Request, Window};
use crate::source::SourceSpec;
use crate::store::{
    CommittedEvent, Finished, Job, MAX_ATTEMPTS, MAX_RETRY_DELAY_MS, Planned, Result, Store,
};
use crate::tencent::walk::{self, Moderation};
use crate::tencent::{ApiError, ApiErrorKind, ErrorClass, SharedClient, TencentClient};

/// Jobs taken in one pass.
const PASS_LIMIT: usize = 2000;

/// The least time after giving up on a request that the vendor is assumed
/// to still act on it (see `Window::of_request`).
const LATE_S: i64 = 30;

/// A target's list as a fresh read showed it.
struct TargetList {
    entries: HashMap<String, i64>,
    /// The read can prove absences (the list did not shift under it).
    complete: bool,
}

/// Jobs that can share one request: one kind, one end, one reason.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SendKey {
    request: Request,
    until: Option<i64>,
    /// Named in the request's reason.
    origin: String,
}

/// Applies queued mirror jobs.
pub struct Propagator {
    pub store: Store,
    /// Read at the start of each pass, so a reloaded key or region applies.
    pub client: SharedClient,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub clock: Clock,
}

/// What one pass did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    /// Ban and unban requests sent.
    pub requests: usize,
    /// Targets' lists read before deciding.
    pub reads: usize,
    pub applied: usize,
    pub failed: usize,
    pub retrying: usize,
    /// Jobs that had nothing to send (held already, superseded, not ours).
    pub skipped: usize,
}

/// How a failed request is taken: did it apply, may it be tried again.
fn classify(e: &ApiError, attempts: i64) -> Answer {
    let last = attempts + 1 >= MAX_ATTEMPTS;
    match &e.kind {
        ApiErrorKind::Vendor { .. } => match e.class() {
            ErrorClass::Retry | ErrorClass::BackOff | ErrorClass::RenewSig => {
                Answer::Refused { permanent: last }
            }
            _ => Answer::Refused { permanent: true },
        },
        ApiErrorKind::Http(429) => Answer::Refused { permanent: last },
        ApiErrorKind::Http(s) if *s < 500 => Answer::Refused { permanent: true },
        // No answer, a gateway's error or an unreadable one: it may have applied.
        ApiErrorKind::Http(_) | ApiErrorKind::Transport(_) | ApiErrorKind::Malformed(_) => {
            Answer::Unknown { permanent: last }
        }
    }
}

fn count(report: &mut PassReport, events: &[CommittedEvent]) {
    for e in events {
        match e.kind {
            EventType::PropagationApplied => report.applied += 1,
            EventType::PropagationFailed => report.failed += 1,
            _ => {}
        }
    }
}

impl Propagator {
    /// One pass over the due queue: every due job tried once. Tests drive
    /// this directly; the daemon calls it when notified and on a timer.
    pub async fn try_execute(&self) -> Result<PassReport> {
        let now = self.clock.now_ms();
        let jobs: Vec<Job> = self
            .store
            .due_mirror_jobs(now, MAX_RETRY_DELAY_MS, PASS_LIMIT)
            .await?;
        let mut report = PassReport::default();
        let client = self.client.get();
        let mut by_target: BTreeMap<SourceSpec, Vec<Job>> = BTreeMap::new();
        for j in jobs {
            by_target.entry(j.target.clone()).or_default().push(j);
        }
        for (target, jobs) in by_target {
            self.target_pass(&client, &target, jobs, &mut report)
                .await?;
        }
        self.metrics.propagation("applied", report.applied as u64);
        self.metrics.propagation("failed", report.failed as u64);
        self.metrics.propagation("retrying", report.retrying as u64);
        self.metrics.propagation("skipped", report.skipped as u64);
        if report.requests + report.failed + report.skipped > 0 {
            tracing::info!(
                requests = report.requests,
                reads = report.reads,
                applied = report.applied,
                failed = report.failed,
                retrying = report.retrying,
                skipped = report.skipped,
                "propagation pass"
            );
        }
        Ok(report)
    }

    /// Decides the due jobs of `target` against a fresh read of its list and
    /// sends what they ask for. Jobs that share one request go together;
    /// before each further request the list is read again, so that every
    /// request acts on what the target holds just before it (a moderator
    /// may act at any moment; a read taken before earlier, slow requests
    /// would widen the window in which bansync cannot see them).
    async fn target_pass(
        &self,
        client: &TencentClient,
        target: &SourceSpec,
        mut jobs: Vec<Job>,
        report: &mut PassReport,
    ) -> Result<()> {
        let timeout = client.settings().timeout;
        // A request that is out counts as bansync's for as long as the client
        // may wait for it, plus as long again for a vendor that acts late,
        // plus a minute of pacing held back after a rate-limit answer.
        let max_call_s = (client.max_request_duration() + timeout).as_secs() as i64 + 61;
        // A request given up on may still be acted on: a server that queued
        // it works through its queue. Its window stays open this long.
        let late_s = LATE_S.max(3 * timeout.as_secs() as i64);
        while !jobs.is_empty() {
            let Some(values) = self.read_target(client, target, &jobs, report).await? else {
                return Ok(());
            };
            let now = self.clock.now_ms();
            let planned: Vec<(Job, Planned)> = self
                .store
                .plan_mirror_jobs(
                    jobs.into_iter()
                        .map(|job| {
                            let read = Read {
                                value: values.entries.get(&job.account).copied(),
                                complete: values.complete,
                            };
                            (job, read)
                        })
                        .collect(),
                    now,
                    max_call_s,
                )
                .await?
                .into_iter()
                .map(|(job, p, events)| {
                    count(report, &events);
                    if p == Planned::Done && events.is_empty() {
                        report.skipped += 1;
                    }
                    (job, p)
                })
                .collect();
            // One request carries one duration and one reason.
            let mut sends: BTreeMap<SendKey, Vec<Job>> = BTreeMap::new();
            for (job, p) in planned {
                if let Planned::Send { request, until } = p {
                    let key = SendKey {
                        request,
                        until,
                        origin: job.origin.to_string(),
                    };
                    sends.entry(key).or_default().push(job);
                }
            }
            let Some((key, group)) = sends.pop_first() else {
                break;
            };
            self.send(client, target, key, &group, late_s, report)
                .await?;
            // The rest are decided again after a fresh read.
            jobs = sends.into_values().flatten().collect();
        }
        Ok(())
    }

    /// Reads `target`'s list for `jobs`, or records why it cannot be read.
    async fn read_target(
        &self,
        client: &TencentClient,
        target: &SourceSpec,
        jobs: &[Job],
        report: &mut PassReport,
    ) -> Result<Option<TargetList>> {
        report.reads += 1;
        let page = crate::tencent::api::MAX_PAGE_SIZE;
        match walk::walk_checked(client, target, page, page, &mut |_| {}).await {
            Ok(w) => Ok(Some(TargetList {
                complete: w.stable,
                entries: w
                    .entries
                    .into_iter()
                    .map(|e| (e.account, e.value))
                    .collect(),
            })),
            Err(e) => {
                let gone = match &e {
                    walk::WalkError::Gone { error, .. } => Some((error.code(), error.to_string())),
                    _ => None,
                };
                let error = e.to_string();
                tracing::warn!(target = %target, error = %error, jobs = jobs.len(), "propagation: cannot read the target's list");
                let jobs = jobs.to_vec();
                let now = self.clock.now_ms();
                let events = self
                    .store
                    .mirror_reads_failed(jobs, gone, error, now)
                    .await?;
                if events.is_empty() {
                    report.retrying += 1;
                }
                count(report, &events);
                Ok(None)
            }
        }
    }

    /// Sends one group's request(s), 20 accounts each, and records each
    /// answer with the window of ends it may have set.
    async fn send(
        &self,
        client: &TencentClient,
        target: &SourceSpec,
        key: SendKey,
        jobs: &[Job],
        late_s: i64,
        report: &mut PassReport,
    ) -> Result<()> {
        let SendKey {
            request,
            until,
            origin,
        } = key;
        for chunk in jobs.chunks(crate::tencent::api::MAX_ACCOUNTS_PER_BAN) {
            let accounts: Vec<String> = chunk.iter().map(|j| j.account.clone()).collect();
            let sent_s = self.clock.now_s();
            let duration = until.map(|u| (u - sent_s).max(1));
            let reason = match request {
                Request::Restore => {
                    format!("bansync: own ban restored after {origin} lifted its mirror")
                }
                _ => format!("bansync: mirrored from {origin}"),
            };
            let what = match duration {
                Some(duration) => Moderation::Ban {
                    duration: duration as u64,
                    reason: &reason,
                },
                None => Moderation::Unban,
            };
            report.requests += 1;
            let outcome = walk::moderate(client, target, &accounts, what, true).await;
            let answered_s = self.clock.now_s();
            let mut finished = Vec::new();
            for job in chunk {
                let failure = outcome
                    .failed
                    .iter()
                    .find(|(a, _)| a == &job.account)
                    .map(|(_, e)| e);
                let answer = failure.map_or(Answer::Applied, |e| classify(e, job.attempts));
                if matches!(
                    answer,
                    Answer::Refused { permanent: false } | Answer::Unknown { permanent: false }
                ) {
                    report.retrying += 1;
                }
                let late = if matches!(answer, Answer::Unknown { .. }) {
                    late_s
                } else {
                    0
                };
                let window =
                    Window::of_request(sent_s + duration.unwrap_or(0), sent_s, answered_s, late);
                let error = failure.map(|e| (e.code(), e.to_string()));
                finished.push(Finished {
                    job: job.clone(),
                    answer,
                    window,
                    error,
                });
            }
            let now = self.clock.now_ms();
            let events = self
                .store
                .finish_mirror_jobs(request, finished, now)
                .await?;
            count(report, &events);
        }
        Ok(())
    }

    /// When the next queued job is due (Unix ms), if any.
    pub async fn next_due(&self) -> Result<Option<i64>> {
        let now = self.clock.now_ms();
        self.store.next_mirror_due(now, MAX_RETRY_DELAY_MS).await
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
                    Duration::from_millis((due - self.clock.now_ms()).clamp(50, 60_000) as u64)
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
