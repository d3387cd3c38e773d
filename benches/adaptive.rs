//! `sweep` against `adaptive` at the same budget on the same workload, in
//! one run, side by side: detection latency (the simulator's change to the
//! receiver's arrival), calls per second, rate-limit answers and the
//! longest any room went unwalked. Prints figures; asserts nothing.
//!
//!     cargo bench --bench adaptive                       # ~25 minutes
//!     cargo bench --bench adaptive -- --markdown BENCHMARKS-adaptive.md
//!     cargo bench --bench adaptive -- --rooms 300 --learn 60 --measure 120   # a smoke run
//!     cargo bench --bench adaptive -- --kick-share 0.5   # with callbacks as hints
//!
//! With `--kick-share F` the lists are audio-video groups and a share F of
//! the bans also kick the member, which the vendor reports with
//! `Group.CallbackAfterMemberExit` (the only callback near a ban); a third
//! side, adaptive with `[callback]`, gets those callbacks as hints.
//!
//! Each mode has its own simulator (the vendor's limit set to the budget,
//! so any excess would be answered as rate-limited), its own daemon
//! (`bansync::run`, in this process) and its own receiver. One generator
//! applies every ban to both simulators at the same instant.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use bansync::adaptive::workload::workload;
use bansync::sim::{self, ListKind};
use serde_json::Value;

struct Opts {
    rooms: usize,
    /// Audio-video groups instead of live rooms.
    groups: bool,
    /// The share of bans that kick (and so call back); 0: no third side.
    kick_share: f64,
    rate: u32,
    learn: u64,
    measure: u64,
    seed: u64,
    markdown: Option<PathBuf>,
}

