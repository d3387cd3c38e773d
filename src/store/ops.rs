//! Store operations, each run by the writer inside one savepoint: what a
//! walk changes, the events it emits and the deliveries they owe commit
//! together or not at all.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};

use super::mirrors::Job;
use super::propagation::{self, Planned, ToEmit};
use super::{Ctx, Notice, OwedDelivery, Result, StoreError};
use crate::diff::Initial;
use crate::diff::{self, EntryState, StoredEntry};
use crate::event::{self, Change, EventType};
use crate::mirror::{Answer, Read, Request, Window};
use crate::source::{Entry, SourceKind, SourceSpec};

#[derive(Debug, Clone)]
pub struct SourceRow {
    pub id: i64,
    pub status: String,
    pub digest: Option<Vec<u8>>,
    pub pending_absent: i64,
}

/// Finds a source's row, creating it on first sight.
pub fn source_row(ctx: &Ctx<'_>, spec: &SourceSpec) -> Result<SourceRow> {
    let key = spec.to_string();
    let find = |conn: &rusqlite::Connection| {
        conn.prepare_cached(
            "SELECT id, status, digest, pending_absent FROM sources WHERE spec = ?1",
        )?
        .query_row([&key], |r| {
            Ok(SourceRow {
                id: r.get(0)?,
                status: r.get(1)?,
                digest: r.get(2)?,
                pending_absent: r.get(3)?,
            })
        })
        .optional()
    };
    if let Some(row) = find(ctx.conn)? {
        return Ok(row);
    }
    ctx.conn
        .prepare_cached("INSERT INTO sources (spec, kind) VALUES (?1, ?2)")?
        .execute(params![key, spec.kind.as_str()])?;
    find(ctx.conn)?.ok_or_else(|| StoreError::Sql("source row vanished".into()))
}

/// A committed event, as callers report it.
#[derive(Debug, Clone)]
pub struct CommittedEvent {
    pub rowid: i64,
    pub event_id: String,
    pub source: String,
    pub seq: i64,
    pub kind: EventType,
    pub account: Option<String>,
    pub value: Option<i64>,
    pub body: Arc<str>,
}

/// Numbers `change`, stores it, and queues a delivery to every webhook
/// whose filters take it (and the mirror actions it causes).
pub fn emit(
    ctx: &mut Ctx<'_>,
    source_id: i64,
    spec: &SourceSpec,
    change: &Change,
    now_ms: i64,
) -> Result<CommittedEvent> {
    emit_observed(ctx, source_id, spec, change, now_ms, now_ms)
}

