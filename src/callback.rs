//! The listener for the vendor's third-party callbacks (`[callback]`).
//!
//! Each request is checked (our `SdkAppid`, and with a token a valid
//! `Sign` over a `RequestTime` within a minute), answered at once, and its
//! work done after by one worker: callbacks only *hint* where to walk
//! sooner, enrol blocklists, watch created groups and rooms, or slow an
//! API the vendor says is near its limit. Nothing here emits an event.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, watch};

use crate::clock::Clock;
use crate::config::{CallbackSettings, FoundFilter};
use crate::hint::{self, Callback};
use crate::metrics::Metrics;
use crate::source::{SourceKind, SourceSpec};
use crate::store::Store;
use crate::sync::scheduler::Request;
use crate::tencent::{Api, SharedClient};

/// How long `Alert.RequestOverLimit` halves an API's rate.
pub const SLOW_DOWN: Duration = Duration::from_secs(300);

/// Callbacks waiting for the worker; beyond this they are dropped (and
/// counted): they are hints, and a flood must not grow memory.
pub const QUEUE: usize = 4096;

/// Connections the callback listener serves at once (the vendor's bursts
/// come on many; beyond this they are closed at once).
pub const MAX_CONNECTIONS: usize = 512;

/// Accepted callbacks on their way to the worker: (command label, what it says).
pub type WorkSender = mpsc::Sender<(&'static str, Callback)>;
pub type WorkReceiver = mpsc::Receiver<(&'static str, Callback)>;

/// What the listener and its worker run with; replaced on reload.
#[derive(Debug, Clone)]
pub struct CallbackPlan {
    pub app: u64,
    pub settings: CallbackSettings,
    pub filter: FoundFilter,
    /// Listed in `[sources]`: hinted, never recorded as found.
    pub configured: HashSet<SourceSpec>,
}

#[derive(Clone)]
struct Listener {
    plan: watch::Receiver<CallbackPlan>,
    work: WorkSender,
    metrics: Arc<Metrics>,
    clock: Clock,
}

fn answer(status: StatusCode, body: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn refused(why: &str) -> Response {
    answer(
        StatusCode::FORBIDDEN,
        &serde_json::json!({"ActionStatus": "FAIL", "ErrorCode": 1, "ErrorInfo": why}).to_string(),
    )
}

async fn receive(
    State(l): State<Listener>,
    Query(q): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let plan = l.plan.borrow().clone();
    let command = q.get("CallbackCommand").map(String::as_str).unwrap_or("");
    let label = hint::command_label(command);
    let envelope = hint::Envelope {
        sdkappid: q.get("SdkAppid").map(String::as_str),
        request_time: q.get("RequestTime").map(String::as_str),
        sign: q.get("Sign").map(String::as_str),
    };
    let token = plan.settings.token.as_ref().map(|t| t.expose());
    if let Err(r) = hint::check(&envelope, plan.app, token, l.clock.now_ms() / 1000) {
        l.metrics.callback(label, r.as_str());
        tracing::warn!(command = label, refusal = r.as_str(), "callback refused");
        return refused(match r {
            hint::Refusal::Appid => "SdkAppid is not this app's",
            hint::Refusal::Sign => "Sign missing or wrong",
            hint::Refusal::Time => "RequestTime missing or more than 60 s from now",
        });
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            l.metrics.callback(label, "refused_size");
            tracing::warn!(command = label, error = %e, "callback refused: body too large or unreadable");
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                &serde_json::json!({"ActionStatus": "FAIL", "ErrorCode": 1, "ErrorInfo": "body too large"}).to_string(),
            );
        }
    };
    match hint::parse(command, &body) {
        Ok(cb) => {
            if l.work.try_send((label, cb)).is_err() {
                l.metrics.callback(label, "dropped");
            } else {
                l.metrics.callback(label, "accepted");
            }
        }
        Err(e) => {
            // Acknowledged all the same: the vendor does not retry, and a
            // hint we cannot read is a hint lost, nothing more.
            l.metrics.callback(label, "bad_body");
            tracing::warn!(command = label, error = %e, "callback body not understood; ignored");
        }
    }
    answer(StatusCode::OK, hint::OK_ANSWER)
}

/// The listener's routes: POST on the configured path.
fn router(l: Listener, path: &str) -> Router {
    Router::new()
        .route(path, axum::routing::post(receive))
        .layer(axum::extract::DefaultBodyLimit::max(hint::MAX_BODY))
        .with_state(l)
}

/// Does what accepted callbacks ask, one at a time.
pub struct Worker {
    pub store: Store,
    pub client: SharedClient,
    pub requests: mpsc::Sender<Request>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// Found blocklists already walked: their walks report changes, so a
    /// callback about them is a hint only (no enrolment write).
    known: HashSet<SourceSpec>,
}

impl Worker {
    pub fn new(
        store: Store,
        client: SharedClient,
        requests: mpsc::Sender<Request>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        Worker {
            store,
            client,
            requests,
            metrics,
            clock,
            known: HashSet::new(),
        }
    }

    fn hint(&self, spec: SourceSpec) {
        // Full: the scheduler has hints enough queued; this one is dropped.
        let _ = self.requests.try_send(Request::Hint(spec));
    }

    /// Carries out one callback under `plan`.
    pub async fn try_execute(&mut self, plan: &CallbackPlan, cb: Callback) {
        match cb {
            Callback::Blocklist { added, pairs } => {
                let mut by_owner: std::collections::BTreeMap<String, Vec<String>> =
                    Default::default();
                for (from, to) in pairs {
                    by_owner.entry(from).or_default().push(to);
                }
                for (from, tos) in by_owner {
                    if crate::source::validate_id(&from).is_err() {
                        continue;
                    }
                    let spec = SourceSpec::new(SourceKind::Blocklist, from.as_str());
                    let enrol = added
                        && !plan.configured.contains(&spec)
                        && plan.filter.admits(&spec)
                        && !self.known.contains(&spec);
                    if enrol {
                        let at = self.clock.now_ms() / 1000;
                        match self.store.enrol(spec.clone(), tos, at).await {
                            Ok(e) => {
                                // Until its first walk, later callbacks' pairs
                                // are recorded too (else that walk would take
                                // them for the baseline).
                                if !e.unwalked {
                                    self.known.insert(spec.clone());
                                }
                                if e.fresh {
                                    tracing::info!(source = %spec, "blocklist enrolled by a callback");
                                }
                                let _ =
                                    self.requests.send(Request::Watch(vec![spec.clone()])).await;
                            }
                            Err(e) => {
                                tracing::error!(source = %spec, error = %e, "cannot enrol a blocklist");
                            }
                        }
                    }
                    self.hint(spec);
                }
            }
            Callback::GroupCreated { group, kind } => {
                if kind.is_empty() || kind == "AVChatRoom" {
                    self.created(plan, SourceSpec::new(SourceKind::Group, group.as_str()))
                        .await;
                }
            }
            Callback::RoomCreated { room } => {
                self.created(plan, SourceSpec::new(SourceKind::Room, room.as_str()))
                    .await;
            }
            Callback::GroupDestroyed { group } => {
                self.hint(SourceSpec::new(SourceKind::Group, group.as_str()))
            }
            Callback::RoomDestroyed { room } => {
                self.hint(SourceSpec::new(SourceKind::Room, room.as_str()))
            }
            Callback::MemberExit { group, kicked } => {
                if kicked {
                    self.hint(SourceSpec::new(SourceKind::Group, group.as_str()));
                }
            }
            Callback::OverLimit { service, command } => {
                match Api::from_path(&format!("{service}/{command}")) {
                    Some(api) => self.client.get().slow_down(api, SLOW_DOWN),
                    None => tracing::info!(
                        service,
                        command,
                        "rate alert for an API bansync does not call"
                    ),
                }
            }
            Callback::Other => {}
        }
    }

    /// A created group or room: watched at once if discovery admits it.
    async fn created(&mut self, plan: &CallbackPlan, spec: SourceSpec) {
        if crate::source::validate_id(&spec.id).is_err() {
            return;
        }
        if plan.configured.contains(&spec) {
            self.hint(spec);
            return;
        }
        if !plan.filter.admits(&spec) {
            return;
        }
        if let Err(e) = self.store.found_by_callback(vec![spec.clone()]).await {
            tracing::error!(source = %spec, error = %e, "cannot record a created source");
            return;
        }
        tracing::info!(source = %spec, "created: watching it");
        let _ = self.requests.send(Request::Watch(vec![spec.clone()])).await;
        self.hint(spec);
    }

    /// Works through callbacks until the queue closes.
    pub async fn run(mut self, plan: watch::Receiver<CallbackPlan>, mut work: WorkReceiver) {
        if let Ok(found) = self.store.found_sources().await {
            self.known = found
                .into_iter()
                .filter(|(s, _)| s.kind == SourceKind::Blocklist)
                .map(|(s, _)| s)
                .collect();
        }
        while let Some((_, cb)) = work.recv().await {
            let p = plan.borrow().clone();
            self.try_execute(&p, cb).await;
        }
    }
}

/// Serves callbacks on `listener` until `stop`; the worker gets what is
/// accepted through `work`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    plan: watch::Receiver<CallbackPlan>,
    work: WorkSender,
    metrics: Arc<Metrics>,
    clock: Clock,
    stop: watch::Receiver<bool>,
) {
    let path = plan.borrow().settings.path.clone();
    let l = Listener {
        plan,
        work,
        metrics,
        clock,
    };
    crate::http::serve_capped(listener, router(l, &path), stop, MAX_CONNECTIONS).await
}

/// A channel for the worker.
pub fn queue() -> (WorkSender, WorkReceiver) {
    mpsc::channel(QUEUE)
}
