//! `bansync demo`: the simulator, a local webhook receiver that verifies and
//! prints what it receives, and the daemon on a temporary store, with a
//! scripted minute of bans, unbans, expiries and blocks so a newcomer sees
//! every event type arrive.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::config::{self, Environment};
use crate::daemon::{self, DaemonControl, Grace};
use crate::delivery::sign;
use crate::sim;
use crate::tencent::RetryPolicy;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Clone)]
struct Receiver {
    started: Instant,
    key: Vec<u8>,
    seen: Arc<Mutex<BTreeMap<String, usize>>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (id, ts, sig) = (
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
    );
    let expected = sign::signature_header(
        std::slice::from_ref(&r.key),
        &id,
        ts.parse().unwrap_or(0),
        &body,
    );
    if !sig.split(' ').any(|s| s == expected) {
        println!("  !! signature did not verify for {id}");
        return StatusCode::UNAUTHORIZED;
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let d = &v["data"];
    let extra = crate::event::describe_fields(d);
    let kind = v["type"].as_str().unwrap_or("?").to_string();
    println!(
        "[{:>5.1}s] {:<20} {:<22} seq={:<3} {}{extra}",
        r.started.elapsed().as_secs_f64(),
        kind,
        d["source"].as_str().unwrap_or("?"),
        d["seq"],
        d["account"].as_str().unwrap_or("-"),
    );
    *r.seen.lock().unwrap().entry(kind).or_default() += 1;
    StatusCode::NO_CONTENT
}

async fn control(base: &str, path: &str, body: Value) {
    let _ = reqwest::Client::new()
        .post(format!("{base}/sim/{path}"))
        .json(&body)
        .send()
        .await;
}

pub fn main(duration: Duration) -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(duration))
}

