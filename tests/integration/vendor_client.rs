//! The vendor client against `bansync sim` over loopback: pagination,
//! error classes, the rate limit, and walks that must fail whole.

use std::sync::Arc;

use crate::common::*;
use bansync::metrics::Metrics;
use bansync::sim::{Fault, ListKind};
use bansync::source::SourceSpec;
use bansync::tencent::{ApiErrorKind, ErrorClass, TencentClient, WalkError, walk};

async fn client(sim: &Sim) -> (TencentClient, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), sim, "[sources]\nrooms = [\"r\"]", "");
    (
        TencentClient::with_retry(load(&path).tencent, Arc::new(Metrics::new()), fast_retry()),
        dir,
    )
}

async fn walk_all(c: &TencentClient, spec: &str) -> Result<Vec<bansync::source::Entry>, WalkError> {
    let spec: SourceSpec = spec.parse().unwrap();
    walk::walk(c, &spec, 100, 1000, &mut |_| {}).await
}

#[tokio::test]
async fn pagination_returns_every_entry_of_every_kind() {
    let sim = Sim::start(100_000).await;
    let (c, _d) = client(&sim).await;
    let until = now() + 3600;
    for n in [0usize, 1, 100, 101, 1000] {
        for (kind, spec_kind, value) in [
            (ListKind::Group, "group", until),
            (ListKind::Room, "room", until),
            (ListKind::User, "blocklist", 1_700_000_000),
        ] {
            let id = format!("{spec_kind}-{n}");
            sim.fill(kind, &id, n, value);
            let got = walk_all(&c, &format!("{spec_kind}:{id}")).await.unwrap();
            assert_eq!(got.len(), n, "{spec_kind} with {n} entries");
            let mut accounts: Vec<_> = got.iter().map(|e| e.account.clone()).collect();
            accounts.sort();
            accounts.dedup();
            assert_eq!(accounts.len(), n, "no duplicates, none missing");
            assert!(got.iter().all(|e| e.value == value));
        }
    }
    assert_eq!(
        sim.calls("group_open_http_svc/get_group_ban_member"),
        // Pages after the first start one entry early (shift detection):
        // 1000 entries take 11 pages of 100. A list that ends on a full
        // page (100) takes one more request, from its last entry, to prove
        // the end (a full page saying "the end" may be a truncated answer).
        1 + 1 + 2 + 2 + 11
    );
    // A blocklist of 1000 is one full page, and one request to prove its end.
    assert_eq!(sim.calls("sns/black_list_get"), 4 + 2);
}

#[tokio::test]
async fn transient_errors_are_retried_and_recover() {
    let sim = Sim::start(100_000).await;
    let (c, _d) = client(&sim).await;
    sim.fill(ListKind::Room, "r", 250, now() + 3600);
    for code in [100001, 60008, 70500, 60013] {
        sim.fault(Fault {
            api: Some("get_banned_member_list".into()),
            error_code: Some(code),
            count: Some(2),
            ..Default::default()
        });
        assert_eq!(
            walk_all(&c, "room:r").await.unwrap().len(),
            250,
            "recovers from {code}"
        );
        sim.clear_faults();
    }
    sim.fault(Fault {
        api: Some("get_banned_member_list".into()),
        http_status: Some(502),
        count: Some(1),
        ..Default::default()
    });
    assert_eq!(
        walk_all(&c, "room:r").await.unwrap().len(),
        250,
        "recovers from HTTP 502"
    );
}

#[tokio::test]
async fn rate_limit_answers_back_off_then_succeed() {
    let sim = Sim::start(100_000).await;
    let (c, _d) = client(&sim).await;
    sim.fill(ListKind::Group, "g", 10, now() + 3600);
    sim.fault(Fault {
        error_code: Some(60007),
        count: Some(2),
        ..Default::default()
    });
    assert_eq!(walk_all(&c, "group:g").await.unwrap().len(), 10);
}

#[tokio::test]
async fn refused_sigs_are_renewed_once() {
    let sim = Sim::start(100_000).await;
    let (c, _d) = client(&sim).await;
    sim.fill(ListKind::User, "alice", 3, 1);
    sim.fault(Fault {
        error_code: Some(70001),
        count: Some(1),
        ..Default::default()
    });
    assert_eq!(
        walk_all(&c, "blocklist:alice").await.unwrap().len(),
        3,
        "70001 once: renewed and retried"
    );
    sim.fault(Fault {
        error_code: Some(60004),
        count: Some(0),
        ..Default::default()
    });
    let e = walk_all(&c, "blocklist:alice").await.unwrap_err();
    assert!(
        matches!(e, WalkError::Api(ref a) if a.code() == Some(60004)),
        "{e}"
    );
    assert_eq!(
        sim.calls("sns/black_list_get"),
        2 + 2,
        "one retry after renewal, then fail"
    );
}

