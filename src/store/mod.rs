//! The SQLite store. One writer thread owns the read-write connection and
//! group-commits: each job runs in its own savepoint inside a shared
//! transaction, so many small writes cost one commit while each job stays
//! atomic on its own. Replies are sent only after the commit succeeded.

mod api;
mod direct;
mod found;
mod mirrors;
mod ops;
mod propagation;
mod queries;
mod schema;

pub use api::{Finished, OwedLanes};
pub use direct::Direct;
pub use found::{Enrolled, ListingDelta, ScheduleRow};
pub use mirrors::{Job, JobAction};
pub use ops::{AttemptOutcome, CommittedEvent, WalkOutcome, WalkReport};
pub use propagation::{MAX_ATTEMPTS, MAX_RETRY_DELAY_MS, Planned};
pub use queries::{
    DeadDelivery, EventFilter, EventRow, ListingStatus, MirrorRow, SourceStatus, WebhookStatus,
};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::config::{PropagateRule, WebhookSettings};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sql(String),
    #[error("store: commit failed: {0}")]
    Commit(String),
    #[error("store: cannot start a transaction: {0}")]
    Begin(String),
    #[error("store: {0}")]
    Invalid(String),
    #[error("store: the writer has stopped")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sql(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A delivery owed to a webhook, as the dispatcher needs it.
#[derive(Debug, Clone)]
pub struct OwedDelivery {
    pub id: i64,
    pub webhook: Arc<str>,
    pub source_id: i64,
    pub event_id: Arc<str>,
    pub body: Arc<str>,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    /// When it was last tried (Unix ms): with `next_attempt_ms`, the delay
    /// it was given, which a wall-clock step must not stretch.
    pub last_attempt_ms: Option<i64>,
    pub committed_ms: i64,
}

/// A delivery the writer announces after its commit.
#[derive(Debug, Clone)]
pub struct Announced {
    pub delivery: OwedDelivery,
    /// The id of the lane's previous owed delivery when it was committed:
    /// the dispatcher takes this one straight in only if it has that one.
    pub prev_owed: Option<i64>,
}

/// What the writer tells other parts after a commit.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A delivery was committed (with the lane's previous owed delivery).
    Delivery(Announced),
    /// Mirror actions were queued.
    Propagation,
    /// Ban end times changed: the expiry timer should look again.
    ExpiryChanged,
}

/// What the writer knows of the configuration when it emits events.
#[derive(Debug, Clone, Default)]
pub struct EmitConfig {
    pub app: u64,
    pub webhooks: Vec<WebhookSettings>,
    pub propagate: Vec<PropagateRule>,
}

/// The state a job runs against: the connection inside the open
/// transaction, the notices it queues, the current emit configuration.
pub(crate) struct Ctx<'a> {
    pub conn: &'a Connection,
    pub emit: &'a EmitConfig,
    notices: Vec<Notice>,
}

impl Ctx<'_> {
    pub fn notify(&mut self, n: Notice) {
        self.notices.push(n);
    }
}

type Finish = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;
/// A job gets the batch's transaction, or the reason there is none.
type Run = Box<dyn FnOnce(std::result::Result<&mut Ctx<'_>, String>) -> Finish + Send>;
enum WriterJob {
    Run(Run),
    SetEmit(EmitConfig),
}

/// A cheap, cloneable handle to the writer thread.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<WriterJob>,
    path: Arc<PathBuf>,
    /// Reads still to fail on purpose (tests of what a failed read leaves).
    failing_reads: Arc<std::sync::atomic::AtomicUsize>,
}

