//! The benchmark: prints figures, asserts nothing about time.
//!
//!     cargo bench --bench bansync                      # 10,000 sources x 100 entries
//!     cargo bench --bench bansync -- --sources 3000 --markdown BENCHMARKS.md
//!
//! The simulator and the webhook receiver run as separate processes (this
//! executable in helper modes), so the CPU time and peak RSS measured here
//! are the daemon's own: walking, parsing, diffing, committing, delivering.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bansync::config::{self, Environment};
use bansync::delivery::Dispatcher;
use bansync::metrics::Metrics;
use bansync::source::SourceSpec;
use bansync::store::{EmitConfig, Store};
use bansync::sync::Syncer;
use bansync::tencent::TencentClient;
use futures::StreamExt;
use serde_json::{Value, json};

struct Opts {
    sources: usize,
    entries: usize,
    rate: u32,
    deliveries: usize,
    idle_secs: u64,
    /// Only the `bansync run` process measurement (quick, for profiling).
    daemon_only: bool,
    markdown: Option<PathBuf>,
}

fn parse(args: &[String]) -> Opts {
    let mut o = Opts {
        sources: 10_000,
        entries: 100,
        rate: 200,
        deliveries: 20_000,
        idle_secs: 30,
        daemon_only: false,
        markdown: None,
    };
    let mut i = 0;
    while i < args.len() {
        let next = || args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--sources" => o.sources = next().parse().expect("--sources N"),
            "--entries" => o.entries = next().parse().expect("--entries N"),
            "--rate" => o.rate = next().parse().expect("--rate N"),
            "--deliveries" => o.deliveries = next().parse().expect("--deliveries N"),
            "--idle" => o.idle_secs = next().parse().expect("--idle SECONDS"),
            "--daemon-only" => {
                o.daemon_only = true;
                i += 1;
                continue;
            }
            "--markdown" => o.markdown = Some(PathBuf::from(next())),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// The daemon runs on one worker thread (see `cli::runtime`); so does this,
/// unless BENCH_WORKERS says otherwise.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let workers: usize = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    if let Some(i) = args.iter().position(|a| a == "--sim-process") {
        rt.block_on(sim_process(&args[i + 1], args[i + 2].parse().unwrap()));
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--receiver-process") {
        rt.block_on(receiver_process(&args[i + 1]));
        return;
    }
    let opts = parse(&args);
    // On the worker, as the daemon's scheduler is: from the block_on
    // thread every spawned walk would cost a cross-thread wake-up.
    rt.block_on(async { tokio::spawn(bench(opts)).await.unwrap() });
}

// ---- helper processes ----

async fn sim_process(port_file: &str, rate: u32) {
    let state = bansync::sim::new_state(
        bansync::sim::DEMO_SDKAPPID,
        bansync::sim::DEMO_IDENTIFIER,
        bansync::sim::DEMO_KEY,
        rate,
    );
    let addr = bansync::sim::spawn(state).await.unwrap();
    std::fs::write(port_file, addr.port().to_string()).unwrap();
    std::future::pending::<()>().await;
}

type Arrivals = Arc<Mutex<Vec<(String, i64)>>>;

