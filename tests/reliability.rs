//! The reliability suite: randomized trials against the simulator with
//! faults, each checked against a model of what should have happened.
//!
//!     cargo test --release --test reliability -- --nocapture
//!     RELIABILITY_TRIALS=2000 cargo test --release --test reliability -- --nocapture
//!
//! Per trial: three sources (a room, a group, a blocklist, paged 10 at a
//! time so walks span pages), a receiver, and eight steps. Each step churns
//! the lists and arms random faults: vendor error codes (transient and
//! fatal) on random pages, latency spikes, malformed or truncated bodies,
//! lists changing between page requests, a full disk (SQLite refuses to
//! grow), a restart, a receiver outage. Then every source is walked.
//! Invariants, checked after every step and at the end:
//! - seq counts each source's events from 1 without gaps;
//! - no invented event: each event is consistent with the events before it
//!   (added only when not held, updated from the value held, removed only
//!   when held) and with the list (added/updated values are on the list);
//! - no false lift: a lifted or removed account is really absent;
//! - nothing lost: once faults stop and absences are confirmed, replaying
//!   the events gives exactly the lists;
//! - every owed delivery is made once the receiver is healthy.
//!
//! It prints: trials, faults injected, violations.
//!
//! A second set of trials kills the real binary: `bansync run` walks the
//! three sources every second while the lists churn and is SIGKILLed at
//! random moments (mid-walk, mid-commit, mid-delivery), then restarted.
//! The final event log and deliveries must keep the same invariants.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bansync::sim::{Fault, ListKind, Mutation};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SOURCES: [(ListKind, &str, &str); 3] = [
    (ListKind::Room, "r", "room:r"),
    (ListKind::Group, "g", "group:g"),
    (ListKind::User, "u", "blocklist:u"),
];

struct Trial {
    faults: usize,
    violations: Vec<String>,
}

/// The consumer's view, rebuilt from the events: account → value.
fn replay(
    events: &[(i64, String, String, serde_json::Value)],
    violations: &mut Vec<String>,
    source: &str,
) -> BTreeMap<String, i64> {
    let mut view = BTreeMap::new();
    let mut expected_seq = 1;
    for (seq, kind, account, body) in events {
        if *seq != expected_seq {
            violations.push(format!("{source}: seq {seq} where {expected_seq} was due"));
        }
        expected_seq = seq + 1;
        let d = &body["data"];
        let value = d["banned_until"].as_i64().or(d["blocked_at"].as_i64());
        match kind.as_str() {
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
            "ban.lifted" | "block.removed" | "ban.expired" if view.remove(account).is_none() => {
                violations.push(format!("{source}: {kind} {account} not held (invented)"));
            }
            _ => {}
        }
    }
    view
}

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

