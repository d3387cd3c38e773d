//! The vendor's callbacks as hints: the simulator pushes them (signed) to
//! the daemon's callback listener, as the vendor would.

use std::time::{Duration, Instant};

use crate::common::*;
use bansync::hint;
use bansync::sim::ListKind;

const TOKEN: &str = "callback-token-0123";

struct Setup {
    sim: Sim,
    config: std::path::PathBuf,
    rx: Receiver,
    daemon: Daemon,
    db: std::path::PathBuf,
    callback_url: String,
    _dir: tempfile::TempDir,
}

/// A daemon with `[callback]` (token `token`) on a free port, walking only
/// every hour, so anything seen sooner came from a callback.
async fn setup(
    sources: &str,
    token: Option<&str>,
    extra: &str,
    prepare: impl FnOnce(&Sim),
) -> Setup {
    let sim = Sim::start(1000).await;
    prepare(&sim);
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let token_line = token
        .map(|t| format!("token = \"{t}\"\n"))
        .unwrap_or_default();
    let path = write_config(
        dir.path(),
        &sim,
        sources,
        &format!(
            "[sync]\ninterval = \"1h\"\n\n[callback]\nlisten = \"127.0.0.1:{port}\"\n{token_line}{extra}\n\n{}",
            webhook_toml("w", &rx.url(), "")
        ),
    );
    let settings = load(&path);
    let db = settings.store_path.clone();
    let callback_url = format!("http://127.0.0.1:{port}/tencent/callback");
    let daemon = start_daemon(settings).await;
    // Listening once /readyz says so.
    eventually(Duration::from_secs(5), "callback listener up", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    sim.callbacks_to(&callback_url, token).await;
    Setup {
        sim,
        config: path,
        rx,
        daemon,
        db,
        callback_url,
        _dir: dir,
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// 100 blocks, each told by a signed callback: `block.added` reaches the
/// receiver within a second (p99), where the schedule alone would take an
/// hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocklist_callback_gives_block_added_within_a_second() {
    let owners: Vec<String> = (0..100).map(|i| format!("\"owner{i}\"")).collect();
    let s = setup(
        &format!("[sources]\nblocklists = [{}]", owners.join(", ")),
        Some(TOKEN),
        "",
        |sim| {
            for i in 0..100 {
                sim.set(ListKind::User, &format!("owner{i}"), &[("old", 1)]);
            }
        },
    )
    .await;
    eventually(Duration::from_secs(20), "first walks", || {
        count(&s.db, "SELECT COUNT(*) FROM sources WHERE status = 'ok'") == 100
    })
    .await;
    let mut latencies = Vec::new();
    for i in 0..100 {
        let sent = Instant::now();
        s.sim
            .control(
                "/sim/block",
                serde_json::json!({"user": format!("owner{i}"), "account": format!("troll{i}")}),
            )
            .await;
        let got = s.rx.wait_for(i + 1, Duration::from_secs(10)).await;
        latencies.push(sent.elapsed());
        let last = &got[i].body;
        assert_eq!(last["type"], "block.added");
        assert_eq!(last["data"]["account"], format!("troll{i}"));
    }
    latencies.sort();
    let (p50, p99, max) = (pct(&latencies, 0.5), pct(&latencies, 0.99), latencies[99]);
    println!(
        "block.added after its callback, 100 callbacks: p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
    assert_eq!(
        s.sim.callbacks_sent(),
        (100, 100),
        "every callback answered 2xx"
    );
    s.daemon.shutdown().await;
}

/// With `enrol_blocklists`, a block by a user nobody listed starts
/// watching their blocklist: the callback's pair is reported, the rest of
/// the list is the baseline.
#[tokio::test]
async fn an_enrolling_callback_reports_its_pairs_and_baselines_the_rest() {
    let s = setup("", Some(TOKEN), "enrol_blocklists = true", |sim| {
        sim.set(ListKind::User, "zed", &[("old1", 10), ("old2", 20)])
    })
    .await;
    s.sim
        .control(
            "/sim/block",
            serde_json::json!({"user": "zed", "account": "newcomer"}),
        )
        .await;
    let got = s.rx.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].body["type"], "block.added");
    assert_eq!(got[0].body["data"]["source"], "blocklist:zed");
    assert_eq!(got[0].body["data"]["account"], "newcomer");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.rx.received().len(), 1, "old1 and old2 are the baseline");
    assert_eq!(
        count(
            &s.db,
            "SELECT COUNT(*) FROM sources WHERE spec = 'blocklist:zed' AND origin = 'callback'"
        ),
        1
    );
    // Remembered across a restart: a block made while bansync was down,
    // with no callback, is found by the restarted daemon's first sweep.
    s.daemon.shutdown().await;
    s.sim.callbacks_to("", None).await;
    s.sim.upsert(ListKind::User, "zed", "while-down", 30);
    let again = start_daemon(load(&s.config)).await;
    let got = s.rx.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got[1].body["data"]["account"], "while-down");
    assert_eq!(got[1].body["data"]["seq"], 2);
    again.shutdown().await;
}

