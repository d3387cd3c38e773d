//! A hostile or broken vendor (or whatever answers at `base_url`): nothing
//! leaks, nothing is emitted from a bad walk, memory stays bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;
use bansync::metrics::Metrics;
use bansync::sim::ListKind;
use bansync::source::SourceSpec;
use bansync::tencent::{ApiErrorKind, TencentClient, WalkError, walk};

/// A server that reads each request and answers with `answer`'s bytes
/// (written in chunks, for bodies larger than memory should hold).
/// Returns its address and how many connections it accepted.
async fn raw_server(
    answer: impl Fn() -> Box<dyn Iterator<Item = Vec<u8>> + Send> + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let (answer, n) = (Arc::new(answer), count.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = sock.read(&mut buf).await;
                for chunk in answer() {
                    if sock.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    (addr, count)
}

fn once(bytes: String) -> Box<dyn Iterator<Item = Vec<u8>> + Send> {
    Box::new(std::iter::once(bytes.into_bytes()))
}

async fn client_at(addr: SocketAddr, timeout: &str) -> (TencentClient, tempfile::TempDir) {
    let sim = Sim::start(1000).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &sim, "[sources]\nrooms = [\"r\"]", "");
    let mut settings = load(&path).tencent;
    settings.base_urls = vec![format!("http://{addr}")];
    settings.timeout = bansync::duration::parse(timeout).unwrap();
    (
        TencentClient::with_retry(settings, Arc::new(Metrics::new()), fast_retry()),
        dir,
    )
}

async fn walk_room(c: &TencentClient) -> Result<Vec<bansync::source::Entry>, WalkError> {
    let spec: SourceSpec = "room:r".parse().unwrap();
    walk::walk(c, &spec, 100, 1000, &mut |_| {}).await
}

fn kind(e: WalkError) -> ApiErrorKind {
    match e {
        WalkError::Api(e) | WalkError::Gone { error: e, .. } => e.kind,
        other => panic!("not an API error: {other:?}"),
    }
}

/// A 307 to another address: the request (its URL carries the UserSig) is
/// not sent there, and no Referer names it. The walk fails.
#[tokio::test]
async fn a_redirect_is_an_error_and_the_usersig_goes_nowhere() {
    let (elsewhere, reached) =
        raw_server(|| once("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".into())).await;
    let (vendor, _) = raw_server(move || {
        once(format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{elsewhere}/steal\r\ncontent-length: 0\r\n\r\n"
        ))
    })
    .await;
    let (c, _d) = client_at(vendor, "2s").await;
    let e = walk_room(&c).await.unwrap_err();
    assert!(matches!(kind(e), ApiErrorKind::Http(307)));
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

/// The resident set of this process (KiB).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// An endless body (no length, 400 MiB streamed) and a body that claims
/// to be huge: each read stops at the cap; memory stays bounded.
#[tokio::test]
async fn a_huge_or_endless_body_is_refused_with_bounded_memory() {
    let (endless, _) = raw_server(|| {
        let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"x\":\"".to_vec();
        Box::new(std::iter::once(head).chain((0..400).map(|_| vec![b'a'; 1 << 20])))
    })
    .await;
    let (claims, _) =
        raw_server(|| once("HTTP/1.1 200 OK\r\ncontent-length: 400000000\r\n\r\n{".into())).await;
    let before = rss_kib();
    for addr in [endless, claims] {
        let (c, _d) = client_at(addr, "20s").await;
        let e = walk_room(&c).await.unwrap_err();
        match kind(e) {
            ApiErrorKind::Malformed(m) => assert!(m.contains("body larger than"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    println!("hostile bodies: resident set grew {grown_mib} MiB");
    assert!(grown_mib < 100, "resident set grew {grown_mib} MiB");
}

/// A vendor that accepts and never answers: the walk fails at the timeout.
#[tokio::test]
async fn a_vendor_that_never_answers_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock); // read nothing, answer nothing
        }
    });
    let (c, _d) = client_at(silent, "1s").await;
    let started = std::time::Instant::now();
    assert!(walk_room(&c).await.is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

/// A long `ErrorInfo` with control characters is cut and cleaned before it
/// reaches logs, `status` or a webhook.
#[tokio::test]
async fn error_info_is_cut_and_cleaned() {
    let (vendor, _) = raw_server(|| {
        let info = format!("line one\nline two\u{1b}[31m{}", "x".repeat(5000));
        let body =
            serde_json::json!({"ActionStatus": "FAIL", "ErrorCode": 10004, "ErrorInfo": info})
                .to_string();
        once(format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ))
    })
    .await;
    let (c, _d) = client_at(vendor, "2s").await;
    match kind(walk_room(&c).await.unwrap_err()) {
        ApiErrorKind::Vendor { code, info } => {
            assert_eq!(code, 10004);
            assert!(
                info.chars().count() <= 201,
                "{} chars",
                info.chars().count()
            );
            assert!(!info.chars().any(char::is_control), "{info:?}");
        }
        other => panic!("{other:?}"),
    }
}

/// Account ids the vendor cannot have, and times outside its range, make
/// the walk malformed: nothing of it is stored or emitted, and the other
/// sources are walked as usual.
#[tokio::test]
async fn absurd_ids_and_times_fail_the_walk_and_nothing_else() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &sim, "[sources]\nrooms = [\"r\", \"ok\"]", "");
    let e = Engine::open(load(&path));
    let t = now() + 3600;
    sim.set(ListKind::Room, "r", &[("a", t)]);
    sim.set(ListKind::Room, "ok", &[]);
    e.walk("room:r").await;
    e.walk("room:ok").await;
    let long = "u".repeat(33);
    for bad in [
        vec![("a", t), (long.as_str(), t)],
        vec![("a", t), ("evil\nline", t)],
        vec![("a", t), ("", t)],
        vec![("a", t), ("b", -5)],
        vec![("a", t), ("b", 1i64 << 40)],
        vec![("b", t)],
    ] {
        let last = bad.len() == 1;
        if last {
            // A good walk at last: a is gone, b is new.
            sim.set(ListKind::Room, "r", &bad);
            e.walk("room:r").await;
            e.walk("room:r").await;
            break;
        }
        sim.set(ListKind::Room, "r", &bad);
        e.walk("room:r").await;
        e.walk("room:r").await;
        assert!(e.events("room:r").is_empty(), "{bad:?}");
    }
    assert_eq!(
        e.events("room:r"),
        [ev("ban.added", "b"), ev("ban.lifted", "a")]
    );
    sim.upsert(ListKind::Room, "ok", "fine", t);
    e.walk("room:ok").await;
    assert_eq!(e.events("room:ok"), [ev("ban.added", "fine")]);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Idle clients cannot hold the operator's endpoints or the process's file
