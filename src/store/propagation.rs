//! What events and the propagator's requests do to mirror records, inside
//! the store's transactions. The decisions are `crate::mirror`'s; this
//! loads their inputs, stores their results, queues and closes jobs, and
//! returns the events they call for (the caller numbers and stores them).

use rusqlite::Connection;

use super::mirrors::{self, Job, JobAction, JobState, NewJob};
use super::{Ctx, Notice, Result};
use crate::event::{Change, EventType};
use crate::mirror::{
    self, Answer, BanStep, Gone, InFlight, LiftStep, Mirror, MirrorState, OriginBan, Outcome, Read,
    Request, Seen, Window,
};
use crate::source::SourceSpec;

/// Attempts of one job before it is reported failed.
pub const MAX_ATTEMPTS: i64 = 6;

/// When a job whose attempt number `attempts` (0-based) failed is due again.
pub fn retry_delay_ms(attempts: i64) -> i64 {
    1000i64 << (attempts + 1).clamp(1, 10)
}

/// The longest delay a job is ever given.
pub const MAX_RETRY_DELAY_MS: i64 = 1000 << 10;

/// An event to emit on a source.
#[derive(Debug, Clone)]
pub struct ToEmit {
    pub source_id: i64,
    pub spec: SourceSpec,
    pub change: Change,
}

/// What the propagator sends for a job it planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    /// Send this request now; `until` is the end a ban request carries.
    Send {
        request: Request,
        until: Option<i64>,
    },
    /// Nothing to send (held already, superseded, not ours, later).
    Done,
}

/// The event in `committed` as the target's walk showed it.
fn seen_of(kind: EventType, value: Option<i64>) -> Option<Seen> {
    match (kind, value) {
        (EventType::BanAdded | EventType::BanUpdated, Some(v)) => Some(Seen::Listed(v)),
        (EventType::BanLifted | EventType::BanExpired, _) => Some(Seen::Gone),
        _ => None,
    }
}

/// Targets of the rules from `origin`, each with whether a rule lifts.
fn targets_of(ctx: &Ctx<'_>, origin: &SourceSpec) -> Vec<(SourceSpec, bool)> {
    let mut out: Vec<(SourceSpec, bool)> = Vec::new();
    for r in ctx
        .emit
        .propagate
        .iter()
        .filter(|r| r.from.contains(origin))
    {
        for t in &r.to {
            match out.iter_mut().find(|(x, _)| x == t) {
                Some((_, lift)) => *lift |= r.lift,
                None => out.push((t.clone(), r.lift)),
            }
        }
    }
    out
}

fn close_superseded(
    conn: &Connection,
    old: &Mirror,
    new_job: Option<i64>,
    now_ms: i64,
) -> Result<()> {
    if let Some(j) = old.job.filter(|j| Some(*j) != new_job)
        && mirrors::queued_job(conn, j)?
    {
        mirrors::close(conn, j, JobState::Skipped, None, Some("superseded"), now_ms)?;
    }
    Ok(())
}

/// `propagation.applied` / `propagation.failed` on the job's origin.
fn report(
    job: &Job,
    kind: EventType,
    until: Option<i64>,
    code: Option<i64>,
    info: Option<String>,
    now_ms: i64,
) -> ToEmit {
    ToEmit {
        source_id: job.origin_source_id,
        spec: job.origin.clone(),
        change: Change::propagation(kind, &job.account, &job.target, until, code, info, now_ms),
    }
}

const CANCELLED_LIFTED: &str =
    "cancelled: the origin's ban was lifted before the mirror could be applied";
const CANCELLED_ENDED: &str =
    "cancelled: the origin's ban ended before the mirror could be applied";

/// An event just stored, as propagation needs it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub source_id: i64,
    pub spec: &'a SourceSpec,
    /// The event's row id.
    pub rowid: i64,
    pub kind: EventType,
    pub account: Option<&'a str>,
    pub value: Option<i64>,
    /// When the walk that found it started (Unix ms).
    pub read_from_ms: i64,
}

