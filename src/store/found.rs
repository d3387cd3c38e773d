//! Sources bansync found rather than was given: discovered in a listing,
//! or named by a vendor callback. Their rows remember how they came
//! (`origin`), how many complete listings in a row missed them, whether
//! they were retired, and the accounts an enrolling callback named.

use rusqlite::{OptionalExtension, params};

use super::{Ctx, Result};
use crate::source::{Origin, SourceKind, SourceSpec};

/// What a listing changes in what is watched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListingDelta {
    /// Sources to start watching: new, or found again after retirement.
    pub watch: Vec<SourceSpec>,
    /// Sources two complete listings in a row missed: to be walked once
    /// more, and retired if the vendor says they no longer exist.
    pub check: Vec<SourceSpec>,
}

/// Records `spec` as found (`origin`); true if it is new, or was retired
/// and is back. A row that exists keeps its origin, unless it was a
/// configured source no longer configured (the caller never passes one
/// that is configured now).
pub fn found(ctx: &Ctx<'_>, spec: &SourceSpec, origin: Origin) -> Result<bool> {
    let key = spec.to_string();
    let row: Option<(String, Option<i64>)> = ctx
        .conn
        .prepare_cached("SELECT origin, retired_at FROM sources WHERE spec = ?1")?
        .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match row {
        None => {
            ctx.conn
                .prepare_cached("INSERT INTO sources (spec, kind, origin) VALUES (?1, ?2, ?3)")?
                .execute(params![key, spec.kind.as_str(), origin.as_str()])?;
            Ok(true)
        }
        Some((was, retired)) => {
            let adopt = was == Origin::Configured.as_str();
            ctx.conn
                .prepare_cached(
                    "UPDATE sources SET missing_listings = 0, retired_at = NULL,
                     origin = CASE WHEN ?2 THEN ?3 ELSE origin END WHERE spec = ?1",
                )?
                .execute(params![key, adopt, origin.as_str()])?;
            Ok(retired.is_some() || adopt)
        }
    }
}

/// Configured sources are `configured`, whatever found them before, and
/// never retired.
pub fn configured(ctx: &Ctx<'_>, specs: &[SourceSpec]) -> Result<()> {
    let mut stmt = ctx.conn.prepare_cached(
        "UPDATE sources SET origin = 'configured', retired_at = NULL, missing_listings = 0
         WHERE spec = ?1 AND (origin != 'configured' OR retired_at IS NOT NULL)",
    )?;
    for s in specs {
        stmt.execute([s.to_string()])?;
    }
    Ok(())
}

/// Applies one listing of `kind`: `admitted` (found, let through by the
/// filters, not configured) are recorded; when the listing was
/// `complete`, every found source of that kind missing from `listed`
/// counts one more miss.
pub fn record_listing(
    ctx: &Ctx<'_>,
    kind: SourceKind,
    listed: &[SourceSpec],
    admitted: &[SourceSpec],
    complete: bool,
    error: Option<&str>,
    now_ms: i64,
) -> Result<ListingDelta> {
    let mut delta = ListingDelta::default();
    for spec in admitted {
        if found(ctx, spec, Origin::Discovered)? {
            delta.watch.push(spec.clone());
        }
    }
    ctx.conn
        .prepare_cached("INSERT OR IGNORE INTO listings (kind) VALUES (?1)")?
        .execute([kind.as_str()])?;
    if complete {
        let listed: std::collections::HashSet<String> =
            listed.iter().map(|s| s.to_string()).collect();
        let mut stmt = ctx.conn.prepare_cached(
            "SELECT spec, missing_listings FROM sources
             WHERE kind = ?1 AND origin != 'configured' AND retired_at IS NULL",
        )?;
        let rows: Vec<(String, i64)> = stmt
            .query_map([kind.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (spec, missing) in rows {
            if listed.contains(&spec) {
                continue;
            }
            ctx.conn
                .prepare_cached(
                    "UPDATE sources SET missing_listings = missing_listings + 1 WHERE spec = ?1",
                )?
                .execute([&spec])?;
            if missing + 1 >= 2
                && let Ok(s) = spec.parse()
            {
                delta.check.push(s);
            }
        }
        ctx.conn
            .prepare_cached(
                "UPDATE listings SET last_complete_at = ?2, last_attempt_at = ?2, found = ?3,
                 last_error = NULL WHERE kind = ?1",
            )?
            .execute(params![kind.as_str(), now_ms, listed.len() as i64])?;
    } else {
        ctx.conn
            .prepare_cached(
                "UPDATE listings SET last_attempt_at = ?2, last_error = ?3 WHERE kind = ?1",
            )?
            .execute(params![
                kind.as_str(),
                now_ms,
                error.unwrap_or("incomplete")
            ])?;
    }
    Ok(delta)
}

/// Stops walking `spec` for good (until it is found again). Only a source
/// bansync found is retired; true if it was.
pub fn retire(ctx: &Ctx<'_>, spec: &SourceSpec, now_ms: i64) -> Result<bool> {
    let n = ctx
        .conn
        .prepare_cached(
            "UPDATE sources SET retired_at = ?2
             WHERE spec = ?1 AND origin != 'configured' AND retired_at IS NULL",
        )?
        .execute(params![spec.to_string(), now_ms])?;
    Ok(n > 0)
}

/// Whether a source row was found (discovered or named by a callback).
pub fn is_found(ctx: &Ctx<'_>, source_id: i64) -> Result<bool> {
    let origin: String = ctx
        .conn
        .prepare_cached("SELECT origin FROM sources WHERE id = ?1")?
        .query_row([source_id], |r| r.get(0))?;
    Ok(origin != Origin::Configured.as_str())
}

/// A found source the vendor never had: retired, still `new` (if it ever
/// appears, its first walk is a baseline), no event.
pub fn retire_unseen(ctx: &Ctx<'_>, source_id: i64, now_ms: i64, error: &str) -> Result<()> {
    ctx.conn
        .prepare_cached(
            "UPDATE sources SET retired_at = ?2, announce = NULL, last_attempt_at = ?2,
             last_error = ?3, last_error_at = ?2 WHERE id = ?1",
        )?
        .execute(params![source_id, now_ms, error])?;
    Ok(())
}

/// What an enrolment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enrolled {
    /// New, or back from retirement: to be watched.
    pub fresh: bool,
    /// Not walked yet: later callbacks' pairs are still to be recorded.
    pub unwalked: bool,
}

/// How much older than its callback a named block may be and still be
/// reported (the vendor calls back right after the block; a callback that
/// names a block made long before is not about a new one).
pub const ANNOUNCE_SLACK_S: i64 = 300;

/// An account an enrolling callback named, and the earliest block time
/// (Unix seconds) that can be the block it was about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Announced {
    pub account: String,
    pub since: i64,
}

