//! Compatibility with what others wrote: the official `tls-sig-api-v2` and
//! `standardwebhooks` packages from PyPI check bansync's output, and
//! bansync's simulator checks theirs. The packages are installed into a
//! virtual environment under target/ on first run (this needs python3 and
//! access to the package registry; without them the test fails, loudly).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use bansync::sim::ListKind;

fn python() -> PathBuf {
    // The tests of this file run in parallel and both need the environment:
    // one builds it while the other waits, or the second `venv` call meets
    // the first one's half-made directory.
    static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _only_one = SETUP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/interop-venv");
    let py = venv.join("bin/python");
    // Named for what it holds: a venv from before a package was added is
    // set up again.
    let ready = venv.join(".installed-tls-standardwebhooks-jsonschema");
    if !ready.exists() {
        // `--clear` so that a run interrupted halfway does not poison the next.
        let ok = Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "cannot create a Python virtual environment (python3 -m venv) for the interop tests"
        );
        let ok = Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "tls-sig-api-v2",
                "standardwebhooks",
                "jsonschema",
            ])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "cannot install tls-sig-api-v2, standardwebhooks and jsonschema from PyPI"
        );
        std::fs::write(&ready, "").unwrap();
    }
    py
}

/// A child process that cannot outlive a failing test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn script(name: &str) -> String {
    format!("{}/tests/interop/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_usersigs_are_accepted_and_ours_verify_with_the_official_hmac() {
    let py = python();
    let (app, key, admin) = (
        bansync::sim::DEMO_SDKAPPID.to_string(),
        bansync::sim::DEMO_KEY,
        bansync::sim::DEMO_IDENTIFIER,
    );
    // Theirs, checked by our verifier and by the simulator over HTTP.
    let out = Command::new(&py)
        .args([
            &script("usersig_check.py"),
            "gen",
            &app,
            key,
            admin,
            "86400",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = String::from_utf8(out.stdout).unwrap().trim().to_string();
    bansync::tencent::usersig::verify(&theirs, key, 1400000000, admin, now() as u64)
        .expect("the official sig verifies");
    let sim = Sim::start(1000).await;
    sim.set(ListKind::Room, "r", &[("u", now() + 60)]);
    let url = format!(
        "{}/v4/live_engine_http_srv/get_banned_member_list?sdkappid={app}&identifier={admin}&usersig={theirs}&random=7&contenttype=json",
        sim.base_url()
    );
    let body: serde_json::Value = reqwest::Client::new()
        .post(&url)
        .body(r#"{"RoomId":"r","Offset":0,"Limit":10}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["ErrorCode"], 0,
        "the simulator accepts the official sig: {body}"
    );
    assert_eq!(
        body["Response"]["BannedAccountList"][0]["Member_Account"],
        "u"
    );
    // A sig from another key is refused with the vendor's code.
    let out = Command::new(&py)
        .args([
            &script("usersig_check.py"),
            "gen",
            &app,
            "another-key",
            admin,
            "86400",
        ])
        .output()
        .unwrap();
    let wrong = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let url = url.replace(&theirs, &wrong);
    let body: serde_json::Value = reqwest::Client::new()
        .post(&url)
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["ErrorCode"], 70009);

    // Ours, decoded and checked with the official library's HMAC.
    for (id, expire, userbuf) in [
        (admin, 86400u64, None),
        ("someone", 180 * 86400, Some(&b"abc"[..])),
    ] {
        let ours =
            bansync::tencent::usersig::generate(key, 1400000000, id, expire, now() as u64, userbuf);
        let out = Command::new(&py)
            .args([&script("usersig_check.py"), "check", &app, key, id, &ours])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "official check refused our sig: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_verifies_with_the_official_standardwebhooks_package() {
    let py = python();
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("port");
    let log = dir.path().join("verdicts");
    let _receiver = KillOnDrop(
        Command::new(&py)
            .args([
                &script("receiver.py"),
                port_file.to_str().unwrap(),
                log.to_str().unwrap(),
                SECRET,
            ])
            .spawn()
            .unwrap(),
    );
    eventually(Duration::from_secs(20), "python receiver up", || {
        std::fs::read_to_string(&port_file).is_ok_and(|p| !p.is_empty())
    })
    .await;
    let port = std::fs::read_to_string(&port_file).unwrap();
    let t = now() + 3600;
    sim.set(ListKind::Room, "a", &[("x", t), ("y", t), ("名前", t)]);
    sim.set(ListKind::Room, "b", &[]);
    sim.set(ListKind::User, "alice", &[("bob", 1)]);
    // Rotation: a second, unknown secret comes first; the receiver knows the
    // configured second one, and must still verify.
    let hook = format!(
        "[[webhook]]\nname = \"py\"\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"whsec_dGhpcyBpcyBhbm90aGVyIHNlY3JldCE= {SECRET}\"\n"
    );
    let path = write_config(
        dir.path(),
        &sim,
        "[sources]\nrooms = [\"a\", \"b\"]\nblocklists = [\"alice\"]",
        &format!(
            "[sync]\ninterval = \"1s\"\nconfirm_delay = \"100ms\"\ninitial = \"emit\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n{hook}"
        ),
    );
    let d = start_daemon(load(&path)).await;
    let lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // 3 + 1 added, then 1 more added and 1 lifted.
    eventually(Duration::from_secs(20), "four verdicts", || {
        lines().len() >= 4
    })
    .await;
    sim.upsert(ListKind::Room, "b", "z", t + 5);
    sim.remove(ListKind::Room, "a", "x");
    eventually(Duration::from_secs(20), "six verdicts", || {
        lines().len() >= 6
    })
    .await;
    d.shutdown().await;
    let verdicts = lines();
    let rejected: Vec<_> = verdicts.iter().filter(|l| !l.starts_with("ok ")).collect();
    assert!(
        rejected.is_empty(),
        "the official package rejected deliveries: {rejected:?}"
    );
    assert!(verdicts.len() >= 6);
}

/// `bansync schema` (the binary's output) checked by the Python
/// `jsonschema` package: a valid draft 2020-12 schema, every example body
/// valid, a body without its data refused.
#[test]
fn the_schema_and_every_example_validate_with_the_python_jsonschema_package() {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bansync"))
        .arg("schema")
        .output()
        .unwrap();
    assert!(out.status.success());
    let schema = dir.path().join("schema.json");
    std::fs::write(&schema, &out.stdout).unwrap();
    let bodies = dir.path().join("bodies.jsonl");
    let lines: Vec<String> = bansync::event::examples()
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    std::fs::write(&bodies, lines.join("\n") + "\n").unwrap();
    let out = Command::new(&py)
        .arg(script("schema_check.py"))
        .arg(&schema)
        .arg(&bodies)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for t in bansync::event::EventType::ALL {
        assert!(text.contains(&format!("{} 1", t.as_str())), "{text}");
    }
    assert!(text.contains("webhook.test 1"), "{text}");
}