/// Opens a connection with the settings every connection needs.
fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Sql(format!("cannot open `{}`: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // WAL lets readers (the CLI, /metrics) run beside the writer.
    // synchronous=NORMAL: a commit survives a process crash; a power cut
    // may lose the last commits but never corrupts the file.
    conn.execute_batch(
        // auto_vacuum takes effect only on a store with no tables yet: new
        // stores give the space retention frees back to the file system.
        "PRAGMA auto_vacuum=INCREMENTAL; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
    )?;
    Ok(conn)
}

/// The schema version this bansync writes and reads.
fn schema_version() -> i64 {
    schema::MIGRATIONS.len() as i64
}

/// Applies every migration the file has not seen yet.
fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = schema::MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::Invalid(format!(
            "the database is at schema version {version}, newer than this bansync knows ({known}): refusing to touch it"
        )));
    }
    for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        tx.commit()?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating and migrating) the store and starts its writer.
    /// Notices go to `notices` after each commit.
    pub fn open(
        path: &Path,
        emit: EmitConfig,
        notices: Option<tokio::sync::mpsc::UnboundedSender<Notice>>,
    ) -> Result<Store> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Sql(format!("cannot create `{}`: {e}", dir.display())))?;
        }
        let conn = connect(path)?;
        migrate(&conn)?;
        let (tx, rx) = mpsc::channel::<WriterJob>();
        std::thread::Builder::new()
            .name("bansync-store".into())
            .spawn(move || writer_loop(conn, rx, emit, notices))
            .map_err(|e| StoreError::Sql(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            tx,
            path: Arc::new(path.to_path_buf()),
            failing_reads: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in its own savepoint; the reply comes after the commit.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_>) -> Result<T> + Send + 'static,
    {
        self.job(f, false).await
    }

    /// Runs `f` to read, without keeping anything it wrote.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_>) -> Result<T> + Send + 'static,
    {
        use std::sync::atomic::Ordering;
        if self
            .failing_reads
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Begin("injected read failure".into()));
        }
        self.job(f, true).await
    }

    /// Makes the next `n` reads fail, as a busy or broken store would.
    #[doc(hidden)]
    pub fn fail_next_reads(&self, n: usize) {
        self.failing_reads
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs `f` and rolls it back: for `--dry-run`, which must store nothing.
    async fn dry_run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_>) -> Result<T> + Send + 'static,
    {
        self.job(f, true).await
    }

    async fn job<T, F>(&self, f: F, rollback: bool) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_>) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job = WriterJob::Run(Box::new(
            move |ctx: std::result::Result<&mut Ctx<'_>, String>| -> Finish {
                let ctx = match ctx {
                    Ok(ctx) => ctx,
                    Err(e) => {
                        let _ = reply.send(Err(StoreError::Begin(e)));
                        return Box::new(|_| {});
                    }
                };
                let mark = ctx.notices.len();
                if let Err(e) = ctx.conn.execute_batch("SAVEPOINT job") {
                    let _ = reply.send(Err(StoreError::from(e)));
                    return Box::new(|_| {});
                }
                let r = f(ctx);
                let undo = rollback || r.is_err();
                let end = if undo {
                    "ROLLBACK TO job; RELEASE job"
                } else {
                    "RELEASE job"
                };
                if undo {
                    ctx.notices.truncate(mark);
                }
                let r = match (r, ctx.conn.execute_batch(end)) {
                    (Ok(_), Err(e)) => Err(StoreError::from(e)),
                    (r, _) => r,
                };
                match r {
                    Ok(v) if !rollback => Box::new(move |commit| {
                        let _ = reply.send(commit.map(|_| v).map_err(StoreError::Commit));
                    }),
                    other => {
                        let _ = reply.send(other);
                        Box::new(|_| {})
                    }
                }
            },
        ));
        self.tx.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Replaces what the writer uses when emitting (webhooks, rules).
    pub fn set_emit_config(&self, emit: EmitConfig) {
        let _ = self.tx.send(WriterJob::SetEmit(emit));
    }
}

/// Most jobs per transaction: bounds the latency a big batch adds.
const MAX_BATCH: usize = 512;

fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<WriterJob>,
    mut emit: EmitConfig,
    notices: Option<tokio::sync::mpsc::UnboundedSender<Notice>>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut runs = Vec::with_capacity(batch.len());
        for job in batch {
            match job {
                WriterJob::SetEmit(e) => emit = e,
                WriterJob::Run(f) => runs.push(f),
            }
        }
        if runs.is_empty() {
            continue;
        }
        let mut ctx = Ctx {
            conn: &conn,
            emit: &emit,
            notices: Vec::new(),
        };
        let begin = conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| e.to_string());
        // Without a transaction every job is answered with the reason (the
        // database locked past the busy timeout by another process, a full
        // disk): its caller retries, as after a failed commit.
        let finishes: Vec<Finish> = match &begin {
            Ok(()) => runs.into_iter().map(|f| f(Ok(&mut ctx))).collect(),
            Err(e) => {
                tracing::error!(error = %e, jobs = runs.len(), "store: cannot start a transaction; the batch's callers will retry");
                runs.into_iter().map(|f| f(Err(e.clone()))).collect()
            }
        };
        let began = begin.is_ok();
        let commit = begin.and_then(|_| conn.execute_batch("COMMIT").map_err(|e| e.to_string()));
        if began && let Err(e) = &commit {
            tracing::error!(error = %e, "store commit failed; the batch is rolled back and will be retried by its callers");
            let _ = conn.execute_batch("ROLLBACK");
        }
        let sent = std::mem::take(&mut ctx.notices);
        for f in finishes {
            f(commit.clone());
        }
        if commit.is_ok()
            && let Some(n) = &notices
        {
            for notice in sent {
                let _ = n.send(notice);
            }
        }
    }
}
