//! Webhook delivery through the whole daemon: receivers that fail in every
//! way and recover, order per source, stable ids, 410, Retry-After,
//! redirects, dead deliveries and replay.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::*;
use bansync::sim::ListKind;

const FAST: &str = "retry_schedule = [\"100ms\", \"200ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\", \"300ms\"]\ntimeout = \"300ms\"";

fn config(dir: &std::path::Path, sim: &Sim, hooks: &str) -> bansync::config::Settings {
    let path = write_config(
        dir,
        sim,
        "[sources]\nrooms = [\"a\", \"b\"]\nblocklists = [\"alice\"]",
        &format!(
            "[sync]\ninterval = \"1s\"\nconfirm_delay = \"100ms\"\ninitial = \"emit\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n{hooks}"
        ),
    );
    load(&path)
}

/// First arrivals per source must come in seq order without gaps.
fn assert_in_order(got: &[Received]) {
    let mut next: HashMap<String, i64> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for r in got {
        if !seen.insert(r.id.clone()) {
            continue; // at-least-once: a repeat is allowed, receivers deduplicate
        }
        let source = r.body["data"]["source"].as_str().unwrap().to_string();
        let seq = r.body["data"]["seq"].as_i64().unwrap();
        let want = next.entry(source.clone()).or_insert(1);
        assert_eq!(seq, *want, "{source}: expected seq {want}, got {seq}");
        *want += 1;
    }
}

