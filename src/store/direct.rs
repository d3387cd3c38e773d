//! A connection of its own, for the commands (`status`, `events`,
//! `history`, `deliveries`, `replay`) and `/metrics`: they run beside a
//! daemon that may be writing (WAL lets them), need no writer thread, and
//! each change they make is one transaction. Like [`super::Store`], its
//! surface is typed: no SQL leaves `src/store/`.

use std::path::Path;

use rusqlite::Connection;

use super::queries::{
    self, DeadDelivery, EventFilter, EventRow, ListingStatus, MirrorRow, SourceStatus,
    WebhookStatus,
};
use super::{Result, StoreError, connect, migrate, ops};
use crate::config::WebhookSettings;
use crate::metrics::Gauges;

pub struct Direct {
    conn: Connection,
}

impl Direct {
    /// Opens the store at `path` (creating and migrating it).
    pub fn open(path: &Path) -> Result<Direct> {
        let conn = connect(path)?;
        migrate(&conn)?;
        Ok(Direct { conn })
    }

    /// Opens the store at `path` to read only: never created, never
    /// migrated (a newer `bansync status` must not migrate the store of a
    /// running older daemon), and usable with read access alone. A store
    /// at another schema version is refused with a message saying what to
    /// do.
    pub fn open_read_only(path: &Path) -> Result<Direct> {
        use rusqlite::OpenFlags;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Sql(format!("cannot open `{}` to read: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = super::schema_version();
        if version > known {
            return Err(StoreError::Invalid(format!(
                "the store is at schema version {version}, newer than this bansync reads ({known}): use the bansync that runs the daemon"
            )));
        }
        if version < known {
            return Err(StoreError::Invalid(format!(
                "the store is at schema version {version}, older than this bansync reads ({known}): start this version's daemon (or `bansync sync`) once to migrate it"
            )));
        }
        Ok(Direct { conn })
    }

    /// Every source's state, for `status`.
    pub fn sources(&self) -> Result<Vec<SourceStatus>> {
        queries::sources(&self.conn)
    }

    /// Every webhook's delivery counts, for `status`.
    pub fn listings(&self) -> Result<Vec<ListingStatus>> {
        queries::listings(&self.conn)
    }

    pub fn webhooks(&self, names: &[String]) -> Result<Vec<WebhookStatus>> {
        queries::webhooks(&self.conn, names)
    }

    /// Stored events, for `events` and `history`.
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<EventRow>> {
        queries::events(&self.conn, filter)
    }

    /// Stored events, oldest first, handed over one at a time (`events`
    /// without `--limit` streams the whole history).
    pub fn each_event(&self, filter: &EventFilter, emit: impl FnMut(EventRow)) -> Result<()> {
        queries::each_event(&self.conn, filter, emit)
    }

    /// The mirrors of one account, for `history`.
    pub fn mirrors_of(&self, account: &str) -> Result<Vec<MirrorRow>> {
        queries::mirrors_of(&self.conn, account)
    }

    /// Dead deliveries, for `deliveries dead`.
    pub fn dead_deliveries(&self, webhook: Option<&str>) -> Result<Vec<DeadDelivery>> {
        queries::dead_deliveries(&self.conn, webhook)
    }

    /// The gauges `/metrics` serves.
    pub fn gauges(&self, webhooks: &[String], now_ms: i64) -> Result<Gauges> {
        queries::gauges(&self.conn, webhooks, now_ms)
    }

    /// Re-queues dead deliveries (all, one webhook's, or the given ids) at
    /// the back of their lanes. Returns how many.
    pub fn retry_dead(&self, webhook: Option<&str>, ids: &[i64], now_ms: i64) -> Result<usize> {
        self.immediate(|conn| ops::retry_dead(conn, webhook, ids, now_ms))
    }

    /// Queues again, for one webhook, every event since `since_ms` its
    /// filters take. Returns how many.
    /// One transaction per 1000 events, so a replay of a long history
    /// never holds the write lock past a running daemon's patience.
    pub fn replay(&self, webhook: &WebhookSettings, since_ms: i64, now_ms: i64) -> Result<usize> {
        const BATCH: usize = 1000;
        let (mut total, mut after) = (0, 0);
        loop {
            let (n, last) = self.immediate(|conn| {
                ops::replay_batch(conn, webhook, since_ms, after, BATCH, now_ms)
            })?;
            total += n;
            match last {
                Some(id) => after = id,
                None => return Ok(total),
            }
        }
    }

    /// Runs `f` in a transaction that takes the write lock first (waiting
    /// out a busy daemon): a deferred one that read first could not
    /// upgrade while the daemon writes, and would fail at once.
    fn immediate<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(&self.conn).and_then(|v| {
            self.conn.execute_batch("COMMIT")?;
            Ok(v)
        }) {
            Ok(v) => Ok(v),
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}