/// Runs inside the transaction of an event: as a target, the event is what
/// its walk showed of a mirror; as an origin, it asks for mirrors, lifts or
/// cancellations. Returns events to emit on the event's source
/// (cancellations).
pub fn on_event(ctx: &mut Ctx<'_>, ev: Observation<'_>, now_ms: i64) -> Result<Vec<Change>> {
    let Observation {
        source_id,
        spec,
        rowid,
        kind,
        account,
        value,
        read_from_ms,
    } = ev;
    let (Some(account), Some(seen)) = (account, seen_of(kind, value)) else {
        return Ok(Vec::new());
    };
    if ctx.emit.propagate.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms.div_euclid(1000);
    let mut out = Vec::new();
    let mut notify = false;
    // As a target: what its walk showed of bansync's mirror.
    let mut echo = false;
    if let Some(m) = mirrors::load(ctx.conn, spec, account)? {
        let o = mirror::on_target_seen(&m, seen, read_from_ms.div_euclid(1000), now);
        echo = o.echo;
        let mut next = o.mirror;
        if o.lift {
            let origin_id = mirrors::source_id(ctx.conn, &next.origin)?.unwrap_or(source_id);
            let job = mirrors::queue(
                ctx.conn,
                NewJob {
                    origin_event: next.origin_event,
                    origin_source_id: origin_id,
                    target: spec,
                    account,
                    action: JobAction::Lift,
                    until: None,
                },
                now_ms,
            )?;
            next.job = Some(job);
            notify = true;
        }
        close_superseded(ctx.conn, &m, next.job, now_ms)?;
        if next != m {
            mirrors::save(ctx.conn, spec, account, &next, now_ms)?;
        }
    }
    // As an origin.
    let targets = targets_of(ctx, spec);
    let event = OriginEvent {
        source_id,
        spec,
        rowid,
        account,
    };
    match seen {
        // bansync's own end on the origin's list: never mirrored back or
        // onward. If nothing of the origin's own lies under it (a moderator
        // lifted it before bansync's mirror landed there), the origin's own
        // ban is gone.
        Seen::Listed(_) if echo => {
            let own = mirrors::load(ctx.conn, spec, account)?
                .and_then(|m| m.prior)
                .filter(|p| *p > now);
            if own.is_none() {
                origin_gone(
                    ctx,
                    &event,
                    Ended::Unknown,
                    &targets,
                    now_ms,
                    &mut out,
                    &mut notify,
                )?;
            }
        }
        Seen::Listed(until) => {
            for (target, _) in targets {
                let m = mirrors::load(ctx.conn, &target, account)?;
                let listed = mirrors::listed(ctx.conn, &target, account)?;
                match mirror::on_origin_ban(m.as_ref(), spec, rowid, until, listed, now) {
                    OriginBan::Held => {}
                    OriginBan::Queue(mut next) => {
                        let job = mirrors::queue(
                            ctx.conn,
                            NewJob {
                                origin_event: rowid,
                                origin_source_id: source_id,
                                target: &target,
                                account,
                                action: JobAction::Ban,
                                until: Some(until),
                            },
                            now_ms,
                        )?;
                        next.job = Some(job);
                        if let Some(m) = &m {
                            close_superseded(ctx.conn, m, Some(job), now_ms)?;
                        }
                        mirrors::save(ctx.conn, &target, account, &next, now_ms)?;
                        notify = true;
                    }
                    OriginBan::Drop(next) => {
                        if let Some(m) = &m {
                            close_superseded(ctx.conn, m, None, now_ms)?;
                        }
                        mirrors::save(ctx.conn, &target, account, &next, now_ms)?;
                    }
                }
            }
        }
        Seen::Gone => {
            let ended = match (kind, value) {
                (EventType::BanExpired, Some(end)) => Ended::At(end),
                (EventType::BanExpired, None) => Ended::Unknown,
                _ => Ended::Lifted,
            };
            origin_gone(ctx, &event, ended, &targets, now_ms, &mut out, &mut notify)?;
        }
    }
    if notify {
        ctx.notify(Notice::Propagation);
    }
    Ok(out)
}

/// How the origin's ban left its list.
#[derive(Debug, Clone, Copy)]
enum Ended {
    /// Lifted early (`ban.lifted`).
    Lifted,
    /// Ran out at this end (`ban.expired`).
    At(i64),
    /// Not known from the event: early if the mirrored end is still ahead.
    Unknown,
}

/// The origin event being handled, as [`origin_gone`] needs it.
struct OriginEvent<'a> {
    source_id: i64,
    spec: &'a SourceSpec,
    rowid: i64,
    account: &'a str,
}

