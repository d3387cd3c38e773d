//! `bansync sim`: a simulator of the vendor's REST endpoints, good enough
//! to stand in for the vendor in tests, benchmarks and the demo: real
//! pagination over the lists it holds, UserSig verification, the per-API
//! rate limit in a rolling one-second window, the vendor's error codes, and
//! a control API (`/sim/...`, see the README) to change lists and inject
//! faults.

pub mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::tencent::{Api, usersig};
pub use state::{Fault, ListKind, Mutation, SimState};

/// The simulator's app, for the demo and tests.
pub const DEMO_SDKAPPID: u64 = 1400000000;
pub const DEMO_IDENTIFIER: &str = "administrator";
pub const DEMO_KEY: &str = "bansync-demo-secret-key-0123456789abcdef";

pub type Shared = Arc<Mutex<SimState>>;

/// Builds the simulator's router over `state`.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/v4/{service}/{command}", post(vendor))
        .route("/sim/ban", post(ctl_ban))
        .route("/sim/unban", post(ctl_unban))
        .route("/sim/block", post(ctl_block))
        .route("/sim/unblock", post(ctl_unblock))
        .route("/sim/create", post(ctl_create))
        .route("/sim/destroy", post(ctl_destroy))
        .route("/sim/seed", post(ctl_seed))
        .route("/sim/fault", post(ctl_fault))
        .route("/sim/faults/clear", post(ctl_clear_faults))
        .route("/sim/mutate", post(ctl_mutate))
        .route("/sim/stats", get(ctl_stats))
        .route("/sim/stats/reset", post(ctl_reset_stats))
        .route("/sim/list", get(ctl_list))
        .route("/sim/config", post(ctl_config))
        .route("/sim/viewers", post(ctl_viewers))
        .route("/sim/walks", get(ctl_walks))
        .route("/sim/walks/reset", post(ctl_reset_walks))
        .route("/sim/callback", post(ctl_callback))
        .with_state(state)
}

/// Serves the simulator on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Starts a simulator on a free loopback port; returns its address.
pub async fn spawn(state: Shared) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = serve(listener, state, std::future::pending()).await;
    });
    Ok(addr)
}

pub fn new_state(sdkappid: u64, identifier: &str, key: &str, rate_limit: u32) -> Shared {
    Arc::new(Mutex::new(SimState::new(
        sdkappid, identifier, key, rate_limit,
    )))
}

fn vendor_error(code: i64, info: &str) -> Value {
    json!({"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": info, "ErrorDisplay": ""})
}

/// What a vendor handler decides under the lock; the answer is sent after
/// any injected latency, without holding the lock.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
    latency: Option<Duration>,
}

impl Answer {
    fn json(v: Value) -> Answer {
        Answer {
            status: StatusCode::OK,
            body: serde_json::to_vec(&v).unwrap(),
            latency: None,
        }
    }
}

async fn vendor(
    State(state): State<Shared>,
    Path((service, command)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let path = format!("{service}/{command}");
    // A slow vendor: the request waits before it is acted on at all.
    let (hold, arrived) = {
        let mut s = state.lock().unwrap();
        let arrived = s.tick();
        let hold = Api::from_path(&path).and_then(|api| {
            let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (target, offset) = target_of(api, &req);
            s.take_fault_of(api, &target, offset, true)
                .and_then(|f| f.hold_ms)
        });
        s.holding += usize::from(hold.is_some());
        (hold, arrived)
    };
    let answer = match hold {
        // Acted on later, whether or not its caller is still waiting (a
        // vendor works through its queue): in a task of its own, which the
        // server does not drop when the caller gives up.
        Some(ms) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let state = state.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let answer = {
                    let mut s = state.lock().unwrap();
                    s.holding -= 1;
                    s.arrived = arrived;
                    handle(&mut s, &path, &q, &body)
                };
                let _ = tx.send(answer);
            });
            match rx.await {
                Ok(a) => a,
                Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
        None => {
            let mut s = state.lock().unwrap();
            s.arrived = arrived;
            handle(&mut s, &path, &q, &body)
        }
    };
    if let Some(d) = answer.latency {
        tokio::time::sleep(d).await;
    }
    (
        answer.status,
        [("content-type", "application/json")],
        answer.body,
    )
        .into_response()
}

