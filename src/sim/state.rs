//! The simulator's state: lists it holds, faults and mid-walk mutations it
//! has been told to inject, and what it counts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::tencent::Api;

/// A list in vendor order (offsets index it, so removals shift later entries).
#[derive(Debug, Default, Clone)]
pub struct List {
    pub entries: Vec<(String, i64)>,
}

impl List {
    pub fn upsert(&mut self, account: &str, value: i64) {
        match self.entries.iter_mut().find(|(a, _)| a == account) {
            Some(e) => e.1 = value,
            None => self.entries.push((account.to_string(), value)),
        }
    }

    pub fn remove(&mut self, account: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(a, _)| a != account);
        before != self.entries.len()
    }

    /// Drops bans whose end has passed, as the vendor does.
    pub fn purge_ended(&mut self, now: i64) {
        self.entries.retain(|(_, until)| *until > now);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListKind {
    Group,
    Room,
    User,
}

/// A fault to inject into matching requests.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// API path (`live_engine_http_srv/get_banned_member_list`), a command
    /// name (`get_banned_member_list`), or omitted for every API.
    pub api: Option<String>,
    /// Only requests about this group, room or user.
    pub target: Option<String>,
    /// Answer with this vendor error code.
    pub error_code: Option<i64>,
    /// Answer with this HTTP status (and an HTML body).
    pub http_status: Option<u16>,
    /// `truncated`, `garbage`, `wrong_type`, `no_cursor`, `stuck_cursor`,
    /// `skip_cursor` or `oversize`.
    pub malformed: Option<String>,
    /// Delay the answer.
    pub latency_ms: Option<u64>,
    /// Matching requests to let through first.
    #[serde(default)]
    pub after: u32,
    /// How many requests it hits (default 1; 0 = until cleared).
    pub count: Option<u32>,
    /// Only requests whose Offset/StartIndex is at least this.
    pub min_offset: Option<u64>,
}

impl Fault {
    pub fn matches(&self, api: Api, target: &str, offset: u64) -> bool {
        let api_ok = self
            .api
            .as_deref()
            .is_none_or(|a| a == "*" || a == api.path() || api.path().ends_with(&format!("/{a}")));
        api_ok
            && self.target.as_deref().is_none_or(|t| t == target)
            && self.min_offset.is_none_or(|m| offset >= m)
    }
}

/// A change applied to a list between two page requests of one walk.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mutation {
    pub kind: ListKind,
    pub id: String,
    /// Applied just before serving the first page at this offset or beyond (> 0).
    #[serde(default = "one")]
    pub at_offset: u64,
    #[serde(default)]
    pub remove: Vec<String>,
    #[serde(default)]
    pub add: Vec<(String, i64)>,
}

fn one() -> u64 {
    1
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ApiStats {
    pub calls: u64,
    pub ok: u64,
    pub rate_limited: u64,
    pub errors: u64,
    /// The most calls accepted inside any one-second window.
    pub max_in_window: u64,
    /// Accepted calls per whole second (Unix seconds), for plots.
    pub per_second: BTreeMap<i64, u64>,
}

pub struct SimState {
    pub sdkappid: u64,
    pub identifier: String,
    pub key: String,
    pub rate_limit: u32,
    pub keep_expired: bool,
    pub groups: HashMap<String, List>,
    pub rooms: HashMap<String, List>,
    pub users: HashMap<String, List>,
    pub faults: Vec<(Fault, u32)>,
    pub mutations: Vec<Mutation>,
    pub windows: HashMap<Api, VecDeque<Instant>>,
    pub stats: BTreeMap<&'static str, ApiStats>,
    /// Sigs already verified, with the Unix time they expire.
    pub sig_cache: HashMap<String, u64>,
    pub request_seq: u64,
    /// The vendor's wall clock (tests step it).
    pub clock: crate::clock::Clock,
}

impl SimState {
    pub fn new(sdkappid: u64, identifier: &str, key: &str, rate_limit: u32) -> Self {
        SimState {
            sdkappid,
            identifier: identifier.into(),
            key: key.into(),
            rate_limit,
            keep_expired: false,
            groups: HashMap::new(),
            rooms: HashMap::new(),
            users: HashMap::new(),
            faults: Vec::new(),
            mutations: Vec::new(),
            windows: HashMap::new(),
            stats: BTreeMap::new(),
            sig_cache: HashMap::new(),
            request_seq: 0,
            clock: crate::clock::Clock::system(),
        }
    }

    pub fn lists(&mut self, kind: ListKind) -> &mut HashMap<String, List> {
        match kind {
            ListKind::Group => &mut self.groups,
            ListKind::Room => &mut self.rooms,
            ListKind::User => &mut self.users,
        }
    }

    /// Counts a call against the API's rolling one-second window; false if
    /// it is over the limit (and then it is not counted as accepted).
    pub fn admit(&mut self, api: Api, now: Instant) -> bool {
        let limit = self.rate_limit as usize;
        let w = self.windows.entry(api).or_default();
        while w
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            w.pop_front();
        }
        let stats = self.stats.entry(api.path()).or_default();
        stats.calls += 1;
        if w.len() >= limit {
            stats.rate_limited += 1;
            return false;
        }
        w.push_back(now);
        stats.max_in_window = stats.max_in_window.max(w.len() as u64);
        let sec = self.clock.now_s();
        *stats.per_second.entry(sec).or_default() += 1;
        true
    }

    /// The first armed fault matching this request, consumed by one.
    pub fn take_fault(&mut self, api: Api, target: &str, offset: u64) -> Option<Fault> {
        for (f, seen) in self.faults.iter_mut() {
            if !f.matches(api, target, offset) {
                continue;
            }
            *seen += 1;
            if *seen <= f.after {
                continue;
            }
            let fired = *seen - f.after;
            let count = f.count.unwrap_or(1);
            if count == 0 || fired <= count {
                return Some(f.clone());
            }
        }
        None
    }

    /// Applies mutations armed for this list at this offset.
    /// Applies the first mutation armed for this list at this offset: one
    /// change between two page requests, so several armed mutations hit
    /// successive pages or walks.
    pub fn apply_mutations(&mut self, kind: ListKind, id: &str, offset: u64) {
        if offset == 0 || self.mutations.is_empty() {
            return;
        }
        let Some(i) = self
            .mutations
            .iter()
            .position(|m| m.kind == kind && m.id == id && offset >= m.at_offset)
        else {
            return;
        };
        let m = self.mutations.remove(i);
        {
            let list = self.lists(kind).entry(id.to_string()).or_default();
            for a in &m.remove {
                list.remove(a);
            }
            for (a, v) in &m.add {
                list.upsert(a, *v);
            }
        }
    }
}
