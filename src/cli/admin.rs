//! Commands that change things: `deliveries retry`, `replay`, `ban`,
//! `unban`, `usersig`, and `sim`.

use std::path::PathBuf;
use std::sync::Arc;

use super::{BanArgs, SimArgs, load_settings, runtime};
use crate::config;
use crate::delivery::dispatcher;
use crate::metrics::Metrics;
use crate::source::{SourceKind, SourceSpec};
use crate::tencent::{TencentClient, usersig, walk};

use super::error::{CliError, CliResult};
use super::{fail, open_store as open_rw};

pub fn retry(config: &Option<PathBuf>, webhook: Option<String>, ids: Vec<i64>) -> CliResult {
    let settings = load_settings(config)?;
    if let Some(w) = &webhook
        && !settings.webhooks.iter().any(|h| &h.name == w)
    {
        return Err(CliError::Usage(format!(
            "--webhook {w}: no such webhook in the configuration"
        )));
    }
    let conn = open_rw(&settings)?;
    let n = conn
        .retry_dead(
            webhook.as_deref(),
            &ids,
            crate::clock::Clock::system().now_ms(),
        )
        .map_err(fail)?;
    println!("re-queued {n} dead deliveries (a running daemon picks them up within seconds)");
    if !ids.is_empty() && n < ids.len() {
        return Err(CliError::Failed(format!(
            "{} of the given ids are not dead deliveries",
            ids.len() - n
        )));
    }
    Ok(())
}

pub fn replay(config: &Option<PathBuf>, webhook: &str, since: i64) -> CliResult {
    let settings = load_settings(config)?;
    let Some(hook) = settings.webhooks.iter().find(|h| h.name == webhook) else {
        return Err(CliError::Usage(format!(
            "--webhook {webhook}: no such webhook in the configuration"
        )));
    };
    let conn = open_rw(&settings)?;
    let n = conn
        .replay(hook, since, crate::clock::Clock::system().now_ms())
        .map_err(fail)?;
    println!(
        "queued {n} events again for {webhook} (same webhook-id as before; receivers deduplicate)"
    );
    Ok(())
}

fn client(settings: &config::Settings) -> Arc<TencentClient> {
    Arc::new(TencentClient::new(
        settings.tencent.clone(),
        Arc::new(Metrics::new()),
    ))
}

fn report(outcome: walk::BatchOutcome, verb: &str) -> CliResult {
    if !outcome.applied.is_empty() {
        println!("{verb}: {}", outcome.applied.join(" "));
    }
    for (account, e) in &outcome.failed {
        eprintln!("bansync: {account}: {e}");
    }
    if outcome.failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Reported)
    }
}

/// The longest `usersig --expire`.
const MAX_USERSIG_EXPIRE_S: u64 = 365 * 86400;

/// Account ids as the vendor has them: 1 to 32 bytes, no control
/// characters (an empty one would be sent as is).
fn check_accounts(accounts: &[String]) -> Result<(), CliError> {
    for a in accounts {
        if !crate::tencent::walk::is_account_id(a) {
            return Err(CliError::Usage(format!(
                "ACCOUNT `{}`: not an account id (1 to {} bytes, no control characters)",
                a.escape_debug(),
                crate::tencent::walk::MAX_ACCOUNT_BYTES
            )));
        }
    }
    Ok(())
}

/// `--room ROOM` or `--group GROUP`, checked.
fn target_of(t: &super::Target) -> Result<SourceSpec, CliError> {
    let (flag, kind, id) = match (&t.room, &t.group) {
        (Some(r), None) => ("--room", SourceKind::Room, r),
        (None, Some(g)) => ("--group", SourceKind::Group, g),
        _ => {
            return Err(CliError::Usage(
                "give exactly one of --room and --group".into(),
            ));
        }
    };
    crate::source::validate_id(id).map_err(|e| CliError::Usage(format!("{flag}: {e}")))?;
    Ok(SourceSpec::new(kind, id.as_str()))
}

pub fn ban(config: &Option<PathBuf>, args: BanArgs) -> CliResult {
    check_accounts(&args.accounts)?;
    let target = target_of(&args.target)?;
    let secs = args.duration.as_secs();
    if secs == 0 {
        return Err(CliError::Usage("--duration: must be at least 1s".into()));
    }
    let settings = load_settings(config)?;
    crate::logging::init(settings.log_format, "warn");
    let (limit, field) = match target.kind {
        SourceKind::Group => (crate::tencent::api::MAX_DESCRIPTION_BYTES, "Description"),
        _ => (crate::tencent::api::MAX_REASON_BYTES, "Reason"),
    };
    if args.reason.len() > limit {
        eprintln!(
            "bansync: note: --reason is cut to {limit} bytes, as the vendor allows for {field}"
        );
    }
    let c = client(&settings);
    let outcome = runtime().block_on(walk::ban(&c, &target, &args.accounts, secs, &args.reason));
    report(
        outcome,
        &format!(
            "banned in {target} for {}",
            crate::duration::format(args.duration)
        ),
    )
}

pub fn unban(config: &Option<PathBuf>, args: super::UnbanArgs) -> CliResult {
    check_accounts(&args.accounts)?;
    let target = target_of(&args.target)?;
    let settings = load_settings(config)?;
    crate::logging::init(settings.log_format, "warn");
    let c = client(&settings);
    let outcome = runtime().block_on(walk::unban(&c, &target, &args.accounts));
    report(outcome, &format!("unbanned in {target}"))
}

