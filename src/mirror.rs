//! Propagation decisions: pure functions of what bansync applied to a
//! target (the [`Mirror`] record), what an origin's event says, and what the
//! target's walks or a fresh read of its list show. No I/O: the store
//! persists the records and calls these inside the transactions that see
//! the events; the propagator calls them around its vendor requests.
//!
//! The ownership rule (CONTRACT.md, "Propagation"): a mirrored ban is
//! bansync's only while the target's list shows an end bansync set. Which
//! ends those are is known exactly: a ban request sent with `Duration = D`
//! computed at `t0` makes the vendor set `t + D` for some `t` between `t0`
//! and the answer, so each request leaves a [`Window`] of ends it may have
//! set, retries included (each is a request of its own). A request still
//! out has an open window that grows with the time it has been out, up to
//! what the client waits for an answer. Any other end at the target, or
//! the ban leaving the list, hands the mirror to the target's moderators
//! for good.
//!
//! Two sets of windows are kept. `windows`: every recent request's, so
//! that a walk which read the list before bansync's latest request landed
//! is still known as an echo ([`Mirror::ours`]). `current`: the windows
//! that can be on the list now ([`Mirror::holds`]): an applied request
//! replaces them, one without an answer adds to them. Only `current`
//! makes a mirror bansync's to lift, so a moderator's end that happens to
//! equal one bansync set long ago and overwrote since is not mistaken for
//! bansync's. (An end inside `current` is, by the contract's definition,
//! the end bansync set.)
//!
//! ```text
//!   origin ban ──▶ Pending ──answer OK / seen in window──▶ Owned ──origin lifted (lift = true)──▶ Lifting ──▶ Lifted
//!                   │  │                                     │                                        │
//!                   │  └─refused for good─▶ Failed ─seen─▶───┘                      read shows another end
//!      origin lifted│                                        │ another end, or gone at the target     │
//!         or ended  ▼                                        ▼                                        ▼
//!               Cancelled ──lands anyway──▶ Lifting       Released ◀──────────────────────────────────┘
//! ```

use crate::source::SourceSpec;

/// Ends (Unix seconds, inclusive) that one of bansync's requests may have
/// set at a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub lo: i64,
    pub hi: i64,
}

impl Window {
    pub fn contains(&self, v: i64) -> bool {
        self.lo <= v && v <= self.hi
    }

    /// The window of a request that carried `until` (so `D = until - t0`,
    /// `t0` the whole second it was computed in), sent at `sent_s` and
    /// answered (or given up on) at `answered_s`. `late_s`: how long after
    /// giving up the vendor may still process a request that got no answer.
    pub fn of_request(until: i64, sent_s: i64, answered_s: i64, late_s: i64) -> Window {
        Window {
            lo: until,
            hi: until + (answered_s - sent_s).max(0) + 1 + late_s.max(0),
        }
    }
}

/// The windows a record remembers: enough to recognise any end bansync's
/// recent requests set, few enough to stay small.
pub const MAX_WINDOWS: usize = 8;

/// Where one mirror stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MirrorState {
    /// A ban request is queued or out; the vendor has not said it applied.
    Pending,
    /// The vendor applied bansync's end, or a walk showed it: bansync's.
    Owned,
    /// Refused for good. An attempt that got no answer may still have landed.
    Failed,
    /// The origin's ban was lifted or ended before the mirror was applied.
    Cancelled,
    /// Bansync is lifting it (unban, or the target's own end given back).
    Lifting,
    /// Bansync lifted it, or gave the target its own end back.
    Lifted,
    /// The target showed another end, or the ban left it: not bansync's.
    Released,
}

impl MirrorState {
    pub const ALL: [MirrorState; 7] = [
        MirrorState::Pending,
        MirrorState::Owned,
        MirrorState::Failed,
        MirrorState::Cancelled,
        MirrorState::Lifting,
        MirrorState::Lifted,
        MirrorState::Released,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MirrorState::Pending => "pending",
            MirrorState::Owned => "owned",
            MirrorState::Failed => "failed",
            MirrorState::Cancelled => "cancelled",
            MirrorState::Lifting => "lifting",
            MirrorState::Lifted => "lifted",
            MirrorState::Released => "released",
        }
    }

    pub fn parse(s: &str) -> Option<MirrorState> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// A ban request that is out: the vendor may set any end from `until` to
