//! `sync.mode = "adaptive"` against the simulator: continuous walks within
//! the rate, every source within the interval, the busy one more often,
//! and the plan explained in `status` and `/metrics`.

use std::time::Duration;

use crate::common::*;
use bansync::sim::ListKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_mode_keeps_the_bound_and_follows_activity() {
    // The vendor allows 20 calls a second here; bansync is told 20.
    let sim = Sim::start(20).await;
    let t = now();
    for i in 0..40 {
        // One to three pages each (page size 100).
        sim.fill(
            ListKind::Room,
            &format!("r{i}"),
            60 + (i % 3) * 100,
            t + 86_400,
        );
    }
    sim.set(ListKind::Room, "busy", &[]);
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    let path = write_config(
        dir.path(),
        &sim,
        "",
        &format!(
            "[sources]\nrooms = [{}, \"busy\"]\n\n[sync]\nmode = \"adaptive\"\ninterval = \"15s\"\n\n{}",
            (0..40)
                .map(|i| format!("\"r{i}\""))
                .collect::<Vec<_>>()
                .join(", "),
            webhook_toml("w", &rx.url(), "")
        ),
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[store]", "requests_per_second = 20\n\n[store]");
    std::fs::write(&path, text).unwrap();
    let settings = load(&path);
    let db = settings.store_path.clone();
    let d = start_daemon(settings).await;
    // The first walks (80 pages at ~19 a second), then measure.
    eventually(Duration::from_secs(15), "first walks", || {
        count(&db, "SELECT COUNT(*) FROM sources WHERE status = 'ok'") == 41
    })
    .await;
    sim.control("/sim/walks/reset", serde_json::json!({})).await;
    sim.control("/sim/stats/reset", serde_json::json!({})).await;
    // The busy room gets a ban every 500 ms for 20 s.
    let started = std::time::Instant::now();
    for i in 0..40 {
        sim.upsert(ListKind::Room, "busy", &format!("b{i}"), now() + 3600);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Every ban reported (each found by a walk; none is lost to the plan).
    rx.wait_for(40, Duration::from_secs(20)).await;
    let walks = sim
        .state
        .lock()
        .unwrap()
        .walks
        .iter()
        .map(|((_, id), (n, _))| (id.clone(), *n))
        .collect::<std::collections::HashMap<_, _>>();
    let busy = walks.get("busy").copied().unwrap_or(0);
    let others: u64 = (0..40)
        .map(|i| walks.get(&format!("r{i}")).copied().unwrap_or(0))
        .sum();
    let gap = sim
        .state
        .lock()
        .unwrap()
        .max_gap
        .get(&ListKind::Room)
        .copied()
        .unwrap_or(0.0);
    let stats = sim.stats();
    let api = &stats["live_engine_http_srv/get_banned_member_list"];
    let calls = api["calls"].as_f64().unwrap();
    println!(
        "adaptive, {elapsed:.0}s: {calls} calls ({:.1}/s), most in one second {}, rate-limited {}; busy walked {busy} times, the 40 others {others} in all; longest unwalked {gap:.1}s",
        calls / elapsed,
        api["max_in_window"],
        api["rate_limited"]
    );
    assert_eq!(api["rate_limited"], 0, "within the vendor's limit");
    assert!(
        calls / elapsed > 15.0,
        "walks continuously: {:.1} calls/s",
        calls / elapsed
    );
    assert!(gap <= 15.0, "every room within the interval: {gap:.1}s");
    assert!(
        busy as f64 > 3.0 * others as f64 / 40.0,
        "the busy room more often"
    );
    // status explains: next walk and why; /metrics: calls by reason and staleness.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let reasons = count(
        &db,
        "SELECT COUNT(*) FROM sources WHERE next_walk_reason IN ('bound', 'activity', 'hint', 'confirmation') AND next_walk_at IS NOT NULL",
    );
    assert_eq!(reasons, 41, "every source has its next walk and why");
    let last = count(
        &db,
        "SELECT COUNT(*) FROM sources WHERE last_walk_reason IN ('bound', 'activity', 'confirmation')",
    );
    assert_eq!(last, 41);
    let metrics = reqwest::get(format!("http://{}/metrics", d.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("bansync_walk_calls_total{kind=\"room\",reason=\"activity\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("bansync_walk_calls_total{kind=\"room\",reason=\"bound\"}"));
    assert!(metrics.contains("bansync_oldest_walk_age_seconds{kind=\"room\"}"));
    d.shutdown().await;
}

/// A reload that rebuilds the planners (a new interval) while a walk is
/// held at the vendor: the source is still walking, and no second walk of
/// it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_never_starts_a_second_walk_of_a_walking_source() {
    let sim = Sim::start(100).await;
    sim.set(ListKind::Room, "r", &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = |interval: &str| {
        write_config(
            dir.path(),
            &sim,
            "[sources]\nrooms = [\"r\"]",
            &format!("[sync]\nmode = \"adaptive\"\ninterval = \"{interval}\"\n"),
        )
    };
    let path = config("10s");
    let settings = load(&path);
    let db = settings.store_path.clone();
    let d = start_daemon(settings).await;
    eventually(Duration::from_secs(5), "first walk", || {
        count(&db, "SELECT COUNT(*) FROM sources WHERE status = 'ok'") == 1
    })
    .await;
    // The next two requests for r are held 1.5 s each at the vendor.
    sim.fault(bansync::sim::Fault {
        api: Some("get_banned_member_list".into()),
        target: Some("r".into()),
        hold_ms: Some(1500),
        count: Some(2),
        ..Default::default()
    });
    eventually(Duration::from_secs(5), "a walk held", || {
        sim.state.lock().unwrap().holding == 1
    })
    .await;
    d.reload.send(load(&config("20s"))).unwrap();
    let mut most = 0;
    for _ in 0..60 {
        most = most.max(sim.state.lock().unwrap().holding);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(most, 1, "two walks of r at once");
    d.shutdown().await;
}
