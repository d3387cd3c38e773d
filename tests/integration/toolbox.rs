//! The operator's and the consumer's toolbox, as a user runs it: the
//! schema, completions, `deliveries test`, `ban`/`unban --group`.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use bansync::sim::ListKind;

/// [`bansync`] off the runtime's threads (the binary talks to a simulator
/// and receivers served by this test's runtime).
async fn bansync_async(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        bansync(&args)
    })
    .await
    .unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `bansync schema` prints the schema the library builds, and it is the
/// one the test receivers check every body against.
#[test]
fn schema_prints_the_draft_2020_12_document() {
    let out = bansync(&["schema"]);
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, bansync::payload::schema());
    assert_eq!(
        printed["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    // The committed, rendered copy the README links is current.
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/webhook-body.schema.json"
    ))
    .expect("docs/webhook-body.schema.json");
    let committed: serde_json::Value = serde_json::from_str(&committed).unwrap();
    assert_eq!(
        committed, printed,
        "docs/webhook-body.schema.json is stale: bansync schema > docs/webhook-body.schema.json"
    );
}

/// bash sources the generated script and completes `bansync del` to
/// `deliveries`; zsh and fish scripts are produced too.
#[test]
fn bash_completes_bansync_del_to_deliveries() {
    let script = bansync(&["completions", "bash"]);
    assert!(script.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bansync.bash");
    std::fs::write(&path, &script.stdout).unwrap();
    let probe = format!(
        "source {}\nCOMP_WORDS=(bansync del)\nCOMP_CWORD=1\nCOMP_LINE='bansync del'\nCOMP_POINT=11\n_bansync bansync del bansync\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        path.display()
    );
    let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
    let got = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(got.trim(), "deliveries", "completions: {got:?}");
    // And the deliveries subcommands complete in turn.
    let probe = format!(
        "source {}\nCOMP_WORDS=(bansync deliveries t)\nCOMP_CWORD=2\n_bansync bansync t deliveries\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        path.display()
    );
    let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
    assert_eq!(text(&out.stdout).trim(), "test");
    for shell in ["zsh", "fish"] {
        let out = bansync(&["completions", shell]);
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("deliveries"), "{shell}");
    }
    let out = bansync(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `deliveries test`: one signed `webhook.test` now, its answer printed,
/// exit 0 on 2xx and 1 otherwise; nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_test_sends_one_signed_test_event() {
    let sim = Sim::start(100).await;
    let rx = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        &sim,
        "[sources]\nrooms = [\"r\"]",
        &format!(
            "{}\n{}",
            webhook_toml("good", &rx.url(), ""),
            webhook_toml("gone", "http://127.0.0.1:9/hook", "")
        ),
    );
    let c = path.to_str().unwrap().to_string();
    let out = bansync_async(strings(&[
        "deliveries",
        "test",
        "--webhook",
        "good",
        "--config",
        &c,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("200"), "{}", text(&out.stdout));
    let got = rx.wait_for(1, Duration::from_secs(5)).await;
    assert!(verify(&got[0]), "signed like any delivery");
    assert_eq!(got[0].body["type"], "webhook.test");
    assert_eq!(got[0].body["data"]["app"], bansync::sim::DEMO_SDKAPPID);
    assert_eq!(got[0].body["data"]["id"], got[0].id.as_str());
    let data = got[0].body["data"].as_object().unwrap();
    assert_eq!(data.len(), 2, "id and app only: {data:?}");
    rx.answer(vec![Answer::Status(500)]);
    let out = bansync_async(strings(&[
        "deliveries",
        "test",
        "--webhook",
        "good",
        "--config",
        &c,
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("500"));
    let out = bansync(&["deliveries", "test", "--webhook", "gone", "--config", &c]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("connection"),
        "{}",
        text(&out.stderr)
    );
    let out = bansync(&["deliveries", "test", "--webhook", "nope", "--config", &c]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("good, gone"));
    // Never stored.
    assert_eq!(
        count(
            &dir.path().join("bansync.db"),
            "SELECT COUNT(*) FROM events"
        ),
        0
    );
}

/// `ban`/`unban --group`: through ban_group_member / unban_group_member,
/// 20 a request; bad ids refused before any call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_and_unban_in_a_group() {
    let sim = Sim::start(1000).await;
    sim.set(ListKind::Group, "@TGS#g", &[]);
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &sim, "[sources]\ngroups = [\"@TGS#g\"]", "");
    let c = path.to_str().unwrap().to_string();
    let accounts: Vec<String> = (0..25).map(|i| format!("u{i}")).collect();
    let mut args = strings(&[
        "ban",
        "--config",
        &c,
        "--group",
        "@TGS#g",
        "--duration",
        "10m",
        "--reason",
        "spam",
    ]);
    args.extend(accounts.iter().cloned());
    let out = bansync_async(args).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        sim.calls("group_open_http_svc/ban_group_member"),
        2,
        "20 a request"
    );
    assert_eq!(sim.entries(ListKind::Group, "@TGS#g").len(), 25);
    let out = bansync_async(strings(&[
        "unban", "--config", &c, "--group", "@TGS#g", "u0", "u1",
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(sim.calls("group_open_http_svc/unban_group_member"), 1);
    assert_eq!(sim.entries(ListKind::Group, "@TGS#g").len(), 23);
    let before = sim.stats();
    for args in [
        vec![
            "ban",
            "--config",
            &c,
            "--group",
            "@TGS#g",
            "--duration",
            "1h",
            "",
        ],
        vec![
            "unban",
            "--config",
            &c,
            "--group",
            "@TGS#g",
            "a-very-long-account-id-over-32-bytes",
        ],
        vec![
            "ban",
            "--config",
            &c,
            "--group",
            "",
            "--duration",
            "1h",
            "x",
        ],
        vec!["unban", "--config", &c, "--group", "g", "--room", "r", "x"],
    ] {
        let out = bansync(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(sim.stats(), before, "no call for refused arguments");
}

/// The metric names the daemon exports (every `# HELP` line, whatever has
/// been counted yet), with the series names histograms add.
fn exported() -> std::collections::BTreeSet<String> {
    let text = bansync::metrics::Metrics::new().render(&Default::default());
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            names.insert(name.to_string());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

/// The metric names a PromQL expression reads.
fn metrics_in(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("bansync_") || w.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

/// The Grafana dashboard loads, and every panel's query reads metrics
/// bansync exports (no typo, no metric renamed from under it); so do the
/// alerting rules.
#[test]
fn dashboard_and_alerts_read_only_exported_metrics() {
    let exported = exported();
    assert!(exported.contains("bansync_build_info"));
    assert!(exported.contains("process_resident_memory_bytes"));
    let root = env!("CARGO_MANIFEST_DIR");
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/dashboards/grafana.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut seen = std::collections::BTreeSet::new();
    for p in panels {
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{} has no queries", p["title"]));
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("a PromQL expr");
            let names = metrics_in(expr);
            assert!(!names.is_empty(), "{}: {expr}", p["title"]);
            for n in names {
                assert!(
                    exported.contains(&n),
                    "panel {}: {n} is not exported",
                    p["title"]
                );
                seen.insert(n);
            }
        }
    }
    let rules = std::fs::read_to_string(format!("{root}/dashboards/alerts.yml")).unwrap();
    let mut alerts = 0;
    for n in metrics_in(&rules) {
        assert!(exported.contains(&n), "alerts.yml: {n} is not exported");
        alerts += 1;
    }
    assert!(alerts >= 8);
    // The metrics an operator needs most are on the dashboard.
    for m in [
        "bansync_deliveries_pending",
        "bansync_deliveries_dead",
        "bansync_webhook_disabled",
        "bansync_oldest_walk_age_seconds",
        "bansync_walk_calls_total",
        "bansync_callbacks_total",
        "process_cpu_seconds_total",
    ] {
        assert!(seen.contains(m), "{m} is on no panel");
    }
}