/// `until` plus the time it has been out, up to `max_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    pub since_s: i64,
    pub until: i64,
    /// The longest the client waits for an answer, plus how late the vendor
    /// may still process a request it did not answer.
    pub max_s: i64,
}

impl InFlight {
    /// The ends it may have set by `now`.
    pub fn window(&self, now: i64) -> Window {
        Window {
            lo: self.until,
            hi: self.until + (now - self.since_s).clamp(0, self.max_s) + 1,
        }
    }

    /// Closed as if it had been given up on at the latest moment.
    pub fn closed(&self) -> Window {
        Window {
            lo: self.until,
            hi: self.until + self.max_s + 1,
        }
    }
}

/// What bansync did, and still owns, at one target for one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The origin whose ban this mirrors.
    pub origin: SourceSpec,
    /// The origin event (row id) that asked for it.
    pub origin_event: i64,
    /// The end it carries: the origin's end.
    pub until: i64,
    pub state: MirrorState,
    /// Ends bansync's recent requests (bans and restores) may have set.
    pub windows: Vec<Window>,
    /// Of those, the ones that can be on the list now.
    pub current: Vec<Window>,
    /// Windows of requests that got no answer: the vendor may act on them
    /// late, after a newer request applied, so they stay possible on the
    /// list.
    pub unanswered: Vec<Window>,
    /// A request that is out.
    pub in_flight: Option<InFlight>,
    /// The target's own running ban end before bansync's mirror extended it:
    /// what a lift gives back.
    pub prior: Option<i64>,
    /// The queued or running job that acts for this record; a job whose id
    /// is not this one was superseded and does nothing.
    pub job: Option<i64>,
    /// The ends a restore (the target's own end given back) may have set:
    /// a lift retried after an unanswered restore finds it done.
    pub restore: Option<Window>,
    /// When bansync's last request for it was answered or given up on
    /// (Unix s): a walk that started before may show the list as it was
    /// before that request acted.
    pub acted_s: Option<i64>,
    /// The origin on whose behalf the ends in `current` were set: another
    /// origin's request may be pending while that one's end is on the list.
    pub holder: Option<SourceSpec>,
}

/// Adds `w` to `ws`, merging overlaps and keeping the newest few.
fn add_window(ws: &mut Vec<Window>, w: Window) {
    if let Some(same) = ws.iter_mut().find(|x| x.lo <= w.hi && w.lo <= x.hi) {
        same.lo = same.lo.min(w.lo);
        same.hi = same.hi.max(w.hi);
        return;
    }
    ws.push(w);
    if ws.len() > MAX_WINDOWS {
        ws.remove(0);
    }
}

impl Mirror {
    /// Whether `v`, an end seen at the target, is one bansync set recently
    /// (an echo, never mirrored onward).
    pub fn ours(&self, v: i64, now: i64) -> bool {
        self.windows.iter().any(|w| w.contains(v)) || self.holds(v, now)
    }

    /// Whether `v` is an end of bansync's that can be on the list now: what
    /// makes the mirror bansync's to lift.
    pub fn holds(&self, v: i64, now: i64) -> bool {
        // An end given back to the target is the target's own.
        if self.restore.is_some_and(|r| r.contains(v)) {
            return false;
        }
        self.current.iter().any(|w| w.contains(v))
            || self.unanswered.iter().any(|w| w.contains(v))
            || self.in_flight.is_some_and(|f| f.window(now).contains(v))
    }

    /// Whether `v` is an end bansync's own mirror set (not one it gave
    /// back to the target's moderators): an end that is not the target's own.
    pub fn set_by_bansync(&self, v: i64, now: i64) -> bool {
        self.ours(v, now) && !self.restore.is_some_and(|r| r.contains(v))
    }

    /// Remembers the window of a request that may have set an end.
    /// `replaces`: it applied, so no earlier end of bansync's is on the list.
    pub fn remember(&mut self, w: Window, replaces: bool) {
        add_window(&mut self.windows, w);
        if replaces {
            self.current = vec![w];
        } else {
            add_window(&mut self.current, w);
            add_window(&mut self.unanswered, w);
        }
    }

