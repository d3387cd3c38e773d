//! Read-only queries for the CLI and `/metrics`. They run on their own
//! connection; WAL lets them read while the daemon writes.

use rusqlite::{Connection, params};
use serde::Serialize;

use super::Result;
use crate::metrics::Gauges;
use crate::source::SourceKind;

#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    pub source: String,
    /// configured | discovered | callback
    pub origin: String,
    /// When a found source was retired (gone from listings and vendor).
    pub retired: Option<String>,
    /// When the scheduler expects to walk it next, and why (bound,
    /// activity, hint, confirmation, sweep, new, retry).
    pub next_walk: Option<String>,
    pub next_walk_reason: Option<String>,
    /// Why its last walk was made.
    pub last_walk_reason: Option<String>,
    pub status: String,
    pub last_complete_walk: Option<String>,
    pub entries: i64,
    pub pending_absent: i64,
    pub walks: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub consecutive_failures: i64,
    pub events: i64,
}

/// A discovery listing's record (`status`).
#[derive(Debug, Clone, Serialize)]
pub struct ListingStatus {
    pub kind: String,
    pub last_complete_listing: Option<String>,
    #[serde(skip)]
    pub last_complete_ms: Option<i64>,
    pub last_attempt: Option<String>,
    pub found: i64,
    pub last_error: Option<String>,
}

