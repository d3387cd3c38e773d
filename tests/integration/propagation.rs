//! Ban propagation against the simulator: batches of 20 with the remaining
//! duration, no echo through cycles, lifts, and refusals without a storm.

use std::time::Duration;

use crate::common::*;
use bansync::propagate::Propagator;
use bansync::sim::ListKind;

fn engine(dir: &std::path::Path, sim: &Sim, rules: &str) -> Engine {
    let path = write_config(
        dir,
        sim,
        "[sources]\ngroups = [\"g\"]\nrooms = [\"a\", \"b\", \"c\", \"d\"]",
        rules,
    );
    Engine::open(load(&path))
}

fn propagator(e: &Engine) -> Propagator {
    e.propagator()
}

#[tokio::test]
async fn forty_five_bans_mirrored_to_three_rooms_in_batches_of_twenty() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(
        dir.path(),
        &sim,
        "[[propagate]]\nfrom = [\"group:g\"]\nto = [\"room:b\", \"room:c\", \"room:d\"]",
    );
    for r in ["b", "c", "d"] {
        sim.set(ListKind::Room, r, &[]);
    }
    sim.set(ListKind::Group, "g", &[]);
    e.walk("group:g").await;
    let until = now() + 3600;
    for i in 0..45 {
        sim.upsert(ListKind::Group, "g", &format!("m{i:02}"), until);
    }
    e.walk("group:g").await;
    let report = propagator(&e).try_execute().await.unwrap();
    assert_eq!(report.requests, 9, "3 targets x ceil(45 / 20)");
    assert_eq!(report.applied, 135);
    assert_eq!(sim.calls("live_engine_http_srv/ban_member"), 9);
    for r in ["b", "c", "d"] {
        let held = sim.entries(ListKind::Room, r);
        assert_eq!(held.len(), 45);
        // The remaining duration, so the mirror ends when the origin does.
        assert!(held.iter().all(|(_, u)| (u - until).abs() <= 2), "{held:?}");
    }
    let events = e.events("group:g");
    assert_eq!(
        events
            .iter()
            .filter(|(t, _)| t == "propagation.applied")
            .count(),
        135
    );
    let all = events_of(&e.settings.store_path, "group:g");
    let body = &all.last().unwrap().3;
    assert!(
        body["data"]["target"]
            .as_str()
            .unwrap()
            .starts_with("room:")
    );
    assert_eq!(body["data"]["banned_until"], until);
    // Nothing queued is left; a second pass does nothing.
    assert_eq!(propagator(&e).try_execute().await.unwrap().requests, 0);
}

#[tokio::test]
async fn a_cycle_of_two_rules_does_not_echo() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(
        dir.path(),
        &sim,
        "[[propagate]]\nfrom = [\"room:a\"]\nto = [\"room:b\"]\n\n[[propagate]]\nfrom = [\"room:b\"]\nto = [\"room:a\"]",
    );
    sim.set(ListKind::Room, "a", &[]);
    sim.set(ListKind::Room, "b", &[]);
    e.walk("room:a").await;
    e.walk("room:b").await;
    sim.upsert(ListKind::Room, "a", "troll", now() + 600);
    for _ in 0..4 {
        e.walk("room:a").await;
        e.walk("room:b").await;
        propagator(&e).try_execute().await.unwrap();
    }
    assert_eq!(
        sim.calls("live_engine_http_srv/ban_member"),
        1,
        "mirrored once, never back"
    );
    assert_eq!(
        e.events("room:b"),
        [ev("ban.added", "troll")],
        "b reports the ban it now holds"
    );
    let applied: Vec<_> = e
        .events("room:a")
        .into_iter()
        .filter(|(t, _)| t.starts_with("propagation"))
        .collect();
    assert_eq!(applied, [ev("propagation.applied", "troll")]);
    assert!(
        e.events("room:b")
            .iter()
            .all(|(t, _)| !t.starts_with("propagation"))
    );
}