fn handle(s: &mut SimState, path: &str, q: &HashMap<String, String>, body: &[u8]) -> Answer {
    let Some(api) = Api::from_path(path) else {
        return Answer::json(vendor_error(60002, "unknown service or command"));
    };
    s.request_seq += 1;
    let request_id = format!("Id-sim-{}", s.request_seq);
    // The envelope checks come in the vendor's order.
    match q.get("sdkappid").map(|v| v.parse::<u64>()) {
        None => return err(s, api, 60012, "sdkappid missing"),
        Some(Err(_)) | Some(Ok(0)) => return err(s, api, 60006, "SDKAppID invalid"),
        Some(Ok(id)) if id != s.sdkappid => return err(s, api, 60006, "SDKAppID invalid"),
        _ => {}
    }
    if q.get("contenttype").map(String::as_str) != Some("json") {
        return err(s, api, 60002, "contenttype must be json");
    }
    if q.get("random")
        .and_then(|r| r.parse::<u32>().ok())
        .is_none()
    {
        return err(s, api, 60002, "random must be a 32-bit unsigned integer");
    }
    let Some(identifier) = q.get("identifier") else {
        return err(s, api, 60015, "identifier missing");
    };
    let sig = q.get("usersig").map(String::as_str).unwrap_or("");
    let now = s.clock.now_s();
    let cached = s.sig_cache.get(sig).is_some_and(|exp| (now as u64) <= *exp);
    if !cached {
        match usersig::verify(sig, &s.key, s.sdkappid, identifier, now as u64) {
            Ok(f) => {
                if s.sig_cache.len() > 10_000 {
                    s.sig_cache.clear();
                }
                s.sig_cache.insert(sig.to_string(), f.time + f.expire);
            }
            Err(e) => return err(s, api, e.vendor_code(), &e.to_string()),
        }
    }
    if *identifier != s.identifier {
        return err(s, api, 60010, "identifier is not an App admin");
    }
    if !s.admit(api, Instant::now()) {
        return Answer::json(vendor_error(
            60007,
            "REST API call frequency over the limit",
        ));
    }
    let req: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return err(s, api, 60003, "request body is not a JSON object"),
    };
    let (target, offset) = target_of(api, &req);
    let fault = s.take_fault_of(api, &target, offset, false);
    let latency = fault
        .as_ref()
        .and_then(|f| f.latency_ms)
        .map(Duration::from_millis);
    if let Some(f) = &fault {
        if let Some(code) = f.http_status {
            count(s, api, false);
            return Answer {
                status: StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
                body: b"<html>bad gateway</html>".to_vec(),
                latency,
            };
        }
        if let Some(code) = f.error_code {
            let mut a = err(s, api, code, "injected fault");
            a.latency = latency;
            return a;
        }
    }
    let mut v = match answer(s, api, &req, now) {
        Ok(v) => {
            count(s, api, true);
            v
        }
        Err((code, info)) => return err(s, api, code, &info),
    };
    if let Some(obj) = v.as_object_mut() {
        obj.insert("RequestId".into(), json!(request_id));
    }
    let mut a = Answer::json(v);
    a.latency = latency;
    if let Some(m) = fault.as_ref().and_then(|f| f.malformed.as_deref()) {
        a.body = malform(m, a.body, offset);
    }
    a
}

fn count(s: &mut SimState, api: Api, ok: bool) {
    let st = s.stats.entry(api.path()).or_default();
    if ok { st.ok += 1 } else { st.errors += 1 }
}

fn err(s: &mut SimState, api: Api, code: i64, info: &str) -> Answer {
    count(s, api, false);
    let mut v = vendor_error(code, info);
    v["RequestId"] = json!(format!("Id-sim-{}", s.request_seq));
    Answer::json(v)
}

