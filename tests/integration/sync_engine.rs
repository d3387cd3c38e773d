//! The sync engine against the simulator: every row of the event table,
//! the safety rules, expiry on time and across restarts.

use std::time::Duration;

use crate::common::*;
use bansync::sim::{ListKind, Mutation};

fn engine(dir: &std::path::Path, sim: &Sim, extra: &str) -> Engine {
    let path = write_config(
        dir,
        sim,
        "[sources]\ngroups = [\"g\"]\nrooms = [\"r\"]\nblocklists = [\"alice\"]",
        extra,
    );
    Engine::open(load(&path))
}

#[tokio::test]
async fn every_ban_and_block_row_of_the_event_table() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &sim, "");
    let t = now();
    sim.set(
        ListKind::Room,
        "r",
        &[("keep", t + 3600), ("lift", t + 3600), ("extend", t + 3600)],
    );
    sim.set(ListKind::User, "alice", &[("bob", 100), ("carol", 200)]);
    // Baseline: the first walk records and emits nothing.
    e.walk("room:r").await;
    e.walk("blocklist:alice").await;
    assert!(e.events("room:r").is_empty());
    assert!(e.events("blocklist:alice").is_empty());

    sim.upsert(ListKind::Room, "r", "new", t + 60);
    sim.upsert(ListKind::Room, "r", "extend", t + 7200);
    sim.remove(ListKind::Room, "r", "lift");
    sim.upsert(ListKind::User, "alice", "dave", 300);
    sim.upsert(ListKind::User, "alice", "bob", 150);
    sim.remove(ListKind::User, "alice", "carol");
    e.walk("room:r").await;
    e.walk("blocklist:alice").await;
    assert_eq!(
        e.events("room:r"),
        [ev("ban.updated", "extend"), ev("ban.added", "new")],
        "no lift on one walk"
    );
    assert_eq!(
        e.events("blocklist:alice"),
        [ev("block.updated", "bob"), ev("block.added", "dave")]
    );
    // The second complete walk confirms the absences.
    e.walk("room:r").await;
    e.walk("blocklist:alice").await;
    assert_eq!(e.events("room:r")[2], ev("ban.lifted", "lift"));
    assert_eq!(e.events("blocklist:alice")[2], ev("block.removed", "carol"));

    let bodies = events_of(&e.settings.store_path, "room:r");
    let updated = &bodies[0].3;
    assert_eq!(updated["data"]["banned_until"], t + 7200);
    assert_eq!(updated["data"]["previous_banned_until"], t + 3600);
    assert_eq!(updated["data"]["app"], 1400000000u64);
    let seqs: Vec<i64> = bodies.iter().map(|b| b.0).collect();
    assert_eq!(seqs, [1, 2, 3], "seq counts a source's events without gaps");
    let block = &events_of(&e.settings.store_path, "blocklist:alice")[0].3;
    assert_eq!(block["data"]["blocked_at"], 150);
    assert_eq!(block["data"]["previous_blocked_at"], 100);

    // Nothing changes: nothing is emitted, and the list is not even re-read.
    let r = e.walk("room:r").await;
    assert!(r.report.unchanged);
    assert_eq!(e.events("room:r").len(), 3);
}

#[tokio::test]
async fn source_unavailable_then_restored_keeps_entries() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &sim, "");
    let t = now();
    sim.set(ListKind::Group, "g", &[("a", t + 3600)]);
    e.walk("group:g").await;
    sim.destroy(ListKind::Group, "g");
    let r = e.walk("group:g").await;
    assert!(!r.failed(), "a gone source is a state, not a failure");
    e.walk("group:g").await;
    assert_eq!(
        e.events("group:g"),
        [ev("source.unavailable", "")],
        "once, and nothing lifted"
    );
    let body = &events_of(&e.settings.store_path, "group:g")[0].3;
    assert_eq!(body["data"]["error_code"], 10010);
    sim.set(ListKind::Group, "g", &[("a", t + 3600), ("b", t + 3600)]);
    e.walk("group:g").await;
    assert_eq!(
        e.events("group:g"),
        [
            ev("source.unavailable", ""),
            ev("source.restored", ""),
            ev("ban.added", "b")
        ]
    );
}

#[tokio::test]
async fn initial_emit_announces_what_is_already_there() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &sim, "[sync]\ninitial = \"emit\"");
    sim.set(ListKind::User, "alice", &[("bob", 1), ("carol", 2)]);
    e.walk("blocklist:alice").await;
    assert_eq!(
        e.events("blocklist:alice"),
        [ev("block.added", "bob"), ev("block.added", "carol")]
    );
}

