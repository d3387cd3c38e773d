//! Mirror records and mirror jobs in SQLite: the persistence of
//! `crate::mirror`. Every decision is made there; this file only
//! loads what it needs and stores what it returns.

use std::fmt::Write as _;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Result, StoreError};
use crate::mirror::{InFlight, Mirror, MirrorState, Window};
use crate::source::SourceSpec;

/// Where a mirror job stands (`propagations.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Applied,
    Failed,
    /// Nothing to do when its turn came (held already, superseded, not ours).
    Skipped,
    /// The origin's ban was lifted or ended before the mirror was applied.
    Cancelled,
}

impl JobState {
    pub const fn code(self) -> i64 {
        match self {
            JobState::Queued => 0,
            JobState::Applied => 1,
            JobState::Failed => 2,
            JobState::Skipped => 3,
            JobState::Cancelled => 4,
        }
    }
}

// The queue's SQL and its partial index name the queued state as a literal
// (a bound parameter would keep SQLite from using the index).
const _: () = assert!(JobState::Queued.code() == 0);

/// What a job does (`propagations.action`). A lift is resolved into
/// unban, restore or remirror when its turn comes, after a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobAction {
    Ban,
    Lift,
    Unban,
    Restore,
    Remirror,
}

impl JobAction {
    pub const ALL: [JobAction; 5] = [
        JobAction::Ban,
        JobAction::Lift,
        JobAction::Unban,
        JobAction::Restore,
        JobAction::Remirror,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobAction::Ban => "ban",
            JobAction::Lift => "lift",
            JobAction::Unban => "unban",
            JobAction::Restore => "restore",
            JobAction::Remirror => "remirror",
        }
    }

    pub fn parse(s: &str) -> Option<JobAction> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// A queued mirror job, as the propagator needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub origin_event: i64,
    pub origin_source_id: i64,
    pub origin: SourceSpec,
    pub target: SourceSpec,
    pub account: String,
    pub action: JobAction,
    /// The end a ban job carries.
    pub until: Option<i64>,
    pub attempts: i64,
}

fn windows_text(ws: &[Window]) -> String {
    let mut out = String::new();
    for w in ws {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{}:{}", w.lo, w.hi);
    }
    out
}

fn parse_windows(s: &str) -> Result<Vec<Window>> {
    s.split_whitespace()
        .map(|w| {
            let (lo, hi) = w
                .split_once(':')
                .ok_or_else(|| StoreError::Invalid(format!("mirror window `{w}`")))?;
            let n = |x: &str| {
                x.parse::<i64>()
                    .map_err(|_| StoreError::Invalid(format!("mirror window `{w}`")))
            };
            Ok(Window {
                lo: n(lo)?,
                hi: n(hi)?,
            })
        })
        .collect()
}

/// The record of `account` at `target`.
pub fn load(conn: &Connection, target: &SourceSpec, account: &str) -> Result<Option<Mirror>> {
    type Row = (
        String,
        i64,
        i64,
        String,
        String,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<String>,
        String,
        Option<i64>,
        Option<String>,
        String,
    );
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT origin_source, origin_event, banned_until, state, windows, in_flight_since,
                    in_flight_until, in_flight_max, prior_until, job, restore_window, current_windows, acted_s, holder, unanswered_windows
             FROM mirrors WHERE target = ?1 AND account = ?2",
        )?
        .query_row(params![target.to_string(), account], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
                r.get(8)?,
                r.get(9)?,
                r.get(10)?,
                                r.get(11)?,
                r.get(12)?,
                r.get(13)?,
                r.get(14)?,
            ))
        })
        .optional()?;
    let Some((
        origin,
        origin_event,
        until,
        state,
        windows,
        since,
        fl_until,
        fl_max,
        prior,
        job,
        restore,
        current,
        acted_s,
        holder,
        unanswered,
    )) = row
    else {
        return Ok(None);
    };
    Ok(Some(Mirror {
        origin: origin.parse().map_err(StoreError::Invalid)?,
        origin_event,
        until,
        state: MirrorState::parse(&state)
            .ok_or_else(|| StoreError::Invalid(format!("mirror state `{state}`")))?,
        windows: parse_windows(&windows)?,
        current: parse_windows(&current)?,
        unanswered: parse_windows(&unanswered)?,
        in_flight: match (since, fl_until, fl_max) {
            (Some(since_s), Some(until), Some(max_s)) => Some(InFlight {
                since_s,
                until,
                max_s,
            }),
            _ => None,
        },
        prior,
        job,
        restore: match restore {
            Some(r) => parse_windows(&r)?.first().copied(),
            None => None,
        },
        acted_s,
        holder: match holder {
            Some(h) => Some(h.parse().map_err(StoreError::Invalid)?),
            None => None,
        },
    }))
}

