//! Discovery against the simulator: listings at the vendor's own limits,
//! include/exclude, found sources walked at once, and retirement only after
//! two complete listings missed a source and the vendor says it is gone.

use std::time::{Duration, Instant};

use crate::common::*;
use bansync::sim::ListKind;

fn source_row(db: &std::path::Path, spec: &str) -> (String, String, Option<i64>, Option<i64>) {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    rusqlite::Connection::open_with_flags(db, flags)
        .and_then(|c| {
            c.query_row(
                "SELECT origin, status, retired_at, last_attempt_at FROM sources WHERE spec = ?1",
                [spec],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
        })
        .unwrap_or_else(|_| ("-".into(), "-".into(), None, None))
}

/// 3,000 groups and 500 rooms, some of them excluded or of another group
/// type; room audiences change all the time, so the room listing's pages
/// shift under it. Every admitted one is found and walked, none of the
/// others, and neither listing ever goes past its limit in any second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_groups_and_rooms_are_found_within_the_listing_limits() {
    let sim = Sim::start(2000).await;
    {
        let mut s = sim.state.lock().unwrap();
        // Pages of 500: the group listing takes six calls at 1/s.
        s.group_list_page = 500;
        for i in 0..3000 {
            s.groups.entry(format!("av-{i}")).or_default();
        }
        for i in 0..100 {
            s.groups.entry(format!("qa-{i}")).or_default();
            s.groups.entry(format!("work-{i}")).or_default();
            s.group_types.insert(format!("work-{i}"), "Work".into());
        }
        for i in 0..500 {
            s.rooms.entry(format!("live-{i}")).or_default();
            s.viewers
                .insert(format!("live-{i}"), (i * 7919 % 1000) as u64);
        }
        for i in 0..50 {
            s.rooms.entry(format!("test-{i}")).or_default();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    // No [sources]: discovery alone. Ban-list walks at 1000/s (the
    // listings keep to their own 1 and 10 a second).
    let path = write_config(
        dir.path(),
        &sim,
        "",
        "[sync]\ninterval = \"1h\"\n\n[discovery]\ninclude = [\"group:av-*\", \"room:*\"]\nexclude = [\"room:test-*\"]\ninterval = \"2s\"\n",
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[store]", "requests_per_second = 1000\n\n[store]");
    std::fs::write(&path, text).unwrap();
    let settings = load(&path);
    let db = settings.store_path.clone();

    // Audiences shift while the rooms are listed.
    let shifting = sim.state.clone();
    let shifter = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            n += 1;
            let mut s = shifting.lock().unwrap();
            let room = format!("live-{}", (n * 37) % 500);
            s.viewers.insert(room, (n * 131) % 2000);
        }
    });

    let started = Instant::now();
    let d = start_daemon(settings).await;
    eventually(Duration::from_secs(60), "every admitted group and room found and walked", || {
        count(&db, "SELECT COUNT(*) FROM sources WHERE origin = 'discovered' AND kind = 'group' AND status = 'ok'") == 3000
            && count(&db, "SELECT COUNT(*) FROM sources WHERE origin = 'discovered' AND kind = 'room' AND status = 'ok'") == 500
    })
    .await;
    let took = started.elapsed();
    shifter.abort();
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM sources WHERE spec LIKE 'room:test-%' OR spec LIKE 'group:qa-%' OR spec LIKE 'group:work-%'"
        ),
        0,
        "excluded, not included, or not audio-video: never watched"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM events"),
        0,
        "first walks baseline"
    );
    let stats = sim.stats();
    let groups = &stats["group_open_http_svc/get_appid_group_list"];
    let rooms = &stats["live_engine_http_srv/get_room_list"];
    println!(
        "found 3000 groups and 500 rooms, all walked, in {took:?}: group listing {} calls (most in one second {}), room listing {} calls (most in one second {})",
        groups["calls"], groups["max_in_window"], rooms["calls"], rooms["max_in_window"]
    );
    assert_eq!(groups["rate_limited"], 0, "{groups}");
    assert_eq!(rooms["rate_limited"], 0, "{rooms}");
    assert!(groups["max_in_window"].as_u64().unwrap() <= 1, "{groups}");
    assert!(rooms["max_in_window"].as_u64().unwrap() <= 10, "{rooms}");
    assert!(groups["calls"].as_u64().unwrap() >= 6, "paged: {groups}");
    // Nothing was missing from two listings: nothing was retired.
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM sources WHERE retired_at IS NOT NULL"
        ),
        0
    );
    d.shutdown().await;
}

