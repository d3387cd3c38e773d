//! Test harness: the simulator on a loopback port, configurations written
//! to real files, real SQLite stores, and webhook receivers that are real
//! HTTP servers with programmable answers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use bansync::clock::Clock;
use bansync::config::{self, Environment, Settings};
use bansync::delivery::Dispatcher;
use bansync::metrics::Metrics;
use bansync::propagate::Propagator;
use bansync::sim::{self, ListKind, Shared};
use bansync::store::{Notice, Store};
use bansync::sync::Syncer;
use bansync::sync::expiry::ExpiryTimer;
use bansync::tencent::{RetryPolicy, TencentClient};
use tokio::sync::mpsc;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub fn now() -> i64 {
    bansync::clock::Clock::system().now_ms() / 1000
}

/// Compressed vendor retries so failure tests run in milliseconds.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        max_backoffs: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
    }
}

pub struct Sim {
    pub addr: SocketAddr,
    pub state: Shared,
}

impl Sim {
    pub async fn start(rate_limit: u32) -> Sim {
        let state = sim::new_state(
            sim::DEMO_SDKAPPID,
            sim::DEMO_IDENTIFIER,
            sim::DEMO_KEY,
            rate_limit,
        );
        let addr = sim::spawn(state.clone()).await.unwrap();
        Sim { addr, state }
    }

    /// The vendor keeps time by `clock` from now on: share the engine's,
    /// and stepping it ends bans on both sides without waiting.
    pub fn share_clock(&self, clock: &Clock) {
        self.state.lock().unwrap().clock = clock.clone();
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A moderator sets the whole list.
    pub fn set(&self, kind: ListKind, id: &str, entries: &[(&str, i64)]) {
        let mut s = self.state.lock().unwrap();
        let list = s.lists(kind).entry(id.to_string()).or_default();
        list.entries = entries.iter().map(|(a, v)| (a.to_string(), *v)).collect();
        list.set_by.clear();
        for (a, _) in entries {
            s.note_moderated(kind, id, a);
        }
    }

    pub fn fill(&self, kind: ListKind, id: &str, n: usize, value: i64) {
        let mut s = self.state.lock().unwrap();
        let list = s.lists(kind).entry(id.to_string()).or_default();
        list.entries = (0..n).map(|i| (format!("u{i:05}"), value)).collect();
    }

    /// A moderator bans (or blocks) `account`.
    pub fn upsert(&self, kind: ListKind, id: &str, account: &str, value: i64) {
        let mut s = self.state.lock().unwrap();
        let list = s.lists(kind).entry(id.to_string()).or_default();
        list.upsert(account, value);
        list.set_by.remove(account);
        s.note_moderated(kind, id, account);
    }

    /// A moderator lifts (or unblocks) `account`.
    pub fn remove(&self, kind: ListKind, id: &str, account: &str) {
        let mut s = self.state.lock().unwrap();
        if let Some(l) = s.lists(kind).get_mut(id) {
            l.remove(account);
        }
        s.note_moderated(kind, id, account);
    }

    pub fn destroy(&self, kind: ListKind, id: &str) {
        self.state.lock().unwrap().lists(kind).remove(id);
    }

    pub fn entries(&self, kind: ListKind, id: &str) -> Vec<(String, i64)> {
        let mut s = self.state.lock().unwrap();
        s.lists(kind)
            .get(id)
            .map(|l| l.entries.clone())
            .unwrap_or_default()
    }

    pub fn fault(&self, f: sim::Fault) {
        self.state.lock().unwrap().faults.push((f, 0));
    }

    pub fn clear_faults(&self) {
        let mut s = self.state.lock().unwrap();
        s.faults.clear();
        s.mutations.clear();
    }

    pub fn mutate(&self, m: sim::Mutation) {
        self.state.lock().unwrap().mutations.push(m);
    }
}

/// What the simulator recorded (who set each entry, every REST change):
/// the reliability suite checks its model against these.
#[allow(dead_code)]
impl Sim {
    /// The simulator's next tick: an order that clock steps do not move.
    pub fn tick(&self) -> u64 {
        self.state.lock().unwrap().tick()
    }

    /// Starts recording REST changes, the ownership audit and pages served.
    pub fn record(&self) {
        self.state.lock().unwrap().recording = Some(Default::default());
    }

    /// Audit findings excused as races with a moderator (see `Recording`).
    pub fn raced(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .recording
            .as_ref()
            .map_or(0, |r| r.raced.len())
    }