    /// Nothing of bansync's is on the list any more (as far as known: an
    /// unanswered request may still land).
    pub fn off_the_list(&mut self) {
        self.current.clear();
        self.holder = None;
    }

    /// An end of bansync's may be on the list now.
    pub fn may_be_on_the_list(&self) -> bool {
        !self.current.is_empty() || !self.unanswered.is_empty() || self.in_flight.is_some()
    }

    /// The latest end any of its windows allows.
    pub fn latest_end(&self) -> Option<i64> {
        self.windows
            .iter()
            .map(|w| w.hi)
            .chain(self.in_flight.map(|f| f.closed().hi))
            .max()
    }
}

/// What the target holds for the account, as far as bansync knows:
/// `listed` is its last committed walk's running ban (None if not listed or
/// not watched), corrected by what bansync did since.
pub fn effective_end(listed: Option<i64>, m: Option<&Mirror>, now: i64) -> Option<i64> {
    let listed = listed.filter(|v| *v > now);
    let Some(m) = m else { return listed };
    let listed_ours = listed.is_some_and(|v| m.ours(v, now));
    match m.state {
        // Its end may be on the list already, or land any moment.
        MirrorState::Owned => listed.max(Some(m.until)),
        // Going away: what stays is the target's own end.
        MirrorState::Lifting | MirrorState::Lifted if listed_ours => m.prior.filter(|p| *p > now),
        MirrorState::Lifting | MirrorState::Lifted => listed,
        MirrorState::Pending
        | MirrorState::Failed
        | MirrorState::Cancelled
        | MirrorState::Released => listed,
    }
}

/// What an origin's ban asks of one target's mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginBan {
    /// The target already holds an equal or longer ban: nothing to do.
    Held,
    /// Store this record and queue a ban job for it.
    Queue(Mirror),
    /// The origin's ban is now shorter than what the target holds: the
    /// mirror this origin still had pending would set a stale, longer end.
    /// Store this record (its job is dropped).
    Drop(Mirror),
}

impl OriginBan {
    /// The record to store with a ban job queued for it, if any.
    pub fn queued(self) -> Option<Mirror> {
        match self {
            OriginBan::Queue(m) => Some(m),
            _ => None,
        }
    }
}

/// An origin's ban (added or updated) at `until`, for one target.
///
/// Queues a mirror unless the target already holds an equal or longer ban.
/// `listed` (the target's last walk) only decides that; what the target
/// held before the mirror (`prior`) is taken from the fresh read made just
/// before the request is sent ([`plan_ban`]), never from a walk that may
/// be stale.
pub fn on_origin_ban(
    m: Option<&Mirror>,
    origin: &SourceSpec,
    origin_event: i64,
    until: i64,
    listed: Option<i64>,
    now: i64,
) -> OriginBan {
    if until <= now || effective_end(listed, m, now).is_some_and(|e| e >= until) {
        return match m {
            Some(m)
                if m.state == MirrorState::Pending
                    && &m.origin == origin
                    && m.in_flight.is_none() =>
            {
                let mut next = m.clone();
                next.job = None;
                if next.current.is_empty() {
                    next.state = MirrorState::Released;
                } else {
                    // Bansync's end on the list stays its holder's mirror.
                    next.state = MirrorState::Owned;
                    if let Some(h) = &m.holder {
                        next.origin = h.clone();
                    }
                }
                OriginBan::Drop(next)
            }
            _ => OriginBan::Held,
        };
    }
    // What lies under bansync's ends stays known while one may be there.
    let carried = m.filter(|m| m.may_be_on_the_list()).and_then(|m| m.prior);
    let mut next = Mirror {
        origin: origin.clone(),
        origin_event,
        until,
        state: MirrorState::Pending,
        windows: m.map(|m| m.windows.clone()).unwrap_or_default(),
        // An earlier mirror of bansync's may still be on the list.
        current: m.map(|m| m.current.clone()).unwrap_or_default(),
        unanswered: m.map(|m| m.unanswered.clone()).unwrap_or_default(),
        in_flight: None,
        prior: carried.filter(|p| *p > now),
        job: None,
        restore: m.and_then(|m| m.restore),
        acted_s: m.and_then(|m| m.acted_s),
        holder: m.and_then(|m| m.holder.clone()),
    };
    // A request of the old record still out keeps counting as bansync's.
    if let Some(f) = m.and_then(|m| m.in_flight) {
        next.in_flight = Some(f);
    }
    OriginBan::Queue(next)
}