#[tokio::test]
async fn a_target_already_holding_a_longer_ban_is_not_called() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(
        dir.path(),
        &sim,
        "[[propagate]]\nfrom = [\"room:a\"]\nto = [\"room:b\"]",
    );
    sim.set(ListKind::Room, "a", &[]);
    sim.set(ListKind::Room, "b", &[("x", now() + 7200)]);
    e.walk("room:a").await;
    e.walk("room:b").await;
    sim.upsert(ListKind::Room, "a", "x", now() + 600);
    e.walk("room:a").await;
    assert_eq!(propagator(&e).try_execute().await.unwrap().requests, 0);
    assert_eq!(sim.calls("live_engine_http_srv/ban_member"), 0);
}

#[tokio::test]
async fn lift_propagation_lifts_only_the_bans_it_caused() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(
        dir.path(),
        &sim,
        "[[propagate]]\nfrom = [\"group:g\"]\nto = [\"room:b\"]\nlift = true",
    );
    sim.set(ListKind::Group, "g", &[]);
    // room:b bans "own" itself; bansync must never lift that one.
    sim.set(ListKind::Room, "b", &[("own", now() + 60)]);
    e.walk("group:g").await;
    e.walk("room:b").await;
    let until = now() + 3600;
    sim.upsert(ListKind::Group, "g", "mirrored", until);
    sim.upsert(ListKind::Group, "g", "own", until);
    e.walk("group:g").await;
    propagator(&e).try_execute().await.unwrap();
    assert_eq!(sim.entries(ListKind::Room, "b").len(), 2);
    // The origin lifts both; only the ban bansync applied is lifted in b.
    sim.remove(ListKind::Group, "g", "mirrored");
    sim.remove(ListKind::Group, "g", "own");
    e.walk("group:g").await;
    e.walk("group:g").await;
    assert_eq!(
        e.events("group:g")
            .iter()
            .filter(|(t, _)| t == "ban.lifted")
            .count(),
        2
    );
    propagator(&e).try_execute().await.unwrap();
    let held = sim.entries(ListKind::Room, "b");
    assert_eq!(held.len(), 1);
    assert_eq!(
        held[0].0, "own",
        "b's own ban (extended by the mirror) is not bansync's to lift"
    );
    assert!(
        (held[0].1 - (now() + 60)).abs() <= 3,
        "it is given back its own end: {held:?}"
    );
    assert_eq!(sim.calls("live_engine_http_srv/unban_member"), 1);
}

#[tokio::test]
async fn a_refusing_target_fails_once_without_a_retry_storm() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(
        dir.path(),
        &sim,
        "[[propagate]]\nfrom = [\"room:a\"]\nto = [\"room:b\", \"room:c\"]",
    );
    sim.set(ListKind::Room, "a", &[]);
    sim.set(ListKind::Room, "c", &[]);
    sim.destroy(ListKind::Room, "b");
    e.walk("room:a").await;
    for i in 0..3 {
        sim.upsert(ListKind::Room, "a", &format!("x{i}"), now() + 600);
    }
    e.walk("room:a").await;
    let first = propagator(&e).try_execute().await.unwrap();
    assert_eq!((first.applied, first.failed), (3, 3));
    assert_eq!(first.reads, 2, "each target read once");
    assert_eq!(
        sim.calls("live_engine_http_srv/ban_member"),
        1,
        "one request to the target that exists; none to the one that does not"
    );
    let calls = |sim: &Sim| -> u64 {
        let s = sim.stats();
        s.as_object()
            .unwrap()
            .values()
            .map(|v| v["calls"].as_u64().unwrap())
            .sum()
    };
    let after_first = calls(&sim);
    for _ in 0..5 {
        propagator(&e).try_execute().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        calls(&sim),
        after_first,
        "100004 is never retried: no call at all"
    );
    let failed: Vec<_> = events_of(&e.settings.store_path, "room:a")
        .into_iter()
        .filter(|x| x.1 == "propagation.failed")
        .collect();
    assert_eq!(failed.len(), 3);
    assert_eq!(failed[0].3["data"]["error_code"], 100004);
    assert_eq!(failed[0].3["data"]["target"], "room:b");
}

