//! The `bansync` binary as operators and systemd run it: exit codes,
//! signals (SIGHUP reload, SIGTERM, SIGKILL and restart), and logs that
//! never hold a secret.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use bansync::sim::{Fault, ListKind};

const BIN: &str = env!("CARGO_BIN_EXE_bansync");

fn spawn_daemon(config: &Path, log: &Path, level: &str) -> Child {
    Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", level)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

async fn wait_ready(port: u16) {
    let url = format!("http://127.0.0.1:{port}/readyz");
    eventually_async(Duration::from_secs(20), "daemon ready", || {
        let url = url.clone();
        async move {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
}

async fn eventually_async<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal(child: &Child, sig: i32) {
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

async fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "daemon did not exit in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn usage_and_configuration_errors_exit_2_and_name_the_fault() {
    let out = bansync(&[]);
    assert_eq!(out.status.code(), Some(2));
    let out = bansync(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = bansync(&[
        "sync",
        "--source",
        "channel:x",
        "--config",
        "/nonexistent.toml",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--source"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bansync(&["events", "--type", "ban.deleted", "--config", "/x.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let out = bansync(&["check-config", "--config", "/nonexistent/bansync.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/bansync.toml"));

    let dir = tempfile::tempdir().unwrap();
    let good = "[tencent]\nsdkappid = 1400000000\nidentifier = \"admin\"\nsecret_key = \"s3cr3t-k3y\"\nregion = \"china\"\n\n[sources]\nrooms = [\"live-1\"]\n\n[[webhook]]\nname = \"w\"\nurl = \"https://example.com/h\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n";
    let path = dir.path().join("c.toml");
    std::fs::write(&path, good).unwrap();
    let out = bansync(&["check-config", "--config", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("room:live-1") && stdout.contains("https://example.com/h"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("s3cr3t") && !stdout.contains("MfKQ9r8"),
        "secrets redacted: {stdout}"
    );
    // --config after the command, as well as before it.
    let out = Command::new(BIN)
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));

    let broken = [
        (
            good.replace("region = \"china\"", "region = \"atlantis\""),
            "tencent.region",
        ),
        (
            good.replace("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!"),
            "secret",
        ),
        (
            good.replace("rooms = [\"live-1\"]", "rooms = []"),
            "sources",
        ),
        (
            format!("{good}\n[sync]\npage_size = 1000\n"),
            "sync.page_size",
        ),
        (format!("{good}\n[sync]\nfrequency = \"5m\"\n"), "frequency"),
        (
            good.replace("sdkappid = 1400000000", "sdkappid = -1"),
            "tencent.sdkappid",
        ),
        (
            good.replace("secret_key = \"s3cr3t-k3y\"", ""),
            "tencent.secret_key",
        ),
        (
            format!("{good}\n[sync]\ninterval = \"soon\"\n"),
            "sync.interval",
        ),
        (
            good.replace("url = \"https://example.com/h\"", "url = \"example.com\""),
            "url",
        ),
        (format!("{good}\n[log]\nformat = \"yaml\"\n"), "log.format"),
        (
            format!("{good}\n[http]\nlisten = \"nowhere\"\n"),
            "http.listen",
        ),
        ("this is not toml".to_string(), "configuration"),
    ];
    for (text, key) in broken {
        std::fs::write(&path, &text).unwrap();
        let out = bansync(&["check-config", "--config", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {err}");
        assert!(err.contains(key), "expected `{key}` named in: {err}");
        assert!(!err.contains("s3cr3t"), "no secret in errors");
    }
}

// Multi-threaded: the commands run as blocking child processes while the
// in-process simulator answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usersig_ban_and_unban_commands() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sim, "[sources]\nrooms = [\"live-1\"]", "");
    let c = config.to_str().unwrap();
    let out = bansync(&["usersig", "--config", c, "--expire", "1h"]);
    assert!(out.status.success());
    let sig = String::from_utf8(out.stdout).unwrap();
    let f = bansync::tencent::usersig::verify(
        sig.trim(),
        bansync::sim::DEMO_KEY,
        1400000000,
        "administrator",
        now() as u64,
    )
    .unwrap();
    assert_eq!(f.expire, 3600);

    sim.set(ListKind::Room, "live-1", &[]);
    let accounts: Vec<String> = (0..45).map(|i| format!("v{i}")).collect();
    let mut args = vec![
        "ban",
        "--config",
        c,
        "--room",
        "live-1",
        "--duration",
        "10m",
        "--reason",
        "spam",
    ];
    args.extend(accounts.iter().map(String::as_str));
    let out = bansync(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sim.calls("live_engine_http_srv/ban_member"),
        3,
        "20 accounts a request"
    );
    assert_eq!(sim.entries(ListKind::Room, "live-1").len(), 45);
    let out = bansync(&["unban", "--config", c, "--room", "live-1", "v0", "v1"]);
    assert!(out.status.success());
    assert_eq!(sim.entries(ListKind::Room, "live-1").len(), 43);
    let out = bansync(&[
        "ban",
        "--config",
        c,
        "--room",
        "nowhere",
        "--duration",
        "1m",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("100004"));
    let out = bansync(&[
        "ban",
        "--config",
        c,
        "--room",
        "live-1",
        "--duration",
        "forever",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

fn daemon_config(
    dir: &Path,
    sim: &Sim,
    rooms: &[&str],
    hooks: &str,
    port: u16,
    extra: &str,
) -> std::path::PathBuf {
    let list = rooms
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect::<Vec<_>>()
        .join(", ");
    write_config(
        dir,
        sim,
        &format!("[sources]\nrooms = [{list}]"),
        &format!(
            "[sync]\ninterval = \"1s\"\nconfirm_delay = \"200ms\"\ninitial = \"emit\"\n{extra}\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n{hooks}"
        ),
    )
}

#[tokio::test]
async fn sighup_applies_a_valid_configuration_and_keeps_the_old_one_on_error() {
    let sim = Sim::start(100_000).await;
    let keep = Receiver::start().await;
    let dropped = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let t = now() + 3600;
    sim.set(ListKind::Room, "r1", &[("a", t)]);
    sim.set(ListKind::Room, "r2", &[("b", t)]);
    let port = free_port();
    let hooks = format!(
        "{}\n{}",
        webhook_toml("keep", &keep.url(), ""),
        webhook_toml("dropped", &dropped.url(), "")
    );
    let config = daemon_config(dir.path(), &sim, &["r1"], &hooks, port, "");
    let log = dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log, "info");
    wait_ready(port).await;
    keep.wait_for(1, Duration::from_secs(10)).await;
    dropped.wait_for(1, Duration::from_secs(10)).await;

    // A source added, a webhook removed.
    daemon_config(
        dir.path(),
        &sim,
        &["r1", "r2"],
        &webhook_toml("keep", &keep.url(), ""),
        port,
        "",
    );
    signal(&child, libc::SIGHUP);
    let got = keep.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(
        got[1].body["data"]["source"], "room:r2",
        "the new source is walked"
    );
    sim.upsert(ListKind::Room, "r1", "c", t);
    keep.wait_for(3, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        dropped.received().len(),
        1,
        "the removed webhook gets nothing more"
    );

    // A broken configuration: logged, and the running one stays.
    std::fs::write(&config, "[tencent]\nregion = \"atlantis\"\n").unwrap();
    signal(&child, libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sim.upsert(ListKind::Room, "r2", "d", t);
    let got = keep.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(got[3].body["data"]["account"], "d");
    signal(&child, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(20)).await.code(),
        Some(0)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("keeping the running one") && text.contains("tencent"),
        "{text}"
    );
}

#[tokio::test]
async fn sigterm_during_a_sweep_exits_0_with_a_consistent_store() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let t = now() + 3600;
    let rooms: Vec<String> = (0..30).map(|i| format!("r{i}")).collect();
    for r in &rooms {
        sim.fill(ListKind::Room, r, 250, t);
    }
    // Slow pages make the sweep long enough to interrupt.
    sim.fault(Fault {
        latency_ms: Some(150),
        count: Some(0),
        ..Default::default()
    });
    let port = free_port();
    let names: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let config = daemon_config(
        dir.path(),
        &sim,
        &names,
        "",
        port,
        "max_concurrent_walks = 8",
    );
    let log = dir.path().join("daemon.log");
    let mut child = spawn_daemon(&config, &log, "info");
    wait_ready(port).await;
    let db = dir.path().join("bansync.db");
    eventually(Duration::from_secs(20), "some walks done", || {
        count(&db, "SELECT COUNT(*) FROM sources WHERE walks > 0") >= 3
    })
    .await;
    signal(&child, libc::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0));
    let conn = rusqlite::Connection::open(&db).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    // Every source is all or nothing: a complete walk's 250 entries and
    // events, or none at all.
    let mut stmt = conn
        .prepare("SELECT spec, entries, next_seq - 1, walks FROM sources")
        .unwrap();
    let rows: Vec<(String, i64, i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 30);
    let walked = rows.iter().filter(|r| r.3 > 0).count();
    assert!(
        walked < 30,
        "the stop interrupted the sweep ({walked} of 30 walked)"
    );
    for (spec, entries, events, walks) in rows {
        if walks > 0 {
            assert_eq!((entries, events), (250, 250), "{spec}");
        } else {
            assert_eq!((entries, events), (0, 0), "{spec}");
        }
        let held: i64 = conn
            .query_row("SELECT COUNT(*) FROM entries e JOIN sources s ON s.id = e.source_id WHERE s.spec = ?1", [&spec], |r| r.get(0))
            .unwrap();
        assert_eq!(held, entries, "{spec}");
    }
}

/// (source, seq, type, account) of every event: what must be identical.
fn event_log(db: &Path) -> Vec<(String, i64, String, String)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT s.spec, e.seq, e.type, COALESCE(e.account,'') FROM events e JOIN sources s ON s.id = e.source_id ORDER BY s.spec, e.seq")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn sigkill_at_random_moments_loses_and_invents_nothing() {
    use rand::{Rng, SeedableRng};
    let sim = Sim::start(100_000).await;
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let t = now() + 86_400;
    let rooms: Vec<String> = (0..12).map(|i| format!("r{i}")).collect();
    for r in &rooms {
        sim.fill(ListKind::Room, r, 300, t);
    }
    sim.fault(Fault {
        latency_ms: Some(40),
        count: Some(0),
        ..Default::default()
    });
    rx.answer(vec![Answer::Delay(Duration::from_millis(5))]);
    let port = free_port();
    let names: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let config = daemon_config(
        dir.path(),
        &sim,
        &names,
        &webhook_toml("h", &rx.url(), "max_in_flight = 4"),
        port,
        "max_concurrent_walks = 3",
    );
    let db = dir.path().join("bansync.db");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut kills = 0;
    for round in 0..6 {
        let mut child = spawn_daemon(&config, &dir.path().join(format!("run{round}.log")), "warn");
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1500))).await;
        signal(&child, libc::SIGKILL);
        let _ = wait_exit(&mut child, Duration::from_secs(10)).await;
        kills += 1;
    }
    // Then an uninterrupted run to the end.
    let mut child = spawn_daemon(&config, &dir.path().join("final.log"), "warn");
    wait_ready(port).await;
    eventually(Duration::from_secs(60), "every source walked", || {
        count(&db, "SELECT COUNT(*) FROM sources WHERE walks > 0") == 12
    })
    .await;
    let expected_events = 12 * 300;
    let got = rx
        .wait_for_unique(expected_events, Duration::from_secs(60))
        .await;
    signal(&child, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(30)).await.code(),
        Some(0)
    );

    // The event log equals an uninterrupted run's: per source, seq 1..=300,
    // one ban.added for each account, no gap, nothing extra.
    let log = event_log(&db);
    let mut expected = Vec::new();
    let mut specs: Vec<String> = rooms.iter().map(|r| format!("room:{r}")).collect();
    specs.sort();
    for spec in &specs {
        for i in 0..300 {
            expected.push((
                spec.clone(),
                i as i64 + 1,
                "ban.added".to_string(),
                format!("u{i:05}"),
            ));
        }
    }
    assert_eq!(log.len(), expected.len(), "after {kills} kills");
    assert_eq!(log, expected);
    // Every owed delivery was made (at least once), and none is owed now.
    let ids: std::collections::HashSet<String> = got.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), expected_events);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM deliveries"), 0);
}

#[tokio::test]
async fn no_secret_ever_reaches_the_log_even_at_debug() {
    let sim = Sim::start(100_000).await;
    let mut rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let t = now() + 3600;
    sim.set(ListKind::Room, "r1", &[("a", t)]);
    // A refused sig, failed deliveries and a refused connection: the paths
    // where secrets like to leak into error messages.
    sim.fault(Fault {
        error_code: Some(70001),
        count: Some(1),
        ..Default::default()
    });
    sim.fault(Fault {
        error_code: Some(60006),
        after: 3,
        count: Some(1),
        ..Default::default()
    });
    rx.answer(vec![
        Answer::Status(500),
        Answer::Status(401),
        Answer::Status(200),
    ]);
    let port = free_port();
    for (format, level) in [("text", "trace"), ("json", "debug")] {
        let config = daemon_config(
            dir.path(),
            &sim,
            &["r1"],
            &webhook_toml(
                "h",
                &rx.url(),
                "retry_schedule = [\"100ms\", \"100ms\", \"100ms\"]",
            ),
            port,
            &format!("\n[log]\nformat = \"{format}\"\nlevel = \"{level}\""),
        );
        let log = dir.path().join(format!("{format}.log"));
        let mut child = spawn_daemon(&config, &log, level);
        wait_ready(port).await;
        sim.upsert(ListKind::Room, "r1", &format!("x-{format}"), t);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        rx.refuse().await;
        sim.upsert(ListKind::Room, "r1", &format!("y-{format}"), t);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        rx.resume().await;
        signal(&child, libc::SIGTERM);
        assert_eq!(
            wait_exit(&mut child, Duration::from_secs(20)).await.code(),
            Some(0)
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.len() > 1000, "the daemon logged at {level}");
        let whsec_key = &SECRET[6..];
        for needle in [
            bansync::sim::DEMO_KEY,
            SECRET,
            whsec_key,
            "usersig=",
            "eJy",
            "v1,",
            "TLS.sig",
        ] {
            assert!(
                !text.contains(needle),
                "{format} log at {level} holds `{needle}`"
            );
        }
    }
    assert!(rx.received().len() >= 2);
}

/// `bansync demo` (the README's first command, shortened) runs end to end
/// and keeps its store in a private directory of its own: mode 0700, a
/// fresh random name under `$TMPDIR`.
#[test]
fn the_demo_runs_in_a_private_directory() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["demo", "--duration", "6s"])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept = stdout
        .split("(the store is kept in ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .expect("the demo says where its store is");
    let kept = Path::new(kept);
    assert!(kept.starts_with(tmp.path()), "{}", kept.display());
    let name = kept.file_name().unwrap().to_string_lossy();
    assert!(
        name.starts_with("bansync-demo-") && name.len() > "bansync-demo-".len() + 4,
        "{name}"
    );
    let mode = std::fs::metadata(kept).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");
    assert!(kept.join("bansync.db").exists());
}

/// Reading commands open the store read-only: a store at another schema
/// version is refused with a clear message and left exactly as it was (a
/// newer `bansync status` must not migrate a running older daemon's store).
#[tokio::test]
async fn reading_commands_never_migrate_the_store() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &sim, "[sources]\nrooms = [\"r\"]", "");
    let settings = load(&config);
    drop(bansync::store::Direct::open(&settings.store_path).unwrap());
    let set_version = |v: i64| {
        let c = rusqlite::Connection::open(&settings.store_path).unwrap();
        c.pragma_update(None, "user_version", v).unwrap();
    };
    let version = || -> i64 {
        let c = rusqlite::Connection::open(&settings.store_path).unwrap();
        c.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    let current = version();
    let out = bansync(&["--config", config.to_str().unwrap(), "status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (v, says) in [(current + 5, "newer"), (current - 1, "older")] {
        set_version(v);
        let out = bansync(&["--config", config.to_str().unwrap(), "status"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert_eq!(version(), v, "the store was changed");
    }
}

/// The simulator listens on loopback unless told otherwise, and takes its
/// key from a file or the environment (never the command line).
#[test]
fn the_simulator_refuses_a_public_address_without_allow_remote() {
    let out = bansync(&["sim", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-remote"));
    let out = bansync(&["sim", "--secret-key", "visible-in-ps"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the key is not taken from the command line"
    );
}

/// Commands refuse what the vendor would take for a mistake: an empty or
/// absurd account id, a sig valid for years.
#[test]
fn ban_unban_and_usersig_refuse_bad_arguments() {
    for (args, names) in [
        (
            &["ban", "--room", "r", "--duration", "1h", ""][..],
            "ACCOUNT",
        ),
        (&["unban", "--room", "r", "evil\nname"][..], "ACCOUNT"),
        (
            &[
                "ban",
                "--room",
                "r",
                "--duration",
                "1h",
                "a-very-long-account-id-over-32-bytes",
            ][..],
            "ACCOUNT",
        ),
        (&["usersig", "--expire", "3650d"][..], "--expire"),
    ] {
        let out = bansync(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(names), "{args:?}: {stderr}");
    }
}
