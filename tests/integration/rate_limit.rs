//! The per-API rate limit: a burst of 1000 requests against a simulator
//! limited to 200/s meets no rate-limit answer. Alone in its own test
//! binary, on a multi-threaded runtime, so that the simulator's clock is
//! not bunched by other tests competing for the same two cores.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use bansync::metrics::Metrics;
use bansync::sim::ListKind;
use bansync::source::SourceSpec;
use bansync::tencent::{TencentClient, WalkError, walk};

async fn walk_all(c: &TencentClient, spec: &str) -> Result<Vec<bansync::source::Entry>, WalkError> {
    let spec: SourceSpec = spec.parse().unwrap();
    walk::walk(c, &spec, 100, 1000, &mut |_| {}).await
}

async fn client(sim: &Sim) -> (TencentClient, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), sim, "[sources]\nrooms = [\"r\"]", "");
    (
        TencentClient::with_retry(load(&path).tencent, Arc::new(Metrics::new()), fast_retry()),
        dir,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_requests_meets_no_rate_limit_answer() {
    let sim = Sim::start(200).await;
    let (c, _d) = client(&sim).await;
    let c = Arc::new(c);
    for i in 0..50 {
        sim.fill(ListKind::Room, &format!("r{i}"), 1, now() + 3600);
    }
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let c = c.clone();
        tasks.spawn(async move { walk_all(&c, &format!("room:r{}", i % 50)).await });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    let took = started.elapsed();
    assert_eq!(
        sim.rate_limited(),
        0,
        "the pacer kept every second under the limit"
    );
    let max = sim.stats()["live_engine_http_srv/get_banned_member_list"]["max_in_window"]
        .as_u64()
        .unwrap();
    assert!(
        max <= 200,
        "at most 200 in any one-second window, saw {max}"
    );
    // Even pacing, not a trickle: 1000 calls at ~194/s is a little over 5 s.
    assert!(
        took >= Duration::from_millis(4900),
        "took {took:?}: faster than the limit allows"
    );
    println!("1000 calls in {took:?}, peak {max} in a one-second window");
}