pub fn save(
    conn: &Connection,
    target: &SourceSpec,
    account: &str,
    m: &Mirror,
    now_ms: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO mirrors (target, account, origin_source, origin_event, banned_until, state, windows,
                              in_flight_since, in_flight_until, in_flight_max, prior_until, job, updated_ms,
                                                            restore_window, current_windows, acted_s, holder, unanswered_windows)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
         ON CONFLICT (target, account) DO UPDATE SET origin_source = excluded.origin_source,
             origin_event = excluded.origin_event, banned_until = excluded.banned_until, state = excluded.state,
             windows = excluded.windows, in_flight_since = excluded.in_flight_since,
             in_flight_until = excluded.in_flight_until, in_flight_max = excluded.in_flight_max,
             prior_until = excluded.prior_until, job = excluded.job, updated_ms = excluded.updated_ms,
                          restore_window = excluded.restore_window, current_windows = excluded.current_windows,
             acted_s = excluded.acted_s, holder = excluded.holder,
             unanswered_windows = excluded.unanswered_windows",
    )?
    .execute(params![
        target.to_string(),
        account,
        m.origin.to_string(),
        m.origin_event,
        m.until,
        m.state.as_str(),
        windows_text(&m.windows),
        m.in_flight.map(|f| f.since_s),
        m.in_flight.map(|f| f.until),
        m.in_flight.map(|f| f.max_s),
        m.prior,
        m.job,
        now_ms,
        m.restore.map(|w| windows_text(&[w])),
                windows_text(&m.current),
        m.acted_s,
        m.holder.as_ref().map(|h| h.to_string()),
        windows_text(&m.unanswered),
    ])?;
    Ok(())
}

/// A job to queue.
#[derive(Debug, Clone, Copy)]
pub struct NewJob<'a> {
    /// The origin event (row id) that asks for it.
    pub origin_event: i64,
    pub origin_source_id: i64,
    pub target: &'a SourceSpec,
    pub account: &'a str,
    pub action: JobAction,
    /// The end a ban job carries.
    pub until: Option<i64>,
}

/// Queues a job, due now; returns its id.
pub fn queue(conn: &Connection, job: NewJob<'_>, now_ms: i64) -> Result<i64> {
    conn.prepare_cached(
        "INSERT INTO propagations (origin_event, origin_source_id, target, account, action, banned_until, next_attempt_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        job.origin_event,
        job.origin_source_id,
        job.target.to_string(),
        job.account,
        job.action.as_str(),
        job.until,
        now_ms
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Ends a job (any state but queued), with why, if it says.
pub fn close(
    conn: &Connection,
    id: i64,
    state: JobState,
    error_code: Option<i64>,
    note: Option<&str>,
    now_ms: i64,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE propagations SET state = ?2, done_ms = ?3, error_code = COALESCE(?4, error_code),
                error_info = COALESCE(?5, error_info) WHERE id = ?1",
    )?
    .execute(params![id, state.code(), now_ms, error_code, note])?;
    Ok(())
}

/// Counts an attempt and sets when the job is due again.
pub fn retry_at(
    conn: &Connection,
    id: i64,
    next_attempt_ms: i64,
    error_code: Option<i64>,
    error: &str,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE propagations SET attempts = attempts + 1, next_attempt_ms = ?2, error_code = ?3, error_info = ?4
         WHERE id = ?1",
    )?
    .execute(params![id, next_attempt_ms, error_code, error])?;
    Ok(())
}