/// What an origin's ban leaving its list asks of one target's mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gone {
    /// Nothing to do here.
    Keep,
    /// The mirror was never applied and never will be: say so. `undo`: a
    /// request of it got no answer and may have landed: lift it (the record
    /// is `Lifting`; the job decides after a read).
    Cancel { mirror: Mirror, undo: bool },
    /// Lift what bansync still owns (the job decides after a fresh read).
    Lift(Mirror),
}

/// The origin's ban of this account was lifted early (`lifted`) or ended.
/// `rule_lifts`: a rule from this origin to this target has `lift = true`.
pub fn on_origin_gone(m: &Mirror, origin: &SourceSpec, lifted: bool, rule_lifts: bool) -> Gone {
    let mut next = m.clone();
    // Another origin's request is pending while this origin's mirror is on
    // the list: lift it (the lift mirrors the other origin's end instead,
    // if that one still bans the account).
    if &m.origin != origin {
        let holds_for_it = m.holder.as_ref() == Some(origin) && !m.current.is_empty();
        if holds_for_it && lifted && rule_lifts && m.state == MirrorState::Pending {
            next.state = MirrorState::Lifting;
            next.job = None;
            return Gone::Lift(next);
        }
        return Gone::Keep;
    }
    match m.state {
        MirrorState::Pending => {
            next.job = None;
            // A request still out is undone when its answer comes back.
            let undo = !m.current.is_empty() && m.in_flight.is_none();
            next.state = if undo {
                MirrorState::Lifting
            } else {
                MirrorState::Cancelled
            };
            Gone::Cancel { mirror: next, undo }
        }
        // An attempt that got no answer may have landed: look.
        MirrorState::Owned | MirrorState::Failed
            if lifted && rule_lifts && (m.state == MirrorState::Owned || !m.windows.is_empty()) =>
        {
            next.state = MirrorState::Lifting;
            next.job = None;
            Gone::Lift(next)
        }
        _ => Gone::Keep,
    }
}

/// What a committed walk of the target showed for the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Listed with this end (`ban.added` / `ban.updated`).
    Listed(i64),
    /// Left the list: confirmed absent, or ended (`ban.lifted` / `ban.expired`).
    Gone,
}

/// The record after the target's walk showed `seen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub mirror: Mirror,
    /// The end is bansync's own: the event must not be mirrored onward.
    pub echo: bool,
    /// A mirror that should not be there (cancelled, yet it landed): lift it.
    pub lift: bool,
}