#[tokio::test]
async fn a_failed_walk_changes_nothing() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &sim, "");
    let t = now();
    sim.fill(ListKind::Room, "r", 250, t + 3600);
    e.walk("room:r").await;
    sim.set(ListKind::Room, "r", &[("only", t + 3600)]);
    sim.fault(bansync::sim::Fault {
        error_code: Some(100002),
        count: Some(0),
        ..Default::default()
    });
    for _ in 0..3 {
        assert!(e.walk("room:r").await.failed());
    }
    assert!(e.events("room:r").is_empty());
    sim.clear_faults();
    e.walk("room:r").await;
    assert_eq!(
        e.events("room:r"),
        [ev("ban.added", "only")],
        "the failures counted as no walk at all"
    );
}

/// Another process (an operator's `bansync deliveries retry`, a backup)
/// holding the write lock past the busy timeout: the walk fails naming the
/// cause, nothing is stored, and the next walk after the lock goes succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_locked_by_another_process_fails_the_walk_cleanly() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &sim, "[sync]\ninitial = \"emit\"");
    sim.set(ListKind::Room, "r", &[("mallory", now() + 3600)]);
    let other = rusqlite::Connection::open(&e.settings.store_path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let spec: bansync::source::SourceSpec = "room:r".parse().unwrap();
    let err = e
        .syncer
        .sync_source(&spec, false, &mut |_| {})
        .await
        .expect_err("no transaction, no walk");
    assert!(
        err.to_string().contains("cannot start a transaction"),
        "the error names the cause: {err}"
    );
    other.execute_batch("COMMIT").unwrap();
    assert!(e.events("room:r").is_empty(), "nothing stored");
    e.walk("room:r").await;
    assert_eq!(e.events("room:r"), [ev("ban.added", "mallory")]);
}

#[tokio::test]
async fn expiry_fires_on_time_without_a_walk_and_once_only() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let mut e = engine(dir.path(), &sim, "");
    let end = now() + 2;
    sim.set(ListKind::Room, "r", &[]);
    e.walk("room:r").await;
    sim.upsert(ListKind::Room, "r", "brief", end);
    e.walk("room:r").await;
    let timer = e.expiry();
    let (wake_tx, wake) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    // Route the writer's notices the way the daemon does.
    let mut notices = std::mem::replace(&mut e.notices, tokio::sync::mpsc::unbounded_channel().1);
    tokio::spawn(async move {
        while let Some(n) = notices.recv().await {
            if matches!(n, bansync::store::Notice::ExpiryChanged) {
                let _ = wake_tx.send(());
            }
        }
    });
    let task = tokio::spawn(timer.run(wake, stop));
    let db = e.settings.store_path.clone();
    eventually(Duration::from_secs(6), "ban.expired", || {
        events_of(&db, "room:r").len() == 2
    })
    .await;
    let detected = bansync::clock::Clock::system().now_ms();
    assert!(
        detected - end * 1000 <= 2000,
        "within 2 s of its end: {} ms late",
        detected - end * 1000
    );
    let expired = &events_of(&db, "room:r")[1];
    assert_eq!(expired.1, "ban.expired");
    assert_eq!(
        expired.3["timestamp"],
        bansync::event::rfc3339(end * 1000),
        "stamped when it took effect"
    );
    // The vendor drops it; walks after that emit nothing more.
    e.walk("room:r").await;
    e.walk("room:r").await;
    assert_eq!(events_of(&db, "room:r").len(), 2);
    let _ = stop_tx.send(true);
    let _ = task.await;
}

#[tokio::test]
async fn bans_that_ended_while_down_are_reported_at_start_up() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    // One clock for the vendor and both runs of the daemon: the ban ends
    // while the daemon is down because the clock is stepped, not because
    // the test waited (a loaded machine made a 1 s margin flaky).
    let clock = bansync::clock::Clock::adjustable();
    sim.share_clock(&clock);
    let open = || {
        let path = write_config(
            dir.path(),
            &sim,
            "[sources]\ngroups = [\"g\"]\nrooms = [\"r\"]\nblocklists = [\"alice\"]",
            "",
        );
        Engine::open_with_clock(load(&path), clock.clone())
    };
    let end = now() + 60;
    {
        let e = open();
        sim.set(ListKind::Group, "g", &[]);
        e.walk("group:g").await;
        sim.upsert(ListKind::Group, "g", "x", end);
        sim.upsert(ListKind::Group, "g", "y", end + 3600);
        e.walk("group:g").await;
        assert_eq!(e.events("group:g").len(), 2);
    } // the "daemon" stops
    clock.step(61_000);
    let e = open();
    let n = e.expiry().try_execute().await.unwrap();
    assert_eq!(n, 1);
    assert_eq!(e.events("group:g")[2], ev("ban.expired", "x"));
    assert_eq!(e.expiry().try_execute().await.unwrap(), 0, "once only");
}