fn malform(how: &str, body: Vec<u8>, offset: u64) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let cursor = |v: &mut Value, f: &dyn Fn(&mut Value)| {
        for key in ["NextOffset", "StartIndex"] {
            if let Some(c) = v.get_mut(key) {
                f(c);
            }
            if let Some(c) = v.get_mut("Response").and_then(|r| r.get_mut(key)) {
                f(c);
            }
        }
    };
    match how {
        "truncated" => body[..body.len() / 2].to_vec(),
        "garbage" => b"\x00\xffnot json at all".to_vec(),
        "wrong_type" => {
            for list in ["BannedAccountList", "BlackListItem"] {
                if v.get(list).is_some() {
                    v[list] = json!("oops");
                }
                if let Some(r) = v.get_mut("Response").and_then(|r| r.get_mut(list)) {
                    *r = json!("oops");
                }
            }
            serde_json::to_vec(&v).unwrap()
        }
        "no_cursor" => {
            for key in ["NextOffset", "StartIndex"] {
                if let Some(o) = v.as_object_mut() {
                    o.remove(key);
                }
                if let Some(r) = v.get_mut("Response").and_then(|r| r.as_object_mut()) {
                    r.remove(key);
                }
            }
            serde_json::to_vec(&v).unwrap()
        }
        // The cursor points back to the start: a walk that would never end.
        // The cursor does not advance: a walk that would never end.
        "stuck_cursor" => {
            cursor(&mut v, &|c| *c = json!(offset));
            serde_json::to_vec(&v).unwrap()
        }
        "skip_cursor" => {
            cursor(&mut v, &|c| *c = json!(c.as_u64().unwrap_or(0) + 1000));
            serde_json::to_vec(&v).unwrap()
        }
        "oversize" => {
            let pad: Vec<Value> = (0..101).map(|i| json!({"Member_Account": format!("pad{i}"), "BannedUntil": 4_000_000_000i64})).collect();
            if v.get("BannedAccountList").is_some() {
                v["BannedAccountList"] = Value::Array(pad);
            } else if let Some(r) = v.get_mut("Response") {
                r["BannedAccountList"] = Value::Array(pad);
            } else {
                let pad: Vec<Value> = (0..1001)
                    .map(|i| json!({"To_Account": format!("pad{i}"), "AddBlackTimeStamp": 1}))
                    .collect();
                v["BlackListItem"] = Value::Array(pad);
            }
            serde_json::to_vec(&v).unwrap()
        }
        _ => body,
    }
}

fn target_of(api: Api, req: &Value) -> (String, u64) {
    let s = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let n = |k: &str| req.get(k).and_then(Value::as_u64).unwrap_or(0);
    match api {
        Api::GroupBanList => (s("GroupId"), n("Offset")),
        Api::RoomBanList => (s("RoomId"), n("Offset")),
        Api::BlockList => (s("From_Account"), n("StartIndex")),
        Api::RoomBan | Api::RoomUnban => (s("RoomId"), 0),
        Api::GroupBan | Api::GroupUnban => (s("GroupId"), 0),
        Api::GroupList => (String::new(), n("Next")),
        Api::RoomList => (
            String::new(),
            s("Next")
                .strip_prefix("page-")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
        ),
    }
}

type Handled = Result<Value, (i64, String)>;

/// Group listing cursors start here: large, so that a client reading them
/// as anything narrower than u64 fails visibly.
const GROUP_CURSOR_BASE: u64 = 1 << 60;

fn field_str<'a>(req: &'a Value, k: &str, bad: i64) -> Result<&'a str, (i64, String)> {
    req.get(k)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or((bad, format!("{k} missing or not a string")))
}

fn field_u64(req: &Value, k: &str, bad: i64, default: Option<u64>) -> Result<u64, (i64, String)> {
    match req.get(k) {
        None => default.ok_or((bad, format!("{k} missing"))),
        Some(v) => v
            .as_u64()
            .ok_or((bad, format!("{k} must be a non-negative integer"))),
    }
}

fn accounts(req: &Value, k: &str, bad: i64, too_many: i64) -> Result<Vec<String>, (i64, String)> {
    let list = req
        .get(k)
        .and_then(Value::as_array)
        .ok_or((bad, format!("{k} missing")))?;
    if list.is_empty() {
        return Err((bad, format!("{k} is empty")));
    }
    if list.len() > crate::tencent::api::MAX_ACCOUNTS_PER_BAN {
        return Err((too_many, format!("{k} holds more than 20 accounts")));
    }
    list.iter()
        .map(|a| {
            a.as_str()
                .map(str::to_string)
                .ok_or((bad, format!("{k} holds a non-string")))
        })
        .collect()
}

fn page(
    list: &mut state::List,
    offset: u64,
    limit: u64,
    now: i64,
    keep_expired: bool,
    bans: bool,
) -> (Vec<(String, i64)>, u64) {
    if bans && !keep_expired {
        list.purge_ended(now);
    }
    let start = (offset as usize).min(list.entries.len());
    let end = (start + limit as usize).min(list.entries.len());
    let items = list.entries[start..end].to_vec();
    let next = if end < list.entries.len() {
        end as u64
    } else {
        0
    };
    (items, next)
}

