//! The reliability suite: randomized trials against the simulator, each
//! checked against a model of what should have happened. Written to break
//! the code: every fault it injects is one a production daemon meets.
//!
//!     cargo test --release --test reliability -- --nocapture
//!     RELIABILITY_TRIALS=2000 RELIABILITY_MIRROR_TRIALS=400 cargo test --release --test reliability -- --nocapture
//!
//! Three families of trials:
//!
//! * **Lists and deliveries** (`RELIABILITY_TRIALS`, 200 in CI). Three
//!   sources (a room, a group, a blocklist, paged 10 at a time) churn for
//!   eight steps under random faults: vendor error codes on random pages,
//!   latency spikes, malformed bodies, entries removed between page
//!   requests, lists that keep shifting under several walks in a row
//!   (each later page request moves the front entries to the end), a full
//!   disk, restarts, receiver outages, failed lane loads, bansync's clock
//!   stepped hours forwards and back, and an operator's `deliveries retry`
//!   and `replay` from another connection while deliveries flow. The
//!   dispatcher runs all along, as in the daemon. In some trials the last
//!   step aims at the walk that could not prove absences: the entries it
//!   skipped are really unbanned and the list then stays quiet.
//! * **Propagation** (`RELIABILITY_MIRROR_TRIALS`, 40 in CI). Two groups
//!   and three rooms, two to four random `[[propagate]]` rules (cycles
//!   common, `lift` mostly on), moderators banning and lifting at origins
//!   and targets while walks and propagation passes run, ban endpoints
//!   that are slow, act late (after bansync gave up on the request), fail
//!   or refuse, and the host clock stepped.
//! * **SIGKILL** (`RELIABILITY_KILL_TRIALS`, 12 in CI): the real binary
//!   killed at random moments while the lists churn, then restarted.
//!
//! Invariants, per trial: no event lost or invented (replaying the events
//! gives the lists once quiet; every event agrees with the list and with
//! the events before it; an ended ban is never revived or reported ended
//! twice), `seq` without gaps, no false lift, every owed delivery made
//! without a restart and in order, no ban lifted, shortened or restored
//! that bansync did not set (the simulator knows who set each ban), no
//! mirror without a moderator's ban at an origin behind it (no echo), no
//! mirror left after its origin's lift once quiet, and a bounded number of
//! ban requests per moderator action (no call storm).
//!
//! It prints, per family: trials, faults injected, violations.

#[allow(dead_code)]
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use bansync::clock::Clock;
use bansync::sim::state::SetBy;
use bansync::sim::{Fault, ListKind, Mutation};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Trial {
    faults: usize,
    violations: Vec<String>,
    /// Audit findings that were races with a moderator acting after
    /// bansync's last read (no client can see those): counted, not failed.
    raced: usize,
}

impl Trial {
    fn new() -> Self {
        Trial {
            faults: 0,
            violations: Vec::new(),
            raced: 0,
        }
    }
}

// ---- the model of a consumer ----

/// The consumer's view, rebuilt from a source's events: account → value.
/// Checks each event against the events before it.
fn replay(
    events: &[(i64, String, String, serde_json::Value)],
    violations: &mut Vec<String>,
    source: &str,
) -> BTreeMap<String, i64> {
    let mut view = BTreeMap::new();
    // Bans reported ended: the same ban (same end) is never back.
    let mut ended: HashMap<String, i64> = HashMap::new();
    let mut expected_seq = 1;
    for (seq, kind, account, body) in events {
        if *seq != expected_seq {
            violations.push(format!("{source}: seq {seq} where {expected_seq} was due"));
        }
        expected_seq = seq + 1;
        let d = &body["data"];
        let value = d["banned_until"].as_i64().or(d["blocked_at"].as_i64());
        match kind.as_str() {
            "ban.added" if ended.get(account) == value.as_ref() => {
                violations.push(format!(
                    "{source}: ban.added {account} with the end of a ban already reported ended (revived)"
                ));
                view.insert(account.clone(), value.unwrap());
            }
            "ban.added" | "block.added"
                if view.insert(account.clone(), value.unwrap()).is_some() =>
            {
                violations.push(format!(
                    "{source}: {kind} {account} while already held (invented)"
                ));
            }
            "ban.added" | "block.added" => {}
            "ban.updated" | "block.updated" => {
                let prev = d["previous_banned_until"]
                    .as_i64()
                    .or(d["previous_blocked_at"].as_i64());
                if view.get(account).copied() != prev {
                    violations.push(format!(
                        "{source}: {kind} {account} from {prev:?}, held {:?}",
                        view.get(account)
                    ));
                }
                view.insert(account.clone(), value.unwrap());
            }
            "ban.lifted" | "block.removed" | "ban.expired" => {
                if view.remove(account).is_none() {
                    violations.push(format!("{source}: {kind} {account} not held (invented)"));
                }
                if kind == "ban.expired" {
                    ended.insert(account.clone(), value.unwrap_or_default());
                }
            }
            _ => {}
        }
    }
    view
}

/// What a list holds for a consumer: its entries, less bans whose end has
/// passed by `ended_by`.
fn truth(sim: &Sim, kind: ListKind, id: &str, ended_by: i64) -> BTreeMap<String, i64> {
    sim.entries(kind, id)
        .into_iter()
        .filter(|(_, v)| kind == ListKind::User || *v > ended_by)
        .collect()
}