fn parse(args: &[String]) -> Opts {
    let mut o = Opts {
        rooms: 2000,
        groups: false,
        kick_share: 0.0,
        rate: 25,
        learn: 300,
        measure: 600,
        seed: 7,
        markdown: None,
    };
    let mut i = 0;
    while i < args.len() {
        let next = || args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--rooms" => o.rooms = next().parse().expect("--rooms N"),
            "--rate" => o.rate = next().parse().expect("--rate N"),
            "--learn" => o.learn = next().parse().expect("--learn SECONDS"),
            "--measure" => o.measure = next().parse().expect("--measure SECONDS"),
            "--seed" => o.seed = next().parse().expect("--seed N"),
            "--groups" => {
                o.groups = true;
                i += 1;
                continue;
            }
            "--kick-share" => {
                o.kick_share = next().parse().expect("--kick-share F");
                o.groups = true;
            }
            "--markdown" => o.markdown = Some(PathBuf::from(next())),
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    o
}

/// Arrivals of `ban.added` at one receiver: account -> when.
type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

async fn receive(State(a): State<Arrivals>, body: Bytes) -> axum::http::StatusCode {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if v["type"] == "ban.added"
        && let Some(acc) = v["data"]["account"].as_str()
    {
        a.lock()
            .unwrap()
            .entry(acc.to_string())
            .or_insert_with(Instant::now);
    }
    axum::http::StatusCode::NO_CONTENT
}

async fn receiver() -> (String, Arrivals) {
    let arrivals: Arrivals = Arc::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(arrivals.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (url, arrivals)
}

struct Side {
    name: &'static str,
    /// Callbacks reach this side's daemon.
    hints: bool,
    state: sim::Shared,
    arrivals: Arrivals,
    db: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The simulator's list kind, the config key and the list API of a run.
fn kind(o: &Opts) -> (ListKind, &'static str, &'static str) {
    if o.groups {
        (
            ListKind::Group,
            "groups",
            "group_open_http_svc/get_group_ban_member",
        )
    } else {
        (
            ListKind::Room,
            "rooms",
            "live_engine_http_srv/get_banned_member_list",
        )
    }
}

async fn side(
    name: &'static str,
    sync: &str,
    o: &Opts,
    costs: &[u32],
    dir: &Path,
    hints: bool,
) -> Side {
    let (list_kind, key, _) = kind(o);
    let state = sim::new_state(
        sim::DEMO_SDKAPPID,
        sim::DEMO_IDENTIFIER,
        sim::DEMO_KEY,
        o.rate,
    );
    {
        let mut s = state.lock().unwrap();
        let until = bansync::clock::Clock::system().now_s() + 86_400;
        for (i, c) in costs.iter().enumerate() {
            // 1 page: 50 entries; 2 pages: 150; 3 pages: 250 (page size 100).
            let n = 50 + 100 * (*c as usize - 1);
            s.lists(list_kind).insert(
                format!("r{i}"),
                sim::state::List {
                    entries: (0..n).map(|j| (format!("seed{j}"), until)).collect(),
                    set_by: HashMap::new(),
                },
            );
        }
    }
    let addr = sim::spawn(state.clone()).await.unwrap();
    let (url, arrivals) = receiver().await;
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let rooms: Vec<String> = (0..costs.len()).map(|i| format!("\"r{i}\"")).collect();
    let path = dir.join("bansync.toml");
    let callback_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let callback = if hints {
        format!("\n[callback]\nlisten = \"127.0.0.1:{callback_port}\"\ntoken = \"bench\"\n")
    } else {
        String::new()
    };
    std::fs::write(
        &path,
        format!(
            "[tencent]\nsdkappid = {}\nidentifier = \"{}\"\nsecret_key = \"{}\"\nbase_url = \"http://{addr}\"\nrequests_per_second = {}\n\n[store]\npath = \"{}\"\n\n[sync]\n{sync}\n\n[sources]\n{key} = [{}]\n\n[[webhook]]\nname = \"r\"\nurl = \"{url}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\n[http]\nlisten = \"off\"\n\n[log]\nlevel = \"warn\"\n{callback}",
            sim::DEMO_SDKAPPID,
            sim::DEMO_IDENTIFIER,
            sim::DEMO_KEY,
            o.rate,
            dir.join("bansync.db").display(),
            rooms.join(", ")
        ),
    )
    .unwrap();
    let settings = bansync::config::load_with(&path, &Default::default()).unwrap();
    let db = settings.store_path.clone();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let (_reload, reload_rx) = tokio::sync::mpsc::unbounded_channel();
    let control = bansync::DaemonControl {
        stop: stop_rx,
        reload: reload_rx,
        on_ready: Box::new(|| {}),
        clock: bansync::clock::Clock::system(),
    };
    std::mem::forget(_reload);
    let task = tokio::spawn(bansync::run(
        settings,
        None,
        control,
        Default::default(),
        Default::default(),
    ));
    if hints {
        // The vendor's console: callbacks to this daemon, signed.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", callback_port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Value)>();
        let url = format!("http://127.0.0.1:{callback_port}/tencent/callback");
        let app = sim::DEMO_SDKAPPID;
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while let Some((command, body)) = rx.recv().await {
                // The simulator's limit stands for this benchmark's budget
                // (so any excess shows as rate-limit answers); the vendor
                // alerts at 80% of its own limit, far above a 25/s budget.
                if command == "Alert.RequestOverLimit" {
                    continue;
                }
                let t = bansync::clock::Clock::system().now_s().to_string();
                let q = [
                    ("SdkAppid", app.to_string()),
                    ("CallbackCommand", command),
                    ("contenttype", "json".into()),
                    ("RequestTime", t.clone()),
                    ("Sign", bansync::hint::sign("bench", &t)),
                ];
                let _ = http.post(&url).query(&q).json(&body).send().await;
            }
        });
        state.lock().unwrap().callbacks = Some(sim::state::CallbackTarget {
            url: String::new(),
            token: Some("bench".into()),
            queue: tx,
        });
    }
    Side {
        name,
        hints,
        state,
        arrivals,
        db,
        stop,
        task,
    }
}

fn walked(db: &Path) -> usize {
    bansync::store::Direct::open_read_only(db)
        .and_then(|d| d.sources())
        .map(|s| s.iter().filter(|s| s.status == "ok").count())
        .unwrap_or(0)
}

/// The machine, as BENCHMARKS.md names it.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "an unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cores} cores, {cpu}")
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

struct Figures {
    name: &'static str,
    latencies: Vec<f64>,
    missing: usize,
    calls_per_s: f64,
    most_in_second: u64,
    rate_limited: u64,
    max_gap: f64,
}

/// Cumulative distributions of the two latency sets as a PNG (no fonts;
/// BENCHMARKS.md says what is drawn): x from 0 to `x_max` seconds with a
/// grey line every 30 s, y from 0 to 100% with a line every 10%; red the
/// sweep, blue adaptive, green adaptive with callbacks.
fn plot(path: &Path, sets: &[(&[f64], [u8; 3])], x_max: f64) {
    let (w, h, m) = (900usize, 360usize, 30usize);
    let mut img = vec![255u8; w * h * 3];
    let mut put = |x: usize, y: usize, c: [u8; 3]| {
        if x < w && y < h {
            img[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&c);
        }
    };
    let x_of = |s: f64| m + ((s / x_max).min(1.0) * (w - 2 * m) as f64) as usize;
    let y_of = |f: f64| h - m - (f * (h - 2 * m) as f64) as usize;
    let mut s = 0.0;
    while s <= x_max {
        for y in m..h - m {
            put(x_of(s), y, [225, 225, 225]);
        }
        s += 30.0;
    }
    for i in 0..=10 {
        for x in m..w - m {
            put(x, y_of(i as f64 / 10.0), [225, 225, 225]);
        }
    }
    for (lat, c) in sets {
        let n = lat.len().max(1) as f64;
        for px in m..w - m {
            let secs = (px - m) as f64 / (w - 2 * m) as f64 * x_max;
            let frac = lat.partition_point(|l| *l <= secs) as f64 / n;
            let y = y_of(frac);
            for d in 0..3 {
                put(px, y.saturating_sub(d), *c);
            }
        }
    }
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(&img).unwrap();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = parse(&args);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(o));
}

