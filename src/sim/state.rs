//! The simulator's state: lists it holds, faults and mid-walk mutations it
//! has been told to inject, and what it counts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::tencent::Api;

/// Who set a ban: a moderator (the control API: the app's own users and
/// servers), or a REST ban request (bansync).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetBy {
    Moderator,
    /// A REST request; `under`: the moderator's own end it extended, if
    /// any; `raced`: that moderator's ban came after the request was sent
    /// (its sender could not know what it overwrote).
    Rest {
        under: Option<i64>,
        raced: bool,
    },
}

/// A list in vendor order (offsets index it, so removals shift later entries).
#[derive(Debug, Default, Clone)]
pub struct List {
    pub entries: Vec<(String, i64)>,
    /// Who set each entry; entries not named here were set by a moderator.
    pub set_by: HashMap<String, SetBy>,
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
        self.set_by.remove(account);
        before != self.entries.len()
    }

    /// An entry's end and who set it.
    pub fn get(&self, account: &str) -> Option<(i64, SetBy)> {
        let (_, end) = self.entries.iter().find(|(a, _)| a == account)?;
        Some((
            *end,
            self.set_by
                .get(account)
                .copied()
                .unwrap_or(SetBy::Moderator),
        ))
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
    /// Hold the request this long before acting on it: a slow vendor that
    /// still applies it, later than it was sent.
    pub hold_ms: Option<u64>,
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

/// One change to a list, as a test's record.
#[derive(Debug, Clone, Serialize)]
pub struct ListChange {
    /// Orders changes whatever the clock does ([`SimState::tick`]).
    pub tick: u64,
    /// When the request that made it arrived (before a hold): what its
    /// sender could have known is what happened before this.
    pub arrived: u64,
    pub at_ms: i64,
    pub kind: ListKind,
    pub id: String,
    pub account: String,
    /// The end set, or `None` when removed.
    pub end: Option<i64>,
    pub by: SetBy,
}

/// What a test asked the simulator to record.
#[derive(Debug, Default)]
pub struct Recording {
    /// Every change a REST request made.
    pub rest: Vec<ListChange>,
    /// REST requests that lifted, shortened or restored a ban no REST
    /// request had set: what bansync must never do.
    pub audit: Vec<String>,
    /// Pages served: (kind, id, offset, accounts).
    pub served: Vec<(ListKind, String, u64, Vec<String>)>,
    /// When a moderator last changed an entry (tick).
    pub moderated: HashMap<(ListKind, String, String), u64>,
    /// When reads of a list began (ticks of their first pages).
    pub read_started: HashMap<(ListKind, String), Vec<u64>>,
    /// What the audit would have flagged, had the moderator not acted
    /// after the client last began reading the list: a race no client of a
    /// last-writer-wins API can see, not a decision taken on what it knew.
    pub raced: Vec<String>,
}

impl Recording {
    /// Files `finding` under the audit, or under races if a moderator
    /// changed the entry after the last read of the list that began before
    /// the request arrived (what the client decided on).
    fn flag(&mut self, kind: ListKind, id: &str, account: &str, arrived: u64, finding: String) {
        let moderated = self
            .moderated
            .get(&(kind, id.to_string(), account.to_string()));
        let read = self
            .read_started
            .get(&(kind, id.to_string()))
            .and_then(|reads| reads.iter().rev().find(|r| **r < arrived));
        match (moderated, read) {
            (Some(m), Some(r)) if m > r => self.raced.push(finding),
            _ => self.audit.push(finding),
        }
    }
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
    /// What tests asked to have recorded (off unless set).
    pub recording: Option<Recording>,
    /// Requests held by a `hold_ms` fault right now.
    pub holding: usize,
    /// Counts REST changes (and whatever tests count with it): an order
    /// that does not move when the clock is stepped.
    pub tick: u64,
    /// The tick at which the request being handled arrived.
    pub arrived: u64,
    /// Group types (`GroupType` of the listing); a group not named here is
    /// an `AVChatRoom`.
    pub group_types: HashMap<String, String>,
    /// Viewers per room: the room listing is sorted by them, most first,
    /// so its pages shift as they change.
    pub viewers: HashMap<String, u64>,
    /// The most groups one listing page holds (the vendor's is 10000; tests
    /// lower it to make the 1 call/s listing page).
    pub group_list_page: u32,
    /// Where the vendor's callbacks are pushed, if anywhere.
    pub callbacks: Option<CallbackTarget>,
    /// When each API last had an `Alert.RequestOverLimit` pushed.
    pub alerted: HashMap<Api, Instant>,
    /// Walks seen (first pages served), per list, and when the last began.
    pub walks: HashMap<(ListKind, String), (u64, Instant)>,
    /// The longest gap between two walks of one list, per kind (seconds).
    pub max_gap: HashMap<ListKind, f64>,
}

/// The app's callback URL (and token) as set in the vendor's console.
#[derive(Debug, Clone)]
pub struct CallbackTarget {
    pub url: String,
    pub token: Option<String>,
    /// Callbacks queued for sending, in order: (command, body).
    pub queue: tokio::sync::mpsc::UnboundedSender<(String, serde_json::Value)>,
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
            recording: None,
            holding: 0,
            tick: 0,
            arrived: 0,
            group_types: HashMap::new(),
            viewers: HashMap::new(),
            group_list_page: crate::tencent::api::MAX_GROUP_LIST_PAGE,
            callbacks: None,
            alerted: HashMap::new(),
            walks: HashMap::new(),
            max_gap: HashMap::new(),
        }
    }

    /// Queues a callback to the app's callback URL (if one is set).
    pub fn push_callback(&mut self, command: &str, body: serde_json::Value) {
        if let Some(c) = &self.callbacks {
            let _ = c.queue.send((command.to_string(), body));
        }
    }

    /// The AVChatRoom groups (or those of `kind`), in listing order.
    pub fn listed_groups(&self, kind: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .groups
            .keys()
            .filter(|g| {
                self.group_types
                    .get(*g)
                    .map_or("AVChatRoom", String::as_str)
                    == kind
            })
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// The rooms in listing order: most viewers first.
    pub fn listed_rooms(&self) -> Vec<String> {
        let mut ids: Vec<(u64, String)> = self
            .rooms
            .keys()
            .map(|r| (self.viewers.get(r).copied().unwrap_or(0), r.clone()))
            .collect();
        ids.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        ids.into_iter().map(|(_, r)| r).collect()
    }

    /// The next tick.
    pub fn tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// A REST ban request set `end` for `account` on a list: records who
    /// held it before and whether a moderator's ban was cut short.
    pub fn rest_ban(&mut self, kind: ListKind, id: &str, account: &str, end: i64, now: i64) {
        let arrived = self.arrived;
        let moderated_after = self.recording.as_ref().is_some_and(|r| {
            r.moderated
                .get(&(kind, id.to_string(), account.to_string()))
                .is_some_and(|m| *m > arrived)
        });
        let list = self.lists(kind).entry(id.to_string()).or_default();
        let prev = list.get(account).filter(|(e, _)| *e > now);
        let (under, raced) = match prev {
            Some((e, SetBy::Moderator)) => (Some(e), moderated_after),
            Some((_, SetBy::Rest { under, raced })) => (under, raced),
            None => (None, false),
        };
        // Giving a moderator's own end back (a restore) hands it back.
        let by = match under {
            Some(u) if (u..=u + 3).contains(&end) => SetBy::Moderator,
            _ => SetBy::Rest { under, raced },
        };
        list.upsert(account, end);
        list.set_by.insert(account.to_string(), by);
        let tick = self.tick();
        if let Some(rec) = &mut self.recording {
            if let Some((e, SetBy::Moderator)) = prev
                && end < e
            {
                rec.flag(
                    kind,
                    id,
                    account,
                    arrived,
                    format!("{kind:?} {id}: a REST ban cut {account}'s moderator ban ending {e} to {end}"),
                );
            }
            rec.rest.push(ListChange {
                tick,
                arrived,
                at_ms: self.clock.now_ms(),
                kind,
                id: id.to_string(),
                account: account.to_string(),
                end: Some(end),
                by,
            });
        }
    }

    /// A moderator changed an entry (recorded when asked to).
    pub fn note_moderated(&mut self, kind: ListKind, id: &str, account: &str) {
        if self.recording.is_some() {
            let tick = self.tick();
            if let Some(rec) = &mut self.recording {
                rec.moderated
                    .insert((kind, id.to_string(), account.to_string()), tick);
            }
        }
    }

    /// Records a page served, when asked to.
    pub fn note_served(&mut self, kind: ListKind, id: &str, offset: u64, items: &[(String, i64)]) {
        if offset == 0 {
            let now = Instant::now();
            let key = (kind, id.to_string());
            if let Some((_, last)) = self.walks.get(&key) {
                let gap = now.duration_since(*last).as_secs_f64();
                let g = self.max_gap.entry(kind).or_default();
                *g = g.max(gap);
            }
            let w = self.walks.entry(key).or_insert((0, now));
            w.0 += 1;
            w.1 = now;
        }
        if offset == 0 && self.recording.is_some() {
            let tick = self.tick();
            if let Some(rec) = &mut self.recording {
                rec.read_started
                    .entry((kind, id.to_string()))
                    .or_default()
                    .push(tick);
            }
        }
        if let Some(rec) = &mut self.recording {
            rec.served.push((
                kind,
                id.to_string(),
                offset,
                items.iter().map(|(a, _)| a.clone()).collect(),
            ));
        }
    }

    /// A REST unban request for `account` on a list.
    pub fn rest_unban(&mut self, kind: ListKind, id: &str, account: &str, now: i64) {
        let list = self.lists(kind).entry(id.to_string()).or_default();
        let prev = list.get(account).filter(|(e, _)| *e > now);
        list.remove(account);
        let (tick, arrived) = (self.tick(), self.arrived);
        if let Some(rec) = &mut self.recording {
            match prev {
                Some((e, SetBy::Moderator)) => rec.flag(
                    kind,
                    id,
                    account,
                    arrived,
                    format!("{kind:?} {id}: a REST unban lifted {account}'s moderator ban ending {e}"),
                ),
                // What a request overwrote without its sender knowing is
                // not what its sender can give back.
                Some((_, SetBy::Rest { under: Some(u), raced: true })) if u > now => {
                    rec.raced.push(format!(
                        "{kind:?} {id}: a REST unban lifted {account}'s moderator ban ending {u}, overwritten by a request sent before it"
                    ))
                }
                Some((_, SetBy::Rest { under: Some(u), .. })) if u > now => rec.flag(
                    kind,
                    id,
                    account,
                    arrived,
                    format!("{kind:?} {id}: a REST unban lifted {account}'s moderator ban ending {u} (under a mirror) instead of giving it back"),
                ),
                _ => {}
            }
            rec.rest.push(ListChange {
                tick,
                arrived,
                at_ms: self.clock.now_ms(),
                kind,
                id: id.to_string(),
                account: account.to_string(),
                end: None,
                by: SetBy::Rest {
                    under: None,
                    raced: false,
                },
            });
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
        let limit = api
            .vendor_limit()
            .map_or(self.rate_limit, |l| l.min(self.rate_limit)) as usize;
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
        let in_window = w.len();
        stats.max_in_window = stats.max_in_window.max(in_window as u64);
        // The vendor warns when an API passes 80% of its limit (at most
        // once a minute per API here).
        if in_window * 5 > limit * 4
            && limit >= 5
            && self
                .alerted
                .get(&api)
                .is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.alerted.insert(api, now);
            let (service, command) = api.path().split_once('/').unwrap_or_default();
            self.push_callback(
                "Alert.RequestOverLimit",
                serde_json::json!({"ServiceName": service, "Command": command,
                    "Request": in_window, "Limit": limit}),
            );
        }
        let stats = self.stats.entry(api.path()).or_default();
        let sec = self.clock.now_s();
        *stats.per_second.entry(sec).or_default() += 1;
        true
    }

    /// The first armed fault matching this request, consumed by one.
    /// `hold`: only faults that hold requests (`hold_ms`), or only others.
    pub fn take_fault_of(
        &mut self,
        api: Api,
        target: &str,
        offset: u64,
        hold: bool,
    ) -> Option<Fault> {
        for (f, seen) in self.faults.iter_mut() {
            if !f.matches(api, target, offset) || f.hold_ms.is_some() != hold {
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