pub fn listings(conn: &Connection) -> Result<Vec<ListingStatus>> {
    let mut stmt = conn.prepare(
        "SELECT kind, last_complete_at, last_attempt_at, found, last_error FROM listings ORDER BY kind",
    )?;
    let rows = stmt.query_map([], |r| {
        let complete: Option<i64> = r.get(1)?;
        Ok(ListingStatus {
            kind: r.get(0)?,
            last_complete_listing: ts(complete),
            last_complete_ms: complete,
            last_attempt: ts(r.get(2)?),
            found: r.get(3)?,
            last_error: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[derive(Debug, Clone, Serialize)]
pub struct WebhookStatus {
    pub webhook: String,
    pub pending: i64,
    pub dead: i64,
    pub disabled: bool,
    pub disabled_reason: Option<String>,
    pub delivered: i64,
    pub oldest_pending: Option<String>,
}

fn ts(ms: Option<i64>) -> Option<String> {
    ms.map(crate::event::rfc3339)
}

pub fn sources(conn: &Connection) -> Result<Vec<SourceStatus>> {
    let mut stmt = conn.prepare(
        "SELECT spec, status, last_complete_walk_at, entries, pending_absent, walks, last_error, last_error_at,
                consecutive_failures, next_seq - 1, origin, retired_at,
                next_walk_at, next_walk_reason, last_walk_reason
         FROM sources ORDER BY spec",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(SourceStatus {
            source: r.get(0)?,
            origin: r.get(10)?,
            retired: ts(r.get(11)?),
            next_walk: ts(r.get(12)?),
            next_walk_reason: r.get(13)?,
            last_walk_reason: r.get(14)?,
            status: r.get(1)?,
            last_complete_walk: ts(r.get(2)?),
            entries: r.get(3)?,
            pending_absent: r.get(4)?,
            walks: r.get(5)?,
            last_error: r.get(6)?,
            last_error_at: ts(r.get(7)?),
            consecutive_failures: r.get(8)?,
            events: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Per webhook named in `names` (the configuration) or found in the store.
pub fn webhooks(conn: &Connection, names: &[String]) -> Result<Vec<WebhookStatus>> {
    let mut all: Vec<String> = names.to_vec();
    let mut stmt =
        conn.prepare("SELECT DISTINCT webhook FROM deliveries UNION SELECT name FROM webhooks")?;
    for n in stmt.query_map([], |r| r.get::<_, String>(0))? {
        let n = n?;
        if !all.contains(&n) {
            all.push(n);
        }
    }
    let mut out = Vec::new();
    for name in all {
        let (pending, dead, oldest): (i64, i64, Option<i64>) = conn.query_row(
            "SELECT COUNT(*) FILTER (WHERE state = 0), COUNT(*) FILTER (WHERE state = 1),
                    MIN(created_ms) FILTER (WHERE state = 0)
             FROM deliveries WHERE webhook = ?1",
            [&name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let (disabled_reason, delivered): (Option<String>, i64) = conn
            .query_row(
                "SELECT CASE WHEN disabled_at IS NOT NULL THEN COALESCE(disabled_reason, 'disabled') END, delivered
                 FROM webhooks WHERE name = ?1",
                [&name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or((None, 0));
        out.push(WebhookStatus {
            webhook: name,
            pending,
            dead,
            disabled: disabled_reason.is_some(),
            disabled_reason,
            delivered,
            oldest_pending: ts(oldest),
        });
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub id: String,
    pub source: String,
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub account: Option<String>,
    pub timestamp: String,
    pub body: serde_json::Value,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub sources: Vec<String>,
    pub types: Vec<String>,
    pub since_ms: Option<i64>,
    pub account: Option<String>,
    pub limit: Option<usize>,
}

/// Events matching `f`, oldest first; with a limit, the newest `limit`.
pub fn events(conn: &Connection, f: &EventFilter) -> Result<Vec<EventRow>> {
    let mut out = Vec::new();
    each_event(conn, f, |row| out.push(row))?;
    Ok(out)
}

/// Hands the matching events to `emit`, oldest first, one at a time: with
/// no limit the history is streamed, never held in memory whole; with a
/// limit only the newest `limit` are read (newest first, then reversed).
pub fn each_event(
    conn: &Connection,
    f: &EventFilter,
    mut emit: impl FnMut(EventRow),
) -> Result<()> {
    let order = if f.limit.is_some() { "DESC" } else { "ASC" };
    let mut stmt = conn.prepare(&format!(
        "SELECT e.event_id, s.spec, e.seq, e.type, e.account, e.at_ms, e.body
         FROM events e JOIN sources s ON s.id = e.source_id
         WHERE (?1 IS NULL OR e.committed_ms >= ?1) AND (?2 IS NULL OR e.account = ?2)
         ORDER BY e.id {order}"
    ))?;
    let rows = stmt.query_map(params![f.since_ms, f.account], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, i64>(5)?,
            r.get::<_, String>(6)?,
        ))
    })?;
    let types: Vec<crate::source::Pattern> = f
        .types
        .iter()
        .map(|t| crate::source::Pattern::new(t.as_str()))
        .collect();
    let mut newest = Vec::new();
    for row in rows {
        let (id, source, seq, kind, account, at_ms, body) = row?;
        if !f.sources.is_empty() && !f.sources.contains(&source) {
            continue;
        }
        if !types.is_empty() && !types.iter().any(|t| t.matches(&kind)) {
            continue;
        }
        let row = EventRow {
            id,
            source,
            seq,
            kind,
            account,
            timestamp: crate::event::rfc3339(at_ms),
            body: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        };
        match f.limit {
            None => emit(row),
            Some(l) => {
                newest.push(row);
                if newest.len() >= l {
                    break;
                }
            }
        }
    }
    for row in newest.into_iter().rev() {
        emit(row);
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadDelivery {
    pub id: i64,
    pub webhook: String,
    pub event_id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub attempts: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub last_attempt: Option<String>,
}

pub fn dead_deliveries(conn: &Connection, webhook: Option<&str>) -> Result<Vec<DeadDelivery>> {
    let mut stmt = conn.prepare(
        "SELECT d.id, d.webhook, e.event_id, s.spec, e.type, d.attempts, d.last_status, d.last_error, d.last_attempt_ms
         FROM deliveries d JOIN events e ON e.id = d.event JOIN sources s ON s.id = d.source_id
         WHERE d.state = 1 AND (?1 IS NULL OR d.webhook = ?1) ORDER BY d.id",
    )?;
    let rows = stmt.query_map([webhook], |r| {
        Ok(DeadDelivery {
            id: r.get(0)?,
            webhook: r.get(1)?,
            event_id: r.get(2)?,
            source: r.get(3)?,
            kind: r.get(4)?,
            attempts: r.get(5)?,
            last_status: r.get(6)?,
            last_error: r.get(7)?,
            last_attempt: ts(r.get(8)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

#[derive(Debug, Clone, Serialize)]
pub struct MirrorRow {
    pub target: String,
    pub action: String,
    pub state: String,
    pub banned_until: Option<i64>,
    pub origin_event: String,
    pub error_code: Option<i64>,
}

/// Mirror actions caused by the events of one account.
pub fn mirrors_of(conn: &Connection, account: &str) -> Result<Vec<MirrorRow>> {
    let mut stmt = conn.prepare(
        "SELECT p.target, p.action, p.state, p.banned_until, e.event_id, p.error_code
         FROM propagations p JOIN events e ON e.id = p.origin_event WHERE p.account = ?1 ORDER BY p.id",
    )?;
    let rows = stmt.query_map([account], |r| {
        let state: i64 = r.get(2)?;
        Ok(MirrorRow {
            target: r.get(0)?,
            action: r.get(1)?,
            state: ["queued", "applied", "failed", "skipped"]
                .get(state as usize)
                .unwrap_or(&"?")
                .to_string(),
            banned_until: r.get(3)?,
            origin_event: r.get(4)?,
            error_code: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The figures `/metrics` reads from the store.
pub fn gauges(conn: &Connection, webhook_names: &[String], now_ms: i64) -> Result<Gauges> {
    let mut g = Gauges::default();
    for kind in SourceKind::ALL {
        let (entries, oldest, newest): (i64, Option<i64>, Option<i64>) = conn.query_row(
            "SELECT COALESCE(SUM(entries), 0), MIN(last_complete_walk_at), MAX(last_complete_walk_at) FROM sources WHERE kind = ?1",
            [kind.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        g.entries_by_kind.push((kind.as_str(), entries as u64));
        g.last_walk_by_kind.push((
            kind.as_str(),
            oldest.map(|m| m / 1000),
            newest.map(|m| m / 1000),
        ));
        let mut stmt = conn.prepare_cached(
            "SELECT status, COUNT(*) FROM sources WHERE kind = ?1 GROUP BY status",
        )?;
        for row in stmt.query_map([kind.as_str()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })? {
            let (status, n) = row?;
            g.sources_by_kind_status
                .push((kind.as_str(), status, n as u64));
        }
    }
    for origin in crate::source::Origin::ALL {
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM sources WHERE origin = ?1 AND retired_at IS NULL",
            [origin.as_str()],
            |r| r.get(0),
        )?;
        g.sources_by_origin.push((origin.as_str(), n as u64));
    }
    for l in listings(conn)? {
        g.listings
            .push((l.kind, l.last_complete_ms.map(|m| m / 1000), l.found as u64));
    }
    for w in webhooks(conn, webhook_names)? {
        if !webhook_names.contains(&w.webhook) {
            continue;
        }
        let oldest: Option<i64> = conn.query_row(
            "SELECT MIN(created_ms) FROM deliveries WHERE webhook = ?1 AND state = 0",
            [&w.webhook],
            |r| r.get(0),
        )?;
        let age = oldest
            .map(|o| ((now_ms - o).max(0)) as f64 / 1000.0)
            .unwrap_or(0.0);
        g.webhooks
            .push((w.webhook, w.pending as u64, w.dead as u64, age, w.disabled));
    }
    Ok(g)
}