/// A room with bans is dissolved: it is retired only after two complete
/// listings miss it and a walk gets "does not exist"; `source.unavailable`
/// once, no ban reported lifted, no walk after. Created again, it comes
/// back and gives `source.restored`.
#[tokio::test]
async fn a_dissolved_room_retires_after_the_rules_and_emits_no_lift() {
    let sim = Sim::start(1000).await;
    let t = now();
    sim.set(
        ListKind::Room,
        "live-a",
        &[("u1", t + 3600), ("u2", t + 3600)],
    );
    sim.set(ListKind::Room, "live-b", &[]);
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &sim,
        "",
        &format!(
            "[sync]\ninterval = \"1h\"\ninitial = \"emit\"\n\n[discovery]\ngroups = false\ninterval = \"1s\"\n\n{}",
            webhook_toml("w", &rx.url(), "")
        ),
    );
    let settings = load(&path);
    let db = settings.store_path.clone();
    let d = start_daemon(settings).await;
    // The first walk emits the two bans (initial = "emit").
    rx.wait_for(2, Duration::from_secs(10)).await;
    let listings = || sim.calls("live_engine_http_srv/get_room_list");
    sim.destroy(ListKind::Room, "live-a");
    let before = listings();
    eventually(Duration::from_secs(15), "live-a retired", || {
        source_row(&db, "room:live-a").2.is_some()
    })
    .await;
    // Two complete listings (one call each here) must have missed it first.
    let listed = listings() - before;
    assert!(listed >= 2, "retired after {listed} listings");
    let (origin, status, _, last_attempt) = source_row(&db, "room:live-a");
    assert_eq!(
        (origin.as_str(), status.as_str()),
        ("discovered", "unavailable")
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        source_row(&db, "room:live-a").3,
        last_attempt,
        "no walk after retirement"
    );
    let events = events_of(&db, "room:live-a");
    let types: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        types,
        ["ban.added", "ban.added", "source.unavailable"],
        "no lift"
    );
    assert_eq!(
        source_row(&db, "room:live-b").2,
        None,
        "the other room stays"
    );
    assert!(rx.received().iter().all(|r| r.body["type"] != "ban.lifted"));

    // The room exists again: found by the next listing, walked, restored.
    sim.set(ListKind::Room, "live-a", &[("u1", t + 3600)]);
    eventually(Duration::from_secs(10), "source.restored", || {
        events_of(&db, "room:live-a")
            .iter()
            .any(|e| e.1 == "source.restored")
    })
    .await;
    assert_eq!(source_row(&db, "room:live-a").2, None, "no longer retired");
    d.shutdown().await;
}

/// A listing that fails part-way retires nothing, however often it fails.
#[tokio::test]
async fn a_failing_listing_retires_nothing() {
    let sim = Sim::start(1000).await;
    for i in 0..45 {
        sim.set(ListKind::Room, &format!("live-{i}"), &[]);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &sim,
        "",
        "[sync]\ninterval = \"1h\"\n\n[discovery]\ngroups = false\ninterval = \"1s\"\n",
    );
    let settings = load(&path);
    let db = settings.store_path.clone();
    let d = start_daemon(settings).await;
    eventually(Duration::from_secs(10), "45 rooms found", || {
        count(
            &db,
            "SELECT COUNT(*) FROM sources WHERE kind = 'room' AND status = 'ok'",
        ) == 45
    })
    .await;
    // From now on every listing's third page fails; two rooms go away.
    sim.fault(bansync::sim::Fault {
        api: Some("get_room_list".into()),
        error_code: Some(100001),
        count: Some(0),
        min_offset: Some(40),
        ..Default::default()
    });
    sim.destroy(ListKind::Room, "live-0");
    sim.destroy(ListKind::Room, "live-1");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM sources WHERE retired_at IS NOT NULL"
        ),
        0
    );
    assert!(
        count(
            &db,
            "SELECT COUNT(*) FROM listings WHERE last_error IS NOT NULL"
        ) == 1
    );
    d.shutdown().await;
}