#[tokio::test]
async fn each_error_class_is_handled_as_classified() {
    let sim = Sim::start(100_000).await;
    let (c, _d) = client(&sim).await;
    sim.fill(ListKind::Room, "r", 5, now() + 3600);
    // Fatal and bug classes fail at once, without retries.
    for (code, class) in [
        (60006, ErrorClass::Fatal),
        (70016, ErrorClass::Fatal),
        (100002, ErrorClass::Bug),
        (60003, ErrorClass::Bug),
    ] {
        sim.clear_faults();
        let before = sim.calls("live_engine_http_srv/get_banned_member_list");
        sim.fault(Fault {
            error_code: Some(code),
            count: Some(0),
            ..Default::default()
        });
        let e = walk_all(&c, "room:r").await.unwrap_err();
        let WalkError::Api(a) = &e else { panic!("{e}") };
        assert_eq!((a.code(), a.class()), (Some(code), class));
        assert!(a.request_id.is_some(), "RequestId kept for support");
        assert_eq!(
            sim.calls("live_engine_http_srv/get_banned_member_list") - before,
            1,
            "{code} is not retried"
        );
    }
    // Gone sources are a state, not a failure.
    sim.clear_faults();
    for (spec, kind, id) in [
        ("room:gone", ListKind::Room, "gone"),
        ("group:gone", ListKind::Group, "gone"),
        ("blocklist:gone", ListKind::User, "gone"),
    ] {
        sim.destroy(kind, id);
        let e = walk_all(&c, spec).await.unwrap_err();
        assert!(e.is_gone(), "{spec}: {e}");
    }
    // Transient classes give up after their retries, with the code.
    let before = sim.calls("live_engine_http_srv/get_banned_member_list");
    sim.fault(Fault {
        error_code: Some(100001),
        count: Some(0),
        ..Default::default()
    });
    let e = walk_all(&c, "room:r").await.unwrap_err();
    assert!(matches!(e, WalkError::Api(ref a) if a.class() == ErrorClass::Retry));
    assert_eq!(
        sim.calls("live_engine_http_srv/get_banned_member_list") - before,
        1 + fast_retry().max_retries as u64
    );
}

#[tokio::test]
async fn a_walk_interrupted_by_an_error_returns_an_error_not_a_partial_list() {
    let sim = Sim::start(100_000).await;
    let (c, _d) = client(&sim).await;
    sim.fill(ListKind::Group, "g", 350, now() + 3600);
    // Page 3 fails for good.
    sim.fault(Fault {
        error_code: Some(10004),
        min_offset: Some(200),
        count: Some(0),
        ..Default::default()
    });
    assert!(walk_all(&c, "group:g").await.is_err());
    sim.clear_faults();
    for how in [
        "truncated",
        "garbage",
        "wrong_type",
        "no_cursor",
        "stuck_cursor",
        "skip_cursor",
        "oversize",
    ] {
        sim.fault(Fault {
            malformed: Some(how.into()),
            min_offset: Some(100),
            count: Some(0),
            ..Default::default()
        });
        let e = walk_all(&c, "group:g").await.expect_err(how);
        let text = e.to_string();
        assert!(!text.contains("usersig"), "no sig in errors: {text}");
        match how {
            "stuck_cursor" | "skip_cursor" | "oversize" => {
                assert!(matches!(e, WalkError::Inconsistent(_)), "{how}: {e}")
            }
            _ => assert!(
                matches!(e, WalkError::Api(ref a) if matches!(a.kind, ApiErrorKind::Malformed(_))),
                "{how}: {e}"
            ),
        }
        sim.clear_faults();
    }
    assert_eq!(walk_all(&c, "group:g").await.unwrap().len(), 350);
}

#[tokio::test]
async fn ban_and_unban_batch_twenty_accounts_a_request() {
    let sim = Sim::start(100_000).await;
    let (c, _d) = client(&sim).await;
    sim.set(ListKind::Room, "r", &[]);
    let accounts: Vec<String> = (0..45).map(|i| format!("a{i}")).collect();
    let room: SourceSpec = "room:r".parse().unwrap();
    let long_reason = "é".repeat(150);
    let out = walk::ban(&c, &room, &accounts, 600, &long_reason).await;
    assert_eq!(out.applied.len(), 45);
    assert!(out.failed.is_empty());
    assert_eq!(sim.calls("live_engine_http_srv/ban_member"), 3);
    let held = sim.entries(ListKind::Room, "r");
    assert_eq!(held.len(), 45);
    assert!(
        held.iter()
            .all(|(_, until)| (until - now() - 600).abs() <= 2)
    );
    let out = walk::unban(&c, &room, &accounts[..21]).await;
    assert_eq!(out.applied.len(), 21);
    assert_eq!(sim.calls("live_engine_http_srv/unban_member"), 2);
    assert_eq!(sim.entries(ListKind::Room, "r").len(), 24);
    let gone: SourceSpec = "room:nope".parse().unwrap();
    let out = walk::ban(&c, &gone, &accounts[..1], 60, "").await;
    assert_eq!(out.failed[0].1.code(), Some(100004));
}

#[tokio::test]
async fn a_wrong_key_is_refused_with_the_vendors_code() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &sim, "[sources]\nrooms = [\"r\"]", "");
    let mut t = load(&path).tencent;
    t.secret_key = bansync::config::Secret::new("not-the-key");
    let c = TencentClient::with_retry(t, Arc::new(Metrics::new()), fast_retry());
    sim.fill(ListKind::Room, "r", 1, now() + 60);
    let e = walk_all(&c, "room:r").await.unwrap_err();
    assert!(
        matches!(e, WalkError::Api(ref a) if a.code() == Some(70009) && a.class() == ErrorClass::Fatal),
        "{e}"
    );
}

/// One `/sim/seed` request cannot ask the simulator for unbounded memory.
#[tokio::test]
async fn the_simulator_caps_what_one_seed_creates() {
    let sim = Sim::start(100_000).await;
    let r = reqwest::Client::new()
        .post(format!("{}/sim/seed", sim.base_url()))
        .json(&serde_json::json!([{"kind": "room", "prefix": "r", "count": 1_000_000_000u64, "entries": 1_000_000_000u64}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(body.contains("at most"), "{body}");
    assert!(sim.entries(ListKind::Room, "r0").is_empty());
}
