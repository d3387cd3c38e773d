//! The command line (CONTRACT.md): parsing, and one function per command.
//! Exit status: 0 success, 1 the work failed, 2 bad usage or configuration.

mod admin;
mod error;
mod inspect;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Settings};
use crate::event::EventType;
use error::CliError;

#[derive(Debug, Parser)]
#[command(
    name = "bansync",
    version,
    about = "Watches Tencent Cloud Chat ban lists and blocklists and delivers every change as a signed webhook."
)]
pub struct Cli {
    /// Configuration file [default: $CONFIGURATION_DIRECTORY/bansync.toml, else ./config/bansync.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: schedule every source, diff, emit, deliver, until SIGTERM/SIGINT.
    Run,
    /// One full sweep of every (or the named) source, then deliver what is pending.
    Sync {
        /// Only this source (KIND:ID); repeat for several.
        #[arg(long = "source", value_name = "SPEC", value_parser = parse_source)]
        sources: Vec<crate::source::SourceSpec>,
        /// Diff and print, without storing or emitting anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Load and validate the configuration and print what it would watch and deliver to.
    CheckConfig,
    /// Per source: last complete walk, entries held, last error; per webhook: pending, dead, disabled.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The emitted events, newest last.
    Events {
        #[arg(long = "source", value_name = "SPEC", value_parser = parse_source)]
        sources: Vec<crate::source::SourceSpec>,
        /// Event type or pattern (ban.*); repeat for several.
        #[arg(long = "type", value_name = "TYPE", value_parser = parse_event_type)]
        types: Vec<String>,
        /// RFC 3339 time, or a duration ago (1h).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<i64>,
        /// At most this many (the newest).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// One account's ban and block timeline across all sources.
    History {
        account: String,
        #[arg(long)]
        json: bool,
    },
    /// Deliveries: list and re-queue those that ran out of attempts; send a test event.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Queue again, for one webhook, every matching event since TIME.
    Replay {
        #[arg(long, value_name = "NAME")]
        webhook: String,
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: i64,
    },
    /// Ban accounts in a live room or an audio-video group (20 a request).
    Ban(BanArgs),
    /// Lift bans in a live room or an audio-video group.
    Unban(UnbanArgs),
    /// Print a UserSig for the configured app.
    Usersig {
        /// Identifier to sign for [default: tencent.identifier]
        #[arg(long, value_name = "ID")]
        identifier: Option<String>,
        /// Validity [default: tencent.usersig_ttl]
        #[arg(long, value_name = "DUR", value_parser = parse_duration)]
        expire: Option<std::time::Duration>,
    },
    /// Run the built-in simulator of the Tencent Cloud Chat REST endpoints.
    Sim(SimArgs),
    /// Simulator + webhook receiver + daemon on a temporary store, with bans and blocks changing.
    Demo {
        /// How long the scripted changes run.
        #[arg(long, value_name = "DUR", value_parser = parse_duration, default_value = "75s")]
        duration: std::time::Duration,
    },
    /// Print the JSON Schema (draft 2020-12) every webhook body validates against.
    Schema,
    /// Print a completion script for bash, zsh or fish.
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Write the man pages (bansync.1 and one per command) into DIR.
    #[command(hide = true)]
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

/// The shells `bansync completions` writes for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries that ran out of attempts.
    Dead {
        #[arg(long, value_name = "NAME")]
        webhook: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Re-queue them (all, one webhook's, or the given ids).
    Retry {
        #[arg(long, value_name = "NAME")]
        webhook: Option<String>,
        #[arg(long = "id", value_name = "ID")]
        ids: Vec<i64>,
    },
    /// Send one signed `webhook.test` to a webhook now (not stored) and print the answer.
    Test {
        #[arg(long, value_name = "NAME")]
        webhook: String,
    },
}

/// Where to ban or unban: exactly one of `--room` and `--group`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// A live room (live_engine_http_srv).
    #[arg(long, value_name = "ROOM")]
    pub room: Option<String>,
    /// An audio-video group (group_open_http_svc).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
}

#[derive(Debug, Args)]
pub struct UnbanArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(required = true, value_name = "ACCOUNT")]
    pub accounts: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BanArgs {
    #[command(flatten)]
    pub target: Target,
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub duration: std::time::Duration,
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
    #[arg(required = true, value_name = "ACCOUNT")]
    pub accounts: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// The simulated app [default: the configuration's, else the demo app]
    #[arg(long)]
    pub sdkappid: Option<u64>,
    #[arg(long)]
    pub identifier: Option<String>,
    /// The key sigs are checked with [default: the configuration's, else
    /// the demo key]. From the environment, not the command line, so that
    /// `ps` does not show it.
    #[arg(
        long = "secret-key-env",
        hide = true,
        env = "BANSYNC_SIM_SECRET_KEY",
        hide_env_values = true
    )]
    pub secret_key: Option<String>,
    /// A file holding the key sigs are checked with.
    #[arg(long, value_name = "PATH", conflicts_with = "secret_key")]
    pub secret_key_file: Option<std::path::PathBuf>,
    /// Listen on a non-loopback address (the control API can change every
    /// list, and sigs are checked with a known key).
    #[arg(long)]
    pub allow_remote: bool,
    /// Calls per second per API before 60007.
    #[arg(long, default_value_t = 200)]
    pub rate_limit: u32,
}