/// The origin's own ban of the account left its list: cancels the mirrors
/// still pending and lifts the ones bansync owns (where a rule lifts).
/// A ban that ended before the end a mirror copied (its origin shortened
/// it, then it ran out) ended early: for the mirror it is a lift.
fn origin_gone(
    ctx: &mut Ctx<'_>,
    ev: &OriginEvent<'_>,
    ended: Ended,
    targets: &[(SourceSpec, bool)],
    now_ms: i64,
    out: &mut Vec<Change>,
    notify: &mut bool,
) -> Result<()> {
    let now = now_ms.div_euclid(1000);
    for (target, rule_lifts) in targets {
        let Some(m) = mirrors::load(ctx.conn, target, ev.account)? else {
            continue;
        };
        let lifted = match ended {
            Ended::Lifted => true,
            Ended::At(end) => m.until > end,
            Ended::Unknown => m.until > now,
        };
        let lift_job = |conn: &Connection| {
            mirrors::queue(
                conn,
                NewJob {
                    origin_event: ev.rowid,
                    origin_source_id: ev.source_id,
                    target,
                    account: ev.account,
                    action: JobAction::Lift,
                    until: None,
                },
                now_ms,
            )
        };
        match mirror::on_origin_gone(&m, ev.spec, lifted, *rule_lifts) {
            Gone::Keep => {}
            Gone::Cancel {
                mirror: mut next,
                undo,
            } => {
                let why = if lifted {
                    CANCELLED_LIFTED
                } else {
                    CANCELLED_ENDED
                };
                if let Some(j) = m.job {
                    mirrors::close(ctx.conn, j, JobState::Cancelled, None, Some(why), now_ms)?;
                }
                if undo {
                    next.job = Some(lift_job(ctx.conn)?);
                    *notify = true;
                }
                mirrors::save(ctx.conn, target, ev.account, &next, now_ms)?;
                out.push(Change::propagation(
                    EventType::PropagationFailed,
                    ev.account,
                    target,
                    Some(m.until),
                    None,
                    Some(why.to_string()),
                    now_ms,
                ));
            }
            Gone::Lift(mut next) => {
                let job = lift_job(ctx.conn)?;
                next.job = Some(job);
                close_superseded(ctx.conn, &m, Some(job), now_ms)?;
                mirrors::save(ctx.conn, target, ev.account, &next, now_ms)?;
                *notify = true;
            }
        }
    }
    Ok(())
}

/// Other origins (rules to `target`) that still ban `account` with a ban of
/// their own (not a mirror of bansync's): (origin, its ban event, end).
fn other_origins(
    ctx: &Ctx<'_>,
    target: &SourceSpec,
    account: &str,
    now: i64,
) -> Result<Vec<(SourceSpec, i64, i64)>> {
    let mut out = Vec::new();
    let origins: Vec<SourceSpec> = ctx
        .emit
        .propagate
        .iter()
        .filter(|r| r.to.contains(target))
        .flat_map(|r| r.from.iter().cloned())
        .collect();
    for o in origins {
        if out.iter().any(|(x, _, _): &(SourceSpec, i64, i64)| *x == o) {
            continue;
        }
        let Some(listed) = mirrors::listed(ctx.conn, &o, account)?.filter(|v| *v > now) else {
            continue;
        };
        // An end bansync set there (even one it has lifted since, still in
        // that origin's last walk) is not the origin's own ban; the
        // origin's own may lie under it.
        let v = match mirrors::load(ctx.conn, &o, account)? {
            Some(m) if m.set_by_bansync(listed, now) => match m.prior.filter(|p| *p > now) {
                Some(own) => own,
                None => continue,
            },
            _ => listed,
        };
        let event = mirrors::latest_ban_event(ctx.conn, &o, account)?;
        out.push((o, event, v));
    }
    Ok(out)
}