/// Bans whose end bansync's clock passed while the vendor listed them
/// (its clock ran ahead): (source, account, end). It may report them
/// ended while the vendor still lists them, and never again after.
type Ended = HashSet<(&'static str, String, i64)>;

fn note_ended(sim: &Sim, clock: &Clock, ended: &mut Ended) {
    let now = clock.now_s();
    for (kind, id, spec) in &SOURCES[..2] {
        for (a, v) in sim.entries(*kind, id) {
            if v <= now {
                ended.insert((spec, a, v));
            }
        }
    }
}

/// Checks one walk's new events against the list before and after it.
fn check_walk_events(
    new: &[(i64, String, String, serde_json::Value)],
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
    spec: &str,
    seed: u64,
    violations: &mut Vec<String>,
) {
    for (_, kind, account, body) in new {
        let d = &body["data"];
        let value = d["banned_until"].as_i64().or(d["blocked_at"].as_i64());
        match kind.as_str() {
            "ban.lifted" | "block.removed"
                if before.contains_key(account) && after.contains_key(account) =>
            {
                violations.push(format!("seed {seed}: {spec}: false {kind} of {account}"));
            }
            "ban.added" | "ban.updated" | "block.added" | "block.updated" => {
                let listed = before.get(account).or(after.get(account)).copied();
                if listed != value {
                    violations.push(format!(
                        "seed {seed}: {spec}: {kind} {account}={value:?} but the list holds {listed:?}"
                    ));
                }
            }
            _ => {}
        }
    }
}

// ---- lists and deliveries ----

const SOURCES: [(ListKind, &str, &str); 3] = [
    (ListKind::Room, "r", "room:r"),
    (ListKind::Group, "g", "group:g"),
    (ListKind::User, "u", "blocklist:u"),
];

/// One round of churn on every list: each account is removed, or moved to
/// a new end, one time in `odds` each; then fewer than `new_below` new
/// accounts are added. Returns what was removed, as (source, account).
fn churn(
    sim: &Sim,
    rng: &mut StdRng,
    far: i64,
    next_account: &mut u32,
    odds: u32,
    new_below: u32,
) -> Vec<(&'static str, String)> {
    let mut removed = Vec::new();
    for (kind, id, spec) in SOURCES {
        for (a, _) in sim.entries(kind, id) {
            match rng.gen_range(0..odds) {
                0 => {
                    sim.remove(kind, id, &a);
                    removed.push((spec, a));
                }
                1 => sim.upsert(kind, id, &a, far + rng.gen_range(3..9)),
                _ => {}
            }
        }
        for _ in 0..rng.gen_range(0..new_below) {
            *next_account += 1;
            sim.upsert(
                kind,
                id,
                &format!("a{next_account}"),
                far + rng.gen_range(0..3),
            );
        }
    }
    removed
}

/// Arms mutations that, before every later page request of the next
/// `walks` walks (each walk restarting as it sees the shift), move the two
/// front entries to the end: the list keeps shifting under every attempt.
fn shift_storm(sim: &Sim, kind: ListKind, id: &str, walks: usize) {
    let mut order: Vec<(String, i64)> = sim.entries(kind, id);
    if order.len() < 12 {
        return;
    }
    let pages = order.len().div_ceil(10);
    let attempts = bansync::tencent::walk::MAX_SHIFT_RESTARTS as usize + 1;
    for _ in 0..walks * attempts * pages {
        let moved: Vec<(String, i64)> = order.drain(..2).collect();
        order.extend(moved.iter().cloned());
        sim.mutate(Mutation {
            kind,
            id: id.into(),
            at_offset: 1,
            remove: moved.iter().map(|(a, _)| a.clone()).collect(),
            add: moved,
        });
    }
}

/// The accounts the last attempt of the last walk of `id` was served.
fn seen_by_last_attempt(
    served: &[(ListKind, String, u64, Vec<String>)],
    kind: ListKind,
    id: &str,
) -> HashSet<String> {
    let pages: Vec<_> = served
        .iter()
        .filter(|(k, i, _, _)| *k == kind && i == id)
        .collect();
    let start = pages.iter().rposition(|(_, _, o, _)| *o == 0).unwrap_or(0);
    pages[start..]
        .iter()
        .flat_map(|(_, _, _, a)| a.iter().cloned())
        .collect()
}

/// A dispatcher that runs all along, fed by the engine's notices.
struct Delivering {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start_delivering(engine: &mut Engine) -> Delivering {
    let mut notices = std::mem::replace(
        &mut engine.notices,
        tokio::sync::mpsc::unbounded_channel().1,
    );
    let (dtx, drx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(n) = notices.recv().await {
            if let bansync::store::Notice::Delivery(d) = n {
                let _ = dtx.send(d);
            }
        }
    });
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (_ctl, ctl) = tokio::sync::mpsc::unbounded_channel();
    let dispatcher = engine
        .dispatcher()
        .with_rescan_every(Duration::from_millis(200));
    let task = tokio::spawn(async move {
        let _keep = _ctl;
        dispatcher
            .run(drx, ctl, stop_rx, Duration::from_secs(2))
            .await
    });
    Delivering { stop, task }
}

impl Delivering {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// What an operator does from another process while the daemon delivers:
/// `deliveries retry` of every dead delivery, or `replay` of a recent span.
/// Returns the events whose delivery had died (they may arrive late).
fn operator(
    db: &std::path::Path,
    rng: &mut StdRng,
    hook: &bansync::config::WebhookSettings,
) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let dead: Vec<String> = conn
        .prepare(
            "SELECT e.event_id FROM deliveries d JOIN events e ON e.id = d.event WHERE d.state = 1",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let now = Clock::system().now_ms();
    if rng.gen_bool(0.5) {
        bansync::store::Direct::open(db)
            .unwrap()
            .retry_dead(None, &[], now)
            .unwrap();
    } else {
        let since = now - rng.gen_range(0..3_000);
        bansync::store::Direct::open(db)
            .unwrap()
            .replay(hook, since, now)
            .unwrap();
    }
    dead
}

async fn list_trial(seed: u64) -> Trial {
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = Sim::start(1_000_000).await;
    sim.record();
    let mut rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hook = webhook_toml(
        "h",
        &rx.url(),
        "retry_schedule = [\"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\"]\ntimeout = \"500ms\"",
    );
    let path = write_config(
        dir.path(),
        &sim,
        "[sources]\nrooms = [\"r\"]\ngroups = [\"g\"]\nblocklists = [\"u\"]",
        &format!("[sync]\npage_size = 10\ninitial = \"emit\"\n\n{hook}"),
    );
    let db = dir.path().join("bansync.db");
    let far = now() + 30 * 86_400;
    for (kind, id, _) in SOURCES {
        let n = rng.gen_range(0..35);
        let entries: Vec<(String, i64)> = (0..n)
            .map(|i| (format!("a{i}"), far + rng.gen_range(0..3)))
            .collect();
        let refs: Vec<(&str, i64)> = entries.iter().map(|(a, v)| (a.as_str(), *v)).collect();
        sim.set(kind, id, &refs);
    }
    let clock = Clock::adjustable();
    let mut engine = Engine::open_with_clock(load(&path), clock.clone());
    let settings = engine.settings.clone();
    let mut delivering = start_delivering(&mut engine);
    let mut t = Trial::new();
    let mut next_account = 100;
    let mut ended = Ended::new();
    let mut skew_ms = 0i64;
    // Events whose delivery died: they may arrive after later ones.
    let mut died: HashSet<String> = HashSet::new();
    let steps = 8;
    for step in 0..steps {
        let last = step == steps - 1;
        churn(&sim, &mut rng, far, &mut next_account, 10, 4);
        // Some bans end within minutes: expiry, and bansync's clock ahead.
        if rng.gen_bool(0.3) {
            for (kind, id, _) in &SOURCES[..2] {
                next_account += 1;
                sim.upsert(
                    *kind,
                    id,
                    &format!("a{next_account}"),
                    now() + rng.gen_range(20..200),
                );
            }
        }
        sim.clear_faults();
        let mut disk_full = false;
        let mut aimed: Option<usize> = None;
        for (i, (kind, id, _)) in SOURCES.iter().enumerate() {
            if last && *kind != ListKind::User && aimed.is_none() && rng.gen_bool(0.4) {
                // The walk that cannot prove absences, then the lift it missed.
                shift_storm(&sim, *kind, id, 1);
                aimed = Some(i);
                t.faults += 1;
                continue;
            }
            match rng.gen_range(0..11) {
                0 => sim.fault(Fault {
                    target: Some((*id).into()),
                    error_code: Some([100001, 60008, 10002, 30006][rng.gen_range(0..4)]),
                    min_offset: Some(rng.gen_range(0..3) * 10),
                    count: Some(rng.gen_range(1..6)),
                    ..Default::default()
                }),
                1 => sim.fault(Fault {
                    target: Some((*id).into()),
                    error_code: Some([100002, 10004, 30001, 60003][rng.gen_range(0..4)]),
                    count: Some(1),
                    ..Default::default()
                }),
                2 => sim.fault(Fault {
                    target: Some((*id).into()),
                    malformed: Some(
                        [
                            "truncated",
                            "garbage",
                            "wrong_type",
                            "no_cursor",
                            "stuck_cursor",
                            "skip_cursor",
                            "oversize",
                        ][rng.gen_range(0..7)]
                        .into(),
                    ),
                    min_offset: Some(rng.gen_range(0..2) * 10),
                    count: Some(0),
                    ..Default::default()
                }),
                3 => sim.fault(Fault {
                    target: Some((*id).into()),
                    latency_ms: Some(rng.gen_range(20..120)),
                    count: Some(2),
                    ..Default::default()
                }),
                4 | 5 => {
                    let held = sim.entries(*kind, id);
                    if held.len() > 12 {
                        let victims: Vec<String> = (0..rng.gen_range(1..4))
                            .map(|_| held[rng.gen_range(0..10)].0.clone())
                            .collect();
                        sim.mutate(Mutation {
                            kind: *kind,
                            id: (*id).into(),
                            at_offset: 10,
                            remove: victims,
                            add: vec![],
                        });
                    }
                }
                // A list that keeps shifting for several walks.
                6 if *kind != ListKind::User => shift_storm(&sim, *kind, id, rng.gen_range(2..4)),
                _ => continue,
            }
            t.faults += 1;
        }
        if rng.gen_bool(0.1) {
            disk_full = true;
            t.faults += 1;
            engine.store.fill_disk(true).await.unwrap();
        }
        if rng.gen_bool(0.15) {
            t.faults += 1;
            rx.answer(vec![Answer::Status(500)]);
        } else {
            rx.answer(vec![Answer::Status(200)]);
        }
        if rng.gen_bool(0.25) {
            t.faults += 1;
            engine.store.fail_next_reads(rng.gen_range(1..4));
        }
        // bansync's clock jumps: hours ahead or back, or put right.
        if rng.gen_bool(0.15) {
            t.faults += 1;
            let step_ms = if skew_ms != 0 {
                -skew_ms
            } else {
                rng.gen_range(60..7_200) * 1000 * if rng.gen_bool(0.7) { 1 } else { -1 }
            };
            clock.step(step_ms);
            skew_ms += step_ms;
        }
        // An operator re-queues or replays from another process meanwhile.
        let requeue = rng.gen_bool(0.3).then(|| {
            t.faults += 1;
            let (db, hook) = (db.clone(), settings.webhooks[0].clone());
            let mut op_rng = StdRng::seed_from_u64(rng.r#gen());
            tokio::task::spawn_blocking(move || operator(&db, &mut op_rng, &hook))
        });
        if verbose() {
            eprintln!(
                "seed {seed}: step {step}: clock skew {skew_ms} ms, restarts so far, lists {:?}",
                SOURCES
                    .iter()
                    .map(|(k, i, _)| sim.entries(*k, i).len())
                    .collect::<Vec<_>>()
            );
        }
        let _ = sim.take_served();
        for (kind, id, spec) in SOURCES {
            let before = truth(&sim, kind, id, i64::MIN);
            if let (true, Ok(w)) = (verbose(), std::env::var("RELIABILITY_WATCH")) {
                let row = rusqlite::Connection::open(&db).unwrap().query_row(
                    "SELECT e.state, e.value, e.expires_at FROM entries e JOIN sources s ON s.id = e.source_id WHERE s.spec = ?1 AND e.account = ?2",
                    [spec, w.as_str()], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<i64>>(2)?))).ok();
                let (faults, mutations) = {
                    let s = sim.state.lock().unwrap();
                    (
                        s.faults
                            .iter()
                            .map(|f| format!("{:?}", f.0))
                            .collect::<Vec<_>>(),
                        s.mutations.iter().filter(|m| m.id == id).count(),
                    )
                };
                eprintln!(
                    "seed {seed}: step {step}: {spec}: before the walk {w} is stored as {row:?}, listed {:?}; clock {}; list len {}; faults {faults:?}; mutations {mutations}",
                    before.get(&w),
                    clock.now_s(),
                    before.len()
                );
            }
            let n = events_of(&db, spec).len();
            let s: bansync::source::SourceSpec = spec.parse().unwrap();
            let r = engine.syncer.sync_source(&s, false, &mut |_| {}).await;
            let after = truth(&sim, kind, id, i64::MIN);
            let new = &events_of(&db, spec)[n..];
            if verbose() {
                if let Ok(w) = std::env::var("RELIABILITY_WATCH") {
                    let served = sim.take_served();
                    let pages: Vec<_> = served
                        .iter()
                        .filter(|(k, i, _, _)| *k == kind && i == id)
                        .map(|(_, _, o, a)| (*o, a.contains(&w), a.len()))
                        .collect();
                    eprintln!(
                        "seed {seed}: step {step}: {spec} pages (offset, has {w}, n): {pages:?}"
                    );
                }
                if let Ok(r) = &r {
                    eprintln!("seed {seed}: step {step}: {spec} walked: restarts {} unchanged {} error {:?}; listed {:?}", r.restarts, r.report.unchanged, r.error.as_ref().map(|e| e.to_string()),
                        std::env::var("RELIABILITY_WATCH").ok().map(|w| (before.contains_key(&w) as u8 + after.contains_key(&w) as u8 * 2,
                        count(&db, &format!("SELECT COALESCE(MAX(e.state + 1), 0) FROM entries e JOIN sources s ON s.id = e.source_id WHERE s.spec = '{spec}' AND e.account = '{w}'")))));
                }
                for e in new {
                    eprintln!(
                        "seed {seed}: step {step}: {spec} {} {} {}",
                        e.1, e.2, e.3["data"]["banned_until"]
                    );
                }
            }
            check_walk_events(new, &before, &after, spec, seed, &mut t.violations);
        }
        let _ = engine.expiry().try_execute().await;
        note_ended(&sim, &clock, &mut ended);
        if let Some(op) = requeue {
            died.extend(op.await.unwrap());
        }
        if let Some(i) = aimed {
            // Unban exactly what the unstable walk skipped.
            let (kind, id, _) = SOURCES[i];
            let seen = seen_by_last_attempt(&sim.take_served(), kind, id);
            for (a, _) in sim.entries(kind, id) {
                if !seen.contains(&a) {
                    sim.remove(kind, id, &a);
                }
            }
        }
        if disk_full {
            engine.store.fill_disk(false).await.unwrap();
        }
        if !last && rng.gen_bool(0.2) {
            t.faults += 1;
            // Restart: a new engine (and dispatcher) on the same store.
            delivering.stop().await;
            drop(engine);
            engine = Engine::open_with_clock(load(&path), clock.clone());
            delivering = start_delivering(&mut engine);
        }
        if rng.gen_bool(0.1) {
            t.faults += 1;
            rx.refuse().await;
            rx.resume().await;
        }
    }
    // Faults stop, the clock is put right; clean walks confirm every absence.
    sim.clear_faults();
    if verbose() {
        eprintln!("seed {seed}: final phase: clock back by {skew_ms} ms");
    }
    clock.step(-skew_ms);
    rx.answer(vec![Answer::Status(200)]);
    for _ in 0..2 {
        for (_, _, spec) in SOURCES {
            let s: bansync::source::SourceSpec = spec.parse().unwrap();
            let r = engine
                .syncer
                .sync_source(&s, false, &mut |_| {})
                .await
                .unwrap();
            if r.failed() {
                t.violations.push(format!(
                    "seed {seed}: {spec}: a clean walk failed: {:?}",
                    r.error
                ));
            }
        }
    }
    let _ = engine.expiry().try_execute().await;
    let mut all_events = HashSet::new();
    for (kind, id, spec) in SOURCES {
        let events = events_of(&db, spec);
        all_events.extend(
            events
                .iter()
                .map(|e| e.3["data"]["id"].as_str().unwrap().to_string()),
        );
        let mut view = replay(&events, &mut t.violations, &format!("seed {seed}: {spec}"));
        let truth = truth(&sim, kind, id, clock.now_s());
        // A ban whose end bansync's clock passed while it was listed may be
        // reported ended, or (seen again once the clock was put right)
        // reported added: either way with its own end.
        view.retain(|a, v| truth.contains_key(a) || !ended.contains(&(spec, a.clone(), *v)));
        let truth: BTreeMap<String, i64> = truth
            .into_iter()
            .filter(|(a, v)| view.contains_key(a) || !ended.contains(&(spec, a.clone(), *v)))
            .collect();
        if view != truth {
            let lost: Vec<_> = truth.keys().filter(|a| !view.contains_key(*a)).collect();
            let invented: Vec<_> = view.keys().filter(|a| !truth.contains_key(*a)).collect();
            if verbose() {
                for a in invented.iter().chain(&lost) {
                    let mine: Vec<_> = events
                        .iter()
                        .filter(|e| &&e.2 == a)
                        .map(|e| {
                            (
                                e.1.clone(),
                                e.3["data"]["banned_until"].clone(),
                                e.3["timestamp"].clone(),
                            )
                        })
                        .collect();
                    eprintln!(
                        "seed {seed}: {spec}: {a}: events {mine:?}; listed {:?}; ended {:?}; clock {}",
                        sim.entries(kind, id).iter().find(|(x, _)| x == *a),
                        ended
                            .iter()
                            .filter(|(s, x, _)| *s == spec && x == *a)
                            .collect::<Vec<_>>(),
                        clock.now_s()
                    );
                }
            }
            t.violations.push(format!(
                "seed {seed}: {spec}: events give {} entries, the list holds {} (not reported gone: {invented:?}; not reported: {lost:?})",
                view.len(),
                truth.len()
            ));
        }
    }
    // Every owed delivery is made by the dispatcher running since the last
    // start, and in order: dead ones re-queued, as an operator would.
    died.extend(operator_retry_all(&db));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count(&db, "SELECT COUNT(*) FROM deliveries") > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if count(&db, "SELECT COUNT(*) FROM deliveries WHERE state = 1") > 0 {
            died.extend(operator_retry_all(&db));
        }
    }
    delivering.stop().await;
    let received = rx.received();
    let ids: HashSet<String> = received.iter().map(|r| r.id.clone()).collect();
    let owed = count(&db, "SELECT COUNT(*) FROM deliveries");
    if ids != all_events || owed != 0 {
        t.violations.push(format!(
            "seed {seed}: {} events, {} delivered, {owed} still owed (not delivered: {:?})",
            all_events.len(),
            ids.len(),
            all_events.difference(&ids).take(5).collect::<Vec<_>>()
        ));
    }
    check_order(&received, &died, seed, &mut t.violations);
    t
}