/// `read_from`: when the walk that saw it started (Unix s).
pub fn on_target_seen(m: &Mirror, seen: Seen, read_from: i64, now: i64) -> Observed {
    let mut next = m.clone();
    let (mut echo, mut lift) = (false, false);
    // A walk that started before bansync's last request acted, or while one
    // is out, may show the list as it was before: it proves an echo, but
    // not that someone else changed the list.
    let stale = m.in_flight.is_some() || m.acted_s.is_some_and(|a| read_from <= a);
    match seen {
        Seen::Listed(v) if m.holds(v, now) => {
            echo = true;
            match m.state {
                MirrorState::Failed => {
                    next.state = MirrorState::Owned;
                    next.holder = Some(m.origin.clone());
                }
                MirrorState::Cancelled => {
                    next.state = MirrorState::Lifting;
                    lift = true;
                }
                // A request that got no answer landed after the lift, seen
                // by a walk that started after it: lift it again.
                MirrorState::Lifted if !stale => {
                    next.state = MirrorState::Lifting;
                    next.job = None;
                    lift = true;
                }
                _ => {}
            }
        }
        // An older end of bansync's, read before its latest request
        // landed: an echo, and no news about who holds the list now.
        Seen::Listed(v) if m.ours(v, now) => echo = true,
        Seen::Listed(_) | Seen::Gone if stale => {}
        Seen::Listed(v) => match m.state {
            MirrorState::Owned | MirrorState::Lifting => {
                next.state = MirrorState::Released;
                next.job = None;
                next.off_the_list();
            }
            // A request of bansync's is still to land (or may land late):
            // this, the target's own end now, is what it would extend.
            MirrorState::Pending if v > now => next.prior = Some(v),
            _ => {}
        },
        Seen::Gone => {
            // Still to be applied. (With a request out the walk is stale,
            // handled above: its answer is awaited.)
            let awaited = m.state == MirrorState::Pending;
            if !awaited {
                next.state = match m.state {
                    MirrorState::Lifted => MirrorState::Lifted,
                    MirrorState::Cancelled => MirrorState::Cancelled,
                    _ => MirrorState::Released,
                };
                next.job = None;
                next.off_the_list();
            }
        }
    }
    Observed {
        mirror: next,
        echo,
        lift,
    }
}

/// A fresh read of the target's list, for the one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Its end on the list, if listed.
    pub value: Option<i64>,
    /// The read can prove an absence (the list did not shift under it).
    pub complete: bool,
}

/// What a queued ban job does, decided after a fresh read of the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BanStep {
    /// Send the ban for `until - now` seconds; the record is updated.
    Send { mirror: Mirror },
    /// The target already holds an equal or longer ban: nothing to send.
    Held { mirror: Mirror, end: i64 },
    /// The origin's ban ended before the mirror could be applied.
    Ended { mirror: Mirror },
    /// The record no longer asks for this job.
    Superseded,
    /// The read could not tell enough: try again later.
    Later,
}

pub fn plan_ban(m: &Mirror, job: i64, read: Read, now: i64) -> BanStep {
    if m.state != MirrorState::Pending || m.job != Some(job) {
        return BanStep::Superseded;
    }
    let mut next = m.clone();
    if m.until <= now {
        next.state = MirrorState::Cancelled;
        next.job = None;
        return BanStep::Ended { mirror: next };
    }
    match read.value {
        Some(v) if v >= m.until => {
            next.job = None;
            next.state = if m.holds(v, now) {
                next.holder = Some(m.origin.clone());
                MirrorState::Owned
            } else {
                next.off_the_list();
                MirrorState::Released
            };
            BanStep::Held {
                mirror: next,
                end: v,
            }
        }
        Some(v) => {
            if v > now && !m.set_by_bansync(v, now) {
                next.prior = Some(v);
            }
            BanStep::Send { mirror: next }
        }
        None if read.complete => {
            next.prior = None;
            BanStep::Send { mirror: next }
        }
        // Listed or not, it may have been skipped: keep what is known.
        None => BanStep::Send { mirror: next },
    }
}

/// What a queued lift job does, decided after a fresh read of the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiftStep {
    /// Unban: bansync's end is on the list and nothing is owed to anyone.
    Unban,
    /// Give the target its own end back (ban until `until`).
    Restore { until: i64 },
    /// Another origin still bans the account: mirror its end instead.
    Remirror {
        origin: SourceSpec,
        origin_event: i64,
        until: i64,
    },
    /// The list shows another end or none: not bansync's any more.
    Release { seen: Option<i64> },
    /// An earlier restore of this lift landed: nothing more to do.
    Landed,
    /// The record no longer asks for this job.
    Superseded,
    /// The read could not tell enough: try again later.
    Later,
}