/// Decides what a due job does, given a fresh read of its target.
/// `max_call_s`: the longest a request can stay out (the open window).
pub fn plan(
    ctx: &mut Ctx<'_>,
    job: &Job,
    read: Read,
    now_ms: i64,
    max_call_s: i64,
) -> Result<(Planned, Vec<ToEmit>)> {
    let conn = ctx.conn;
    let now = now_ms.div_euclid(1000);
    let mut out = Vec::new();
    if !mirrors::queued_job(conn, job.id)? {
        return Ok((Planned::Done, out));
    }
    let m = match (
        mirrors::load(conn, &job.target, &job.account)?,
        job.action,
        job.until,
    ) {
        (Some(m), _, _) => m,
        // Queued before mirrors had records (an older store): as new.
        (None, JobAction::Ban, Some(until)) => Mirror {
            origin: job.origin.clone(),
            origin_event: job.origin_event,
            until,
            state: MirrorState::Pending,
            windows: Vec::new(),
            current: Vec::new(),
            unanswered: Vec::new(),
            in_flight: None,
            prior: None,
            job: Some(job.id),
            restore: None,
            acted_s: None,
            holder: None,
        },
        (None, _, _) => {
            mirrors::close(
                conn,
                job.id,
                JobState::Skipped,
                None,
                Some("no mirror to act on"),
                now_ms,
            )?;
            return Ok((Planned::Done, out));
        }
    };
    let in_flight = |until| InFlight {
        since_s: now,
        until,
        max_s: max_call_s,
    };
    let later = |conn: &Connection| -> Result<()> {
        mirrors::count_attempt(conn, job.id)?;
        mirrors::retry_at(
            conn,
            job.id,
            now_ms + retry_delay_ms(job.attempts),
            None,
            "the target's list kept shifting while it was read; trying again",
        )
    };
    let planned = if job.action == JobAction::Ban {
        match mirror::plan_ban(&m, job.id, read, now) {
            BanStep::Send { mut mirror } => {
                mirror.in_flight = Some(in_flight(mirror.until));
                let until = mirror.until;
                mirrors::save(conn, &job.target, &job.account, &mirror, now_ms)?;
                Planned::Send {
                    request: Request::Ban,
                    until: Some(until),
                }
            }
            BanStep::Held { mirror, end } => {
                mirrors::save(conn, &job.target, &job.account, &mirror, now_ms)?;
                let note = format!("{} already holds a ban until {end}", job.target);
                if mirror.state == MirrorState::Owned {
                    // An attempt that got no answer had landed after all.
                    mirrors::close(conn, job.id, JobState::Applied, None, Some(&note), now_ms)?;
                    out.push(report(
                        job,
                        EventType::PropagationApplied,
                        Some(m.until),
                        None,
                        None,
                        now_ms,
                    ));
                } else {
                    mirrors::close(conn, job.id, JobState::Skipped, None, Some(&note), now_ms)?;
                }
                Planned::Done
            }
            BanStep::Ended { mirror } => {
                mirrors::save(conn, &job.target, &job.account, &mirror, now_ms)?;
                mirrors::close(
                    conn,
                    job.id,
                    JobState::Cancelled,
                    None,
                    Some(CANCELLED_ENDED),
                    now_ms,
                )?;
                out.push(report(
                    job,
                    EventType::PropagationFailed,
                    Some(m.until),
                    None,
                    Some(CANCELLED_ENDED.into()),
                    now_ms,
                ));
                Planned::Done
            }
            BanStep::Superseded => {
                mirrors::close(
                    conn,
                    job.id,
                    JobState::Skipped,
                    None,
                    Some("superseded"),
                    now_ms,
                )?;
                Planned::Done
            }
            BanStep::Later => {
                later(conn)?;
                Planned::Done
            }
        }
    } else {
        let others = other_origins(ctx, &job.target, &job.account, now)?;
        let conn = ctx.conn;
        let mut next = m.clone();
        match mirror::plan_lift(&m, job.id, &job.origin, read, &others, now) {
            LiftStep::Unban => {
                mirrors::resolve(conn, job.id, JobAction::Unban, None)?;
                Planned::Send {
                    request: Request::Unban,
                    until: None,
                }
            }
            LiftStep::Restore { until } => {
                next.in_flight = Some(in_flight(until));
                mirrors::save(conn, &job.target, &job.account, &next, now_ms)?;
                mirrors::resolve(conn, job.id, JobAction::Restore, Some(until))?;
                Planned::Send {
                    request: Request::Restore,
                    until: Some(until),
                }
            }
            LiftStep::Remirror {
                origin,
                origin_event,
                until,
            } => {
                next.origin = origin;
                next.origin_event = origin_event;
                next.until = until;
                next.in_flight = Some(in_flight(until));
                mirrors::save(conn, &job.target, &job.account, &next, now_ms)?;
                mirrors::resolve(conn, job.id, JobAction::Remirror, Some(until))?;
                Planned::Send {
                    request: Request::Remirror,
                    until: Some(until),
                }
            }
            LiftStep::Release { seen } => {
                next.state = MirrorState::Released;
                next.job = None;
                next.off_the_list();
                mirrors::save(conn, &job.target, &job.account, &next, now_ms)?;
                let note = match seen {
                    Some(v) => format!(
                        "not bansync's any more: {} shows a ban until {v}",
                        job.target
                    ),
                    None => format!("not bansync's any more: {} shows no ban", job.target),
                };
                mirrors::close(conn, job.id, JobState::Skipped, None, Some(&note), now_ms)?;
                Planned::Done
            }
            LiftStep::Landed => {
                next.state = MirrorState::Lifted;
                next.job = None;
                next.off_the_list();
                mirrors::save(conn, &job.target, &job.account, &next, now_ms)?;
                mirrors::close(
                    conn,
                    job.id,
                    JobState::Applied,
                    None,
                    Some("the restore had landed"),
                    now_ms,
                )?;
                out.push(report(
                    job,
                    EventType::PropagationApplied,
                    None,
                    None,
                    None,
                    now_ms,
                ));
                Planned::Done
            }
            LiftStep::Superseded => {
                mirrors::close(
                    conn,
                    job.id,
                    JobState::Skipped,
                    None,
                    Some("superseded"),
                    now_ms,
                )?;
                Planned::Done
            }
            LiftStep::Later => {
                later(conn)?;
                Planned::Done
            }
        }
    };
    Ok((planned, out))
}