/// descriptors: connections past the cap are closed at once, and one that
/// sends no headers is dropped after a few seconds.
#[tokio::test]
async fn idle_http_clients_cannot_starve_the_endpoints() {
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &sim, "[sources]\nrooms = [\"r\"]", "");
    sim.set(ListKind::Room, "r", &[]);
    let d = start_daemon(load(&path)).await;
    let before = open_fds();
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(tokio::net::TcpStream::connect(d.http).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // 200 client sockets here; the server keeps at most its cap.
    let held = open_fds().saturating_sub(before + 200);
    println!("idle clients: the server holds {held} descriptors for 200 idle connections");
    // Slack for the other tests of this process opening sockets meanwhile
    // (without the cap the server would hold about 200).
    assert!(
        held <= bansync::http::MAX_CONNECTIONS + 40,
        "server holds {held} descriptors"
    );
    // The endpoints answer again once the idle ones time out.
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Ok(r) = client
            .get(format!("http://{}/healthz", d.http))
            .send()
            .await
            && r.status() == 200
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/healthz never answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop(idle);
    d.stop.send(true).unwrap();
    let _ = d.task.await;
}

/// A vendor (or a gateway in front of it) with a certificate from a private
/// CA: refused without `tencent.ca_file`, with an error that says why
/// (the cause chain, never the URL); accepted with it.
#[tokio::test]
async fn a_private_ca_works_with_ca_file_and_its_absence_is_explained() {
    use tokio_rustls::rustls;
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let mut buf = vec![0u8; 65536];
                let _ = tls.read(&mut buf).await;
                let body = r#"{"ErrorCode":0,"ActionStatus":"OK","Response":{"BannedAccountList":[{"Member_Account":"u1","BannedUntil":1900000000}],"NextOffset":0}}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let sim = Sim::start(1000).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.pem()).unwrap();
    let base = format!("https://localhost:{port}");
    for with_ca in [false, true] {
        let path = write_config(dir.path(), &sim, "[sources]\nrooms = [\"r\"]", "");
        let text = std::fs::read_to_string(&path).unwrap().replace(
            &format!("base_url = \"{}\"", sim.base_url()),
            &if with_ca {
                format!("base_url = \"{base}\"\nca_file = \"{}\"", ca.display())
            } else {
                format!("base_url = \"{base}\"")
            },
        );
        std::fs::write(&path, text).unwrap();
        let settings = load(&path).tencent;
        let c = TencentClient::with_retry(settings, Arc::new(Metrics::new()), fast_retry());
        match (with_ca, walk_room(&c).await) {
            (true, Ok(entries)) => assert_eq!(entries.len(), 1),
            (false, Err(e)) => {
                let shown = e.to_string();
                assert!(
                    shown.to_lowercase().contains("certificate"),
                    "the cause is named: {shown}"
                );
                assert!(!shown.contains("usersig"), "no URL: {shown}");
            }
            (with_ca, other) => panic!("with ca_file {with_ca}: {other:?}"),
        }
    }
}