/// Counts an attempt that got an answer.
pub fn count_attempt(conn: &Connection, id: i64) -> Result<()> {
    conn.prepare_cached("UPDATE propagations SET attempts = attempts + 1 WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// A lift resolves into what it does (and, for a restore or re-mirror, the end).
pub fn resolve(conn: &Connection, id: i64, action: JobAction, until: Option<i64>) -> Result<()> {
    conn.prepare_cached("UPDATE propagations SET action = ?2, banned_until = ?3 WHERE id = ?1")?
        .execute(params![id, action.as_str(), until])?;
    Ok(())
}

/// The queued job with this id, if it is still queued.
pub fn queued_job(conn: &Connection, id: i64) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM propagations WHERE id = ?1 AND state = 0")?
        .query_row([id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Jobs due by `now_ms`, oldest first. A job due more than `max_delay_ms`
/// ahead (longer than any delay it is given) was pushed there by the wall
/// clock stepping back: it is due now.
pub fn due(conn: &Connection, now_ms: i64, max_delay_ms: i64, limit: usize) -> Result<Vec<Job>> {
    let mut stmt = conn.prepare_cached(
        "SELECT p.id, p.origin_event, p.origin_source_id, s.spec, p.target, p.account, p.action,
                p.banned_until, p.attempts
         FROM propagations p JOIN sources s ON s.id = p.origin_source_id
         WHERE p.state = 0 AND (p.next_attempt_ms <= ?1 OR p.next_attempt_ms > ?1 + ?3)
         ORDER BY p.id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![now_ms, limit as i64, max_delay_ms], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, Option<i64>>(7)?,
            r.get::<_, i64>(8)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, origin_event, origin_source_id, origin, target, account, action, until, attempts) =
            row?;
        out.push(Job {
            id,
            origin_event,
            origin_source_id,
            origin: origin.parse().map_err(StoreError::Invalid)?,
            target: target.parse().map_err(StoreError::Invalid)?,
            account,
            action: JobAction::parse(&action)
                .ok_or_else(|| StoreError::Invalid(format!("propagation action `{action}`")))?,
            until,
            attempts,
        });
    }
    Ok(out)
}

/// When the next queued job is due (Unix ms; see [`due`] for `max_delay_ms`).
pub fn next_due(conn: &Connection, now_ms: i64, max_delay_ms: i64) -> Result<Option<i64>> {
    let next: Option<i64> = conn
        .prepare_cached("SELECT MIN(next_attempt_ms) FROM propagations WHERE state = 0")?
        .query_row([], |r| r.get(0))?;
    Ok(next.map(|n| if n > now_ms + max_delay_ms { now_ms } else { n }))
}

/// The running ban the target's last committed walk showed, if watched.
pub fn listed(conn: &Connection, target: &SourceSpec, account: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT e.value FROM entries e JOIN sources s ON s.id = e.source_id
             WHERE s.spec = ?1 AND e.account = ?2 AND e.state != 2",
        )?
        .query_row(params![target.to_string(), account], |r| r.get(0))
        .optional()?)
}

/// The latest ban event (row id) of `account` at `origin`.
pub fn latest_ban_event(conn: &Connection, origin: &SourceSpec, account: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT COALESCE(MAX(e.id), 0) FROM events e JOIN sources s ON s.id = e.source_id
             WHERE s.spec = ?1 AND e.account = ?2 AND e.type IN ('ban.added', 'ban.updated')",
        )?
        .query_row(params![origin.to_string(), account], |r| r.get(0))?)
}

/// The id of a source's row, if it has one.
pub fn source_id(conn: &Connection, spec: &SourceSpec) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM sources WHERE spec = ?1")?
        .query_row([spec.to_string()], |r| r.get(0))
        .optional()?)
}

/// Forgets records no request of bansync's can still act on or be seen
/// for: their bans ended more than a day ago.
pub fn forget_ended(conn: &Connection, now_s: i64) -> Result<usize> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM mirrors WHERE banned_until < ?1 AND state NOT IN ('pending', 'lifting')
             AND in_flight_since IS NULL",
        )?
        .execute([now_s - 86_400])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_round_trip() {
        let ws = vec![Window { lo: 5, hi: 9 }, Window { lo: -3, hi: 40 }];
        assert_eq!(parse_windows(&windows_text(&ws)).unwrap(), ws);
        assert!(parse_windows("").unwrap().is_empty());
        assert!(parse_windows("5-9").is_err());
    }

    #[test]
    fn codes_round_trip() {
        use JobState::*;
        let codes: std::collections::BTreeSet<i64> = [Queued, Applied, Failed, Skipped, Cancelled]
            .map(JobState::code)
            .into();
        assert_eq!(codes.len(), 5, "each state its own code");
        for a in JobAction::ALL {
            assert_eq!(JobAction::parse(a.as_str()), Some(a));
        }
        for m in MirrorState::ALL {
            assert_eq!(MirrorState::parse(m.as_str()), Some(m));
        }
    }
}