/// `lifted`: the origin whose ban left (the job's origin). `others`:
/// origins with rules to this target that still ban the account with a
/// ban of their own (not a mirror): (origin, its ban event, end).
pub fn plan_lift(
    m: &Mirror,
    job: i64,
    lifted: &SourceSpec,
    read: Read,
    others: &[(SourceSpec, i64, i64)],
    now: i64,
) -> LiftStep {
    if m.state != MirrorState::Lifting || m.job != Some(job) {
        return LiftStep::Superseded;
    }
    match read.value {
        Some(v) if m.restore.is_some_and(|w| w.contains(v)) => LiftStep::Landed,
        Some(v) if m.holds(v, now) => {
            let prior = m.prior.filter(|p| *p > now);
            let other = others
                .iter()
                .filter(|(o, _, u)| o != lifted && *u > now)
                .max_by_key(|(_, _, u)| *u);
            match (other, prior) {
                (Some((o, e, u)), p) if p.is_none_or(|p| *u > p) => LiftStep::Remirror {
                    origin: o.clone(),
                    origin_event: *e,
                    until: *u,
                },
                (_, Some(p)) => LiftStep::Restore { until: p },
                (_, None) => LiftStep::Unban,
            }
        }
        Some(v) => LiftStep::Release { seen: Some(v) },
        None if read.complete => LiftStep::Release { seen: None },
        None => LiftStep::Later,
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The vendor said it applied.
    Applied,
    /// The vendor refused it (an error code): it did not apply.
    Refused { permanent: bool },
    /// No answer (timeout, connection lost): it may have applied.
    Unknown { permanent: bool },
}

/// What a finished ban request (a mirror, a restore or a re-mirror) leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied as asked: report `propagation.applied`.
    Applied,
    /// Try again later.
    Retry,
    /// Refused for good: report `propagation.failed`.
    Failed,
    /// Applied, but the record was cancelled meanwhile: lift it again.
    Undo,
    /// Nothing to report (a superseded job's request).
    Quiet,
}

/// What bansync's request did; `window`: the ends it may have set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Request {
    /// The mirror's own ban.
    Ban,
    /// The target's own end given back.
    Restore,
    /// Another origin's end mirrored instead.
    Remirror,
    Unban,
}

/// `now`: when the answer came (or the request was given up on).
pub fn on_answer(
    m: &Mirror,
    job: i64,
    request: Request,
    answer: Answer,
    window: Window,
    now: i64,
) -> (Mirror, Outcome) {
    let mut next = m.clone();
    next.acted_s = Some(now);
    if m.in_flight.is_some_and(|f| f.until == window.lo) {
        next.in_flight = None;
    }
    match (request, answer) {
        (_, Answer::Refused { .. }) => {}
        (Request::Unban, Answer::Applied) => next.off_the_list(),
        (Request::Unban, Answer::Unknown { .. }) => {}
        // The target's own end given back: an echo, never bansync's to hold.
        (Request::Restore, _) => {
            add_window(&mut next.windows, window);
            next.restore = Some(window);
        }
        (_, answer) => {
            next.remember(window, answer == Answer::Applied);
            next.holder = Some(m.origin.clone());
        }
    }
    let current = m.job == Some(job);
    if !current {
        // Cancelled while out, and it landed or may have: it must go again.
        if m.state == MirrorState::Cancelled
            && request == Request::Ban
            && !matches!(answer, Answer::Refused { .. })
        {
            next.state = MirrorState::Lifting;
            return (next, Outcome::Undo);
        }
        return (next, Outcome::Quiet);
    }
    match (request, answer) {
        (Request::Ban, Answer::Applied) => {
            next.state = MirrorState::Owned;
            next.job = None;
            (next, Outcome::Applied)
        }
        (Request::Restore | Request::Unban, Answer::Applied) => {
            // What is on the list now is the target's own (or nothing).
            next.state = MirrorState::Lifted;
            next.job = None;
            next.off_the_list();
            (next, Outcome::Applied)
        }
        (Request::Remirror, Answer::Applied) => {
            next.state = MirrorState::Owned;
            next.job = None;
            (next, Outcome::Applied)
        }
        (_, Answer::Refused { permanent: false } | Answer::Unknown { permanent: false }) => {
            (next, Outcome::Retry)
        }
        (Request::Ban, _) => {
            next.state = MirrorState::Failed;
            next.job = None;
            (next, Outcome::Failed)
        }
        // A lift that cannot be done leaves the mirror where it was.
        (_, _) => {
            next.state = MirrorState::Owned;
            next.job = None;
            (next, Outcome::Failed)
        }
    }
}

#[cfg(test)]
mod tests;