/// `deliveries retry` of every dead delivery; returns their events.
fn operator_retry_all(db: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let dead: Vec<String> = conn
        .prepare(
            "SELECT e.event_id FROM deliveries d JOIN events e ON e.id = d.event WHERE d.state = 1",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    bansync::store::Direct::open(db)
        .unwrap()
        .retry_dead(None, &[], Clock::system().now_ms())
        .unwrap();
    dead
}

/// First arrivals per source come in `seq` order, except events whose
/// delivery died (the source's later events went on without them).
fn check_order(got: &[Received], died: &HashSet<String>, seed: u64, violations: &mut Vec<String>) {
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut seen = HashSet::new();
    for r in got {
        if !seen.insert(r.id.clone()) || died.contains(&r.id) {
            continue;
        }
        let source = r.body["data"]["source"].as_str().unwrap_or("?").to_string();
        let seq = r.body["data"]["seq"].as_i64().unwrap_or(0);
        let prev = last.entry(source.clone()).or_insert(0);
        if seq < *prev {
            violations.push(format!(
                "seed {seed}: {source}: seq {seq} first arrived after seq {prev}"
            ));
        }
        *prev = seq.max(*prev);
    }
}

// ---- propagation ----

const MIRROR_SOURCES: [(ListKind, &str, &str); 5] = [
    (ListKind::Group, "g1", "group:g1"),
    (ListKind::Group, "g2", "group:g2"),
    (ListKind::Room, "r1", "room:r1"),
    (ListKind::Room, "r2", "room:r2"),
    (ListKind::Room, "r3", "room:r3"),
];

#[derive(Debug, Clone)]
struct Rule {
    from: Vec<usize>,
    to: Vec<usize>,
    lift: bool,
}

/// `k` distinct sources, none of `not`.
fn pick_sources(rng: &mut StdRng, k: usize, not: &[usize]) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    while out.len() < k {
        let i = rng.gen_range(0..MIRROR_SOURCES.len());
        if !out.contains(&i) && !not.contains(&i) {
            out.push(i);
        }
    }
    out
}