async fn trial(seed: u64) -> Trial {
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = Sim::start(1_000_000).await;
    let mut rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hook = webhook_toml(
        "h",
        &rx.url(),
        "retry_schedule = [\"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\", \"20ms\"]\ntimeout = \"500ms\"",
    );
    let path = write_config(
        dir.path(),
        &sim,
        "[sources]\nrooms = [\"r\"]\ngroups = [\"g\"]\nblocklists = [\"u\"]",
        &format!("[sync]\npage_size = 10\ninitial = \"emit\"\n\n{hook}"),
    );
    let far = now() + 30 * 86_400;
    for (kind, id, _) in SOURCES {
        let n = rng.gen_range(0..35);
        let entries: Vec<(String, i64)> = (0..n)
            .map(|i| (format!("a{i}"), far + rng.gen_range(0..3)))
            .collect();
        let refs: Vec<(&str, i64)> = entries.iter().map(|(a, v)| (a.as_str(), *v)).collect();
        sim.set(kind, id, &refs);
    }
    let mut engine = Engine::open(load(&path));
    let mut t = Trial {
        faults: 0,
        violations: Vec::new(),
    };
    let mut next_account = 100;
    for _step in 0..8 {
        churn(&sim, &mut rng, far, &mut next_account, 10, 4);
        // Faults.
        sim.clear_faults();
        let mut disk_full = false;
        for (kind, id, _) in SOURCES {
            match rng.gen_range(0..9) {
                0 => sim.fault(Fault {
                    target: Some(id.into()),
                    error_code: Some([100001, 60008, 10002, 30006][rng.gen_range(0..4)]),
                    min_offset: Some(rng.gen_range(0..3) * 10),
                    count: Some(rng.gen_range(1..6)),
                    ..Default::default()
                }),
                1 => sim.fault(Fault {
                    target: Some(id.into()),
                    error_code: Some([100002, 10004, 30001, 60003][rng.gen_range(0..4)]),
                    count: Some(1),
                    ..Default::default()
                }),
                2 => sim.fault(Fault {
                    target: Some(id.into()),
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
                    target: Some(id.into()),
                    latency_ms: Some(rng.gen_range(20..120)),
                    count: Some(2),
                    ..Default::default()
                }),
                4 | 5 => {
                    let held = sim.entries(kind, id);
                    if held.len() > 12 {
                        let victims: Vec<String> = (0..rng.gen_range(1..4))
                            .map(|_| held[rng.gen_range(0..10)].0.clone())
                            .collect();
                        sim.mutate(Mutation {
                            kind,
                            id: id.into(),
                            at_offset: 10,
                            remove: victims,
                            add: vec![],
                        });
                    }
                }
                _ => continue,
            }
            t.faults += 1;
        }
        if rng.gen_bool(0.1) {
            disk_full = true;
            t.faults += 1;
            engine
                .store
                .write(|ctx| {
                    let pages: i64 = ctx.conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
                    ctx.conn
                        .execute_batch(&format!("PRAGMA max_page_count = {pages}"))?;
                    Ok(())
                })
                .await
                .unwrap();
        }
        if rng.gen_bool(0.15) {
            t.faults += 1;
            rx.answer(vec![Answer::Status(500)]);
        } else {
            rx.answer(vec![Answer::Status(200)]);
        }
        // Walk everything; check what was emitted against the lists.
        for (kind, id, spec) in SOURCES {
            let truth: BTreeMap<String, i64> = sim.entries(kind, id).into_iter().collect();
            let before = events_of(&engine.settings.store_path, spec).len();
            let s: bansync::source::SourceSpec = spec.parse().unwrap();
            let _ = engine.syncer.sync_source(&s, false, &mut |_| {}).await;
            let after = events_of(&engine.settings.store_path, spec);
            for (_, kind_s, account, body) in &after[before..] {
                let d = &body["data"];
                let value = d["banned_until"].as_i64().or(d["blocked_at"].as_i64());
                let now_truth: BTreeMap<String, i64> = sim.entries(kind, id).into_iter().collect();
                match kind_s.as_str() {
                    "ban.lifted" | "block.removed"
                        if truth.contains_key(account) && now_truth.contains_key(account) =>
                    {
                        t.violations
                            .push(format!("seed {seed}: {spec}: false {kind_s} of {account}"));
                    }
                    "ban.added" | "ban.updated" | "block.added" | "block.updated" => {
                        let listed = truth.get(account).or(now_truth.get(account)).copied();
                        if listed != value {
                            t.violations.push(format!("seed {seed}: {spec}: {kind_s} {account}={value:?} but the list holds {listed:?}"));
                        }
                    }
                    _ => {}
                }
            }
            // Put back anything a mid-walk mutation removed "temporarily"?
            // No: mutations are real changes; the model reads the lists after.
        }
        if disk_full {
            engine
                .store
                .write(|ctx| {
                    Ok(ctx
                        .conn
                        .execute_batch("PRAGMA max_page_count = 1073741823")?)
                })
                .await
                .unwrap();
        }
        if rng.gen_bool(0.2) {
            t.faults += 1;
            // Restart: a new engine on the same store.
            drop(engine);
            engine = Engine::open(load(&path));
        }
        if rng.gen_bool(0.1) {
            t.faults += 1;
            rx.refuse().await;
            rx.resume().await;
        }
    }
    // Faults stop; two clean walks confirm every absence.
    sim.clear_faults();
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
    let mut all_events = 0;
    for (kind, id, spec) in SOURCES {
        let events = events_of(&engine.settings.store_path, spec);
        all_events += events.len();
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
    // Every owed delivery is made.
    let mut notices = std::mem::replace(
        &mut engine.notices,
        tokio::sync::mpsc::unbounded_channel().1,
    );
    let (dtx, drx) = tokio::sync::mpsc::unbounded_channel();
    while let Ok(n) = notices.try_recv() {
        if let bansync::store::Notice::Delivery(d) = n {
            let _ = dtx.send(d);
        }
    }
    // dtx stays alive: a closed notice channel means "shut down" to the dispatcher.
    let db = engine.settings.store_path.clone();
    let dispatcher = engine.dispatcher();
    let (_ctl, ctl) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(dispatcher.with_rescan_every(Duration::from_millis(50)).run(
        drx,
        ctl,
        stop,
        Duration::from_secs(2),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while count(&db, "SELECT COUNT(*) FROM deliveries") > 0
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let _ = task.await;
    drop(dtx);
    let received: HashSet<String> = rx.received().into_iter().map(|r| r.id).collect();
    if received.len() != all_events || count(&db, "SELECT COUNT(*) FROM deliveries") != 0 {
        t.violations.push(format!(
            "seed {seed}: {} events, {} delivered, {} still owed",
            all_events,
            received.len(),
            count(&db, "SELECT COUNT(*) FROM deliveries")
        ));
    }
    t
}

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
    let (mut faults, mut violations) = (0, Vec::new());
    let mut set = tokio::task::JoinSet::new();
    let mut seeds = (0..trials).map(|i| base + i);
    for s in seeds.by_ref().take(parallel) {
        set.spawn(trial(s));
    }
    while let Some(t) = set.join_next().await {
        let t = t.unwrap();
        faults += t.faults;
        violations.extend(t.violations);
        if let Some(s) = seeds.next() {
            set.spawn(trial(s));
        }
    }
    let mut summary = format!(
        "{name}: {trials} trials, {faults} {what}, {} violations in {:.1}s (seeds {base}..{})\n",
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

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|n| n.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_trials_keep_every_invariant() {
    let trials = env_u64("RELIABILITY_TRIALS").unwrap_or(200);
    let base = env_u64("RELIABILITY_SEED").unwrap_or(20261121);
    // A few trials at a time: each is small and mostly waits on loopback.
    let faults = run_trials(
        "reliability",
        "reliability-summary.txt",
        "faults injected",
        trials,
        base,
        8,
        trial,
    )
    .await;
    assert!(
        faults >= trials as usize,
        "the trials must actually inject faults"
    );
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
    let mut t = Trial {
        faults: 0,
        violations: Vec::new(),
    };
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