async fn run(duration: Duration) -> ExitCode {
    // A private directory (mode 0700, a random name, created new: never an
    // existing path or a symlink someone planted), kept after the run so
    // that `status` can read its store.
    let private = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700);
    let dir = match tempfile::Builder::new()
        .prefix("bansync-demo-")
        .permissions(private)
        .tempdir()
    {
        Ok(d) => d.keep(),
        Err(e) => {
            eprintln!("bansync demo: cannot create a temporary directory: {e}");
            return ExitCode::from(1);
        }
    };
    let state = sim::new_state(sim::DEMO_SDKAPPID, sim::DEMO_IDENTIFIER, sim::DEMO_KEY, 200);
    let sim_addr = sim::spawn(state)
        .await
        .expect("simulator binds a loopback port");
    let base = format!("http://{sim_addr}");
    let now = crate::clock::Clock::system().now_s();
    // The estate: two rooms, a group, a room that will vanish, and a user's blocklist.
    control(
        &base,
        "ban",
        json!({"room": "live-1", "accounts": ["viewer7", "viewer8"], "until": now + 3600}),
    )
    .await;
    control(&base, "create", json!({"room": "live-2"})).await;
    control(&base, "create", json!({"room": "live-3"})).await;
    control(
        &base,
        "ban",
        json!({"group": "@TGS#demo", "account": "spammer1", "until": now + 7200}),
    )
    .await;
    control(
        &base,
        "block",
        json!({"user": "alice", "accounts": ["bob", "carol"], "at": now - 600}),
    )
    .await;

    let receiver_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("receiver binds");
    let receiver_addr = receiver_listener.local_addr().unwrap();
    let key =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &SECRET[6..]).unwrap();
    let receiver = Receiver {
        started: Instant::now(),
        key,
        seen: Arc::new(Mutex::new(BTreeMap::new())),
    };
    let seen = receiver.seen.clone();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(receiver);
    tokio::spawn(async move {
        let _ = axum::serve(receiver_listener, app).await;
    });

    // The vendor's callbacks come to the daemon's callback listener.
    let callback_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9188);
    let token = "demo-callback-token";
    let config_path = dir.join("bansync.toml");
    let toml = format!(
        r#"# Written by `bansync demo`: the daemon's configuration for this run.
[tencent]
sdkappid = {app}
identifier = "{admin}"
secret_key = "{key}"
base_url = "{base}"

[store]
path = "{store}"

[sync]
interval = "10s"
confirm_delay = "1s"
initial = "baseline"

[sources]
groups = ["@TGS#demo"]
rooms = ["live-1", "live-2", "live-3"]
blocklists = ["alice"]

[[webhook]]
name = "demo-receiver"
url = "http://{receiver_addr}/hook"
secret = "{SECRET}"

[[propagate]]
from = ["group:@TGS#demo"]
to = ["room:live-2", "room:ghost"]
lift = true

[http]
listen = "127.0.0.1:0"

[discovery]
include = ["group:*", "room:*"]
interval = "5s"

[callback]
listen = "127.0.0.1:{callback_port}"
token = "{token}"
"#,
        app = sim::DEMO_SDKAPPID,
        admin = sim::DEMO_IDENTIFIER,
        key = sim::DEMO_KEY,
        store = dir.join("bansync.db").display(),
    );
    std::fs::write(&config_path, toml).expect("temporary directory is writable");
    let settings = match config::load_with(&config_path, &Environment::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bansync demo: {e}");
            return ExitCode::from(1);
        }
    };
    crate::logging::init(config::LogFormat::Text, "warn");
    println!("bansync demo");
    println!(
        "  simulator     http://{sim_addr}  (the vendor's REST API, with a control API under /sim)"
    );
    println!(
        "  receiver      http://{receiver_addr}/hook  (verifies each signature, prints each event)"
    );
    println!(
        "  callbacks     http://127.0.0.1:{callback_port}/tencent/callback  (the simulator calls back, signed, as the vendor does)"
    );
    println!("  configuration {}", config_path.display());
    println!("  store         {}", settings.store_path.display());
    println!(
        "The first walk records what is already banned (baseline); every change after it arrives below."
    );
    println!(
        "Sweeps run every 10 s; a callback (a block, a room created or dissolved) makes bansync look at once.\n"
    );

    let (stop_tx, stop) = watch::channel(false);
    let (_reload_tx, reload) = mpsc::unbounded_channel();
    let control_handle = DaemonControl {
        stop,
        reload,
        on_ready: Box::new(|| {}),
        clock: crate::clock::Clock::system(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok();
    let daemon = tokio::spawn(daemon::run(
        settings,
        listener,
        control_handle,
        RetryPolicy::default(),
        Grace::default(),
    ));
    // The vendor's console: callbacks to the daemon, signed with the token.
    let callback_url = format!("http://127.0.0.1:{callback_port}/tencent/callback");
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(("127.0.0.1", callback_port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    control(
        &base,
        "callback",
        json!({"url": callback_url, "token": token}),
    )
    .await;

    // The script: (seconds from start, what happens, control call).
    let script: Vec<(u64, &str, &str, Value)> = vec![
        (
            4,
            "a moderator bans viewer1 in live-1 for 12 s",
            "ban",
            json!({"room": "live-1", "account": "viewer1", "duration": 12}),
        ),
        (
            6,
            "alice blocks dave (the vendor calls back: bansync walks her blocklist at once)",
            "block",
            json!({"user": "alice", "account": "dave"}),
        ),
        (
            7,
            "room live-9 is created (the vendor calls back: it is watched at once)",
            "create",
            json!({"room": "live-9", "viewers": 120}),
        ),
        (
            8,
            "spammer2 is banned in the group for 10 min (mirrored to live-2; room:ghost does not exist)",
            "ban",
            json!({"group": "@TGS#demo", "account": "spammer2", "duration": 600}),
        ),
        (
            10,
            "a moderator bans troll1 in the new room live-9 for 10 min",
            "ban",
            json!({"room": "live-9", "account": "troll1", "duration": 600}),
        ),
        (
            12,
            "viewer7's ban in live-1 is extended",
            "ban",
            json!({"room": "live-1", "account": "viewer7", "duration": 7200}),
        ),
        (
            16,
            "viewer8 is unbanned early",
            "unban",
            json!({"room": "live-1", "account": "viewer8"}),
        ),
        (
            20,
            "alice unblocks bob and blocks him again",
            "block",
            json!({"user": "alice", "account": "bob"}),
        ),
        (
            24,
            "alice unblocks carol",
            "unblock",
            json!({"user": "alice", "account": "carol"}),
        ),
        (
            28,
            "room live-3 is dissolved (the vendor calls back: bansync looks at once)",
            "destroy",
            json!({"room": "live-3"}),
        ),
        (
            36,
            "spammer2 is unbanned in the group (the mirrored ban in live-2 is lifted too)",
            "unban",
            json!({"group": "@TGS#demo", "account": "spammer2"}),
        ),
        (
            40,
            "room live-3 is created again",
            "create",
            json!({"room": "live-3"}),
        ),
    ];
    let start = Instant::now();
    for (at, what, path, body) in script {
        let due = Duration::from_secs(at).min(duration);
        tokio::time::sleep(due.saturating_sub(start.elapsed())).await;
        println!("[{:>5.1}s] >> {what}", start.elapsed().as_secs_f64());
        if path == "block" && what.contains("blocks him again") {
            // A new AddBlackTimeStamp is what block.updated reports.
            let mut b = body.clone();
            b["at"] = json!(crate::clock::Clock::system().now_s());
            control(&base, path, b).await;
        } else {
            control(&base, path, body).await;
        }
    }
    tokio::time::sleep(duration.saturating_sub(start.elapsed())).await;
    let _ = stop_tx.send(true);
    let _ = daemon.await;
    let seen = seen.lock().unwrap().clone();
    println!("\nevents received by type:");
    for (k, n) in &seen {
        println!("  {k:<20} {n}");
    }
    let missing: Vec<&str> = crate::event::EventType::ALL
        .iter()
        .map(|t| t.as_str())
        .filter(|t| !seen.contains_key(*t))
        .collect();
    if missing.is_empty() {
        println!("every event type arrived.");
    } else {
        println!("not seen in this run: {}", missing.join(", "));
    }
    println!(
        "\nTry: bansync --config {} status    (the store is kept in {})",
        config_path.display(),
        dir.display()
    );
    ExitCode::SUCCESS
}