#[tokio::test]
async fn dry_run_stores_nothing() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), &sim, "");
    sim.set(ListKind::Room, "r", &[]);
    e.walk("room:r").await;
    sim.upsert(ListKind::Room, "r", "a", now() + 60);
    let spec = "room:r".parse().unwrap();
    let r = e
        .syncer
        .sync_source(&spec, true, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(r.report.changes.len(), 1, "the dry run finds the change");
    assert!(e.events("room:r").is_empty(), "and stores nothing");
    e.walk("room:r").await;
    assert_eq!(e.events("room:r"), [ev("ban.added", "a")]);
}

/// Entries removed between page requests shift later ones back a page, so
/// a walk skips still-banned accounts. Over many randomized runs, no
/// still-banned account is ever reported lifted.
#[tokio::test]
async fn lists_changing_mid_walk_never_cause_a_false_lift() {
    use rand::{Rng, SeedableRng};
    let sim = Sim::start(1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &sim,
        "[sources]\nrooms = [\"r\"]\ngroups = [\"g\"]",
        "[sync]\npage_size = 10",
    );
    let e = Engine::open(load(&path));
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let t = now() + 86_400;
    let mut skipped_walks = 0;
    for (kind, spec, id) in [
        (ListKind::Room, "room:r", "r"),
        (ListKind::Group, "group:g", "g"),
    ] {
        sim.fill(kind, id, 60, t);
        e.walk(spec).await;
        for round in 0..60 {
            let len = sim.entries(kind, id).len();
            if len < 15 {
                break;
            }
            // Remove 1-3 early entries just before page 2..5 is served.
            let victims: Vec<String> = (0..rng.gen_range(1..=3))
                .map(|_| sim.entries(kind, id)[rng.gen_range(0..10)].0.clone())
                .collect();
            let lifted_for_real = rng.gen_bool(0.3);
            // Fire before a page the walk will ask for: 10..=40, within the list.
            let at = rng.gen_range(1..=((len - 1) / 10).min(4)) as u64 * 10;
            // Either lifted for real, or removed mid-walk and put back right
            // after the walk: a pure offset shift.
            sim.mutate(Mutation {
                kind,
                id: id.into(),
                at_offset: at,
                remove: victims.clone(),
                add: vec![],
            });
            let r = e.walk(spec).await;
            assert!(!r.failed(), "round {round}");
            if !lifted_for_real {
                for v in &victims {
                    sim.upsert(kind, id, v, t);
                }
            }
            skipped_walks += r.restarts as usize;
            // A confirming walk sometimes, as the scheduler does.
            if rng.gen_bool(0.5) {
                e.walk(spec).await;
            }
        }
        sim.clear_faults();
        e.walk(spec).await;
        e.walk(spec).await;
        let held: std::collections::HashSet<String> =
            sim.entries(kind, id).into_iter().map(|(a, _)| a).collect();
        let truly_lifted: Vec<String> = (0..60)
            .map(|i| format!("u{i:05}"))
            .filter(|a| !held.contains(a))
            .collect();
        for (t, a) in e.events(spec) {
            if t == "ban.lifted" {
                assert!(
                    !held.contains(&a),
                    "{spec}: {a} reported lifted while still banned"
                );
                assert!(truly_lifted.contains(&a), "{spec}: {a} was never lifted");
            }
        }
        // Every real lift was reported, once the absence was confirmed.
        let lifted: Vec<String> = e
            .events(spec)
            .into_iter()
            .filter(|(t, _)| t == "ban.lifted")
            .map(|(_, a)| a)
            .collect();
        let mut expected = truly_lifted.clone();
        let mut got = lifted.clone();
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "{spec}: exactly the real lifts, each once");
    }
    assert!(
        skipped_walks > 10,
        "the test must actually shift offsets ({skipped_walks} walks detected a shift and restarted)"
    );
}