#[tokio::test]
async fn transient_refusals_are_retried_and_survive_a_restart() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = "[[propagate]]\nfrom = [\"room:a\"]\nto = [\"room:b\"]";
    sim.set(ListKind::Room, "a", &[]);
    sim.set(ListKind::Room, "b", &[]);
    {
        let e = engine(dir.path(), &sim, rules);
        e.walk("room:a").await;
        sim.upsert(ListKind::Room, "a", "x", now() + 600);
        e.walk("room:a").await;
        sim.fault(bansync::sim::Fault {
            api: Some("ban_member".into()),
            error_code: Some(100001),
            count: Some(0),
            ..Default::default()
        });
        let r = propagator(&e).try_execute().await.unwrap();
        assert_eq!(r.retrying, 1);
    } // restart: the queued action is in the store
    sim.clear_faults();
    let e = engine(dir.path(), &sim, rules);
    tokio::time::sleep(Duration::from_millis(2100)).await; // the first backoff
    let r = propagator(&e).try_execute().await.unwrap();
    assert_eq!(r.applied, 1);
    assert_eq!(sim.entries(ListKind::Room, "b").len(), 1);
}

#[tokio::test]
async fn dry_run_shows_the_mirror_actions_without_taking_them() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let e = engine(
        dir.path(),
        &sim,
        "[[propagate]]\nfrom = [\"group:g\"]\nto = [\"room:b\", \"room:c\"]",
    );
    sim.set(ListKind::Group, "g", &[]);
    sim.set(ListKind::Room, "b", &[]);
    sim.set(ListKind::Room, "c", &[]);
    e.walk("group:g").await;
    let until = now() + 600;
    sim.upsert(ListKind::Group, "g", "x", until);
    let spec = "group:g".parse().unwrap();
    let r = e
        .syncer
        .sync_source(&spec, true, &mut |_| {})
        .await
        .unwrap();
    let mut shown = r.report.mirrors.clone();
    shown.sort();
    assert_eq!(
        shown,
        [
            (
                "ban".to_string(),
                "x".to_string(),
                "room:b".to_string(),
                Some(until)
            ),
            (
                "ban".to_string(),
                "x".to_string(),
                "room:c".to_string(),
                Some(until)
            ),
        ]
    );
    assert_eq!(
        propagator(&e).try_execute().await.unwrap().requests,
        0,
        "nothing was queued"
    );
    assert!(e.events("group:g").is_empty());
    assert_eq!(sim.calls("live_engine_http_srv/ban_member"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_moves_the_vendor_moves_the_mirror_actions_too() {
    let (old, new) = (Sim::start(100_000).await, Sim::start(100_000).await);
    for s in [&old, &new] {
        s.set(ListKind::Group, "g", &[]);
        s.set(ListKind::Room, "a", &[]);
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bansync.db");
    let sources = "[sources]\ngroups = [\"g\"]\nrooms = [\"a\"]";
    let rest =
        "[sync]\ninterval = \"1s\"\n[[propagate]]\nfrom = [\"group:g\"]\nto = [\"room:a\"]\n";
    let d = start_daemon(load(&write_config(dir.path(), &old, sources, rest))).await;
    eventually(Duration::from_secs(10), "both sources walked", || {
        count(&db, "SELECT COUNT(*) FROM sources WHERE walks > 0") == 2
    })
    .await;
    // A new base URL (as a new region or key would) reaches the walks and
    // the propagator alike: the mirror lands where the origin ban was seen.
    d.reload
        .send(load(&write_config(dir.path(), &new, sources, rest)))
        .unwrap();
    new.upsert(ListKind::Group, "g", "mallory", now() + 3600);
    eventually(
        Duration::from_secs(15),
        "the mirror reaches the new vendor",
        || {
            new.entries(ListKind::Room, "a")
                .iter()
                .any(|(a, _)| a == "mallory")
        },
    )
    .await;
    assert!(
        old.entries(ListKind::Room, "a").is_empty(),
        "nothing may go to the vendor the configuration left"
    );
    d.shutdown().await;
}