#[tokio::test]
async fn outages_of_every_kind_then_recovery_deliver_everything_in_order() {
    let sim = Sim::start(100_000).await;
    let mut rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let t = now() + 3600;
    sim.set(ListKind::Room, "a", &[("a1", t), ("a2", t)]);
    sim.set(ListKind::Room, "b", &[("b1", t)]);
    sim.set(ListKind::User, "alice", &[("x", 5)]);
    rx.answer(vec![
        Answer::Status(500),
        Answer::Status(503),
        Answer::Delay(Duration::from_millis(600)),
        Answer::Status(200),
    ]);
    let d = start_daemon(config(
        dir.path(),
        &sim,
        &webhook_toml("h", &rx.url(), FAST),
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    rx.refuse().await;
    for i in 3..8 {
        sim.upsert(ListKind::Room, "a", &format!("a{i}"), t);
    }
    sim.upsert(ListKind::Room, "b", "b2", t);
    tokio::time::sleep(Duration::from_millis(1800)).await;
    rx.answer(vec![Answer::Status(200)]);
    rx.resume().await;
    // 2 + 5 (room a) + 2 (room b) + 1 (alice)
    let got = rx.wait_for(10, Duration::from_secs(15)).await;
    d.shutdown().await;
    assert_in_order(&got);
    let ids: std::collections::HashSet<_> = got.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 10, "every event arrived");
    assert!(got.iter().all(verify), "every signature verifies");
    assert!(
        got.iter().all(|r| r.id == r.body["data"]["id"]),
        "webhook-id is data.id"
    );
    assert!(
        got.iter()
            .all(|r| r.user_agent.starts_with("bansync/") && r.content_type == "application/json")
    );
    // Retried deliveries kept their id: some id was tried more than once.
    let hits = rx.state.hits.lock().unwrap().clone();
    let retried = hits
        .iter()
        .filter(|h| hits.iter().filter(|x| x == h).count() > 1)
        .count();
    assert!(
        retried > 0,
        "the outage forced retries with the same webhook-id"
    );
}

#[tokio::test]
async fn a_failing_source_does_not_hold_up_the_others() {
    let sim = Sim::start(100_000).await;
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let t = now() + 3600;
    sim.set(ListKind::Room, "a", &[("a1", t), ("a2", t)]);
    sim.set(ListKind::Room, "b", &[("b1", t), ("b2", t), ("b3", t)]);
    sim.set(ListKind::User, "alice", &[]);
    *rx.state.fail_when.lock().unwrap() = Some("\"room:a\"".into());
    let d = start_daemon(config(
        dir.path(),
        &sim,
        &webhook_toml("h", &rx.url(), FAST),
    ))
    .await;
    let got = rx.wait_for(3, Duration::from_secs(10)).await;
    assert!(got.iter().all(|r| r.body["data"]["source"] == "room:b"));
    // room:a's first event is being retried; its second waits behind it.
    *rx.state.fail_when.lock().unwrap() = None;
    let got = rx.wait_for(5, Duration::from_secs(10)).await;
    d.shutdown().await;
    assert_in_order(&got);
}

#[tokio::test]
async fn gone_disables_until_reload_and_nothing_is_lost() {
    let sim = Sim::start(100_000).await;
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let t = now() + 3600;
    sim.set(ListKind::Room, "a", &[("a1", t), ("a2", t)]);
    sim.set(ListKind::Room, "b", &[]);
    sim.set(ListKind::User, "alice", &[]);
    rx.answer(vec![Answer::Status(410), Answer::Status(200)]);
    let settings = config(dir.path(), &sim, &webhook_toml("h", &rx.url(), FAST));
    let d = start_daemon(settings.clone()).await;
    let db = settings.store_path.clone();
    eventually(Duration::from_secs(10), "webhook disabled", || {
        count(
            &db,
            "SELECT COUNT(*) FROM webhooks WHERE disabled_at IS NOT NULL",
        ) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        rx.state.hits.lock().unwrap().len(),
        1,
        "no attempt while disabled"
    );
    d.reload.send(settings).unwrap();
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    d.shutdown().await;
    assert_in_order(&got);
}

#[tokio::test]
async fn retry_after_is_honoured_and_redirects_are_not_followed() {
    let sim = Sim::start(100_000).await;
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    sim.set(ListKind::Room, "a", &[("a1", now() + 3600)]);
    sim.set(ListKind::Room, "b", &[]);
    sim.set(ListKind::User, "alice", &[]);
    rx.answer(vec![
        Answer::Redirect,
        Answer::StatusRetryAfter(503, 2),
        Answer::Status(200),
    ]);
    let d = start_daemon(config(
        dir.path(),
        &sim,
        &webhook_toml("h", &rx.url(), FAST),
    ))
    .await;
    let started = std::time::Instant::now();
    rx.wait_for(1, Duration::from_secs(10)).await;
    let took = started.elapsed();
    d.shutdown().await;
    let hits = rx.state.hits.lock().unwrap().clone();
    assert_eq!(
        hits.len(),
        3,
        "302 counted as a failed attempt, not followed"
    );
    assert!(hits.iter().all(|h| h == &hits[0]), "one event, one id");
    assert!(
        took >= Duration::from_secs(2),
        "Retry-After: 2 waited for, not the 200 ms schedule ({took:?})"
    );
}

#[tokio::test]
async fn dead_deliveries_are_listed_retried_and_replayed() {
    let sim = Sim::start(100_000).await;
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let t = now() + 3600;
    sim.set(ListKind::Room, "a", &[("a1", t)]);
    sim.set(ListKind::Room, "b", &[]);
    sim.set(ListKind::User, "alice", &[]);
    let hook = webhook_toml(
        "h",
        &rx.url(),
        "retry_schedule = [\"50ms\", \"50ms\"]\ntimeout = \"300ms\"",
    );
    *rx.state.fail_when.lock().unwrap() = Some("\"a1\"".into());
    let settings = config(dir.path(), &sim, &hook);
    let d = start_daemon(settings.clone()).await;
    let db = settings.store_path.clone();
    let dead = || count(&db, "SELECT COUNT(*) FROM deliveries WHERE state = 1");
    eventually(Duration::from_secs(10), "a dead delivery", || dead() == 1).await;
    assert_eq!(
        rx.state.hits.lock().unwrap().len(),
        3,
        "three attempts, then dead"
    );
    // The source's later events go on.
    sim.upsert(ListKind::Room, "a", "a2", t);
    let got = rx.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].body["data"]["account"], "a2");
    let conn = bansync::store::Direct::open(&db).unwrap();
    let listed = conn.dead_deliveries(Some("h")).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].attempts, 3);
    assert_eq!(listed[0].last_status, Some(500));
    // Re-queued by another process while the daemon runs.
    *rx.state.fail_when.lock().unwrap() = None;
    let n = conn
        .retry_dead(Some("h"), &[], bansync::clock::Clock::system().now_ms())
        .unwrap();
    assert_eq!(n, 1);
    let got = rx.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].body["data"]["account"], "a1");
    // Replay sends both again, with their original ids.
    let n = conn
        .replay(
            &settings.webhooks[0],
            0,
            bansync::clock::Clock::system().now_ms(),
        )
        .unwrap();
    assert_eq!(n, 2);
    let got = rx.wait_for(4, Duration::from_secs(10)).await;
    d.shutdown().await;
    let mut ids: Vec<_> = got.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2, "replays reuse the event's webhook-id");
}

#[tokio::test]
async fn filters_select_event_types_and_sources() {
    let sim = Sim::start(100_000).await;
    let rooms_only = Receiver::start().await;
    let blocks_only = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let t = now() + 3600;
    sim.set(ListKind::Room, "a", &[("a1", t)]);
    sim.set(ListKind::Room, "b", &[("b1", t)]);
    sim.set(ListKind::User, "alice", &[("x", 1)]);
    let hooks = format!(
        "{}\n{}",
        webhook_toml(
            "rooms",
            &rooms_only.url(),
            "sources = [\"room:a\"]\nevents = [\"ban.*\"]"
        ),
        webhook_toml("blocks", &blocks_only.url(), "events = [\"block.added\"]")
    );
    let d = start_daemon(config(dir.path(), &sim, &hooks)).await;
    rooms_only.wait_for(1, Duration::from_secs(10)).await;
    blocks_only.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    d.shutdown().await;
    assert_eq!(rooms_only.received().len(), 1);
    assert_eq!(rooms_only.received()[0].body["data"]["source"], "room:a");
    assert_eq!(blocks_only.received().len(), 1);
    assert_eq!(blocks_only.received()[0].body["type"], "block.added");
}