/// A hostile receiver: one answers 200 and then an endless body (400 MiB),
/// another accepts and never answers. The first's deliveries count as made
/// without reading its body; the second's time out and are retried; memory
/// stays bounded and the daemon goes on.
#[tokio::test]
async fn a_hostile_receiver_costs_neither_memory_nor_progress() {
    let (endless, _) = raw_server(|| {
        let head = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec();
        Box::new(std::iter::once(head).chain((0..400).map(|_| vec![b'x'; 1 << 20])))
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let sim = Sim::start(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let hooks = format!(
        "{}\n{}",
        webhook_toml(
            "endless",
            &format!("http://{endless}/x"),
            "timeout = \"2s\""
        ),
        webhook_toml(
            "silent",
            &format!("http://{silent}/x"),
            "timeout = \"300ms\"\nretry_schedule = [\"100ms\", \"100ms\"]"
        ),
    );
    let path = write_config(
        dir.path(),
        &sim,
        "[sources]\nrooms = [\"r\"]",
        &format!("[sync]\ninterval = \"1s\"\ninitial = \"emit\"\n{hooks}"),
    );
    let t = now() + 3600;
    sim.set(ListKind::Room, "r", &[("a", t), ("b", t), ("c", t)]);
    let before = rss_kib();
    let d = start_daemon(load(&path)).await;
    let db = load(&path).store_path;
    let count = |sql: &str| -> i64 {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let delivered: i64 =
            count("SELECT COALESCE(SUM(delivered), 0) FROM webhooks WHERE name = 'endless'");
        let dead = count("SELECT COUNT(*) FROM deliveries WHERE webhook = 'silent' AND state = 1");
        if delivered == 3 && dead == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "endless delivered {delivered} of 3, silent dead {dead} of 3"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    println!("hostile receivers: resident set grew {grown_mib} MiB");
    assert!(grown_mib < 100, "resident set grew {grown_mib} MiB");
    // Still walking: a new ban is found and owed to both.
    sim.upsert(ListKind::Room, "r", "d", t);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while count("SELECT COALESCE(SUM(delivered), 0) FROM webhooks WHERE name = 'endless'") < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon stopped delivering"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    d.stop.send(true).unwrap();
    let _ = d.task.await;
}