async fn receiver_process(port_file: &str) {
    let arrivals: Arrivals = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(a): axum::extract::State<Arrivals>,
                 h: axum::http::HeaderMap| async move {
                    let id = h
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    a.lock()
                        .unwrap()
                        .push((id, bansync::clock::Clock::system().now_ms()));
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/arrivals",
            axum::routing::get(
                |axum::extract::State(a): axum::extract::State<Arrivals>| async move {
                    axum::Json(a.lock().unwrap().clone())
                },
            ),
        )
        .with_state(arrivals);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    std::fs::write(port_file, listener.local_addr().unwrap().port().to_string()).unwrap();
    axum::serve(listener, app).await.unwrap();
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn helper(mode: &str, dir: &Path, extra: &[String]) -> (KillOnDrop, u16) {
    let port_file = dir.join(format!("{mode}.port"));
    let child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .arg(mode)
            .arg(&port_file)
            .args(extra)
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    loop {
        if let Ok(p) = std::fs::read_to_string(&port_file)
            && let Ok(p) = p.trim().parse()
        {
            return (child, p);
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{mode} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- measurements ----

fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// "name seconds, ..." of the CPU each thread used since `before`.
fn thread_cpu_since(before: &BTreeMap<String, f64>, process: &str) -> String {
    cpu_by_thread(process)
        .into_iter()
        .map(|(name, s)| (s - before.get(&name).copied().unwrap_or(0.0), name))
        .filter(|(s, _)| *s >= 0.005)
        .map(|(s, name)| format!("{name} {s:.2} s"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// CPU seconds by thread name (threads of one name summed), from /proc:
/// shows where a sweep's CPU goes (runtime worker, store writer, ...).
fn cpu_by_thread(process: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let tasks = std::fs::read_dir(format!("/proc/{process}/task"));
    for task in tasks.into_iter().flatten().flatten() {
        if let Some((name, seconds)) = stat_cpu(&task.path().join("stat")) {
            *out.entry(name).or_insert(0.0) += seconds;
        }
    }
    out
}

/// (name, user + system CPU seconds) from a /proc `stat` file.
fn stat_cpu(path: &Path) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // "pid (comm) state ..." : comm may hold spaces, so split after ')'.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after comm.
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((stat[open + 1..close].to_string(), ticks / per_second))
}

/// One number from a read-only query of a state file (0 if unreadable).
fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row(sql, [], |r| r.get::<_, i64>(0)))
        .unwrap_or(0)
}

/// A `Vm...:` figure (KiB) of `process` ("self" or a pid).
fn status_kib(process: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn post(http: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    http.post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or(Value::Null)
}

/// What `bansync run` itself, as its own process, spends on an unchanged sweep.
struct DaemonProcess {
    cpu: f64,
    entries: i64,
    peak_rss_kib: u64,
}

/// Starts the real binary on a fresh state file with every source, JSON
/// logs at info into a file (as a journal would take them) and an interval
/// just long enough that its second sweep starts after its first ends; the
/// second sweep, unchanged, is measured from the process's own counters.
async fn daemon_process_sweeps(
    dir: &Path,
    sim_port: u16,
    rate: u32,
    sources: &[SourceSpec],
) -> DaemonProcess {
    let ddir = dir.join("daemon-process");
    std::fs::create_dir_all(&ddir).unwrap();
    // The busiest API's share of the sources at 97% of the rate, plus room.
    let floor = sources.len().div_ceil(3) as f64 / (rate as f64 * 0.97);
    let interval = (floor * 1.3).ceil() as u64 + 5;
    let path = write_config(
        &ddir,
        sim_port,
        rate,
        sources,
        &format!(
            "[sync]\ninterval = \"{interval}s\"\n[http]\nlisten = \"off\"\n[log]\nformat = \"json\"\nlevel = \"info\""
        ),
    );
    let log = std::fs::File::create(ddir.join("daemon.log")).unwrap();
    let child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_bansync"))
            .args(["run", "--config"])
            .arg(&path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let db = ddir.join("bansync.db");
    let walked_at_least = |n: i64| {
        count(
            &db,
            &format!("SELECT COUNT(*) FROM sources WHERE walks >= {n}"),
        )
    };
    // The process's own counters: they keep the time of threads that ended.
    let stat = PathBuf::from(format!("/proc/{pid}/stat"));
    let process_cpu = || stat_cpu(&stat).map_or(0.0, |(_, s)| s);
    let total = sources.len() as i64;
    let deadline = Instant::now() + Duration::from_secs(interval * 4 + 60);
    while walked_at_least(1) < total {
        assert!(
            Instant::now() < deadline,
            "the daemon's first sweep did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (cpu0, t0) = (process_cpu(), Instant::now());
    let threads0 = cpu_by_thread(&pid.to_string());
    while walked_at_least(2) < total {
        assert!(
            Instant::now() < deadline,
            "the daemon's second sweep did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (cpu, wall) = (process_cpu() - cpu0, t0.elapsed().as_secs_f64());
    let threads = thread_cpu_since(&threads0, &pid.to_string());
    let entries = count(&db, "SELECT COUNT(*) FROM entries");
    let peak_rss_kib = status_kib(&pid.to_string(), "VmHWM:");
    println!(
        "  bansync run (pid {pid}), second sweep: {cpu:.2} s CPU ({threads}) over {wall:.1} s (idle wait included), {entries} entries held, peak RSS {:.1} MiB",
        peak_rss_kib as f64 / 1024.0
    );
    drop(child);
    DaemonProcess {
        cpu,
        entries,
        peak_rss_kib,
    }
}

/// Commits a complete walk of a new list of `per` running bans, as the
/// sync engine would (with `initial = emit`): `per` events. Returns them.
async fn commit_new_list(store: &Store, spec: &str, per: usize) -> usize {
    let spec: SourceSpec = spec.parse().unwrap();
    let until = bansync::clock::Clock::system().now_ms() / 1000 + 86_400;
    let entries: Vec<_> = (0..per)
        .map(|j| bansync::source::Entry::new(format!("a{j}"), until))
        .collect();
    let digest = bansync::diff::digest(&entries);
    let outcome = bansync::store::WalkOutcome::Complete {
        entries,
        digest,
        started_ms: bansync::clock::Clock::system().now_ms(),
        stable: true,
    };
    store
        .apply_walk(
            spec,
            outcome,
            bansync::clock::Clock::system().now_ms(),
            bansync::diff::Initial::Emit,
            false,
        )
        .await
        .unwrap()
        .events
        .len()
}

/// Draws calls per second per API over a sweep as a PNG, by hand (no
/// fonts): a grey grid every 50 calls/s, a black line at the vendor's
/// limit, one coloured line per API (red: groups, green: rooms, blue:
/// blocklists; drawn 3 px apart), one step per second. BENCHMARKS.md says so.
fn plot(path: &Path, series: &BTreeMap<String, Vec<u64>>, rate: u32) {
    let (w, h, margin) = (900usize, 360usize, 30usize);
    let seconds = series.values().map(Vec::len).max().unwrap_or(1).max(2);
    let top = (rate as f64 * 1.2).max(1.0);
    let mut img = vec![255u8; w * h * 3];
    let mut put = |x: usize, y: usize, c: [u8; 3]| {
        if x < w && y < h {
            img[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&c);
        }
    };
    let y_of = |v: f64| h - margin - ((v / top) * (h - 2 * margin) as f64).round() as usize;
    let x_of = |s: usize| margin + s * (w - 2 * margin) / (seconds - 1);
    let mut v = 0.0;
    while v <= top {
        let y = y_of(v);
        for x in margin..w - margin {
            put(x, y, [225, 225, 225]);
        }
        v += 50.0;
    }
    for x in margin..w - margin {
        put(x, y_of(rate as f64), [0, 0, 0]);
        put(x, h - margin, [90, 90, 90]);
    }
    for y in margin..h - margin {
        put(margin, y, [90, 90, 90]);
    }
    let colours = [[220, 40, 40], [30, 160, 60], [40, 80, 220]];
    for (i, (_, s)) in series.iter().enumerate() {
        let c = colours[i % 3];
        for (k, pair) in s.windows(2).enumerate() {
            let (x0, x1) = (x_of(k) as i64, x_of(k + 1) as i64);
            let (y0, y1) = (y_of(pair[0] as f64) as i64, y_of(pair[1] as f64) as i64);
            let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
            for t in 0..=steps {
                let x = x0 + (x1 - x0) * t / steps;
                let y = y0 + (y1 - y0) * t / steps;
                // Series sit 3 px apart so identical rates stay visible.
                for d in 0..2 {
                    put(x as usize, (y + d - 3 * i as i64) as usize, c);
                }
            }
        }
    }
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(&img).unwrap();
}

struct Sweep {
    label: &'static str,
    wall: f64,
    cpu: f64,
    entries: i64,
    events: usize,
    failed: usize,
    /// Per API: requests, mean calls/s while it ran, rate-limit answers.
    apis: BTreeMap<String, (u64, f64, u64)>,
    /// Per API: calls per whole second over the sweep.
    series: BTreeMap<String, Vec<u64>>,
    /// Where the CPU went: "thread name seconds, ...".
    threads: String,
}

async fn sweep(
    label: &'static str,
    syncer: &Syncer,
    sources: &[SourceSpec],
    http: &reqwest::Client,
    sim: &str,
    rate: u32,
) -> Sweep {
    post(http, sim, "/sim/stats/reset", json!({})).await;
    let cpu0 = cpu_seconds();
    let threads0 = cpu_by_thread("self");
    let t0 = Instant::now();
    // Fold each result into counters as it arrives, as the daemon's
    // scheduler does: holding 10,000 reports would measure the benchmark.
    // Each walk is a task on the runtime's worker, as in the daemon; walks
    // polled from this (block_on) thread would pay a cross-thread wake-up
    // for every chunk of every response, which the daemon never does.
    let counts = Arc::new(Mutex::new((0i64, 0usize, 0usize)));
    futures::stream::iter(bansync::sync::interleave_by_kind(sources))
        .map(|s| {
            let syncer = syncer.clone();
            tokio::spawn(async move { syncer.sync_source(&s, false, &mut |_| {}).await })
        })
        .buffer_unordered(64)
        .for_each(|r| {
            let mut c = counts.lock().unwrap();
            match r {
                Ok(Ok(r)) if !r.failed() => {
                    c.0 += r.report.entries;
                    c.1 += r.report.events.len();
                }
                _ => c.2 += 1,
            }
            futures::future::ready(())
        })
        .await;
    syncer.flush_touches().await.unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let threads = thread_cpu_since(&threads0, "self");
    println!("  {label}: {cpu:.2} s CPU ({threads})");
    let stats: Value = http
        .get(format!("{sim}/sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut apis = BTreeMap::new();
    let mut series = BTreeMap::new();
    for (api, s) in stats.as_object().unwrap() {
        let per: Vec<(i64, u64)> = s["per_second"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.as_u64().unwrap()))
            .collect();
        // Whole seconds only: drop the first and last, which are partial.
        let inner: Vec<u64> = if per.len() > 2 {
            per[1..per.len() - 1].iter().map(|x| x.1).collect()
        } else {
            vec![]
        };
        let mean = if inner.is_empty() {
            0.0
        } else {
            inner.iter().sum::<u64>() as f64 / inner.len() as f64
        };
        apis.insert(
            api.clone(),
            (
                s["calls"].as_u64().unwrap(),
                mean / rate as f64,
                s["rate_limited"].as_u64().unwrap(),
            ),
        );
        series.insert(api.clone(), per.iter().map(|x| x.1).collect());
    }
    let (entries, events, failed) = *counts.lock().unwrap();
    Sweep {
        label,
        wall,
        cpu,
        entries,
        events,
        failed,
        apis,
        series,
        threads,
    }
}

fn write_config(
    dir: &Path,
    sim_port: u16,
    rate: u32,
    sources: &[SourceSpec],
    extra: &str,
) -> PathBuf {
    let list = |kind: bansync::source::SourceKind| {
        sources
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| format!("\"{}\"", s.id))
            .collect::<Vec<_>>()
            .join(",")
    };
    let text = format!(
        "[tencent]\nsdkappid = {}\nidentifier = \"{}\"\nsecret_key = \"{}\"\nbase_url = \"http://127.0.0.1:{sim_port}\"\nrequests_per_second = {rate}\n\n\
         [store]\npath = \"{}\"\n\n[sources]\ngroups = [{}]\nrooms = [{}]\nblocklists = [{}]\n\n{extra}\n",
        bansync::sim::DEMO_SDKAPPID,
        bansync::sim::DEMO_IDENTIFIER,
        bansync::sim::DEMO_KEY,
        dir.join("bansync.db").display(),
        list(bansync::source::SourceKind::Group),
        list(bansync::source::SourceKind::Room),
        list(bansync::source::SourceKind::Blocklist),
    );
    let path = dir.join("bansync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn bench(o: Opts) {
    let dir = std::env::temp_dir().join(format!("bansync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let machine = format!(
        "{} cores, {} MiB, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok()))
            .unwrap_or(0)
            / 1024,
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_string())
            )
            .unwrap_or_default()
    );
    println!(
        "bansync benchmark: {} sources x {} entries, vendor limit {}/s per API; {machine}",
        o.sources, o.entries, o.rate
    );
    let (_sim, sim_port) = helper("--sim-process", &dir, &[o.rate.to_string()]);
    let sim = format!("http://127.0.0.1:{sim_port}");
    let http = reqwest::Client::new();
    let third = o.sources / 3;
    let kinds = [
        ("group", "g", third),
        ("room", "r", third),
        ("user", "b", o.sources - 2 * third),
    ];
    let (ban_end, blocked_at) = (
        bansync::clock::Clock::system().now_ms() / 1000 + 7 * 86_400,
        bansync::clock::Clock::system().now_ms() / 1000 - 3600,
    );
    let seed = |offset: usize| -> Value {
        json!(kinds.iter().map(|(k, p, n)| {
            let value = if *k == "user" { blocked_at } else { ban_end };
            json!({"kind": k, "prefix": p, "count": n, "entries": o.entries, "offset": offset, "value": value})
        }).collect::<Vec<_>>())
    };
    post(&http, &sim, "/sim/seed", seed(0)).await;
    let mut sources = Vec::new();
    for (kind, prefix, n) in kinds {
        let spec_kind = if kind == "user" { "blocklist" } else { kind };
        for i in 0..n {
            sources.push(
                format!("{spec_kind}:{prefix}{i}")
                    .parse::<SourceSpec>()
                    .unwrap(),
            );
        }
    }
    if o.daemon_only {
        let whole = daemon_process_sweeps(&dir, sim_port, o.rate, &sources).await;
        println!(
            "`bansync run` process CPU per unchanged entry: {:.2} µs ({} entries)",
            whole.cpu * 1e6 / whole.entries.max(1) as f64,
            whole.entries
        );
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let path = write_config(&dir, sim_port, o.rate, &sources, "");
    let settings = config::load_with(&path, &Environment::default()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = Store::open(
        &settings.store_path,
        EmitConfig {
            app: settings.tencent.sdkappid,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    let client = Arc::new(TencentClient::new(
        settings.tencent.clone(),
        metrics.clone(),
    ));
    let syncer = Syncer::new(
        client,
        store.clone(),
        metrics.clone(),
        &settings.sync,
        bansync::clock::Clock::system(),
    );

    let mut sweeps = Vec::new();
    sweeps.push(
        sweep(
            "first walk (baseline)",
            &syncer,
            &sources,
            &http,
            &sim,
            o.rate,
        )
        .await,
    );
    sweeps.push(sweep("unchanged", &syncer, &sources, &http, &sim, o.rate).await);
    post(&http, &sim, "/sim/seed", seed(o.entries / 10)).await;
    sweeps.push(sweep("10% changed", &syncer, &sources, &http, &sim, o.rate).await);
    sweeps.push(sweep("absences confirmed", &syncer, &sources, &http, &sim, o.rate).await);
    let held = sweeps[3].entries;
    let peak_rss_sweeps = status_kib("self", "VmHWM:");
    let whole = daemon_process_sweeps(&dir, sim_port, o.rate, &sources).await;

    // Store throughput alone: events committed per second, no HTTP.
    let (events_per_s, committed) = {
        let spec_count = 200;
        let per = 100;
        let t0 = Instant::now();
        let mut n = 0;
        for i in 0..spec_count {
            n += commit_new_list(&store, &format!("room:bench-commit-{i}"), per).await;
        }
        (n as f64 / t0.elapsed().as_secs_f64(), n)
    };

    // Idle: the whole daemon, 1,000 sources on a 5-minute interval, after its first sweep.
    let (idle_cpu_pct, idle_rss) = {
        let idle_dir = dir.join("idle");
        std::fs::create_dir_all(&idle_dir).unwrap();
        let some: Vec<SourceSpec> = sources
            .iter()
            .step_by((sources.len() / 1000).max(1))
            .take(1000)
            .cloned()
            .collect();
        let path = write_config(
            &idle_dir,
            sim_port,
            o.rate,
            &some,
            "[sync]\ninterval = \"5m\"\n[http]\nlisten = \"off\"",
        );
        let s = config::load_with(&path, &Environment::default()).unwrap();
        let db = s.store_path.clone();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let (_reload, reload) = tokio::sync::mpsc::unbounded_channel();
        let control = bansync::DaemonControl {
            stop,
            reload,
            on_ready: Box::new(|| {}),
            clock: bansync::clock::Clock::system(),
        };
        let task = tokio::spawn(bansync::run(
            s,
            None,
            control,
            Default::default(),
            Default::default(),
        ));
        while count(&db, "SELECT COUNT(*) FROM sources WHERE walks > 0") < some.len() as i64 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (c0, t0) = (cpu_seconds(), Instant::now());
        tokio::time::sleep(Duration::from_secs(o.idle_secs)).await;
        let pct = (cpu_seconds() - c0) / t0.elapsed().as_secs_f64() * 100.0;
        let rss = status_kib("self", "VmRSS:");
        let _ = stop_tx.send(true);
        let _ = task.await;
        (pct, rss)
    };

    // Delivery: a burst for throughput, then a steady flow for latency.
    let (throughput, p50, p99, steady_rate) = {
        let (_rx, rx_port) = helper("--receiver-process", &dir, &[]);
        let ddir = dir.join("delivery");
        std::fs::create_dir_all(&ddir).unwrap();
        let hook = format!(
            "[[webhook]]\nname = \"bench\"\nurl = \"http://127.0.0.1:{rx_port}/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nmax_in_flight = 32\n"
        );
        let path = write_config(&ddir, sim_port, o.rate, &sources[..1], &hook);
        let s = config::load_with(&path, &Environment::default()).unwrap();
        let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel();
        let emit = EmitConfig {
            app: s.tencent.sdkappid,
            webhooks: s.webhooks.clone(),
            propagate: vec![],
        };
        let dstore = Store::open(&s.store_path, emit, Some(ntx)).unwrap();
        let (dtx, drx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(n) = nrx.recv().await {
                if let bansync::store::Notice::Delivery(d) = n {
                    let _ = dtx.send(d);
                }
            }
        });
        let (_ctl_tx, ctl) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let dispatcher = Dispatcher::new(
            dstore.clone(),
            s.webhooks.clone(),
            metrics.clone(),
            bansync::clock::Clock::system(),
        );
        let dtask = tokio::spawn(dispatcher.run(drx, ctl, stop, Duration::from_secs(5)));
        let commit = |prefix: String, lists: usize, per: usize| {
            let st = dstore.clone();
            async move {
                let specs: Vec<String> = (0..lists).map(|i| format!("room:{prefix}-{i}")).collect();
                futures::future::join_all(specs.iter().map(|s| commit_new_list(&st, s, per)))
                    .await
                    .into_iter()
                    .sum::<usize>()
            }
        };
        let arrivals = |http: reqwest::Client| async move {
            http.get(format!("http://127.0.0.1:{rx_port}/arrivals"))
                .send()
                .await
                .unwrap()
                .json::<Vec<(String, i64)>>()
                .await
                .unwrap()
        };
        let lists = 200;
        let per = o.deliveries / lists;
        let t0 = bansync::clock::Clock::system().now_ms();
        let n = commit("burst".into(), lists, per).await;
        let mut last = 0;
        loop {
            let a = arrivals(http.clone()).await;
            if a.len() >= n {
                last = a.iter().map(|x| x.1).max().unwrap_or(last);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let throughput = n as f64 / ((last - t0) as f64 / 1000.0);
        // Steady: 50 events every 50 ms (1,000/s) for 10 s.
        let before = arrivals(http.clone()).await.len();
        let steady_start = Instant::now();
        let mut sent = 0;
        for k in 0..200 {
            sent += commit(format!("steady{k}"), 1, 50).await;
            tokio::time::sleep(Duration::from_millis(50).saturating_sub(Duration::from_millis(0)))
                .await;
        }
        let steady_rate = sent as f64 / steady_start.elapsed().as_secs_f64();
        loop {
            if arrivals(http.clone()).await.len() >= before + sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let a = arrivals(http.clone()).await;
        let conn = rusqlite::Connection::open(&s.store_path).unwrap();
        let committed: HashMap<String, i64> = conn
            .prepare("SELECT event_id, committed_ms FROM events")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut lat: Vec<i64> = a[before..]
            .iter()
            .filter_map(|(id, at)| committed.get(id).map(|c| at - c))
            .collect();
        lat.sort();
        let _ = stop_tx.send(true);
        let _ = dtask.await;
        (
            throughput,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            steady_rate,
        )
    };
    let peak_rss = status_kib("self", "VmHWM:");

    // ---- the table ----
    let mut out = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "| sweep | wall (s) | floor (s) | wall / floor | CPU (s) | CPU per entry (µs) | entries | events | failed | rate-limit answers | API utilisation |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for s in &sweeps {
        let floor = s.apis.values().map(|a| a.0).max().unwrap_or(0) as f64 / o.rate as f64;
        let limited: u64 = s.apis.values().map(|a| a.2).sum();
        let util = s
            .apis
            .iter()
            .map(|(api, a)| format!("{} {:.1}%", api.rsplit('/').next().unwrap(), a.1 * 100.0))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.3} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
            s.label,
            s.wall,
            floor,
            s.wall / floor.max(1e-9),
            s.cpu,
            s.cpu * 1e6 / (o.sources * o.entries) as f64,
            s.entries,
            s.events,
            s.failed,
            limited,
            util
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "| figure | value | target |");
    let _ = writeln!(out, "|---|---|---|");
    let unchanged = &sweeps[1];
    let _ = writeln!(
        out,
        "| `bansync run` process CPU per unchanged entry (its second sweep, {} entries; HTTP, parsing, logs included) | {:.2} µs | ≤ 2 µs |",
        whole.entries,
        whole.cpu * 1e6 / whole.entries.max(1) as f64
    );
    let _ = writeln!(
        out,
        "| `bansync run` process peak RSS, {} entries held | {:.1} MiB | ≤ 64 MiB with 1,000,000 held |",
        whole.entries,
        whole.peak_rss_kib as f64 / 1024.0
    );
    let _ = writeln!(
        out,
        "| CPU per unchanged entry, in-process sweep above | {:.2} µs | |",
        unchanged.cpu * 1e6 / (o.sources * o.entries) as f64
    );
    let _ = writeln!(
        out,
        "| daemon CPU per entry, 10% changed | {:.2} µs | |",
        sweeps[2].cpu * 1e6 / (o.sources * o.entries) as f64
    );
    let _ = writeln!(
        out,
        "| peak RSS through the sweeps, {held} entries held | {:.1} MiB | ≤ 64 MiB with 1,000,000 held |",
        peak_rss_sweeps as f64 / 1024.0
    );
    let _ = writeln!(
        out,
        "| peak RSS, whole run | {:.1} MiB | |",
        peak_rss as f64 / 1024.0
    );
    let _ = writeln!(
        out,
        "| events committed per second (store alone, {committed} events) | {events_per_s:.0} | |"
    );
    let _ = writeln!(
        out,
        "| deliveries per second (burst of {}) | {throughput:.0} | ≥ 2,000 |",
        o.deliveries
    );
    let _ = writeln!(
        out,
        "| commit to delivery at {steady_rate:.0} events/s: p50 / p99 | {p50} ms / {p99} ms | p99 ≤ 100 ms |"
    );
    let _ = writeln!(
        out,
        "| idle CPU, 1,000 sources on a 5-minute interval ({} s) | {idle_cpu_pct:.3}% | ≤ 0.5% |",
        o.idle_secs
    );
    let _ = writeln!(out, "| idle RSS | {:.1} MiB | |", idle_rss as f64 / 1024.0);
    println!("\n{out}");
    println!("calls per second per API during the unchanged sweep:");
    for (api, series) in &unchanged.series {
        println!("  {api}: {series:?}");
    }
    if let Some(md) = o.markdown {
        let text = format!(
            "# Benchmarks\n\nLatest run of `cargo bench --bench bansync -- --sources {} --entries {}` \
             (vendor limit {}/s per API), on {machine}.\n\nThe simulator and the receiver run as separate processes; \
             the sweeps in the first table run the daemon's code (walking, parsing, diffing, committing) inside the \
             benchmark process, whose CPU and RSS they report. The rows naming `bansync run` measure the real daemon: \
             the binary started with every source on an interval, its own process's CPU over its second (unchanged) sweep \
             and its peak RSS. The floor is the time the vendor's rate limit allows: the busiest API's requests ÷ {}/s \
             (three APIs run in parallel).\n\n{out}\nCPU by thread in each sweep (the runtime's one worker walks, \
             parses and diffs; the store's writer thread commits):\n\n{}\n\nCalls per second per API during the unchanged sweep \
             (`benchmarks-calls-per-second.png`: one step per second; red groups, green rooms, blue blocklists, \
             drawn 3 px apart; black line: the vendor's limit; grey grid every 50 calls/s):\n\n\
             ![calls per second per API](benchmarks-calls-per-second.png)\n\n```\n{}\n```\n",
            o.sources,
            o.entries,
            o.rate,
            o.rate,
            sweeps
                .iter()
                .map(|s| format!("- {}: {}", s.label, s.threads))
                .collect::<Vec<_>>()
                .join("\n"),
            unchanged
                .series
                .iter()
                .map(|(a, s)| format!("{a}: {s:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        // Sections other benchmarks keep in the page (between their
        // markers, at its end) stay.
        let kept = std::fs::read_to_string(&md)
            .ok()
            .and_then(|old| old.find("<!-- adaptive").map(|i| old[i..].to_string()))
            .unwrap_or_default();
        let text = if kept.is_empty() {
            text
        } else {
            format!("{text}\n{kept}")
        };
        std::fs::write(&md, text).unwrap();
        println!("wrote {}", md.display());
        let png = md.with_file_name("benchmarks-calls-per-second.png");
        plot(&png, &unchanged.series, o.rate);
        println!("wrote {}", png.display());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