/// `deliveries test`: one signed `webhook.test`, now, not stored; the
/// answer printed; exit 0 on 2xx.
pub fn test_delivery(config: &Option<PathBuf>, name: &str) -> CliResult {
    let settings = load_settings(config)?;
    let Some(w) = settings.webhooks.iter().find(|w| w.name == name) else {
        let names: Vec<&str> = settings.webhooks.iter().map(|w| w.name.as_str()).collect();
        return Err(CliError::Usage(format!(
            "--webhook: no webhook named `{name}` (configured: {})",
            names.join(", ")
        )));
    };
    let now_ms = crate::clock::Clock::system().now_ms();
    let id = crate::event::new_event_id();
    let body = crate::event::test_body(settings.tencent.sdkappid, &id, now_ms);
    let ts = now_ms / 1000;
    let keys = crate::delivery::sign::raw_keys(&w.keys);
    let url = crate::config::redacted_url(&w.url);
    println!("POST {url}  webhook-id {id}");
    let sent = runtime().block_on(async {
        let http = dispatcher::webhook_client();
        let r = dispatcher::signed_post(&http, &w.url, &keys, &id, ts, body.into_bytes())
            .timeout(w.timeout)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        Ok::<_, reqwest::Error>((status, text))
    });
    match sent {
        Ok((status, text)) => {
            let shown: String = text.chars().take(500).collect();
            println!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
            if !shown.trim().is_empty() {
                println!("{}", shown.trim_end());
            }
            if status.is_success() {
                Ok(())
            } else {
                Err(CliError::Reported)
            }
        }
        Err(e) => Err(CliError::failed(format!(
            "webhook {name}: {}",
            dispatcher::describe_send_error(e)
        ))),
    }
}

/// Writes `bansync.1` and one page per command (`bansync-run.1`, ...).
pub fn manpages(dir: &std::path::Path) -> CliResult {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).map_err(fail)?;
    let cmd = super::Cli::command();
    let write = |name: &str, c: clap::Command| -> CliResult {
        let mut out = Vec::new();
        clap_mangen::Man::new(c)
            .title(name.to_uppercase())
            .render(&mut out)
            .map_err(fail)?;
        std::fs::write(dir.join(format!("{name}.1")), out).map_err(fail)
    };
    write("bansync", cmd.clone())?;
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = format!("bansync-{}", sub.get_name());
        let c = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("bansync {}", sub.get_name()));
        write(&name, c)?;
    }
    Ok(())
}

pub fn usersig(
    config: &Option<PathBuf>,
    identifier: Option<String>,
    expire: Option<std::time::Duration>,
) -> CliResult {
    if let Some(e) = expire {
        if e.as_secs() > MAX_USERSIG_EXPIRE_S {
            return Err(CliError::Usage(
                "--expire: at most 365d (a sig that outlives the key's rotation is a sig nobody can revoke)".into(),
            ));
        }
        if e.as_secs() == 0 {
            return Err(CliError::Usage("--expire: must be at least 1s".into()));
        }
    }
    let settings = load_settings(config)?;
    let t = &settings.tencent;
    let expire = expire.unwrap_or(t.usersig_ttl).as_secs();
    if expire == 0 {
        return Err(CliError::Usage("--expire: must be at least 1s".into()));
    }
    let id = identifier.unwrap_or_else(|| t.identifier.clone());
    let now = crate::clock::Clock::system().now_s() as u64;
    println!(
        "{}",
        usersig::generate(t.secret_key.expose(), t.sdkappid, &id, expire, now, None)
    );
    Ok(())
}

pub fn sim(config: &Option<PathBuf>, args: SimArgs) -> CliResult {
    // The app to simulate: flags, else an explicitly given configuration, else the demo app.
    let from_config = match config {
        Some(path) => Some(config::load(path).map_err(|error| CliError::Config {
            path: path.clone(),
            error,
        })?),
        None => None,
    };
    let t = from_config.as_ref().map(|s| &s.tencent);
    let sdkappid = args
        .sdkappid
        .or(t.map(|t| t.sdkappid))
        .unwrap_or(crate::sim::DEMO_SDKAPPID);
    let identifier = args
        .identifier
        .or(t.map(|t| t.identifier.clone()))
        .unwrap_or_else(|| crate::sim::DEMO_IDENTIFIER.into());
    let from_file = match &args.secret_key_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| CliError::Usage(format!("--secret-key-file {}: {e}", p.display())))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let key = args
        .secret_key
        .or(from_file)
        .or(t.map(|t| t.secret_key.expose().to_string()))
        .unwrap_or_else(|| crate::sim::DEMO_KEY.into());
    if args.rate_limit == 0 {
        return Err(CliError::Usage("--rate-limit: must be at least 1".into()));
    }
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        return Err(CliError::Usage(format!(
            "--listen {}: not a loopback address; the simulator's control API can change every list: add --allow-remote if you mean it",
            args.listen
        )));
    }
    crate::logging::init(config::LogFormat::Text, "info");
    runtime().block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| CliError::Failed(format!("sim: cannot listen on {}: {e}", args.listen)))?;
        let addr = listener.local_addr().map_err(fail)?;
        eprintln!("bansync sim: app {sdkappid}, admin {identifier}, {} calls/s per API, listening on http://{addr}", args.rate_limit);
        let state = crate::sim::new_state(sdkappid, &identifier, &key, args.rate_limit);
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        crate::sim::serve(listener, state, shutdown).await.map_err(fail)?;
        Ok(())
    })
}