/// A blocklist named by an enrolling callback at `at_s` (Unix seconds):
/// recorded (origin `callback`) if bansync has not walked it yet, with
/// `accounts` to be reported by its first walk.
pub fn enrol(ctx: &Ctx<'_>, spec: &SourceSpec, accounts: &[String], at_s: i64) -> Result<Enrolled> {
    let fresh = found(ctx, spec, Origin::Callback)?;
    let key = spec.to_string();
    let (status, announce): (String, Option<String>) = ctx
        .conn
        .prepare_cached("SELECT status, announce FROM sources WHERE spec = ?1")?
        .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?)))?;
    // Once walked, the walks report changes themselves.
    if status == "new" {
        let mut all: Vec<Announced> = announce
            .and_then(|a| serde_json::from_str(&a).ok())
            .unwrap_or_default();
        for a in accounts {
            if !all.iter().any(|x| x.account == *a) {
                all.push(Announced {
                    account: a.clone(),
                    since: at_s - ANNOUNCE_SLACK_S,
                });
            }
        }
        ctx.conn
            .prepare_cached("UPDATE sources SET announce = ?2 WHERE spec = ?1")?
            .execute(params![
                key,
                serde_json::to_string(&all).unwrap_or_default()
            ])?;
    }
    Ok(Enrolled {
        fresh,
        unwalked: status == "new",
    })
}

/// The accounts to report on a source's first walk (and forgets them).
pub fn take_announced(ctx: &Ctx<'_>, source_id: i64) -> Result<Vec<Announced>> {
    let a: Option<String> = ctx
        .conn
        .prepare_cached("SELECT announce FROM sources WHERE id = ?1")?
        .query_row([source_id], |r| r.get(0))?;
    if a.is_some() {
        ctx.conn
            .prepare_cached("UPDATE sources SET announce = NULL WHERE id = ?1")?
            .execute([source_id])?;
    }
    Ok(a.and_then(|a| serde_json::from_str(&a).ok())
        .unwrap_or_default())
}

/// Every found source not retired, with its origin.
pub fn found_sources(conn: &rusqlite::Connection) -> Result<Vec<(SourceSpec, Origin)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT spec, origin FROM sources WHERE origin != 'configured' AND retired_at IS NULL ORDER BY spec",
    )?;
    let rows: Vec<(String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows
        .into_iter()
        .filter_map(|(s, o)| Some((s.parse().ok()?, Origin::parse(&o)?)))
        .collect())
}

/// One source's plan as the scheduler sees it (for `status`).
#[derive(Debug, Clone)]
pub struct ScheduleRow {
    pub spec: SourceSpec,
    /// When it is next expected to be walked (Unix ms); `None`: unknown
    /// (a cron schedule).
    pub next_walk_ms: Option<i64>,
    pub reason: &'static str,
    pub last_reason: Option<&'static str>,
}

/// Writes the scheduler's plan for the sources it names.
pub fn record_schedule(ctx: &Ctx<'_>, rows: &[ScheduleRow]) -> Result<()> {
    let mut stmt = ctx.conn.prepare_cached(
        "UPDATE sources SET next_walk_at = ?2, next_walk_reason = ?3,
         last_walk_reason = COALESCE(?4, last_walk_reason) WHERE spec = ?1",
    )?;
    for r in rows {
        stmt.execute(params![
            r.spec.to_string(),
            r.next_walk_ms,
            r.reason,
            r.last_reason
        ])?;
    }
    Ok(())
}