/// A list that shifts under every walk: the walk is accepted as unstable,
/// and its absences never lead to a lift.
#[tokio::test]
async fn a_list_that_never_stops_shifting_never_causes_a_lift() {
    let sim = Sim::start(1_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &sim,
        "[sources]\nrooms = [\"r\"]",
        "[sync]\npage_size = 10",
    );
    let e = Engine::open(load(&path));
    let t = now() + 86_400;
    sim.fill(ListKind::Room, "r", 40, t);
    e.walk("room:r").await;
    for round in 0..4 {
        // Before every page request of every attempt: one early entry goes
        // and comes back at the end, so the list shifts while nothing is lifted.
        let front: Vec<String> = sim
            .entries(ListKind::Room, "r")
            .into_iter()
            .take(3)
            .map(|(a, _)| a)
            .collect();
        for attempt in 0..=bansync::tencent::walk::MAX_SHIFT_RESTARTS {
            let victim = front[attempt as usize].clone();
            sim.mutate(Mutation {
                kind: ListKind::Room,
                id: "r".into(),
                at_offset: 9,
                remove: vec![victim.clone()],
                add: vec![(victim, t)],
            });
        }
        let r = e.walk("room:r").await;
        assert_eq!(
            r.restarts,
            bansync::tencent::walk::MAX_SHIFT_RESTARTS,
            "round {round}"
        );
        assert_eq!(
            r.report.pending_absent, 0,
            "an unstable walk marks nothing absent"
        );
    }
    assert!(
        e.events("room:r").iter().all(|(t, _)| t != "ban.lifted"),
        "{:?}",
        e.events("room:r")
    );
}

/// `store.retention`: events older than the limit that nothing needs any
/// more are deleted; one still owed to a webhook is kept; `seq` goes on.
#[tokio::test]
async fn retention_deletes_old_delivered_events_and_keeps_owed_ones() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    // A webhook that takes only room:a's events and is never reachable:
    // room:a's deliveries stay owed; room:b's events owe nothing.
    let hook = webhook_toml("h", "http://127.0.0.1:9/never", "sources = [\"room:a\"]");
    let path = write_config(dir.path(), &sim, "[sources]\nrooms = [\"a\", \"b\"]", &hook);
    let e = Engine::open(load(&path));
    sim.set(ListKind::Room, "a", &[]);
    sim.set(ListKind::Room, "b", &[]);
    e.walk("room:a").await;
    e.walk("room:b").await;
    let t = now() + 365 * 86400;
    sim.upsert(ListKind::Room, "a", "x", t);
    sim.upsert(ListKind::Room, "b", "y", t);
    e.walk("room:a").await;
    e.walk("room:b").await;
    assert_eq!(e.events("room:b"), [ev("ban.added", "y")]);
    // Not old enough yet.
    let keep = Some(Duration::from_secs(90 * 86400));
    assert_eq!(e.retention(keep).try_execute().await.unwrap(), 0);
    // Ninety-one days later.
    e.clock.step(91 * 86400 * 1000);
    assert_eq!(
        e.retention(None).try_execute().await.unwrap(),
        0,
        "\"0\" keeps all"
    );
    assert_eq!(e.retention(keep).try_execute().await.unwrap(), 1);
    assert!(e.events("room:b").is_empty());
    assert_eq!(
        e.events("room:a"),
        [ev("ban.added", "x")],
        "still owed: kept"
    );
    // The source's numbering goes on from where it was.
    sim.upsert(ListKind::Room, "b", "z", t);
    e.walk("room:b").await;
    let seqs: Vec<i64> = events_of(&e.settings.store_path, "room:b")
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(seqs, [2]);
}

/// `replay` of a long history goes in batches (one transaction per 1000
/// events) and queues every event once.
#[tokio::test]
async fn a_long_replay_queues_every_event_once() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let hook = webhook_toml("h", "http://127.0.0.1:9/never", "");
    let path = write_config(
        dir.path(),
        &sim,
        "[sources]\nrooms = [\"r\"]\n[sync]\ninitial = \"emit\"",
        &hook,
    );
    let e = Engine::open(load(&path));
    sim.fill(ListKind::Room, "r", 2500, now() + 3600);
    e.walk("room:r").await;
    assert_eq!(e.events("room:r").len(), 2500);
    let direct = bansync::store::Direct::open(&e.settings.store_path).unwrap();
    let n = direct
        .replay(&e.settings.webhooks[0], 0, now() * 1000)
        .unwrap();
    assert_eq!(n, 2500);
    let conn = rusqlite::Connection::open(&e.settings.store_path).unwrap();
    let (rows, distinct): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT event) FROM deliveries",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, distinct), (5000, 2500));
}