fn random_rules(rng: &mut StdRng) -> Vec<Rule> {
    (0..rng.gen_range(2..=4))
        .map(|_| {
            let k = 1 + usize::from(rng.gen_bool(0.3));
            let from = pick_sources(rng, k, &[]);
            let k = 1 + usize::from(rng.gen_bool(0.4));
            let to = pick_sources(rng, k, &from);
            Rule {
                from,
                to,
                lift: rng.gen_bool(0.75),
            }
        })
        .collect()
}

fn rules_toml(rules: &[Rule]) -> String {
    let specs = |v: &[usize]| {
        v.iter()
            .map(|i| format!("\"{}\"", MIRROR_SOURCES[*i].2))
            .collect::<Vec<_>>()
            .join(", ")
    };
    rules
        .iter()
        .map(|r| {
            format!(
                "[[propagate]]\nfrom = [{}]\nto = [{}]\nlift = {}\n",
                specs(&r.from),
                specs(&r.to),
                r.lift
            )
        })
        .collect()
}

/// A moderator's ban of an account at a source: from which tick, to which
/// (if it stopped), and its end. Ticks order what happened whatever the
/// host clock does.
type Held = (u64, Option<u64>, i64);

struct Moderators {
    /// (source, account) → the moderator's bans over time.
    history: HashMap<(usize, String), Vec<Held>>,
    /// Actions at sources that are origins of some rule.
    origin_actions: usize,
}