/// [`emit`] for a change a walk found: `read_from_ms` is when the walk
/// started (what it saw may predate anything acted on since).
pub fn emit_observed(
    ctx: &mut Ctx<'_>,
    source_id: i64,
    spec: &SourceSpec,
    change: &Change,
    read_from_ms: i64,
    now_ms: i64,
) -> Result<CommittedEvent> {
    let seq: i64 = ctx
        .conn
        .prepare_cached(
            "UPDATE sources SET next_seq = next_seq + 1 WHERE id = ?1 RETURNING next_seq - 1",
        )?
        .query_row([source_id], |r| r.get(0))?;
    let source = spec.to_string();
    let event_id = event::new_event_id();
    let body: Arc<str> = event::body(ctx.emit.app, &source, seq, &event_id, change).into();
    ctx.conn
        .prepare_cached(
            "INSERT INTO events (event_id, source_id, seq, type, account, at_ms, committed_ms, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![event_id, source_id, seq, change.kind.as_str(), change.account, change.at_ms, now_ms, &*body])?;
    let rowid = ctx.conn.last_insert_rowid();
    let committed = CommittedEvent {
        rowid,
        event_id: event_id.clone(),
        source: source.clone(),
        seq,
        kind: change.kind,
        account: change.account.clone(),
        value: change.value,
        body: body.clone(),
    };
    let event_id: Arc<str> = event_id.into();
    let wanted: Vec<Arc<str>> = ctx
        .emit
        .webhooks
        .iter()
        .filter(|w| w.wants(change.kind.as_str(), &source))
        .map(|w| Arc::from(w.name.as_str()))
        .collect();
    for webhook in wanted {
        ctx.conn
            .prepare_cached(
                "INSERT INTO deliveries (webhook, event, source_id, next_attempt_ms, created_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
            )?
            .execute(params![&*webhook, rowid, source_id, now_ms])?;
        let id = ctx.conn.last_insert_rowid();
        // The lane's previous owed delivery: the dispatcher takes this one
        // straight in only if it has taken that one (see delivery::lane).
        let prev_owed: Option<i64> = ctx
            .conn
            .prepare_cached(
                "SELECT MAX(id) FROM deliveries WHERE webhook = ?1 AND source_id = ?2 AND state = 0 AND id < ?3",
            )?
            .query_row(params![&*webhook, source_id, id], |r| r.get(0))?;
        ctx.notify(Notice::Delivery(super::Announced {
            delivery: OwedDelivery {
                id,
                webhook,
                source_id,
                event_id: event_id.clone(),
                body: body.clone(),
                attempts: 0,
                next_attempt_ms: now_ms,
                last_attempt_ms: None,
                committed_ms: now_ms,
            },
            prev_owed,
        }));
    }
    let observed = propagation::Observation {
        source_id,
        spec,
        rowid,
        kind: change.kind,
        account: change.account.as_deref(),
        value: change.value,
        read_from_ms,
    };
    let follow = propagation::on_event(ctx, observed, now_ms)?;
    for c in &follow {
        emit(ctx, source_id, spec, c, now_ms)?;
    }
    Ok(committed)
}

/// Emits what the store's propagation logic asked for.
fn emit_all(ctx: &mut Ctx<'_>, events: Vec<ToEmit>, now_ms: i64) -> Result<Vec<CommittedEvent>> {
    events
        .into_iter()
        .map(|e| emit(ctx, e.source_id, &e.spec, &e.change, now_ms))
        .collect()
}

/// Decides what a due mirror job does after a fresh read of its target.
pub fn plan_mirror_job(
    ctx: &mut Ctx<'_>,
    job: &Job,
    read: Read,
    now_ms: i64,
    max_call_s: i64,
) -> Result<(Planned, Vec<CommittedEvent>)> {
    let (planned, events) = propagation::plan(ctx, job, read, now_ms, max_call_s)?;
    Ok((planned, emit_all(ctx, events, now_ms)?))
}

/// Records how a mirror job's request ended.
pub fn finish_mirror_job(
    ctx: &mut Ctx<'_>,
    job: &Job,
    request: Request,
    answer: Answer,
    window: Window,
    error: Option<(Option<i64>, String)>,
    now_ms: i64,
) -> Result<Vec<CommittedEvent>> {
    let events = propagation::answer(ctx, job, request, answer, window, error, now_ms)?;
    emit_all(ctx, events, now_ms)
}

/// A mirror job's target could not be read (`gone`: it does not exist).
pub fn mirror_read_failed(
    ctx: &mut Ctx<'_>,
    job: &Job,
    gone: Option<(Option<i64>, String)>,
    error: &str,
    now_ms: i64,
) -> Result<Vec<CommittedEvent>> {
    let events = propagation::read_failed(ctx, job, gone, error, now_ms)?;
    emit_all(ctx, events, now_ms)
}

/// How a walk ended, as the store records it.
#[derive(Debug, Clone)]
pub enum WalkOutcome {
    Complete {
        entries: Vec<Entry>,
        digest: [u8; 24],
        /// When the walk started (Unix ms).
        started_ms: i64,
        /// False when the list kept shifting under the walk: its absences
        /// do not count.
        stable: bool,
    },
    /// The owner is gone (100004, 10010, 30003): entries are kept.
    Gone { code: i64, info: String },
    /// The walk did not finish: nothing changes but the error is noted.
    Failed { error: String },
}

#[derive(Debug, Clone, Default)]
pub struct WalkReport {
    pub events: Vec<CommittedEvent>,
    /// Changes found (for dry runs, where nothing is committed).
    pub changes: Vec<Change>,
    pub entries: i64,
    pub pending_absent: i64,
    /// The list was identical to what is stored: nothing was read or
    /// written but the source's walk time.
    pub unchanged: bool,
    /// The fingerprint of what is stored for the source after this walk.
    pub digest: Option<[u8; 24]>,
    /// Mirror actions the events queued: (action, account, target, until).
    pub mirrors: Vec<(String, String, String, Option<i64>)>,
    /// A found source that never existed (a callback named it, the vendor
    /// never had it): retired at once, with no event.
    pub retired: bool,
}

/// Applies one walk's outcome to a source: the diff, its events and
/// deliveries, and the source's status, in the caller's savepoint.
pub fn apply_walk(
    ctx: &mut Ctx<'_>,
    spec: &SourceSpec,
    outcome: WalkOutcome,
    now_ms: i64,
    initial: Initial,
) -> Result<WalkReport> {
    let row = source_row(ctx, spec)?;
    let mut report = WalkReport::default();
    match outcome {
        WalkOutcome::Failed { error } => {
            ctx.conn
                .prepare_cached(
                    "UPDATE sources SET last_attempt_at = ?2, last_error = ?3, last_error_at = ?2,
                     consecutive_failures = consecutive_failures + 1 WHERE id = ?1",
                )?
                .execute(params![row.id, now_ms, error])?;
        }
        WalkOutcome::Gone { code, info } => {
            // Named by a callback or a listing but never walked: nothing
            // was ever reported of it, so nothing stopped existing. A
            // forged callback must not make an event: retire it quietly.
            if row.status == "new" && super::found::is_found(ctx, row.id)? {
                super::found::retire_unseen(ctx, row.id, now_ms, &format!("{code}: {info}"))?;
                report.retired = true;
                return Ok(report);
            }
            if row.status != "unavailable" {
                let c = Change::source_state(
                    EventType::SourceUnavailable,
                    Some(code),
                    Some(info.clone()),
                    now_ms,
                );
                report.changes.push(c.clone());
                report.events.push(emit(ctx, row.id, spec, &c, now_ms)?);
            }
            ctx.conn
                .prepare_cached(
                    "UPDATE sources SET status = 'unavailable', last_attempt_at = ?2, last_error = ?3,
                     last_error_at = ?2, consecutive_failures = 0 WHERE id = ?1",
                )?
                .execute(params![row.id, now_ms, format!("{code}: {info}")])?;
        }
        WalkOutcome::Complete {
            entries,
            digest,
            started_ms,
            stable,
        } => {
            let first_walk = row.status == "new";
            let restored = row.status == "unavailable";
            if !first_walk
                && !restored
                && row.pending_absent == 0
                && row.digest.as_deref() == Some(&digest[..])
            {
                ctx.conn
                    .prepare_cached(
                        "UPDATE sources SET last_complete_walk_at = ?2, last_attempt_at = ?2, walks = walks + 1,
                         last_error = NULL, consecutive_failures = 0 WHERE id = ?1",
                    )?
                    .execute(params![row.id, now_ms])?;
                report.unchanged = true;
                report.entries = entries.len() as i64;
                report.digest = Some(digest);
                return Ok(report);
            }
            if restored {
                let c = Change::source_state(EventType::SourceRestored, None, None, now_ms);
                report.changes.push(c.clone());
                report.events.push(emit(ctx, row.id, spec, &c, now_ms)?);
            }
            let stored = load_entries(ctx, row.id)?;
            let mut outcome = diff::diff_walk(
                spec.kind, &stored, &entries, now_ms, first_walk, initial, stable,
            );
            if first_walk {
                let named = super::found::take_announced(ctx, row.id)?;
                if initial == Initial::Baseline && !named.is_empty() {
                    let named: Vec<(String, i64)> =
                        named.into_iter().map(|a| (a.account, a.since)).collect();
                    let extra = diff::announced(spec.kind, &entries, &named, now_ms);
                    outcome.changes.extend(extra);
                }
            }
            write_entries(ctx, row.id, spec.kind, &outcome.upserts, &outcome.deletes)?;
            // The fingerprint of what is now stored, not of this walk.
            let held = diff::digest_pairs(diff::stored_after(&stored, &outcome));
            report.digest = Some(held);
            for c in &outcome.changes {
                report
                    .events
                    .push(emit_observed(ctx, row.id, spec, c, started_ms, now_ms)?);
            }
            report.changes.extend(outcome.changes);
            let (count, absent): (i64, i64) = ctx
                .conn
                .prepare_cached("SELECT COUNT(*), COUNT(*) FILTER (WHERE state = 1) FROM entries WHERE source_id = ?1")?
                .query_row([row.id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            ctx.conn
                .prepare_cached(
                    "UPDATE sources SET status = 'ok', digest = ?2, entries = ?3, pending_absent = ?4,
                     last_complete_walk_at = ?5, last_attempt_at = ?5, walks = walks + 1,
                     last_error = NULL, consecutive_failures = 0 WHERE id = ?1",
                )?
                                .execute(params![row.id, &held[..], count, absent, now_ms])?;
            report.entries = count;
            report.pending_absent = absent;
            if spec.kind.is_ban_list() && !outcome.upserts.is_empty() {
                ctx.notify(Notice::ExpiryChanged);
            }
        }
    }
    if !ctx.emit.propagate.is_empty() && !report.events.is_empty() {
        let mut stmt = ctx.conn.prepare_cached(
            "SELECT action, account, target, banned_until FROM propagations WHERE origin_event = ?1 ORDER BY id",
        )?;
        for e in &report.events {
            let rows = stmt.query_map([e.rowid], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
            for row in rows {
                report.mirrors.push(row?);
            }
        }
    }
    Ok(report)
}

fn load_entries(ctx: &Ctx<'_>, source_id: i64) -> Result<Vec<StoredEntry>> {
    let mut stmt = ctx
        .conn
        .prepare_cached("SELECT account, value, state FROM entries WHERE source_id = ?1")?;
    let rows = stmt.query_map([source_id], |r| {
        Ok(StoredEntry {
            account: r.get(0)?,
            value: r.get(1)?,
            state: EntryState::from_code(r.get(2)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn write_entries(
    ctx: &Ctx<'_>,
    source_id: i64,
    kind: SourceKind,
    upserts: &[StoredEntry],
    deletes: &[String],
) -> Result<()> {
    let mut up = ctx.conn.prepare_cached(
        "INSERT INTO entries (source_id, account, value, state, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (source_id, account) DO UPDATE SET value = excluded.value, state = excluded.state,
         expires_at = excluded.expires_at",
    )?;
    for u in upserts {
        up.execute(params![
            source_id,
            u.account,
            u.value,
            u.state.code(),
            u.expires_at(kind)
        ])?;
    }
    let mut del = ctx
        .conn
        .prepare_cached("DELETE FROM entries WHERE source_id = ?1 AND account = ?2")?;
    for d in deletes {
        del.execute(params![source_id, d])?;
    }
    Ok(())
}

/// Emits `ban.expired` for every running ban whose end has passed (at most
/// `limit` in one go), stamped with the moment it took effect.
pub fn expire_due(ctx: &mut Ctx<'_>, now_ms: i64, limit: usize) -> Result<Vec<CommittedEvent>> {
    let now = now_ms.div_euclid(1000);
    let due: Vec<(i64, String, String, i64)> = {
        let mut stmt = ctx.conn.prepare_cached(
            "SELECT e.source_id, s.spec, e.account, e.value FROM entries e JOIN sources s ON s.id = e.source_id
             WHERE e.expires_at IS NOT NULL AND e.expires_at <= ?1
             ORDER BY e.expires_at, e.source_id, e.account LIMIT ?2",
        )?;
        stmt.query_map(params![now, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?
    };
    let mut out = Vec::with_capacity(due.len());
    for (source_id, spec, account, value) in due {
        let spec: SourceSpec = spec.parse().map_err(StoreError::Invalid)?;
        ctx.conn
            .prepare_cached("UPDATE entries SET state = 2, expires_at = NULL WHERE source_id = ?1 AND account = ?2")?
            .execute(params![source_id, account])?;
        let c = Change::expired(&account, value);
        out.push(emit(ctx, source_id, &spec, &c, now_ms)?);
    }
    Ok(out)
}

/// The earliest end among running bans (Unix seconds).
pub fn next_expiry(conn: &rusqlite::Connection) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT MIN(expires_at) FROM entries WHERE expires_at IS NOT NULL")?
        .query_row([], |r| r.get(0))?)
}

// ---- deliveries ----

/// Owed deliveries of one lane (webhook × source) after `after_id`, in order.
pub fn load_lane(
    conn: &rusqlite::Connection,
    webhook: &str,
    source_id: i64,
    after_id: i64,
    limit: usize,
) -> Result<Vec<OwedDelivery>> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.id, d.attempts, d.next_attempt_ms, e.event_id, e.body, e.committed_ms, d.last_attempt_ms
         FROM deliveries d JOIN events e ON e.id = d.event
         WHERE d.webhook = ?1 AND d.source_id = ?2 AND d.state = 0 AND d.id > ?3 ORDER BY d.id LIMIT ?4",
    )?;
    let webhook: Arc<str> = webhook.into();
    let rows = stmt.query_map(params![&*webhook, source_id, after_id, limit as i64], |r| {
        Ok(OwedDelivery {
            id: r.get(0)?,
            webhook: webhook.clone(),
            source_id,
            attempts: r.get(1)?,
            next_attempt_ms: r.get(2)?,
            event_id: Arc::from(r.get::<_, String>(3)?),
            body: Arc::from(r.get::<_, String>(4)?),
            committed_ms: r.get(5)?,
            last_attempt_ms: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Per source, the newest owed delivery id of a webhook.
pub fn lanes_with_work(conn: &rusqlite::Connection, webhook: &str) -> Result<Vec<(i64, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT source_id, MAX(id) FROM deliveries WHERE webhook = ?1 AND state = 0 GROUP BY source_id",
    )?;
    let rows = stmt.query_map([webhook], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The outcome of one attempt.
#[derive(Debug, Clone)]
pub enum AttemptOutcome {
    Delivered {
        status: u16,
    },
    Failed {
        status: Option<u16>,
        error: String,
        next_attempt_ms: i64,
        /// The delay until then (what a clock step must not stretch).
        retry_in: std::time::Duration,
    },
    Dead {
        status: Option<u16>,
        error: String,
    },
    /// 410 Gone: the webhook is disabled, the delivery stays owed.
    Gone,
}

pub fn record_attempt(
    ctx: &Ctx<'_>,
    delivery_id: i64,
    webhook: &str,
    outcome: &AttemptOutcome,
    now_ms: i64,
) -> Result<()> {
    match outcome {
        AttemptOutcome::Delivered { .. } => {
            ctx.conn
                .prepare_cached("DELETE FROM deliveries WHERE id = ?1")?
                .execute([delivery_id])?;
            ctx.conn
                .prepare_cached(
                    "INSERT INTO webhooks (name, delivered) VALUES (?1, 1)
                     ON CONFLICT (name) DO UPDATE SET delivered = delivered + 1",
                )?
                .execute([webhook])?;
        }
        AttemptOutcome::Failed {
            status,
            error,
            next_attempt_ms,
            ..
        } => {
            ctx.conn
                .prepare_cached(
                    "UPDATE deliveries SET attempts = attempts + 1, last_attempt_ms = ?2, last_status = ?3,
                     last_error = ?4, next_attempt_ms = ?5 WHERE id = ?1",
                )?
                .execute(params![delivery_id, now_ms, status, error, next_attempt_ms])?;
        }
        AttemptOutcome::Dead { status, error } => {
            ctx.conn
                .prepare_cached(
                    "UPDATE deliveries SET state = 1, attempts = attempts + 1, last_attempt_ms = ?2,
                     last_status = ?3, last_error = ?4 WHERE id = ?1",
                )?
                .execute(params![delivery_id, now_ms, status, error])?;
        }
        AttemptOutcome::Gone => {
            ctx.conn
                .prepare_cached(
                    "UPDATE deliveries SET attempts = attempts + 1, last_attempt_ms = ?2, last_status = 410,
                     last_error = '410 Gone: webhook disabled' WHERE id = ?1",
                )?
                .execute(params![delivery_id, now_ms])?;
            ctx.conn
                .prepare_cached(
                    "INSERT INTO webhooks (name, disabled_at, disabled_reason) VALUES (?1, ?2, '410 Gone')
                     ON CONFLICT (name) DO UPDATE SET disabled_at = ?2, disabled_reason = '410 Gone'",
                )?
                .execute(params![webhook, now_ms])?;
        }
    }
    Ok(())
}

/// Webhooks disabled by a 410 (names).
pub fn disabled_webhooks(conn: &rusqlite::Connection) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT name FROM webhooks WHERE disabled_at IS NOT NULL")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// A (re)loaded configuration names these webhooks: enable them again.
pub fn enable_webhooks(conn: &rusqlite::Connection, names: &[String]) -> Result<usize> {
    let mut n = 0;
    for name in names {
        n += conn
            .prepare_cached("UPDATE webhooks SET disabled_at = NULL, disabled_reason = NULL WHERE name = ?1 AND disabled_at IS NOT NULL")?
            .execute([name])?;
    }
    Ok(n)
}

/// Re-queues dead deliveries as new rows (so they join the back of their
/// lane), returning how many.
pub fn retry_dead(
    conn: &rusqlite::Connection,
    webhook: Option<&str>,
    ids: &[i64],
    now_ms: i64,
) -> Result<usize> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, webhook, event, source_id FROM deliveries WHERE state = 1 AND (?1 IS NULL OR webhook = ?1) ORDER BY id",
    )?;
    let dead: Vec<(i64, String, i64, i64)> = stmt
        .query_map([webhook], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut n = 0;
    for (id, hook, event, source_id) in dead {
        if !ids.is_empty() && !ids.contains(&id) {
            continue;
        }
        conn.prepare_cached(
            "INSERT INTO deliveries (webhook, event, source_id, next_attempt_ms, created_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
        )?
        .execute(params![hook, event, source_id, now_ms])?;
        conn.prepare_cached("DELETE FROM deliveries WHERE id = ?1")?
            .execute([id])?;
        n += 1;
    }
    Ok(n)
}

/// Queues again, for one webhook, the events since `since_ms` its filters
/// take, among the next `limit` events after id `after_id`. Returns how
/// many were queued and the last event id looked at (`None`: no more).
pub fn replay_batch(
    conn: &rusqlite::Connection,
    webhook: &crate::config::WebhookSettings,
    since_ms: i64,
    after_id: i64,
    limit: usize,
    now_ms: i64,
) -> Result<(usize, Option<i64>)> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.id, e.type, s.spec, e.source_id FROM events e JOIN sources s ON s.id = e.source_id
         WHERE e.committed_ms >= ?1 AND e.id > ?2 ORDER BY e.id LIMIT ?3",
    )?;
    let rows: Vec<(i64, String, String, i64)> = stmt
        .query_map(params![since_ms, after_id, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let last = rows.last().map(|r| r.0);
    let mut n = 0;
    for (event, kind, spec, source_id) in rows {
        if !webhook.wants(&kind, &spec) {
            continue;
        }
        conn.prepare_cached(
            "INSERT INTO deliveries (webhook, event, source_id, next_attempt_ms, created_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
        )?
        .execute(params![webhook.name, event, source_id, now_ms])?;
        n += 1;
    }
    Ok((n, last))
}

/// Records complete, unchanged walks: (source, when) each.
pub fn touch_sources(conn: &rusqlite::Connection, walks: &[(SourceSpec, i64)]) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "UPDATE sources SET last_complete_walk_at = ?2, last_attempt_at = ?2, walks = walks + 1,
         last_error = NULL, consecutive_failures = 0 WHERE spec = ?1",
    )?;
    for (spec, at) in walks {
        stmt.execute(params![spec.to_string(), at])?;
    }
    Ok(())
}

/// Deletes up to `limit` events committed before `cutoff_ms` that nothing
/// still needs: no delivery owed or dead (an operator may retry it), no
/// queued mirror job, no mirror record naming it. Finished mirror jobs of
/// those events go with them. Returns how many events were deleted.
pub fn delete_old_events(
    conn: &rusqlite::Connection,
    cutoff_ms: i64,
    limit: usize,
) -> Result<usize> {
    let ids: Vec<i64> = conn
        .prepare_cached(
            "SELECT e.id FROM events e
             WHERE e.committed_ms < ?1
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event = e.id)
               AND NOT EXISTS (SELECT 1 FROM propagations p WHERE p.origin_event = e.id AND p.state = 0)
               AND NOT EXISTS (SELECT 1 FROM mirrors m WHERE m.origin_event = e.id)
             ORDER BY e.id LIMIT ?2",
        )?
        .query_map(params![cutoff_ms, limit as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for id in &ids {
        conn.prepare_cached("DELETE FROM propagations WHERE origin_event = ?1 AND state != 0")?
            .execute([id])?;
        conn.prepare_cached("DELETE FROM events WHERE id = ?1")?
            .execute([id])?;
    }
    Ok(ids.len())
}

/// Gives up to `pages` free pages back to the file system (a no-op on a
/// store created before incremental auto-vacuum).
pub fn reclaim_space(conn: &rusqlite::Connection, pages: u32) -> Result<()> {
    conn.execute_batch(&format!("PRAGMA incremental_vacuum({pages})"))?;
    Ok(())
}