    /// What the audit found: REST requests that lifted, shortened or
    /// restored a ban no REST request had set.
    pub fn audit(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .recording
            .as_ref()
            .map(|r| r.audit.clone())
            .unwrap_or_default()
    }

    /// Every change a REST request made, in order.
    pub fn rest_changes(&self) -> Vec<sim::state::ListChange> {
        self.state
            .lock()
            .unwrap()
            .recording
            .as_ref()
            .map(|r| r.rest.clone())
            .unwrap_or_default()
    }

    /// Takes the pages served since the last call: (kind, id, offset, accounts).
    pub fn take_served(&self) -> Vec<(ListKind, String, u64, Vec<String>)> {
        self.state
            .lock()
            .unwrap()
            .recording
            .as_mut()
            .map(|r| std::mem::take(&mut r.served))
            .unwrap_or_default()
    }

    /// Who set `account`'s entry on a list, and its end.
    pub fn entry(
        &self,
        kind: ListKind,
        id: &str,
        account: &str,
    ) -> Option<(i64, sim::state::SetBy)> {
        let mut s = self.state.lock().unwrap();
        s.lists(kind).get(id).and_then(|l| l.get(account))
    }
}

impl Sim {
    pub fn stats(&self) -> serde_json::Value {
        serde_json::to_value(&self.state.lock().unwrap().stats).unwrap()
    }

    pub fn calls(&self, api: &str) -> u64 {
        self.stats()[api]["calls"].as_u64().unwrap_or(0)
    }