/// `[discovery]` and `[callback]` switched on, moved and off by reloads,
/// like any other section.
#[tokio::test]
async fn reload_applies_discovery_and_callback_changes() {
    let sim = Sim::start(1000).await;
    sim.set(ListKind::Room, "r", &[]);
    sim.set(ListKind::Room, "live-x", &[]);
    sim.set(ListKind::User, "zed", &[]);
    let dir = tempfile::tempdir().unwrap();
    let base = "[sync]\ninterval = \"1h\"\n";
    let path = write_config(dir.path(), &sim, "[sources]\nrooms = [\"r\"]", base);
    let settings = load(&path);
    let db = settings.store_path.clone();
    let d = start_daemon(settings).await;
    eventually(Duration::from_secs(5), "r walked", || {
        count(&db, "SELECT COUNT(*) FROM sources WHERE status = 'ok'") == 1
    })
    .await;
    // Discovery on: live-x is found and walked.
    let port = free_port();
    let path = write_config(
        dir.path(),
        &sim,
        "[sources]\nrooms = [\"r\"]",
        &format!(
            "{base}\n[discovery]\ngroups = false\ninterval = \"1s\"\n\n[callback]\nlisten = \"127.0.0.1:{port}\"\nenrol_blocklists = true\n"
        ),
    );
    d.reload.send(load(&path)).unwrap();
    eventually(Duration::from_secs(5), "live-x found and walked", || {
        count(&db, "SELECT COUNT(*) FROM sources WHERE spec = 'room:live-x' AND status = 'ok' AND origin = 'discovered'") == 1
    })
    .await;
    let post = |port: u16| async move {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/tencent/callback"))
            .query(&[
                ("SdkAppid", bansync::sim::DEMO_SDKAPPID.to_string()),
                ("CallbackCommand", "Sns.CallbackBlackListAdd".into()),
            ])
            .body(r#"{"PairList":[{"From_Account":"zed","To_Account":"a"}]}"#)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    eventually(Duration::from_secs(5), "callback listener up", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    assert_eq!(post(port).await, 200);
    eventually(Duration::from_secs(5), "zed enrolled", || {
        count(
            &db,
            "SELECT COUNT(*) FROM sources WHERE spec = 'blocklist:zed' AND origin = 'callback'",
        ) == 1
    })
    .await;
    // The listener moves to another port; the old one closes.
    let moved = free_port();
    let path = write_config(
        dir.path(),
        &sim,
        "[sources]\nrooms = [\"r\"]",
        &format!(
            "{base}\n[discovery]\ngroups = false\nexclude = [\"room:live-*\"]\ninterval = \"1s\"\n\n[callback]\nlisten = \"127.0.0.1:{moved}\"\n"
        ),
    );
    d.reload.send(load(&path)).unwrap();
    eventually(Duration::from_secs(5), "moved listener up", || {
        std::net::TcpStream::connect(("127.0.0.1", moved)).is_ok()
    })
    .await;
    eventually(Duration::from_secs(5), "old listener closed", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    })
    .await;
    assert_eq!(post(moved).await, 200);
    // live-x is excluded now and zed no longer enrolled: neither is walked.
    let walks_of = |spec: &str| {
        count(
            &db,
            &format!("SELECT walks FROM sources WHERE spec = '{spec}'"),
        )
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (x, z) = (walks_of("room:live-x"), walks_of("blocklist:zed"));
    sim.upsert(ListKind::Room, "live-x", "u", now() + 600);
    assert_eq!(post(moved).await, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!((walks_of("room:live-x"), walks_of("blocklist:zed")), (x, z));
    // Both sections off: no listener, no listing.
    let path = write_config(dir.path(), &sim, "[sources]\nrooms = [\"r\"]", base);
    d.reload.send(load(&path)).unwrap();
    eventually(Duration::from_secs(5), "listener closed", || {
        std::net::TcpStream::connect(("127.0.0.1", moved)).is_err()
    })
    .await;
    let listings = sim.calls("live_engine_http_srv/get_room_list");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(sim.calls("live_engine_http_srv/get_room_list"), listings);
    d.shutdown().await;
}