async fn post(url: &str, query: &[(&str, String)], body: Vec<u8>) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .query(query)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn query(
    app: u64,
    command: &str,
    time: Option<i64>,
    sign: Option<String>,
) -> Vec<(&'static str, String)> {
    let mut q = vec![
        ("SdkAppid", app.to_string()),
        ("CallbackCommand", command.to_string()),
        ("contenttype", "json".into()),
        ("ClientIP", "10.0.0.1".into()),
        ("OptPlatform", "RESTAPI".into()),
    ];
    if let Some(t) = time {
        q.push(("RequestTime", t.to_string()));
    }
    if let Some(s) = sign {
        q.push(("Sign", s));
    }
    q
}

/// Wrong app, bad or missing `Sign`, stale or future `RequestTime`, an
/// oversized body: each refused, counted, and none causes a walk.
#[tokio::test]
async fn forged_stale_foreign_and_oversized_callbacks_are_refused() {
    let s = setup(
        "[sources]\nblocklists = [\"alice\"]",
        Some(TOKEN),
        "",
        |sim| sim.set(ListKind::User, "alice", &[]),
    )
    .await;
    eventually(Duration::from_secs(5), "first walk", || {
        count(&s.db, "SELECT COUNT(*) FROM sources WHERE status = 'ok'") == 1
    })
    .await;
    let app = bansync::sim::DEMO_SDKAPPID;
    let cmd = "Sns.CallbackBlackListAdd";
    let body = br#"{"PairList":[{"From_Account":"alice","To_Account":"x"}]}"#.to_vec();
    let t = now();
    let good = || query(app, cmd, Some(t), Some(hint::sign(TOKEN, &t.to_string())));
    let walks = || s.sim.calls("sns/black_list_get");
    let before = walks();
    for (what, q, body, want) in [
        (
            "another app",
            query(
                app + 1,
                cmd,
                Some(t),
                Some(hint::sign(TOKEN, &t.to_string())),
            ),
            body.clone(),
            403,
        ),
        ("no Sign", query(app, cmd, Some(t), None), body.clone(), 403),
        (
            "wrong token",
            query(app, cmd, Some(t), Some(hint::sign("guess", &t.to_string()))),
            body.clone(),
            403,
        ),
        (
            "Sign of another time",
            query(
                app,
                cmd,
                Some(t),
                Some(hint::sign(TOKEN, &(t - 1).to_string())),
            ),
            body.clone(),
            403,
        ),
        (
            "stale",
            query(
                app,
                cmd,
                Some(t - 61),
                Some(hint::sign(TOKEN, &(t - 61).to_string())),
            ),
            body.clone(),
            403,
        ),
        (
            "from the future",
            query(
                app,
                cmd,
                Some(t + 61),
                Some(hint::sign(TOKEN, &(t + 61).to_string())),
            ),
            body.clone(),
            403,
        ),
        (
            "no RequestTime",
            query(app, cmd, None, Some(hint::sign(TOKEN, &t.to_string()))),
            body.clone(),
            403,
        ),
        ("oversized", good(), vec![b' '; hint::MAX_BODY + 1], 413),
    ] {
        let (status, text) = post(&s.callback_url, &q, body).await;
        assert_eq!(status, want, "{what}: {text}");
        if want == 403 {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["ActionStatus"], "FAIL", "{what}");
        }
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(walks(), before, "no refused callback walked anything");
    // The good one is answered exactly as the vendor expects, and walks.
    let (status, text) = post(&s.callback_url, &good(), body).await;
    assert_eq!((status, text.as_str()), (200, hint::OK_ANSWER));
    eventually(
        Duration::from_secs(2),
        "the accepted callback walks",
        || walks() > before,
    )
    .await;
    let metrics = reqwest::get(format!("http://{}/metrics", s.daemon.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (outcome, n) in [
        ("refused_appid", 1),
        ("refused_sign", 3),
        ("refused_time", 3),
        ("refused_size", 1),
        ("accepted", 1),
    ] {
        let line =
            format!("bansync_callbacks_total{{command=\"{cmd}\",outcome=\"{outcome}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    // Unknown commands are acknowledged and counted.
    let (status, text) = post(
        &s.callback_url,
        &query(
            app,
            "C2C.CallbackAfterSendMsg",
            Some(t),
            Some(hint::sign(TOKEN, &t.to_string())),
        ),
        b"{}".to_vec(),
    )
    .await;
    assert_eq!((status, text.as_str()), (200, hint::OK_ANSWER));
    s.daemon.shutdown().await;
}

/// 10,000 callbacks in 10 s for one source, unsigned so that each one is
/// accepted: at most about one walk a second comes of them, and no event
/// (a callback is a hint, never a fact).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_callbacks_costs_about_one_walk_a_second_and_no_event() {
    let s = setup(
        "[sources]\nblocklists = [\"alice\", \"bob\"]",
        None,
        "",
        |sim| {
            sim.set(ListKind::User, "alice", &[("x", 1)]);
            sim.set(ListKind::User, "bob", &[("y", 1)]);
        },
    )
    .await;
    eventually(Duration::from_secs(5), "first walks", || {
        count(&s.db, "SELECT COUNT(*) FROM sources WHERE status = 'ok'") == 2
    })
    .await;
    let walks = || s.sim.calls("sns/black_list_get");
    let before = walks();
    let app = bansync::sim::DEMO_SDKAPPID;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut accepted = 0;
    for second in 0..10 {
        // 1000 a second, at most 100 in flight (connections kept alive).
        for _ in 0..10 {
            let mut batch = Vec::new();
            for _ in 0..100 {
                let c = client.clone();
                let url = s.callback_url.clone();
                batch.push(tokio::spawn(async move {
                    c.post(url)
                        .query(&query(app, "Sns.CallbackBlackListAdd", None, None))
                        .body(r#"{"PairList":[{"From_Account":"alice","To_Account":"x"}]}"#)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                }));
            }
            for b in batch {
                accepted += usize::from(b.await.unwrap() == 200);
            }
        }
        let next = Duration::from_secs(second + 1);
        if let Some(wait) = next.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let extra = walks() - before;
    println!("{accepted} callbacks accepted in {elapsed:?}: {extra} extra walks");
    assert_eq!(accepted, 10_000);
    let bound = elapsed.as_secs() + 3;
    assert!(extra <= bound, "{extra} extra walks in {elapsed:?}");
    assert!(extra >= 5, "the hints did cause walks: {extra}");
    assert_eq!(count(&s.db, "SELECT COUNT(*) FROM events"), 0, "no event");
    assert!(s.rx.received().is_empty());
    s.daemon.shutdown().await;
}

/// A room created (with discovery on) is walked within a second of its
/// callback, though the next listing is an hour away.
#[tokio::test]
async fn a_room_created_is_walked_within_a_second_of_its_callback() {
    let s = setup(
        "",
        Some(TOKEN),
        "\n[discovery]\ngroups = false\ninterval = \"1h\"\n",
        |_| {},
    )
    .await;
    // Let the first (empty) listing pass.
    eventually(Duration::from_secs(5), "first listing", || {
        count(
            &s.db,
            "SELECT COUNT(*) FROM listings WHERE last_complete_at IS NOT NULL",
        ) == 1
    })
    .await;
    let mut took = Vec::new();
    for i in 0..5 {
        let room = format!("live-new-{i}");
        let sent = Instant::now();
        s.sim
            .control("/sim/create", serde_json::json!({"room": room}))
            .await;
        let spec = format!("room:{room}");
        eventually(Duration::from_secs(5), "walked", || {
            count(&s.db, &format!("SELECT COUNT(*) FROM sources WHERE spec = '{spec}' AND status = 'ok' AND origin = 'callback'")) == 1
        })
        .await;
        took.push(sent.elapsed());
    }
    println!("created room walked after its callback: {took:?}");
    assert!(took.iter().all(|t| *t < Duration::from_secs(1)), "{took:?}");
    // Its first ban is reported at the next walk (a kick callback, say).
    s.sim
        .control(
            "/sim/ban",
            serde_json::json!({"room": "live-new-0", "account": "spammer", "duration": 600}),
        )
        .await;
    s.sim
        .control("/sim/destroy", serde_json::json!({"room": "live-new-1"}))
        .await;
    eventually(Duration::from_secs(3), "the destroyed room is walked", || {
        count(&s.db, "SELECT COUNT(*) FROM sources WHERE spec = 'room:live-new-1' AND status = 'unavailable'") == 1
    })
    .await;
    s.daemon.shutdown().await;
}

/// `Alert.RequestOverLimit` for an API halves bansync's rate for it for
/// five minutes (tokio's paused clock), then the full rate is back.
#[tokio::test(start_paused = true)]
async fn a_rate_alert_halves_that_api_for_five_minutes() {
    let sim = Sim::start(1000).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &sim, "[sources]\nrooms = [\"r\"]", "");
    let settings = load(&path);
    let store = bansync::store::Store::open(
        &settings.store_path,
        bansync::daemon::emit_config(&settings),
        None,
    )
    .unwrap();
    let client = std::sync::Arc::new(bansync::tencent::TencentClient::new(
        settings.tencent.clone(),
        std::sync::Arc::new(bansync::metrics::Metrics::new()),
    ));
    let (tx, _rx) = tokio::sync::mpsc::channel(16);
    let mut worker = bansync::callback::Worker::new(
        store,
        client.clone().into(),
        tx,
        std::sync::Arc::new(bansync::metrics::Metrics::new()),
        bansync::clock::Clock::system(),
    );
    let plan = bansync::callback::CallbackPlan {
        app: settings.tencent.sdkappid,
        settings: bansync::config::CallbackSettings {
            listen: ([127, 0, 0, 1], 0).into(),
            path: "/".into(),
            token: None,
            token_origin: None,
            enrol_blocklists: false,
        },
        filter: settings.found_filter(),
        configured: Default::default(),
    };
    use bansync::tencent::Api;
    let rate = |api: Api| {
        // Slots reserved in 10 s of (paused) time, from now.
        let p = client.pacer(api);
        let end = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut n = 0;
        while p.reserve() < end {
            n += 1;
        }
        n
    };
    let full = rate(Api::RoomBanList);
    tokio::time::advance(Duration::from_secs(11)).await;
    let body = br#"{"ServiceName":"live_engine_http_srv","Command":"get_banned_member_list","Request":170,"Limit":200}"#;
    worker
        .try_execute(&plan, hint::parse("Alert.RequestOverLimit", body).unwrap())
        .await;
    let halved = rate(Api::RoomBanList);
    let other = rate(Api::GroupBanList);
    println!("10 s of slots: {full} before the alert, {halved} after it; another API {other}");
    assert!(
        (full / 2 - 2..=full / 2 + 2).contains(&halved),
        "{full} then {halved}"
    );
    assert!(
        (full - 2..=full + 2).contains(&other),
        "other APIs keep their rate"
    );
    tokio::time::advance(Duration::from_secs(300)).await;
    let _ = client.pacer(Api::RoomBanList).reserve();
    let again = rate(Api::RoomBanList);
    assert!(
        (full - 2..=full + 2).contains(&again),
        "after five minutes: {again}"
    );
}

/// A callback naming a room or a blocklist owner the vendor never had
/// (forged, say, on a listener without a token) makes no event: the source
/// is retired quietly after its first walk.
#[tokio::test]
async fn a_callback_about_a_source_that_never_existed_makes_no_event() {
    let s = setup(
        "[sources]\nrooms = [\"real\"]",
        None,
        "enrol_blocklists = true\n\n[discovery]\ngroups = false\ninterval = \"1h\"\n",
        |sim| sim.set(ListKind::Room, "real", &[]),
    )
    .await;
    let app = bansync::sim::DEMO_SDKAPPID;
    for (cmd, body) in [
        (
            "Live.CallbackAfterCreateRoom",
            r#"{"RoomInfo":{"RoomId":"ghost-room"}}"#,
        ),
        (
            "Sns.CallbackBlackListAdd",
            r#"{"PairList":[{"From_Account":"ghost-user","To_Account":"x"}]}"#,
        ),
    ] {
        let (status, _) = post(
            &s.callback_url,
            &query(app, cmd, None, None),
            body.as_bytes().to_vec(),
        )
        .await;
        assert_eq!(status, 200);
    }
    eventually(Duration::from_secs(5), "both retired", || {
        count(
            &s.db,
            "SELECT COUNT(*) FROM sources WHERE retired_at IS NOT NULL AND status = 'new'",
        ) == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count(&s.db, "SELECT COUNT(*) FROM events"),
        0,
        "no source.unavailable for what never existed"
    );
    // If the room is created for real later, its first walk is a baseline.
    s.sim
        .control("/sim/create", serde_json::json!({"room": "ghost-room"}))
        .await;
    eventually(Duration::from_secs(5), "walked once it exists", || {
        count(&s.db, "SELECT COUNT(*) FROM sources WHERE spec = 'room:ghost-room' AND status = 'ok' AND retired_at IS NULL") == 1
    })
    .await;
    assert_eq!(count(&s.db, "SELECT COUNT(*) FROM events"), 0);
    s.daemon.shutdown().await;
}

/// Two blocks by a user not yet watched, the second told while the first
/// walk is still being answered: both are reported, neither baselined.
/// And an enrolling callback about a block made long before reports
/// nothing (a callback is about a block just made).
#[tokio::test]
async fn every_pair_told_before_the_first_walk_is_reported() {
    let s = setup("", Some(TOKEN), "enrol_blocklists = true", |sim| {
        sim.set(ListKind::User, "zed", &[("old", 10)]);
        sim.fault(bansync::sim::Fault {
            api: Some("black_list_get".into()),
            target: Some("zed".into()),
            hold_ms: Some(600),
            ..Default::default()
        });
    })
    .await;
    s.sim
        .control(
            "/sim/block",
            serde_json::json!({"user": "zed", "account": "first"}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.sim
        .control(
            "/sim/block",
            serde_json::json!({"user": "zed", "account": "second"}),
        )
        .await;
    let got = s.rx.wait_for(2, Duration::from_secs(5)).await;
    let mut accounts: Vec<&str> = got
        .iter()
        .map(|r| r.body["data"]["account"].as_str().unwrap())
        .collect();
    accounts.sort();
    assert_eq!(accounts, ["first", "second"]);
    // An old block named by a callback for a new owner: baseline.
    s.sim
        .set(ListKind::User, "yan", &[("long-ago", now() - 86_400)]);
    let t = now();
    let q = query(
        bansync::sim::DEMO_SDKAPPID,
        "Sns.CallbackBlackListAdd",
        Some(t),
        Some(hint::sign(TOKEN, &t.to_string())),
    );
    let (status, _) = post(
        &s.callback_url,
        &q,
        br#"{"PairList":[{"From_Account":"yan","To_Account":"long-ago"}]}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(5), "yan walked", || {
        count(
            &s.db,
            "SELECT COUNT(*) FROM sources WHERE spec = 'blocklist:yan' AND status = 'ok'",
        ) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        s.rx.received().len(),
        2,
        "the day-old block is the baseline"
    );
    s.daemon.shutdown().await;
}

/// A hint goes ahead of the first walks of hundreds of newly found
/// sources: a kicked member's group is walked within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hint_does_not_wait_behind_newly_found_sources() {
    let s = setup(
        "[sources]\ngroups = [\"main\"]",
        Some(TOKEN),
        "\n[discovery]\nrooms = false\ninterval = \"1h\"\n",
        |sim| {
            let mut st = sim.state.lock().unwrap();
            for i in 0..600 {
                st.groups.entry(format!("g{i}")).or_default();
            }
            drop(st);
            sim.set(ListKind::Group, "main", &[]);
        },
    )
    .await;
    // 600 first walks at ~194 a second take 3 s.
    eventually(Duration::from_secs(5), "discovery under way", || {
        count(
            &s.db,
            "SELECT COUNT(*) FROM sources WHERE origin = 'discovered'",
        ) == 600
    })
    .await;
    let started = Instant::now();
    s.sim
        .control("/sim/ban", serde_json::json!({"group": "main", "account": "kicked", "duration": 600, "kick": true}))
        .await;
    let got = s.rx.wait_for(1, Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert_eq!(got[0].body["data"]["account"], "kicked");
    let walked = count(
        &s.db,
        "SELECT COUNT(*) FROM sources WHERE origin = 'discovered' AND status = 'ok'",
    );
    println!("kicked member's ban reported after {took:?}, with {walked} of 600 first walks done");
    assert!(walked < 600, "the first walks were still going on");
    assert!(took < Duration::from_secs(1), "{took:?}");
    s.daemon.shutdown().await;
}

/// A reload that changes only the path (and the token) on the same
/// address: the listener lets go of the port and comes back on the new
/// path, with the new token.
#[tokio::test]
async fn a_reload_moves_the_path_and_rotates_the_token() {
    let s = setup(
        "[sources]\nblocklists = [\"alice\"]",
        Some("t1"),
        "",
        |sim| sim.set(ListKind::User, "alice", &[]),
    )
    .await;
    let port: u16 = s
        .callback_url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("token = \"t1\"", "token = \"t2\"\npath = \"/v2/callback\"");
    std::fs::write(&s.config, text).unwrap();
    s.daemon.reload.send(load(&s.config)).unwrap();
    let app = bansync::sim::DEMO_SDKAPPID;
    let t = now();
    let signed = |tok: &str| {
        query(
            app,
            "Sns.CallbackBlackListAdd",
            Some(t),
            Some(hint::sign(tok, &t.to_string())),
        )
    };
    let url = format!("http://127.0.0.1:{port}/v2/callback");
    let body = br#"{"PairList":[{"From_Account":"alice","To_Account":"x"}]}"#.to_vec();
    let mut ok = false;
    for _ in 0..50 {
        if post(&url, &signed("t2"), body.clone()).await.0 == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the new path answers with the new token");
    assert_eq!(
        post(&url, &signed("t1"), body.clone()).await.0,
        403,
        "the old token is refused"
    );
    assert_eq!(
        post(&s.callback_url, &signed("t2"), body).await.0,
        404,
        "the old path is gone"
    );
    s.daemon.shutdown().await;
}