    pub fn rate_limited(&self) -> u64 {
        let s = self.stats();
        s.as_object()
            .unwrap()
            .values()
            .map(|v| v["rate_limited"].as_u64().unwrap_or(0))
            .sum()
    }
}

/// Runs the `bansync` binary (without systemd's configuration directory)
/// and waits for it.
pub fn bansync(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_bansync"))
        .args(args)
        .env_remove("CONFIGURATION_DIRECTORY")
        .output()
        .unwrap()
}

/// A loopback port free a moment ago (for listeners the config names).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[allow(dead_code)]
impl Sim {
    /// Posts to the simulator's control API.
    pub async fn control(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let r = reqwest::Client::new()
            .post(format!("{}{path}", self.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// The vendor pushes its callbacks to `url` from now on.
    pub async fn callbacks_to(&self, url: &str, token: Option<&str>) {
        self.control(
            "/sim/callback",
            serde_json::json!({"url": url, "token": token}),
        )
        .await;
    }

    /// Callbacks the simulator sent (and how many were answered 2xx).
    pub fn callbacks_sent(&self) -> (u64, u64) {
        let s = self.stats();
        (
            s["callbacks"]["calls"].as_u64().unwrap_or(0),
            s["callbacks"]["ok"].as_u64().unwrap_or(0),
        )
    }
}

/// A configuration file for `sim`, with `extra` TOML appended.
pub fn write_config(dir: &Path, sim: &Sim, sources: &str, extra: &str) -> PathBuf {
    let path = dir.join("bansync.toml");
    let text = format!(
        r#"
[tencent]
sdkappid = {app}
identifier = "{admin}"
secret_key = "{key}"
base_url = "{base}"

[store]
path = "{store}"

{sources}

{extra}
"#,
        app = sim::DEMO_SDKAPPID,
        admin = sim::DEMO_IDENTIFIER,
        key = sim::DEMO_KEY,
        base = sim.base_url(),
        store = dir.join("bansync.db").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

pub fn load(path: &Path) -> Settings {
    config::load_with(path, &Environment::default()).unwrap()
}

pub fn webhook_toml(name: &str, url: &str, extra: &str) -> String {
    format!("[[webhook]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n{extra}\n")
}

/// An engine driven directly by the test: walks happen when the test says.
pub struct Engine {
    pub settings: Settings,
    pub store: Store,
    pub syncer: Syncer,
    pub client: Arc<TencentClient>,
    pub metrics: Arc<Metrics>,
    pub notices: mpsc::UnboundedReceiver<Notice>,
    /// The engine's wall clock; tests step it.
    pub clock: Clock,
}

impl Engine {
    pub fn open(settings: Settings) -> Engine {
        Self::open_with_clock(settings, Clock::adjustable())
    }

    pub fn open_with_clock(settings: Settings, clock: Clock) -> Engine {
        let metrics = Arc::new(Metrics::new());
        let (tx, notices) = mpsc::unbounded_channel();
        let store = Store::open(
            &settings.store_path,
            bansync::daemon::emit_config(&settings),
            Some(tx),
        )
        .unwrap();
        let client = Arc::new(TencentClient::with_retry(
            settings.tencent.clone(),
            metrics.clone(),
            fast_retry(),
        ));
        let syncer = Syncer::new(
            client.clone(),
            store.clone(),
            metrics.clone(),
            &settings.sync,
            clock.clone(),
        );
        Engine {
            settings,
            store,
            syncer,
            client,
            metrics,
            notices,
            clock,
        }
    }

    pub fn propagator(&self) -> Propagator {
        Propagator {
            store: self.store.clone(),
            client: self.client.clone().into(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
        }
    }

    pub fn expiry(&self) -> ExpiryTimer {
        ExpiryTimer {
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
        }
    }

    /// The retention pass, keeping events `keep` (as `store.retention`).
    pub fn retention(&self, keep: Option<Duration>) -> bansync::sync::retention::Retention {
        bansync::sync::retention::Retention {
            store: self.store.clone(),
            clock: self.clock.clone(),
            keep: tokio::sync::watch::channel(keep).1,
        }
    }

    pub fn dispatcher(&self) -> Dispatcher {
        Dispatcher::new(
            self.store.clone(),
            self.settings.webhooks.clone(),
            self.metrics.clone(),
            self.clock.clone(),
        )
    }

    pub async fn walk(&self, spec: &str) -> bansync::sync::SourceResult {
        let spec: bansync::source::SourceSpec = spec.parse().unwrap();
        self.syncer
            .sync_source(&spec, false, &mut |_| {})
            .await
            .unwrap()
    }

    /// (type, account) of every event of a source, in seq order.
    pub fn events(&self, source: &str) -> Vec<(String, String)> {
        events_of(&self.settings.store_path, source)
            .into_iter()
            .map(|e| (e.1, e.2))
            .collect()
    }
}

/// (seq, type, account, body) of a source's events from the store file.
pub fn events_of(db: &Path, source: &str) -> Vec<(i64, String, String, serde_json::Value)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT e.seq, e.type, COALESCE(e.account, ''), e.body FROM events e JOIN sources s ON s.id = e.source_id
             WHERE s.spec = ?1 ORDER BY e.seq",
        )
        .unwrap();
    stmt.query_map([source], |r| {
        let body: String = r.get(3)?;
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            serde_json::from_str(&body).unwrap(),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

pub fn ev(t: &str, a: &str) -> (String, String) {
    (t.to_string(), a.to_string())
}

// ---- webhook receiver ----

#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: serde_json::Value,
    pub raw: Vec<u8>,
    pub user_agent: String,
    pub content_type: String,
}

/// How the receiver answers, in order; the last answer repeats.
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16),
    StatusRetryAfter(u16, u64),
    Delay(Duration),
    Redirect,
}

#[derive(Clone, Default)]
pub struct ReceiverState {
    pub log: Arc<Mutex<Vec<Received>>>,
    pub answers: Arc<Mutex<Vec<Answer>>>,
    /// Every request, answered well or not.
    pub hits: Arc<Mutex<Vec<String>>>,
    /// Requests whose body holds this text are answered 500.
    pub fail_when: Arc<Mutex<Option<String>>>,
    /// Bodies that did not validate against `bansync schema`.
    pub invalid: Arc<Mutex<Vec<String>>>,
}

/// Checks a body against `bansync schema` with a JSON Schema validator
/// (draft 2020-12), compiled once per test binary.
pub fn valid_body(body: &[u8]) -> Result<(), String> {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let v = VALIDATOR.get_or_init(|| {
        jsonschema::draft202012::new(&bansync::payload::schema()).expect("the schema compiles")
    });
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

async fn receive(
    State(st): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    st.hits.lock().unwrap().push(h("webhook-id"));
    // Every body any test receives must validate against `bansync schema`:
    // one that does not is refused, and the test reading it fails.
    if let Err(e) = valid_body(&body) {
        st.invalid
            .lock()
            .unwrap()
            .push(format!("{e}\n{}", String::from_utf8_lossy(&body)));
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    if let Some(needle) = st.fail_when.lock().unwrap().clone()
        && String::from_utf8_lossy(&body).contains(&needle)
    {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let answer = {
        let mut a = st.answers.lock().unwrap();
        if a.len() > 1 {
            a.remove(0)
        } else {
            a.first().cloned().unwrap_or(Answer::Status(200))
        }
    };
    let status = match answer {
        Answer::Status(s) => s,
        Answer::StatusRetryAfter(s, secs) => {
            return (
                StatusCode::from_u16(s).unwrap(),
                [("retry-after", secs.to_string())],
                "later",
            )
                .into_response();
        }
        Answer::Delay(d) => {
            tokio::time::sleep(d).await;
            200
        }
        Answer::Redirect => {
            return (
                StatusCode::FOUND,
                [("location", "http://127.0.0.1:9/elsewhere")],
                "",
            )
                .into_response();
        }
    };
    if (200..300).contains(&status) {
        st.log.lock().unwrap().push(Received {
            id: h("webhook-id"),
            timestamp: h("webhook-timestamp"),
            signature: h("webhook-signature"),
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            raw: body.to_vec(),
            user_agent: h("user-agent"),
            content_type: h("content-type"),
        });
    }
    StatusCode::from_u16(status).unwrap().into_response()
}

pub struct Receiver {
    pub addr: SocketAddr,
    pub state: ReceiverState,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut r = Receiver {
            addr,
            state: ReceiverState::default(),
            task: None,
        };
        r.serve(listener);
        r
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.state.clone());
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn answer(&self, answers: Vec<Answer>) {
        *self.state.answers.lock().unwrap() = answers;
    }

    /// Stops listening: connections are refused until `resume`.
    pub async fn refuse(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    pub async fn resume(&mut self) {
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot rebind {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    pub fn received(&self) -> Vec<Received> {
        let invalid = self.state.invalid.lock().unwrap().clone();
        assert!(
            invalid.is_empty(),
            "bodies that do not validate against bansync schema: {invalid:?}"
        );
        self.state.log.lock().unwrap().clone()
    }

    /// Waits until `n` deliveries have arrived (or panics after `within`).
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "expected {n} deliveries within {within:?}, got {}",
                    got.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Receiver {
    /// Waits until `n` distinct webhook-ids have arrived (repeats allowed).
    pub async fn wait_for_unique(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.received();
            let unique: std::collections::HashSet<&str> =
                got.iter().map(|r| r.id.as_str()).collect();
            if unique.len() >= n {
                return got;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "expected {n} distinct deliveries within {within:?}, got {}",
                    unique.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Polls `f` until it returns true (or panics after `within`).
pub async fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !f() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- the whole daemon, in process ----

pub struct Daemon {
    pub stop: tokio::sync::watch::Sender<bool>,
    pub reload: mpsc::UnboundedSender<Settings>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Where its `/healthz`, `/readyz` and `/metrics` listen.
    pub http: SocketAddr,
}

pub async fn start_daemon(settings: Settings) -> Daemon {
    if let Ok(level) = std::env::var("BANSYNC_TEST_LOG") {
        bansync::logging::init(bansync::config::LogFormat::Text, &level);
    }
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (reload, reload_rx) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap();
    let control = bansync::DaemonControl {
        stop: stop_rx,
        reload: reload_rx,
        on_ready: Box::new(|| {}),
        clock: Clock::system(),
    };
    let grace = bansync::Grace {
        walks: Duration::from_secs(5),
        deliveries: Duration::from_secs(5),
    };
    let task = tokio::spawn(bansync::run(
        settings,
        Some(listener),
        control,
        fast_retry(),
        grace,
    ));
    Daemon {
        stop,
        reload,
        task,
        http,
    }
}

impl Daemon {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("daemon stops in time")
            .unwrap()
            .unwrap();
    }
}

/// Verifies a Standard Webhooks signature header against the raw key.
pub fn verify(r: &Received) -> bool {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(&SECRET[6..])
        .unwrap();
    let ts: i64 = r.timestamp.parse().unwrap();
    let expected = bansync::delivery::sign::signature_header(&[key], &r.id, ts, &r.raw);
    r.signature.split(' ').any(|s| s == expected)
}

/// A count from the store, or 0 while the daemon has not created it yet.
pub fn count(db: &Path, sql: &str) -> i64 {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    rusqlite::Connection::open_with_flags(db, flags)
        .and_then(|c| c.query_row(sql, [], |r| r.get::<_, i64>(0)))
        .unwrap_or(0)
}