fn answer(s: &mut SimState, api: Api, req: &Value, now: i64) -> Handled {
    let keep = s.keep_expired;
    match api {
        Api::GroupBanList => {
            let id = field_str(req, "GroupId", 10004)?.to_string();
            let offset = field_u64(req, "Offset", 10004, None)?;
            let limit = field_u64(req, "Limit", 10004, Some(20))?;
            if limit == 0 || limit > 100 {
                return Err((10004, "Limit must be 1 to 100".into()));
            }
            s.apply_mutations(ListKind::Group, &id, offset);
            let list = s
                .groups
                .get_mut(&id)
                .ok_or((10010, "group does not exist".to_string()))?;
            let (items, next) = page(list, offset, limit, now, keep, true);
            s.note_served(ListKind::Group, &id, offset, &items);
            let list: Vec<Value> = items
                .into_iter()
                .map(|(a, u)| json!({"Member_Account": a, "BannedUntil": u}))
                .collect();
            Ok(
                json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "BannedAccountList": list, "NextOffset": next}),
            )
        }
        Api::RoomBanList => {
            let id = field_str(req, "RoomId", 100002)?.to_string();
            let offset = field_u64(req, "Offset", 100002, Some(0))?;
            let limit = field_u64(req, "Limit", 100002, Some(10))?;
            if limit == 0 || limit > 100 {
                return Err((100002, "Limit must be 1 to 100".into()));
            }
            s.apply_mutations(ListKind::Room, &id, offset);
            let list = s
                .rooms
                .get_mut(&id)
                .ok_or((100004, "room does not exist".to_string()))?;
            let (items, next) = page(list, offset, limit, now, keep, true);
            s.note_served(ListKind::Room, &id, offset, &items);
            let list: Vec<Value> = items
                .into_iter()
                .map(|(a, u)| json!({"Member_Account": a, "BannedUntil": u}))
                .collect();
            Ok(
                json!({"ErrorCode": 0, "ErrorInfo": "", "ActionStatus": "OK", "Response": {"BannedAccountList": list, "NextOffset": next}}),
            )
        }
        Api::BlockList => {
            let id = field_str(req, "From_Account", 30001)?.to_string();
            let start = field_u64(req, "StartIndex", 30001, None)?;
            let max = field_u64(req, "MaxLimited", 30001, None)?;
            field_u64(req, "LastSequence", 30001, None)?;
            if max == 0 || max > 1000 {
                return Err((30001, "MaxLimited must be 1 to 1000".into()));
            }
            s.apply_mutations(ListKind::User, &id, start);
            let list = s
                .users
                .get_mut(&id)
                .ok_or((30003, "account does not exist".to_string()))?;
            let seq = list.entries.len() as u64;
            let (items, next) = page(list, start, max, now, keep, false);
            s.note_served(ListKind::User, &id, start, &items);
            let list: Vec<Value> = items
                .into_iter()
                .map(|(a, t)| json!({"To_Account": a, "AddBlackTimeStamp": t}))
                .collect();
            Ok(
                json!({"BlackListItem": list, "StartIndex": next, "CurruentSequence": seq, "ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "ErrorDisplay": ""}),
            )
        }
        Api::RoomBan => {
            let id = field_str(req, "RoomId", 100002)?.to_string();
            let members = accounts(req, "MemberList_Account", 100002, 100002)?;
            let duration = field_u64(req, "Duration", 100002, None)?;
            if duration == 0 {
                return Err((100002, "Duration must be positive".into()));
            }
            if req
                .get("Reason")
                .and_then(Value::as_str)
                .is_some_and(|r| r.len() > 200)
            {
                return Err((100002, "Reason longer than 200 bytes".into()));
            }
            if !s.rooms.contains_key(&id) {
                return Err((100004, "room does not exist".to_string()));
            }
            for m in members {
                s.rest_ban(ListKind::Room, &id, &m, now + duration as i64, now);
            }
            Ok(json!({"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0}))
        }
        Api::RoomUnban => {
            let id = field_str(req, "RoomId", 100002)?.to_string();
            let members = accounts(req, "MemberList_Account", 100002, 100002)?;
            if !s.rooms.contains_key(&id) {
                return Err((100004, "room does not exist".to_string()));
            }
            for m in members {
                s.rest_unban(ListKind::Room, &id, &m, now);
            }
            Ok(json!({"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0}))
        }
        Api::GroupBan => {
            let id = field_str(req, "GroupId", 10004)?.to_string();
            let members = accounts(req, "Members_Account", 10004, 10005)?;
            let duration = field_u64(req, "Duration", 10004, None)?;
            if !s.groups.contains_key(&id) {
                return Err((10010, "group does not exist".to_string()));
            }
            for m in members {
                if duration == 0 {
                    s.rest_unban(ListKind::Group, &id, &m, now);
                } else {
                    s.rest_ban(ListKind::Group, &id, &m, now + duration as i64, now);
                }
            }
            Ok(json!({"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0}))
        }
        Api::GroupList => {
            let limit = field_u64(req, "Limit", 10004, Some(1000))?;
            if limit == 0 || limit > crate::tencent::api::MAX_GROUP_LIST_PAGE as u64 {
                return Err((10004, "Limit must be 1 to 10000".into()));
            }
            // The cursor is opaque and large, as the vendor's: parse it as u64.
            let next = field_u64(req, "Next", 10004, Some(0))?;
            let start = match next {
                0 => 0,
                n if n >= GROUP_CURSOR_BASE => (n - GROUP_CURSOR_BASE) as usize,
                _ => return Err((10004, "Next is not a cursor this listing gave".into())),
            };
            let kind = req
                .get("GroupType")
                .and_then(Value::as_str)
                .unwrap_or("AVChatRoom");
            let ids = s.listed_groups(kind);
            let take = limit.min(s.group_list_page as u64) as usize;
            let start = start.min(ids.len());
            let end = (start + take).min(ids.len());
            let page: Vec<Value> = ids[start..end]
                .iter()
                .map(|g| json!({"GroupId": g}))
                .collect();
            let next = if end < ids.len() {
                GROUP_CURSOR_BASE + end as u64
            } else {
                0
            };
            Ok(
                json!({"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": "", "GroupIdList": page, "TotalCount": ids.len(), "Next": next}),
            )
        }
        Api::RoomList => {
            let count = field_u64(req, "Count", 100002, Some(20))?;
            if count == 0 || count > crate::tencent::api::MAX_ROOM_LIST_PAGE as u64 {
                return Err((100002, "Count must be 1 to 20".into()));
            }
            let next = match req.get("Next") {
                None => String::new(),
                Some(Value::String(n)) => n.clone(),
                Some(_) => return Err((100002, "Next must be a string".into())),
            };
            let start: usize = match next.as_str() {
                "" => 0,
                n => n
                    .strip_prefix("page-")
                    .and_then(|n| n.parse().ok())
                    .ok_or((100002, "Next is not a cursor this listing gave".to_string()))?,
            };
            // Sorted by viewers now: a room whose audience grew between two
            // pages moves up, and the next page shifts.
            let ids = s.listed_rooms();
            let start = start.min(ids.len());
            let end = (start + count as usize).min(ids.len());
            let page: Vec<Value> = ids[start..end]
                .iter()
                .map(|r| json!({"RoomId": r, "Owner_Account": "owner", "CreateTime": 1_700_000_000, "RoomType": "Live"}))
                .collect();
            let next = if end < ids.len() {
                format!("page-{end}")
            } else {
                String::new()
            };
            Ok(
                json!({"ErrorCode": 0, "ErrorInfo": "", "ActionStatus": "OK", "Response": {"Next": next, "RoomList": page}}),
            )
        }
        Api::GroupUnban => {
            let id = field_str(req, "GroupId", 10004)?.to_string();
            let members = accounts(req, "Members_Account", 10004, 10005)?;
            if !s.groups.contains_key(&id) {
                return Err((10010, "group does not exist".to_string()));
            }
            for m in members {
                s.rest_unban(ListKind::Group, &id, &m, now);
            }
            Ok(json!({"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0}))
        }
    }
}

// ---- control API ----

#[derive(Debug, Deserialize)]
struct Target {
    group: Option<String>,
    room: Option<String>,
    user: Option<String>,
    account: Option<String>,
    #[serde(default)]
    accounts: Vec<String>,
    until: Option<i64>,
    duration: Option<i64>,
    at: Option<i64>,
    /// `/sim/ban` on a group: the members are kicked too (a callback).
    #[serde(default)]
    kick: bool,
}

impl Target {
    fn list(&self) -> Result<(ListKind, String), Box<Response>> {
        match (&self.group, &self.room, &self.user) {
            (Some(g), None, None) => Ok((ListKind::Group, g.clone())),
            (None, Some(r), None) => Ok((ListKind::Room, r.clone())),
            (None, None, Some(u)) => Ok((ListKind::User, u.clone())),
            _ => Err(Box::new(bad("name exactly one of group, room, user"))),
        }
    }

    fn accounts(&self) -> Vec<String> {
        self.account
            .iter()
            .cloned()
            .chain(self.accounts.iter().cloned())
            .collect()
    }
}

fn bad(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": msg}))).into_response()
}

fn ok(v: Value) -> Response {
    axum::Json(v).into_response()
}

async fn ctl_ban(State(st): State<Shared>, axum::Json(t): axum::Json<Target>) -> Response {
    let (kind, id) = match t.list() {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let until = match (t.until, t.duration) {
        (Some(u), None) => u,
        (None, Some(d)) => st.lock().unwrap().clock.now_s() + d,
        _ => return bad("give until (Unix seconds) or duration (seconds)"),
    };
    let mut s = st.lock().unwrap();
    let list = s.lists(kind).entry(id.clone()).or_default();
    let accounts = t.accounts();
    for a in &accounts {
        list.upsert(a, until);
    }
    // A moderator who bans in a group may also remove the member: the
    // vendor then reports a kick (the only callback near a ban).
    if t.kick && kind == ListKind::Group {
        let members: Vec<Value> = accounts
            .iter()
            .map(|a| json!({"Member_Account": a}))
            .collect();
        s.push_callback(
            "Group.CallbackAfterMemberExit",
            json!({"CallbackCommand": "Group.CallbackAfterMemberExit", "GroupId": id, "Type": "AVChatRoom",
                "ExitType": "Kicked", "Operator_Account": "moderator", "ExitMemberList": members}),
        );
    }
    ok(json!({"banned_until": until}))
}

async fn ctl_unban(State(st): State<Shared>, axum::Json(t): axum::Json<Target>) -> Response {
    let (kind, id) = match t.list() {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut s = st.lock().unwrap();
    let mut n = 0;
    if let Some(list) = s.lists(kind).get_mut(&id) {
        for a in t.accounts() {
            n += usize::from(list.remove(&a));
        }
    }
    ok(json!({"removed": n}))
}

fn pairs(user: &str, accounts: &[String]) -> Value {
    Value::Array(
        accounts
            .iter()
            .map(|a| json!({"From_Account": user, "To_Account": a}))
            .collect(),
    )
}

async fn ctl_block(State(st): State<Shared>, axum::Json(t): axum::Json<Target>) -> Response {
    let Some(user) = t.user.clone() else {
        return bad("user missing");
    };
    let mut s = st.lock().unwrap();
    let at = t.at.unwrap_or_else(|| s.clock.now_s());
    let list = s.users.entry(user.clone()).or_default();
    let accounts = t.accounts();
    for a in &accounts {
        list.upsert(a, at);
    }
    // The vendor fires this for client and REST changes alike.
    s.push_callback(
        "Sns.CallbackBlackListAdd",
        json!({"CallbackCommand": "Sns.CallbackBlackListAdd", "PairList": pairs(&user, &accounts)}),
    );
    ok(json!({"blocked_at": at}))
}

async fn ctl_unblock(State(st): State<Shared>, axum::Json(t): axum::Json<Target>) -> Response {
    let Some(user) = t.user.clone() else {
        return bad("user missing");
    };
    let mut s = st.lock().unwrap();
    let mut n = 0;
    let accounts = t.accounts();
    if let Some(list) = s.users.get_mut(&user) {
        for a in &accounts {
            n += usize::from(list.remove(a));
        }
    }
    s.push_callback(
        "Sns.CallbackBlackListDelete",
        json!({"CallbackCommand": "Sns.CallbackBlackListDelete", "PairList": pairs(&user, &accounts)}),
    );
    ok(json!({"removed": n}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    group: Option<String>,
    room: Option<String>,
    user: Option<String>,
    /// A group's type (default `AVChatRoom`).
    #[serde(rename = "type")]
    kind: Option<String>,
    /// A room's audience (the listing sorts by it).
    viewers: Option<u64>,
}

async fn ctl_create(State(st): State<Shared>, axum::Json(c): axum::Json<Create>) -> Response {
    let mut s = st.lock().unwrap();
    match (&c.group, &c.room, &c.user) {
        (Some(g), None, None) => {
            let kind = c.kind.clone().unwrap_or_else(|| "AVChatRoom".into());
            let new = !s.groups.contains_key(g);
            s.groups.entry(g.clone()).or_default();
            s.group_types.insert(g.clone(), kind.clone());
            if new {
                let at = s.clock.now_ms();
                s.push_callback(
                    "Group.CallbackAfterCreateGroup",
                    json!({"CallbackCommand": "Group.CallbackAfterCreateGroup", "GroupId": g, "Type": kind,
                        "Operator_Account": "admin", "Owner_Account": "owner", "Name": g, "MemberList": [], "EventTime": at}),
                );
            }
            ok(json!({"created": new}))
        }
        (None, Some(r), None) => {
            let new = !s.rooms.contains_key(r);
            s.rooms.entry(r.clone()).or_default();
            if let Some(v) = c.viewers {
                s.viewers.insert(r.clone(), v);
            }
            if new {
                s.push_callback(
                    "Live.CallbackAfterCreateRoom",
                    json!({"CallbackCommand": "Live.CallbackAfterCreateRoom",
                        "RoomInfo": {"RoomId": r, "RoomType": "Live", "Owner_Account": "owner"}}),
                );
            }
            ok(json!({"created": new}))
        }
        (None, None, Some(u)) => {
            let new = !s.users.contains_key(u);
            s.users.entry(u.clone()).or_default();
            ok(json!({"created": new}))
        }
        _ => bad("name exactly one of group, room, user"),
    }
}

async fn ctl_destroy(State(st): State<Shared>, axum::Json(t): axum::Json<Target>) -> Response {
    match t.list() {
        Ok((kind, id)) => {
            let mut s = st.lock().unwrap();
            let existed = s.lists(kind).remove(&id).is_some();
            if existed {
                match kind {
                    ListKind::Group => {
                        let ty = s
                            .group_types
                            .remove(&id)
                            .unwrap_or_else(|| "AVChatRoom".into());
                        s.push_callback(
                            "Group.CallbackAfterGroupDestroyed",
                            json!({"CallbackCommand": "Group.CallbackAfterGroupDestroyed", "GroupId": id,
                                "Type": ty, "Owner_Account": "owner", "Name": id, "MemberList": []}),
                        );
                    }
                    ListKind::Room => {
                        s.viewers.remove(&id);
                        s.push_callback(
                            "Live.CallbackAfterDestroyRoom",
                            json!({"CallbackCommand": "Live.CallbackAfterDestroyRoom", "RoomId": id}),
                        );
                    }
                    ListKind::User => {}
                }
            }
            ok(json!({"existed": existed}))
        }
        Err(r) => *r,
    }
}

/// Walks per list and the longest gap between two walks of a list, per
/// kind (the longest any list went unwalked), since the last reset.
async fn ctl_walks(State(st): State<Shared>) -> Response {
    let s = st.lock().unwrap();
    let kind = |k: ListKind| match k {
        ListKind::Group => "group",
        ListKind::Room => "room",
        ListKind::User => "user",
    };
    let walks: serde_json::Map<String, Value> = s
        .walks
        .iter()
        .map(|((k, id), (n, _))| (format!("{}:{id}", kind(*k)), json!(n)))
        .collect();
    let gaps: serde_json::Map<String, Value> = s
        .max_gap
        .iter()
        .map(|(k, g)| (kind(*k).to_string(), json!(g)))
        .collect();
    ok(json!({"walks": walks, "max_gap_s": gaps}))
}

async fn ctl_reset_walks(State(st): State<Shared>) -> Response {
    let mut s = st.lock().unwrap();
    s.walks.clear();
    s.max_gap.clear();
    ok(json!({}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Viewers {
    room: String,
    viewers: u64,
}

async fn ctl_viewers(State(st): State<Shared>, axum::Json(v): axum::Json<Viewers>) -> Response {
    st.lock().unwrap().viewers.insert(v.room, v.viewers);
    ok(json!({}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackConfig {
    /// The app's callback URL; absent or empty stops the callbacks.
    url: Option<String>,
    /// The callback token: with one, `Sign` and `RequestTime` are added.
    token: Option<String>,
}

async fn ctl_callback(
    State(st): State<Shared>,
    axum::Json(c): axum::Json<CallbackConfig>,
) -> Response {
    let url = c.url.filter(|u| !u.is_empty());
    let Some(url) = url else {
        st.lock().unwrap().callbacks = None;
        return ok(json!({"callbacks": false}));
    };
    if reqwest::Url::parse(&url).is_err() {
        return bad("url is not a URL");
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = st.lock().unwrap().sdkappid;
    tokio::spawn(push_callbacks(
        st.clone(),
        url.clone(),
        c.token.clone(),
        app,
        rx,
    ));
    st.lock().unwrap().callbacks = Some(state::CallbackTarget {
        url,
        token: c.token,
        queue: tx,
    });
    ok(json!({"callbacks": true}))
}

/// Sends queued callbacks in order, as the vendor would: one POST each,
/// signed when a token is set, no retry. Ends when the target is replaced.
async fn push_callbacks(
    st: Shared,
    url: String,
    token: Option<String>,
    app: u64,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(String, Value)>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client builds");
    while let Some((command, body)) = rx.recv().await {
        let now = st.lock().unwrap().clock.now_s().to_string();
        let mut q: Vec<(&str, String)> = vec![
            ("SdkAppid", app.to_string()),
            ("CallbackCommand", command.clone()),
            ("contenttype", "json".into()),
            ("ClientIP", "127.0.0.1".into()),
            ("OptPlatform", "RESTAPI".into()),
        ];
        if let Some(t) = &token {
            q.push(("RequestTime", now.clone()));
            q.push(("Sign", crate::hint::sign(t, &now)));
        }
        let sent = http.post(&url).query(&q).json(&body).send().await;
        let mut s = st.lock().unwrap();
        let stats = s.stats.entry("callbacks").or_default();
        stats.calls += 1;
        match sent {
            Ok(r) if r.status().is_success() => stats.ok += 1,
            _ => stats.errors += 1,
        }
    }
}

#[derive(Debug, Deserialize)]
struct SeedSpec {
    kind: ListKind,
    prefix: String,
    count: usize,
    entries: usize,
    /// Seconds from now that seeded bans end (default a day).
    #[serde(default)]
    ttl: Option<i64>,
    /// First account number (`u{offset}`..): re-seeding with an offset
    /// changes that many entries of every list.
    #[serde(default)]
    offset: usize,
    /// The value every seeded entry gets (Unix seconds), so re-seeding
    /// changes only the entries it adds or drops.
    #[serde(default)]
    value: Option<i64>,
}

/// The most entries and lists one `/sim/seed` request may create (the
/// benchmark's largest estate is 1,000,000 entries in 10,000 lists).
pub const MAX_SEED_ENTRIES: usize = 20_000_000;
pub const MAX_SEED_LISTS: usize = 1_000_000;

async fn ctl_seed(
    State(st): State<Shared>,
    axum::Json(specs): axum::Json<Vec<SeedSpec>>,
) -> Response {
    let total: usize = specs
        .iter()
        .map(|s| s.count.saturating_mul(s.entries))
        .fold(0, usize::saturating_add);
    let lists_asked: usize = specs.iter().map(|s| s.count).fold(0, usize::saturating_add);
    if total > MAX_SEED_ENTRIES || lists_asked > MAX_SEED_LISTS {
        return bad(&format!(
            "seed asks for {lists_asked} lists and {total} entries: at most {MAX_SEED_LISTS} lists and {MAX_SEED_ENTRIES} entries a request"
        ));
    }
    let mut s = st.lock().unwrap();
    let now = s.clock.now_s();
    let mut lists = 0;
    for spec in specs {
        let value = if let Some(v) = spec.value {
            v
        } else if spec.kind == ListKind::User {
            now - 3600
        } else {
            now + spec.ttl.unwrap_or(86_400)
        };
        for i in 0..spec.count {
            let entries = (spec.offset..spec.offset + spec.entries)
                .map(|j| (format!("u{j}"), value))
                .collect();
            s.lists(spec.kind).insert(
                format!("{}{i}", spec.prefix),
                state::List {
                    entries,
                    set_by: HashMap::new(),
                },
            );
            lists += 1;
        }
    }
    ok(json!({"lists": lists}))
}

async fn ctl_fault(State(st): State<Shared>, axum::Json(f): axum::Json<Fault>) -> Response {
    st.lock().unwrap().faults.push((f, 0));
    ok(json!({}))
}

async fn ctl_clear_faults(State(st): State<Shared>) -> Response {
    let mut s = st.lock().unwrap();
    s.faults.clear();
    s.mutations.clear();
    ok(json!({}))
}

async fn ctl_mutate(State(st): State<Shared>, axum::Json(m): axum::Json<Mutation>) -> Response {
    st.lock().unwrap().mutations.push(m);
    ok(json!({}))
}

async fn ctl_stats(State(st): State<Shared>) -> Response {
    let s = st.lock().unwrap();
    ok(serde_json::to_value(&s.stats).unwrap())
}

async fn ctl_reset_stats(State(st): State<Shared>) -> Response {
    let mut s = st.lock().unwrap();
    s.stats.clear();
    s.windows.clear();
    ok(json!({}))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    kind: ListKind,
    id: String,
}

async fn ctl_list(State(st): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    let mut s = st.lock().unwrap();
    match s.lists(q.kind).get(&q.id) {
        Some(l) => ok(json!(l.entries)),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "no such list"})),
        )
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimConfigChange {
    rate_limit: Option<u32>,
    keep_expired: Option<bool>,
    group_list_page: Option<u32>,
}

async fn ctl_config(
    State(st): State<Shared>,
    axum::Json(c): axum::Json<SimConfigChange>,
) -> Response {
    let mut s = st.lock().unwrap();
    if let Some(r) = c.rate_limit {
        s.rate_limit = r.max(1);
    }
    if let Some(k) = c.keep_expired {
        s.keep_expired = k;
    }
    if let Some(p) = c.group_list_page {
        s.group_list_page = p.clamp(1, crate::tencent::api::MAX_GROUP_LIST_PAGE);
    }
    ok(json!({"rate_limit": s.rate_limit, "keep_expired": s.keep_expired}))
}