async fn run(o: Opts) {
    let dir = tempfile::tempdir().unwrap();
    let w = workload(o.seed, o.rooms, 0.0, (o.learn + o.measure) as f64);
    let pages: u32 = w.costs.iter().sum();
    // The shortest whole-minute interval a sweep can keep at this rate.
    let sweep_secs = (f64::from(pages) / bansync::tencent::pacer::paced_rate(o.rate)).ceil() as u64;
    let sweep_minutes = sweep_secs.div_ceil(60).max(1);
    let adaptive_interval = 300;
    println!(
        "{} lists, {pages} pages a sweep ({sweep_secs} s of calls at {}/s): sweep every {sweep_minutes}m, adaptive with interval {adaptive_interval}s",
        o.rooms, o.rate
    );
    let (list_kind, _, api_path) = kind(&o);
    let mut sides = vec![
        side(
            "sweep",
            &format!("interval = \"{sweep_minutes}m\""),
            &o,
            &w.costs,
            dir.path(),
            false,
        )
        .await,
        side(
            "adaptive",
            &format!("mode = \"adaptive\"\ninterval = \"{adaptive_interval}s\""),
            &o,
            &w.costs,
            dir.path(),
            false,
        )
        .await,
    ];
    if o.kick_share > 0.0 {
        sides.push(
            side(
                "adaptive + callbacks",
                &format!("mode = \"adaptive\"\ninterval = \"{adaptive_interval}s\""),
                &o,
                &w.costs,
                dir.path(),
                true,
            )
            .await,
        );
    }
    // Both baselines first.
    let t0 = Instant::now();
    while sides.iter().any(|s| walked(&s.db) < o.rooms) {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!(
        "baselines done in {:.0} s; bans start (learning {} s, then measured {} s)",
        t0.elapsed().as_secs_f64(),
        o.learn,
        o.measure
    );
    let start = Instant::now();
    let measure_from = o.learn as f64;
    let mut changed: Vec<(String, Instant, bool)> = Vec::with_capacity(w.bans.len());
    let mut calls_at_measure = Vec::new();
    for (n, (t, room)) in w.bans.iter().enumerate() {
        if *t >= measure_from && calls_at_measure.is_empty() {
            for s in &sides {
                let mut st = s.state.lock().unwrap();
                st.walks.clear();
                st.max_gap.clear();
                st.stats.clear();
                st.windows.clear();
            }
            calls_at_measure.push(Instant::now());
        }
        let due = start + Duration::from_secs_f64(*t);
        tokio::time::sleep_until(due.into()).await;
        let account = format!("b{n}");
        let until = bansync::clock::Clock::system().now_s() + 3600;
        // A deterministic share of the bans also kicks the member.
        let unit =
            ((n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / ((1u64 << 53) as f64);
        let kicks = o.kick_share > 0.0 && unit < o.kick_share;
        for s in &sides {
            let mut st = s.state.lock().unwrap();
            st.lists(list_kind)
                .entry(format!("r{room}"))
                .or_default()
                .upsert(&account, until);
            if kicks && s.hints {
                st.push_callback(
                    "Group.CallbackAfterMemberExit",
                    serde_json::json!({"GroupId": format!("r{room}"), "Type": "AVChatRoom",
                        "ExitType": "Kicked", "ExitMemberList": [{"Member_Account": account}]}),
                );
            }
        }
        changed.push((account, Instant::now(), *t >= measure_from));
    }
    let end = (start + Duration::from_secs(o.learn + o.measure)).max(Instant::now());
    tokio::time::sleep_until(end.into()).await;
    let measured_for = calls_at_measure
        .first()
        .map(|t| t.elapsed().as_secs_f64())
        .unwrap_or(1.0);
    // Calls, limits and gaps over the measured window.
    let mut figures: Vec<Figures> = sides
        .iter()
        .map(|s| {
            let st = s.state.lock().unwrap();
            let api = st.stats.get(api_path).cloned().unwrap_or_default();
            Figures {
                name: s.name,
                latencies: Vec::new(),
                missing: 0,
                calls_per_s: api.calls as f64 / measured_for,
                most_in_second: api.max_in_window,
                rate_limited: api.rate_limited,
                max_gap: st.max_gap.get(&list_kind).copied().unwrap_or(0.0),
            }
        })
        .collect();
    // Let the last bans arrive (at most one interval each).
    let drain = Instant::now() + Duration::from_secs(adaptive_interval + 30);
    loop {
        let done = sides.iter().all(|s| {
            let a = s.arrivals.lock().unwrap();
            changed.iter().all(|(acc, _, _)| a.contains_key(acc))
        });
        if done || Instant::now() > drain {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for (s, f) in sides.iter().zip(figures.iter_mut()) {
        let a = s.arrivals.lock().unwrap();
        for (acc, at, measured) in &changed {
            if !measured {
                continue;
            }
            match a.get(acc) {
                Some(got) => f
                    .latencies
                    .push(got.saturating_duration_since(*at).as_secs_f64()),
                None => f.missing += 1,
            }
        }
        f.latencies.sort_by(f64::total_cmp);
    }
    for s in &sides {
        let _ = s.stop.send(true);
    }
    for s in sides {
        let _ = s.task.await;
    }
    let measured = changed.iter().filter(|c| c.2).count();
    let mut md = String::new();
    let what = if o.groups {
        "audio-video groups"
    } else {
        "rooms"
    };
    md += &format!(
        "{} {what} of one to three pages ({pages} calls a sweep), `requests_per_second = {}`; bans at 0.5/s spread Zipf(1.1) over them plus a raid (10 bans over 30 s in a Zipf-chosen one) every 20 s; {} s to learn, then {measured} bans over {} s measured. `sweep` every {sweep_minutes}m, `adaptive` with `interval = \"{adaptive_interval}s\"`.",
        o.rooms, o.rate, o.learn, o.measure
    );
    if o.kick_share > 0.0 {
        md += &format!(
            " {:.0}% of the bans also kick the member (`Group.CallbackAfterMemberExit`); `adaptive + callbacks` gets those callbacks as hints.",
            o.kick_share * 100.0
        );
    }
    md += "\n\n";
    md += "| mode | p50 | p90 | p99 | max | not arrived | calls/s | most calls in one second | rate-limit answers | longest unwalked |\n|---|---|---|---|---|---|---|---|---|---|\n";
    for f in &figures {
        md += &format!(
            "| {} | {:.1} s | {:.1} s | {:.1} s | {:.1} s | {} | {:.1} | {} | {} | {:.0} s |\n",
            f.name,
            pct(&f.latencies, 0.5),
            pct(&f.latencies, 0.9),
            pct(&f.latencies, 0.99),
            f.latencies.last().copied().unwrap_or(f64::NAN),
            f.missing,
            f.calls_per_s,
            f.most_in_second,
            f.rate_limited,
            f.max_gap
        );
    }
    let (s, a) = (&figures[0], &figures[1]);
    md += &format!(
        "\np50 {:.1}x lower with adaptive (target ≥ 5x); p90 {:.2}x (target ≥ 1); longest unwalked {:.0} s (bound {adaptive_interval} s).\n",
        pct(&s.latencies, 0.5) / pct(&a.latencies, 0.5),
        pct(&s.latencies, 0.9) / pct(&a.latencies, 0.9),
        a.max_gap
    );
    if let Some(h) = figures.get(2) {
        md += &format!(
            "With callbacks as hints: p50 {:.1}x lower than the sweep's, p90 {:.2}x.\n",
            pct(&s.latencies, 0.5) / pct(&h.latencies, 0.5),
            pct(&s.latencies, 0.9) / pct(&h.latencies, 0.9)
        );
    }
    print!("{md}");
    let png = PathBuf::from(if o.kick_share > 0.0 {
        "benchmarks-detection-latency-callbacks.png"
    } else {
        "benchmarks-detection-latency.png"
    });
    let x_max = figures
        .iter()
        .filter_map(|f| f.latencies.last().copied())
        .fold(60.0, f64::max);
    let colours = [[220, 40, 40], [40, 80, 220], [30, 160, 60]];
    let sets: Vec<(&[f64], [u8; 3])> = figures
        .iter()
        .zip(colours)
        .map(|(f, c)| (f.latencies.as_slice(), c))
        .collect();
    plot(&png, &sets, x_max);
    println!("plot: {}", png.display());
    if let Some(p) = o.markdown {
        // Its own section of the page, between markers: replaced if there,
        // appended if not; the rest of the page is left as it is.
        let marker = if o.kick_share > 0.0 {
            "adaptive-callbacks"
        } else {
            "adaptive"
        };
        let title = if o.kick_share > 0.0 {
            "Detection latency with callbacks as hints"
        } else {
            "Detection latency: sweep against adaptive"
        };
        let (begin, end) = (
            format!("<!-- {marker}:begin -->"),
            format!("<!-- {marker}:end -->"),
        );
        let section = format!(
            "{begin}\n## {title}\n\nLatest run of `cargo bench --bench adaptive{}` on {}.\n\n{md}\nCumulative share of bans detected (y, 0-100%, a grey line every 10%) against detection latency (x, a grey line every 30 s); red `sweep`, blue `adaptive`{}:\n\n![detection latency]({})\n{end}",
            if o.kick_share > 0.0 {
                format!(" -- --kick-share {}", o.kick_share)
            } else {
                String::new()
            },
            machine(),
            if o.kick_share > 0.0 {
                ", green `adaptive + callbacks`"
            } else {
                ""
            },
            png.display()
        );
        let page = std::fs::read_to_string(&p).unwrap_or_default();
        let page = match (page.find(&begin), page.find(&end)) {
            (Some(a), Some(b)) if b > a => {
                format!("{}{section}{}", &page[..a], &page[b + end.len()..])
            }
            _ => format!("{}\n{section}\n", page.trim_end()),
        };
        std::fs::write(&p, page).unwrap();
        println!("written: {}", p.display());
    }
}