fn parse_source(s: &str) -> Result<crate::source::SourceSpec, String> {
    s.parse()
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::duration::parse(s)
}

fn parse_event_type(s: &str) -> Result<String, String> {
    let p = crate::source::Pattern::new(s);
    if EventType::ALL.iter().any(|t| p.matches(t.as_str())) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "`{s}` matches no event type ({})",
            EventType::ALL.map(EventType::as_str).join(", ")
        ))
    }
}

/// RFC 3339, or a duration meaning that long ago. Returns Unix ms.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    match crate::duration::parse(s) {
        Ok(d) => Ok(crate::clock::Clock::system().now_ms() - d.as_millis() as i64),
        Err(_) => Err(format!(
            "`{s}` is not an RFC 3339 time (2026-11-21T10:00:00Z) or a duration ago (1h)"
        )),
    }
}

/// Loads the configuration or explains why not (exit 2).
fn load_settings(path: &Option<PathBuf>) -> Result<Settings, CliError> {
    let path = path.clone().unwrap_or_else(config::default_path);
    config::load(&path).map_err(|error| CliError::Config { path, error })
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Run => run::run(&cli.config),
        Command::Sync { sources, dry_run } => run::sync(&cli.config, sources, dry_run),
        Command::CheckConfig => match load_settings(&cli.config) {
            Ok(s) => {
                print!("{}", s.describe());
                for w in s.warnings() {
                    println!("warning: {w}");
                }
                println!("configuration OK");
                Ok(())
            }
            Err(e) => Err(e),
        },
        Command::Status { json } => inspect::status(&cli.config, json),
        Command::Events {
            sources,
            types,
            since,
            limit,
            json,
        } => inspect::events(&cli.config, sources, types, since, limit, json),
        Command::History { account, json } => inspect::history(&cli.config, &account, json),
        Command::Deliveries(DeliveriesCommand::Dead { webhook, json }) => {
            inspect::dead(&cli.config, webhook, json)
        }
        Command::Deliveries(DeliveriesCommand::Retry { webhook, ids }) => {
            admin::retry(&cli.config, webhook, ids)
        }
        Command::Replay { webhook, since } => admin::replay(&cli.config, &webhook, since),
        Command::Ban(args) => admin::ban(&cli.config, args),
        Command::Unban(args) => admin::unban(&cli.config, args),
        Command::Deliveries(DeliveriesCommand::Test { webhook }) => {
            admin::test_delivery(&cli.config, &webhook)
        }
        Command::Schema => {
            let mut text =
                serde_json::to_string_pretty(&crate::payload::schema()).expect("schemas serialize");
            text.push('\n');
            print_all(text.as_bytes())
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let shell = match shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
                CompletionShell::Fish => clap_complete::Shell::Fish,
            };
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "bansync", &mut out);
            print_all(&out)
        }
        Command::Manpages { dir } => admin::manpages(&dir),
        Command::Usersig { identifier, expire } => admin::usersig(&cli.config, identifier, expire),
        Command::Sim(args) => admin::sim(&cli.config, args),
        Command::Demo { duration } => return crate::demo::main(duration),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not
/// an error.
fn print_all(bytes: &[u8]) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(fail(e)),
        _ => Ok(()),
    }
}

/// A failure of the work (exit 1).
fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::failed(e)
}

/// The store for a command, migrated to this version's schema.
fn open_store(settings: &Settings) -> Result<crate::store::Direct, CliError> {
    crate::store::Direct::open(&settings.store_path).map_err(fail)
}

/// A runtime for commands that need one. One worker thread: the work is
/// paced network I/O, SQLite has its own writer thread, and a second worker
/// mostly adds cross-thread wake-ups (measured: 2.2 vs 3.6 µs of CPU per
/// unchanged entry, and faster delivery).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime starts")
}