/// Records how a request for `job` ended. `error`: the vendor's code (if
/// any) and the failure, for a request that did not apply.
pub fn answer(
    ctx: &mut Ctx<'_>,
    job: &Job,
    request: Request,
    answer: Answer,
    window: Window,
    error: Option<(Option<i64>, String)>,
    now_ms: i64,
) -> Result<Vec<ToEmit>> {
    let conn = ctx.conn;
    let mut out = Vec::new();
    mirrors::count_attempt(conn, job.id)?;
    let queued = mirrors::queued_job(conn, job.id)?;
    let Some(m) = mirrors::load(conn, &job.target, &job.account)? else {
        if queued {
            mirrors::close(
                conn,
                job.id,
                JobState::Skipped,
                None,
                Some("no mirror to act on"),
                now_ms,
            )?;
        }
        return Ok(out);
    };
    let (mut next, outcome) =
        mirror::on_answer(&m, job.id, request, answer, window, now_ms.div_euclid(1000));
    let (code, info) = match &error {
        Some((c, i)) => (*c, Some(i.clone())),
        None => (None, None),
    };
    let until = match request {
        Request::Ban | Request::Remirror => Some(m.until),
        Request::Restore | Request::Unban => None,
    };
    match outcome {
        Outcome::Applied => {
            mirrors::close(conn, job.id, JobState::Applied, None, None, now_ms)?;
            out.push(report(
                job,
                EventType::PropagationApplied,
                until,
                None,
                None,
                now_ms,
            ));
        }
        Outcome::Retry => {
            mirrors::retry_at(
                conn,
                job.id,
                now_ms + retry_delay_ms(job.attempts),
                code,
                info.as_deref().unwrap_or("failed"),
            )?;
        }
        Outcome::Failed => {
            mirrors::close(
                conn,
                job.id,
                JobState::Failed,
                code,
                info.as_deref(),
                now_ms,
            )?;
            out.push(report(
                job,
                EventType::PropagationFailed,
                until,
                code,
                info,
                now_ms,
            ));
        }
        Outcome::Undo => {
            let origin_id = mirrors::source_id(conn, &next.origin)?.unwrap_or(job.origin_source_id);
            let lift = mirrors::queue(
                conn,
                NewJob {
                    origin_event: next.origin_event,
                    origin_source_id: origin_id,
                    target: &job.target,
                    account: &job.account,
                    action: JobAction::Lift,
                    until: None,
                },
                now_ms,
            )?;
            next.job = Some(lift);
            ctx.notify(Notice::Propagation);
        }
        Outcome::Quiet => {
            if queued {
                mirrors::close(
                    conn,
                    job.id,
                    JobState::Skipped,
                    None,
                    Some("superseded"),
                    now_ms,
                )?;
            }
        }
    }
    mirrors::save(ctx.conn, &job.target, &job.account, &next, now_ms)?;
    Ok(out)
}

/// The target's list could not be read for `job`. `gone`: the vendor says
/// the target does not exist (its code and text).
pub fn read_failed(
    ctx: &mut Ctx<'_>,
    job: &Job,
    gone: Option<(Option<i64>, String)>,
    error: &str,
    now_ms: i64,
) -> Result<Vec<ToEmit>> {
    let ban = job.action == JobAction::Ban;
    let nothing = Window { lo: 0, hi: -1 };
    match gone {
        // Nothing there to lift; a ban cannot be applied there.
        Some(_) if !ban => Ok(plan(
            ctx,
            job,
            Read {
                value: None,
                complete: true,
            },
            now_ms,
            0,
        )?
        .1),
        Some(e) => answer(
            ctx,
            job,
            Request::Ban,
            Answer::Refused { permanent: true },
            nothing,
            Some(e),
            now_ms,
        ),
        None => {
            let permanent = job.attempts + 1 >= MAX_ATTEMPTS;
            let request = if ban { Request::Ban } else { Request::Unban };
            answer(
                ctx,
                job,
                request,
                Answer::Refused { permanent },
                nothing,
                Some((None, error.to_string())),
                now_ms,
            )
        }
    }
}