impl Moderators {
    fn set(&mut self, src: usize, account: &str, end: Option<i64>, tick: u64) {
        let h = self.history.entry((src, account.to_string())).or_default();
        if let Some(last) = h.last_mut()
            && last.1.is_none()
        {
            last.1 = Some(tick);
        }
        if let Some(end) = end {
            h.push((tick, None, end));
        }
    }
}

/// One moderator action somewhere: ban, extend or lift.
fn moderate(sim: &Sim, rng: &mut StdRng, mods: &mut Moderators, rules: &[Rule], clock: &Clock) {
    let src = rng.gen_range(0..MIRROR_SOURCES.len());
    let (kind, id, _) = MIRROR_SOURCES[src];
    let account = format!("x{}", rng.gen_range(0..6));
    let now = clock.now_s();
    if rules.iter().any(|r| r.from.contains(&src)) {
        mods.origin_actions += 1;
    }
    if rng.gen_bool(0.35) {
        sim.remove(kind, id, &account);
        mods.set(src, &account, None, sim.tick());
        return;
    }
    // A moderator's end that equals one bansync set is, by the contract,
    // bansync's: moderators here pick ends at least a minute from any end
    // already chosen for the account.
    let taken: Vec<i64> = mods
        .history
        .iter()
        .filter(|((_, a), _)| *a == account)
        .flat_map(|(_, h)| h.iter().map(|x| x.2))
        .chain(
            MIRROR_SOURCES
                .iter()
                .filter_map(|(k, i, _)| sim.entry(*k, i, &account).map(|e| e.0)),
        )
        .collect();
    let mut end = now + rng.gen_range(120..7_200);
    while taken.iter().any(|t| (t - end).abs() < 60) {
        end += 61;
    }
    sim.upsert(kind, id, &account, end);
    mods.set(src, &account, Some(end), sim.tick());
}

async fn mirror_trial(seed: u64) -> Trial {
    let mut rng = StdRng::seed_from_u64(seed);
    // One host: the vendor's clock and bansync's move together. A step
    // waits until no request is held (no host steps a clock mid-request
    // and the vendor computes its ends with the time it acts).
    let clock = Clock::adjustable();
    let settle = |sim: &Sim| {
        let state = sim.state.clone();
        async move {
            while state.lock().unwrap().holding > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let sim = Sim::start(1_000_000).await;
    sim.state.lock().unwrap().clock = clock.clone();
    sim.record();
    let rules = random_rules(&mut rng);
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &sim,
        "[sources]\ngroups = [\"g1\", \"g2\"]\nrooms = [\"r1\", \"r2\", \"r3\"]",
        &format!(
            "[sync]\npage_size = 10\ninitial = \"emit\"\n\n{}",
            rules_toml(&rules)
        ),
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[tencent]\n", "[tencent]\ntimeout = \"1s\"\n");
    std::fs::write(&path, text).unwrap();
    for (kind, id, _) in MIRROR_SOURCES {
        sim.set(kind, id, &[]);
    }
    let db = dir.path().join("bansync.db");
    let engine = Engine::open_with_clock(load(&path), clock.clone());
    let mut t = Trial::new();
    let mut mods = Moderators {
        history: HashMap::new(),
        origin_actions: 0,
    };
    let ban_apis = [
        "ban_member",
        "ban_group_member",
        "unban_member",
        "unban_group_member",
    ];
    // Step start times: a mirror may follow a moderator's ban that was
    // lifted within the last two steps (the lift is confirmed a walk later).
    let mut step_starts = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..8 {
        step_starts.push(sim.tick());
        sim.clear_faults();
        for _ in 0..rng.gen_range(0..3) {
            let api = ban_apis[rng.gen_range(0..4)];
            let f = match rng.gen_range(0..5) {
                // Slow: acts, then answers after the client gave up.
                0 => Fault {
                    latency_ms: Some(rng.gen_range(500..1_800)),
                    ..Default::default()
                },
                // Late: acts seconds after the client gave up.
                1 => Fault {
                    hold_ms: Some(rng.gen_range(1_200..7_000)),
                    ..Default::default()
                },
                2 => Fault {
                    error_code: Some([100001, 10002, 60008][rng.gen_range(0..3)]),
                    count: Some(rng.gen_range(1..4)),
                    ..Default::default()
                },
                3 => Fault {
                    error_code: Some([100002, 10004][rng.gen_range(0..2)]),
                    ..Default::default()
                },
                _ => Fault {
                    http_status: Some(502),
                    ..Default::default()
                },
            };
            sim.fault(Fault {
                api: Some(api.into()),
                count: f.count.or(Some(rng.gen_range(1..3))),
                ..f
            });
            t.faults += 1;
        }
        // Moderators act while walks and propagation passes run.
        let mut mod_rng = StdRng::seed_from_u64(rng.r#gen());
        let actions = rng.gen_range(1..5);
        let moderating = async {
            for _ in 0..actions {
                tokio::time::sleep(Duration::from_millis(mod_rng.gen_range(0..300))).await;
                moderate(&sim, &mut mod_rng, &mut mods, &rules, &clock);
            }
        };
        let walking = async {
            for _ in 0..2 {
                for (_, _, spec) in MIRROR_SOURCES {
                    let s: bansync::source::SourceSpec = spec.parse().unwrap();
                    let _ = engine.syncer.sync_source(&s, false, &mut |_| {}).await;
                }
            }
        };
        let passing = async {
            for _ in 0..3 {
                let _ = engine.propagator().try_execute().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::join!(moderating, walking, passing);
        if verbose() {
            eprintln!("seed {seed}: step done at {:?}", started.elapsed());
        }
        let _ = engine.expiry().try_execute().await;
        // The host clock steps now and then (between requests).
        if rng.gen_bool(0.2) {
            t.faults += 1;
            settle(&sim).await;
            clock.step(rng.gen_range(-20_000..90_000));
        }
    }
    // Quiet: no more faults or moderators; retries come due; run until
    // nothing is queued or awaiting confirmation and nothing new happens.
    sim.clear_faults();
    settle(&sim).await;
    let quiet_from = sim.tick();
    let mut quiet_rounds = 0;
    // Bans keep ending as the clock moves on; anything else is news.
    let news = "SELECT COUNT(*) FROM events WHERE type != 'ban.expired'";
    for _ in 0..40 {
        clock.step(35_000);
        let before = count(&db, news);
        for (_, _, spec) in MIRROR_SOURCES {
            let s: bansync::source::SourceSpec = spec.parse().unwrap();
            let _ = engine.syncer.sync_source(&s, false, &mut |_| {}).await;
        }
        let _ = engine.propagator().try_execute().await;
        let _ = engine.expiry().try_execute().await;
        let queued = count(&db, "SELECT COUNT(*) FROM propagations WHERE state = 0");
        let absent = count(&db, "SELECT COALESCE(SUM(pending_absent), 0) FROM sources");
        let after = count(&db, news);
        if verbose() {
            eprintln!(
                "seed {seed}: quiet round at {:?}: {queued} queued, {absent} absent, {} new events",
                started.elapsed(),
                after - before
            );
        }
        if queued == 0 && absent == 0 && after == before {
            quiet_rounds += 1;
            if quiet_rounds == 2 {
                break;
            }
        } else {
            quiet_rounds = 0;
        }
    }
    if quiet_rounds < 2 {
        t.violations
            .push(format!("seed {seed}: propagation never settled"));
    }
    let now = clock.now_s();
    // 1. Nothing lifted, shortened or restored that bansync did not set.
    t.raced = sim.raced();
    for a in sim.audit() {
        t.violations.push(format!("seed {seed}: {a}"));
    }
    // 2. Every ban bansync set has a moderator's ban at an origin behind it
    //    (or gives a moderator's own end back): no echo, no mirror from a mirror.
    let spec_index = |kind: ListKind, id: &str| {
        MIRROR_SOURCES
            .iter()
            .position(|(k, i, _)| *k == kind && *i == id)
            .unwrap()
    };
    for c in sim.rest_changes() {
        let (Some(end), SetBy::Rest { .. }) = (c.end, c.by) else {
            continue;
        };
        let target = spec_index(c.kind, &c.id);
        // A lift is known once a second walk confirms it: a mirror may
        // follow a ban lifted within the two steps before its request
        // (the quiet phase counts as a step).
        // Judged by when the request arrived (what bansync could know when
        // it sent it), not when a slow vendor acted on it.
        let step = step_starts
            .iter()
            .rposition(|s| *s <= c.arrived)
            .unwrap_or(0);
        let lag_from = if c.arrived >= quiet_from {
            step_starts[step_starts.len().saturating_sub(1)]
        } else {
            step_starts[step.saturating_sub(2)]
        };
        let behind = rules.iter().filter(|r| r.to.contains(&target)).any(|r| {
            r.from.iter().any(|o| {
                mods.history.get(&(*o, c.account.clone())).is_some_and(|h| {
                    h.iter().any(|(from, to, u)| {
                        *from <= c.arrived
                            && to.is_none_or(|to| to >= lag_from)
                            && end - 10 <= *u
                            && *u <= end
                    })
                })
            })
        });
        if !behind {
            let history: Vec<_> = mods
                .history
                .iter()
                .filter(|((_, a), _)| *a == c.account)
                .map(|((s, _), h)| (MIRROR_SOURCES[*s].2, h.clone()))
                .collect();
            let requests: Vec<_> = sim
                .rest_changes()
                .into_iter()
                .filter(|r| r.account == c.account)
                .map(|r| (r.tick, r.kind, r.id, r.end, r.by))
                .collect();
            t.violations.push(format!(
                "seed {seed}: bansync banned {} in {:?} {} until {end} at {} with no moderator's ban at an origin behind it \
                 (rules {rules:?}; moderators: {history:?}; bansync: {requests:?}; steps from {step_starts:?})",
                c.account, c.kind, c.id, c.tick
            ));
        }
    }
    // 3. No mirror left after its origin's lift once quiet (where every
    //    rule into the target lifts), unless bansync reported that the
    //    target refused it (`propagation.failed`): the consumer was told.
    let reported_failed: HashSet<(String, String)> = MIRROR_SOURCES
        .iter()
        .flat_map(|(_, _, spec)| events_of(&db, spec))
        .filter(|e| e.1 == "propagation.failed")
        .map(|e| {
            (
                e.3["data"]["target"].as_str().unwrap_or("").to_string(),
                e.2.clone(),
            )
        })
        .collect();
    for (ti, (kind, id, spec)) in MIRROR_SOURCES.iter().enumerate() {
        let into: Vec<&Rule> = rules.iter().filter(|r| r.to.contains(&ti)).collect();
        if into.is_empty() || !into.iter().all(|r| r.lift) {
            continue;
        }
        for (account, end) in sim.entries(*kind, id) {
            let Some((_, SetBy::Rest { .. })) = sim.entry(*kind, id, &account) else {
                continue;
            };
            let origin_holds = into.iter().flat_map(|r| r.from.iter()).any(|o| {
                let (k, i, _) = MIRROR_SOURCES[*o];
                sim.entry(k, i, &account).is_some_and(|(e, _)| e > now)
            });
            if end > now + 10
                && !origin_holds
                && !reported_failed.contains(&(spec.to_string(), account.clone()))
            {
                t.violations.push(format!(
                    "seed {seed}: {spec}: bansync's mirror of {account} (until {end}) left after its origin's ban was lifted"
                ));
            }
        }
    }
    // 4. No call storm.
    let requests: u64 = [
        "live_engine_http_srv/ban_member",
        "live_engine_http_srv/unban_member",
        "group_open_http_svc/ban_group_member",
        "group_open_http_svc/unban_group_member",
    ]
    .iter()
    .map(|a| sim.calls(a))
    .sum();
    let bound = 2 * 6 * 4 * mods.origin_actions as u64 + 12;
    if requests > bound {
        t.violations.push(format!(
            "seed {seed}: {requests} ban and unban requests for {} moderator actions at origins (bound {bound})",
            mods.origin_actions
        ));
    }
    if verbose() && !t.violations.is_empty() {
        let conn = rusqlite::Connection::open(&db).unwrap();
        eprintln!("seed {seed}: rules {rules:?}");
        let mut h: Vec<_> = mods.history.iter().collect();
        h.sort_by_key(|((s, a), _)| (a.clone(), *s));
        for ((s, a), h) in h {
            eprintln!(
                "seed {seed}: moderators at {} for {a}: {h:?}",
                MIRROR_SOURCES[*s].2
            );
        }
        for c in sim.rest_changes() {
            eprintln!(
                "seed {seed}: bansync request: tick {} {:?} {} {} {:?} {:?}",
                c.tick, c.kind, c.id, c.account, c.end, c.by
            );
        }
        let mut stmt = conn.prepare("SELECT p.id, s.spec, p.target, p.account, p.action, p.banned_until, p.state, p.attempts, p.error_info FROM propagations p JOIN sources s ON s.id = p.origin_source_id ORDER BY p.id").unwrap();
        for row in stmt
            .query_map([], |r| {
                Ok(format!(
                    "{:?}",
                    (
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Option<i64>>(5)?,
                        r.get::<_, i64>(6)?,
                        r.get::<_, i64>(7)?,
                        r.get::<_, Option<String>>(8)?
                    )
                ))
            })
            .unwrap()
        {
            eprintln!("seed {seed}: job {}", row.unwrap());
        }
        let mut stmt = conn.prepare("SELECT target, account, origin_source, banned_until, state, windows, current_windows, prior_until, restore_window, acted_s FROM mirrors").unwrap();
        for row in stmt
            .query_map([], |r| {
                Ok(format!(
                    "{:?}",
                    (
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, Option<i64>>(7)?,
                        r.get::<_, Option<String>>(8)?,
                        r.get::<_, Option<i64>>(9)?
                    )
                ))
            })
            .unwrap()
        {
            eprintln!("seed {seed}: mirror {}", row.unwrap());
        }
        for (_, _, spec) in MIRROR_SOURCES {
            for e in events_of(&db, spec) {
                eprintln!(
                    "seed {seed}: event {spec} #{} {} {} {} {}",
                    e.0, e.1, e.2, e.3["data"]["banned_until"], e.3["data"]["target"]
                );
            }
        }
    }
    // 5. The events of every source agree with its list.
    for (kind, id, spec) in MIRROR_SOURCES {
        let events = events_of(&db, spec);
        let view = replay(&events, &mut t.violations, &format!("seed {seed}: {spec}"));
        let truth = truth(&sim, kind, id, now);
        if view != truth {
            t.violations.push(format!(
                "seed {seed}: {spec}: events give {view:?}, the list holds {truth:?}"
            ));
        }
    }
    t
}

// ---- running trials ----

/// Runs `trials` trials from seed `base`, `parallel` at a time; prints and
/// stores the summary line (`what`: "faults injected", "kills"), fails on
/// any violation, and returns the faults injected.
async fn run_trials<F, Fut>(
    name: &str,
    file: &str,
    what: &str,
    trials: u64,
    base: u64,
    parallel: usize,
    trial: F,
) -> usize
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Trial> + Send + 'static,
{
    let started = std::time::Instant::now();
    let (mut faults, mut violations, mut raced) = (0, Vec::new(), 0);
    let mut set = tokio::task::JoinSet::new();
    let mut seeds = (0..trials).map(|i| base + i);
    for s in seeds.by_ref().take(parallel) {
        set.spawn(trial(s));
    }
    while let Some(t) = set.join_next().await {
        let t = t.unwrap();
        faults += t.faults;
        raced += t.raced;
        violations.extend(t.violations);
        if let Some(s) = seeds.next() {
            set.spawn(trial(s));
        }
    }
    let races = if raced > 0 {
        format!(" ({raced} races with moderators acting after bansync's last read: not counted)")
    } else {
        String::new()
    };
    let mut summary = format!(
        "{name}: {trials} trials, {faults} {what}, {} violations{races} in {:.1}s (seeds {base}..{})\n",
        violations.len(),
        started.elapsed().as_secs_f64(),
        base + trials
    );
    for v in violations.iter().take(20) {
        summary.push_str(&format!("  {v}\n"));
    }
    print!("{summary}");
    // cargo test shows a passing test's output only with --nocapture; CI
    // prints this file after the run, so the summary is in every CI log.
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(file),
        &summary,
    );
    assert!(
        violations.is_empty(),
        "{} invariant violations",
        violations.len()
    );
    faults
}

/// `RELIABILITY_VERBOSE=1`: trials say how they progress.
fn verbose() -> bool {
    std::env::var_os("RELIABILITY_VERBOSE").is_some()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|n| n.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_trials_keep_every_invariant() {
    let trials = env_u64("RELIABILITY_TRIALS").unwrap_or(200);
    let base = env_u64("RELIABILITY_SEED").unwrap_or(20261121);
    let faults = run_trials(
        "reliability",
        "reliability-summary.txt",
        "faults injected",
        trials,
        base,
        8,
        list_trial,
    )
    .await;
    assert!(
        faults >= trials as usize,
        "the trials must actually inject faults"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagation_trials_keep_every_invariant() {
    let trials = env_u64("RELIABILITY_MIRROR_TRIALS").unwrap_or(40);
    let base = env_u64("RELIABILITY_SEED").unwrap_or(20261122);
    let faults = run_trials(
        "reliability (propagation)",
        "reliability-mirror-summary.txt",
        "faults injected",
        trials,
        base,
        6,
        mirror_trial,
    )
    .await;
    assert!(faults >= trials as usize, "the trials must inject faults");
}

/// One trial of real SIGKILLs against the binary.
async fn kill_trial(seed: u64) -> Trial {
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = Sim::start(1_000_000).await;
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bansync.db");
    let hook = webhook_toml(
        "h",
        &rx.url(),
        "retry_schedule = [\"50ms\", \"50ms\", \"50ms\", \"50ms\", \"50ms\"]\ntimeout = \"1s\"",
    );
    let path = write_config(
        dir.path(),
        &sim,
        "[sources]\nrooms = [\"r\"]\ngroups = [\"g\"]\nblocklists = [\"u\"]",
        &format!(
            "[sync]\npage_size = 10\ninitial = \"emit\"\ninterval = \"1s\"\nconfirm_delay = \"200ms\"\n\n[http]\nlisten = \"off\"\n\n{hook}"
        ),
    );
    let far = now() + 30 * 86_400;
    let mut next_account = 0;
    // Accounts churn has removed at least once: only these may be lifted.
    let mut removed: HashSet<(&str, String)> = HashSet::new();
    let start = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_bansync"))
            .args(["run", "--config"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("bansync starts")
    };
    let mut t = Trial::new();
    removed.extend(churn(&sim, &mut rng, far, &mut next_account, 8, 12));
    for _ in 0..rng.gen_range(3..6) {
        let mut child = start();
        // Let it walk, commit and deliver for a while, churning meanwhile.
        let life = Duration::from_millis(rng.gen_range(50..1800));
        tokio::time::sleep(life / 2).await;
        removed.extend(churn(&sim, &mut rng, far, &mut next_account, 8, 12));
        tokio::time::sleep(life / 2).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        t.faults += 1;
    }
    // Lists stop changing; a last run confirms every absence and delivers.
    let mut child = start();
    let walks_at = |spec: &str| {
        count(
            &db,
            &format!("SELECT walks FROM sources WHERE spec = '{spec}' AND pending_absent = 0"),
        )
    };
    let base: Vec<i64> = SOURCES.iter().map(|(_, _, s)| walks_at(s)).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let walked = SOURCES
            .iter()
            .zip(&base)
            .all(|((_, _, s), b)| walks_at(s) >= b + 3);
        let owed = count(&db, "SELECT COUNT(*) FROM deliveries");
        let events = count(&db, "SELECT COUNT(*) FROM events");
        if walked && owed == 0 && rx.received().len() as i64 >= events {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            t.violations.push(format!(
                "seed {seed}: the last run did not settle ({owed} deliveries owed)"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut all_events = HashSet::new();
    for (kind, id, spec) in SOURCES {
        let events = events_of(&db, spec);
        for (_, kind_s, account, body) in &events {
            all_events.insert(body["data"]["id"].as_str().unwrap_or_default().to_string());
            if matches!(kind_s.as_str(), "ban.lifted" | "block.removed")
                && !removed.contains(&(spec, account.clone()))
            {
                t.violations
                    .push(format!("seed {seed}: {spec}: false {kind_s} of {account}"));
            }
        }
        let view = replay(&events, &mut t.violations, spec);
        let truth: BTreeMap<String, i64> = sim.entries(kind, id).into_iter().collect();
        if view != truth {
            t.violations.push(format!(
                "seed {seed}: {spec}: events give {} entries, the list holds {} (lost or invented)",
                view.len(),
                truth.len()
            ));
        }
    }
    let received: HashSet<String> = rx.received().into_iter().map(|r| r.id).collect();
    if received != all_events {
        t.violations.push(format!(
            "seed {seed}: {} events, {} delivered, {} of them not events",
            all_events.len(),
            received.len(),
            received.difference(&all_events).count()
        ));
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_at_random_moments_the_binary_keeps_every_invariant() {
    let trials = env_u64("RELIABILITY_KILL_TRIALS").unwrap_or(12);
    let base = env_u64("RELIABILITY_SEED").unwrap_or_else(|| now() as u64);
    let kills = run_trials(
        "reliability (SIGKILL)",
        "reliability-kill-summary.txt",
        "kills",
        trials,
        base,
        3,
        kill_trial,
    )
    .await;
    assert!(
        kills >= 3 * trials as usize,
        "every trial kills at least three times"
    );
}
