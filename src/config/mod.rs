//! Configuration: the TOML file, overridden by `BANSYNC_<SECTION>__<KEY>`
//! environment variables, secrets from files or systemd credentials, then
//! validated into [`Settings`]. Every error names the key at fault.

pub mod defaults;
mod discovery;
mod error;
mod output;
mod propagate;
mod raw;
pub mod secret;
mod sources;
mod sync;
mod tencent;
mod webhooks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diff::Initial;
use crate::duration;
use crate::source::{Pattern, SourceSpec};
pub use discovery::{CallbackSettings, DiscoverySettings, FoundFilter};
pub use error::ConfigError;
pub use secret::{Secret, SecretOrigin};

use raw::RawConfig;

/// Checks a cron expression (six fields, seconds first).
pub fn validate_cron(expr: &str) -> Result<(), String> {
    tokio_cron_scheduler::Job::new_async(expr, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| format!("{e:?}; write six fields with seconds first, e.g. `0 */5 * * * *`"))
}

/// A failed check, written `key: problem`.
fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::invalid(msg))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    China,
    Singapore,
    Seoul,
    Tokyo,
    Frankfurt,
    Mumbai,
    SiliconValley,
    Jakarta,
}

impl Region {
    pub const NAMES: &'static str =
        "china | singapore | seoul | tokyo | frankfurt | mumbai | silicon-valley | jakarta";

    pub fn parse(s: &str) -> Option<Region> {
        Some(match s {
            "china" => Region::China,
            "singapore" => Region::Singapore,
            "seoul" => Region::Seoul,
            "tokyo" => Region::Tokyo,
            "frankfurt" => Region::Frankfurt,
            "mumbai" => Region::Mumbai,
            "silicon-valley" => Region::SiliconValley,
            "jakarta" => Region::Jakarta,
            _ => return None,
        })
    }

    /// (primary, backup) domains from the vendor's overview.
    pub fn domains(self) -> (&'static str, &'static str) {
        match self {
            Region::China => ("console.tim.qq.com", "adminapi.my-imcloud.com"),
            Region::Singapore => ("adminapisgp.im.qcloud.com", "adminapisgp.my-imcloud.com"),
            Region::Seoul => ("adminapikr.im.qcloud.com", "adminapikr.my-imcloud.com"),
            Region::Tokyo => ("adminapijpn.im.qcloud.com", "adminapijpn.my-imcloud.com"),
            Region::Frankfurt => ("adminapiger.im.qcloud.com", "adminapiger.my-imcloud.com"),
            Region::Mumbai => ("adminapiind.im.qcloud.com", "adminapiind.my-imcloud.com"),
            Region::SiliconValley => ("adminapiusa.im.qcloud.com", "adminapiusa.my-imcloud.com"),
            Region::Jakarta => ("adminapiidn.im.qcloud.com", "adminapiidn.my-imcloud.com"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Region::China => "china",
            Region::Singapore => "singapore",
            Region::Seoul => "seoul",
            Region::Tokyo => "tokyo",
            Region::Frankfurt => "frankfurt",
            Region::Mumbai => "mumbai",
            Region::SiliconValley => "silicon-valley",
            Region::Jakarta => "jakarta",
        }
    }

    /// The live-room service is offered in four regions only.
    pub fn has_live_rooms(self) -> bool {
        matches!(
            self,
            Region::China | Region::Singapore | Region::SiliconValley | Region::Jakarta
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TencentSettings {
    pub sdkappid: u64,
    pub identifier: String,
    pub secret_key: Secret,
    pub secret_origin: SecretOrigin,
    pub region: Option<Region>,
    /// Base URLs to try in order: the region's domain and its backup, or
    /// the one `base_url`.
    pub base_urls: Vec<String>,
    pub usersig_ttl: Duration,
    pub requests_per_second: u32,
    pub timeout: Duration,
    /// Extra trusted CA certificates (PEM), from `tencent.ca_file`, beside
    /// the system's trust store and the bundled roots: for a proxy or a
    /// gateway with a private CA.
    pub ca_pem: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Interval(Duration),
    Cron(String),
}

/// `sync.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every source once per interval (or cron firing).
    Sweep,
    /// Continuously within the rate: every source at least once per
    /// interval, the calls to spare where changes are likely.
    Adaptive,
}

#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub mode: Mode,
    pub schedule: Schedule,
    pub page_size: u32,
    pub blocklist_page_size: u32,
    pub initial: Initial,
    pub confirm_delay: Duration,
    pub max_concurrent_walks: usize,
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub name: String,
    pub url: String,
    /// Decoded HMAC keys, one per configured secret (rotation).
    pub keys: Vec<Secret>,
    pub secret_origin: SecretOrigin,
    pub events: Vec<Pattern>,
    pub sources: Vec<Pattern>,
    pub timeout: Duration,
    pub retry_schedule: Vec<Duration>,
    pub max_in_flight: usize,
}

impl WebhookSettings {
    pub fn wants(&self, event_type: &str, source: &str) -> bool {
        self.events.iter().any(|p| p.matches(event_type))
            && self.sources.iter().any(|p| p.matches(source))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropagateRule {
    pub from: Vec<SourceSpec>,
    pub to: Vec<SourceSpec>,
    pub lift: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// The file this was loaded from (reloads read it again).
    pub path: PathBuf,
    pub tencent: TencentSettings,
    pub store_path: PathBuf,
    /// Delivered events older than this are deleted; `None`: kept for ever.
    pub retention: Option<Duration>,
    pub sync: SyncSettings,
    pub sources: Vec<SourceSpec>,
    pub webhooks: Vec<WebhookSettings>,
    pub propagate: Vec<PropagateRule>,
    pub http_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub log_level: String,
    /// `[discovery]`: groups and rooms found by listing them.
    pub discovery: Option<DiscoverySettings>,
    /// `[callback]`: the vendor's callbacks, as hints.
    pub callback: Option<CallbackSettings>,
}

/// The default configuration path: systemd's `$CONFIGURATION_DIRECTORY`
/// when set, else `./config/bansync.toml`.
pub fn default_path() -> PathBuf {
    match std::env::var_os("CONFIGURATION_DIRECTORY") {
        // systemd may list several directories separated by colons.
        Some(dirs) => {
            let dirs = dirs.to_string_lossy().into_owned();
            let first = dirs.split(':').next().unwrap_or_default().to_string();
            PathBuf::from(first).join("bansync.toml")
        }
        None => PathBuf::from("config/bansync.toml"),
    }
}

/// Where the process finds its context, so tests can supply their own.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub vars: Vec<(String, String)>,
    pub credentials_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
}

impl Environment {
    pub fn from_process() -> Self {
        Environment {
            vars: std::env::vars()
                .filter(|(k, _)| k.starts_with("BANSYNC_"))
                .collect(),
            credentials_dir: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
            state_dir: std::env::var_os("STATE_DIRECTORY")
                .map(|d| PathBuf::from(d.to_string_lossy().split(':').next().unwrap_or_default())),
        }
    }
}

/// Loads and validates the configuration at `path` with the process environment.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    load_with(path, &Environment::from_process())
}

pub fn load_with(path: &Path, env: &Environment) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        error: e.to_string(),
    })?;
    load_from_str(&text, path, env)
}

/// Loads configuration text as if read from `path` (for fuzzing and tools).
pub fn load_from_str(text: &str, path: &Path, env: &Environment) -> Result<Settings, ConfigError> {
    let raw = parse_layers(text, env)?;
    validate(raw, path, env)
}

/// TOML first, then the environment on top, through the `config` crate; then
/// deserialized with a path-tracking deserializer so errors name the key.
fn parse_layers(text: &str, env: &Environment) -> Result<RawConfig, ConfigError> {
    let env_source = config::Environment::with_prefix("BANSYNC")
        .prefix_separator("_")
        .separator("__")
        .source(Some(
            env.vars
                .iter()
                .filter(|(k, _)| configures(k))
                .cloned()
                .collect(),
        ));
    let layered = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(env_source)
        .build()
        .map_err(|e| ConfigError::Syntax {
            key: "configuration".into(),
            problem: without_snippet(&e.to_string()),
        })?;
    let mut value: serde_json::Value =
        layered.try_deserialize().map_err(|e| ConfigError::Syntax {
            key: "configuration".into(),
            problem: e.to_string(),
        })?;
    coerce_env_strings(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        // serde quotes the value it could not take ("invalid type:
        // integer `123456789012`"): for a secret, that is the secret.
        let problem = if holds_secret(&key) {
            "not a string (the value is not shown: it may be a secret)".to_string()
        } else {
            e.inner().to_string()
        };
        ConfigError::Syntax { key, problem }
    })
}

/// A URL as it may be printed: user-info and query (where tokens hide)
/// replaced by `[redacted]`.
pub fn redacted_url(url: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        return "[redacted: not a URL]".into();
    };
    let mut out = String::new();
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username("");
        let _ = u.set_password(None);
        out = u.to_string().replacen("://", "://[redacted]@", 1);
    }
    if out.is_empty() {
        out = u.to_string();
    }
    if let Some(q) = u.query() {
        out = out.replacen(&format!("?{q}"), "?[redacted]", 1);
    }
    out
}

/// Whether a key holds a secret (its value is never shown in an error).
fn holds_secret(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    last.contains("secret") || last.contains("token") || last.contains("password")
}

/// The sections a `BANSYNC_<SECTION>__<KEY>` variable can set.
const SECTIONS: &[&str] = &[
    "TENCENT",
    "STORE",
    "SYNC",
    "SOURCES",
    "HTTP",
    "LOG",
    "DISCOVERY",
    "CALLBACK",
];

/// Only `BANSYNC_<SECTION>__<KEY>` configures bansync (CONTRACT.md); any
/// other variable that starts with `BANSYNC_` (`BANSYNC_BIN`, a script's
/// own) is ignored, and can never make a command fail.
fn configures(name: &str) -> bool {
    name.strip_prefix("BANSYNC_")
        .and_then(|rest| rest.split_once("__"))
        .is_some_and(|(section, key)| {
            SECTIONS.contains(&section.to_ascii_uppercase().as_str()) && !key.is_empty()
        })
}

/// TOML syntax errors quote the offending line, which may hold a secret:
/// keep the position and the explanation, drop the quoted source.
fn without_snippet(msg: &str) -> String {
    msg.lines()
        .filter(|l| {
            let t = l.trim_start();
            let after_digits = t
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start();
            !(after_digits.starts_with('|') || t.is_empty())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Environment values arrive as strings: turn numeric strings into numbers
/// where the schema wants numbers, and comma lists into arrays, without
/// touching anything else (a secret of digits stays a string).
fn coerce_env_strings(v: &mut serde_json::Value) {
    use serde_json::Value;
    const NUMERIC: &[(&str, &str)] = &[
        ("tencent", "sdkappid"),
        ("tencent", "requests_per_second"),
        ("sync", "page_size"),
        ("sync", "max_concurrent_walks"),
    ];
    const LISTS: &[(&str, &str)] = &[
        ("sources", "groups"),
        ("sources", "rooms"),
        ("sources", "blocklists"),
        ("discovery", "include"),
        ("discovery", "exclude"),
    ];
    const BOOLS: &[(&str, &str)] = &[
        ("discovery", "groups"),
        ("discovery", "rooms"),
        ("callback", "enrol_blocklists"),
    ];
    let Some(top) = v.as_object_mut() else { return };
    for (section, key) in BOOLS {
        if let Some(slot) = top.get_mut(*section).and_then(|s| s.get_mut(*key))
            && let Value::String(s) = slot
            && let Ok(b) = s.trim().parse::<bool>()
        {
            *slot = Value::Bool(b);
        }
    }
    for (section, key) in NUMERIC {
        if let Some(Value::String(s)) = top.get_mut(*section).and_then(|s| s.get_mut(*key))
            && let Ok(n) = s.trim().parse::<u64>()
        {
            *top.get_mut(*section).unwrap().get_mut(*key).unwrap() = Value::from(n);
        }
    }
    for (section, key) in LISTS {
        if let Some(slot) = top.get_mut(*section).and_then(|s| s.get_mut(*key))
            && let Value::String(s) = slot
        {
            let items = s
                .split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(Value::from)
                .collect();
            *slot = Value::Array(items);
        }
    }
}

fn parse_duration(key: &str, v: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => duration::parse(s).map_err(|e| ConfigError::invalid(format!("{key}: {e}"))),
    }
}

fn nonzero_duration(
    key: &str,
    v: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let d = parse_duration(key, v, default)?;
    if d.is_zero() {
        return err(format!("{key}: must be longer than zero"));
    }
    Ok(d)
}

/// Each section is checked on its own (its file), in an order that lets
/// later sections check against earlier ones.
fn validate(raw: RawConfig, path: &Path, env: &Environment) -> Result<Settings, ConfigError> {
    let tencent = tencent::validate(raw.tencent, env)?;
    let retention = sync::retention(&raw.store)?;
    let store_path = sync::store_path(raw.store, env)?;
    let sync = sync::validate(raw.sync)?;
    let discovery = discovery::discovery(raw.discovery, &tencent)?;
    let http_listen = output::http_listen(raw.http)?;
    let callback = discovery::callback(raw.callback, http_listen, env)?;
    let finds = discovery.is_some() || callback.as_ref().is_some_and(|c| c.enrol_blocklists);
    let sources = sources::validate(raw.sources, &tencent, finds)?;
    let webhooks = webhooks::validate(raw.webhook, env)?;
    let propagate = propagate::validate(raw.propagate, &sources)?;
    let (log_format, log_level) = output::log(raw.log)?;
    Ok(Settings {
        path: path.to_path_buf(),
        tencent,
        store_path,
        retention,
        sync,
        sources,
        webhooks,
        propagate,
        http_listen,
        log_format,
        log_level,
        discovery,
        callback,
    })
}

impl Settings {
    /// Which found sources this configuration watches.
    pub fn found_filter(&self) -> FoundFilter {
        FoundFilter {
            discovery: self.discovery.clone(),
            enrol_blocklists: self.callback.as_ref().is_some_and(|c| c.enrol_blocklists),
        }
    }

    /// What is allowed but probably not meant: said by `check-config` and
    /// logged when the daemon starts.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let plain = |url: &str| {
            reqwest::Url::parse(url).is_ok_and(|u| {
                u.scheme() == "http"
                    && !matches!(
                        u.host_str(),
                        Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
                    )
            })
        };
        for w in &self.webhooks {
            if plain(&w.url) {
                out.push(format!(
                    "webhook {}: {} is plain http: bodies and signatures cross the network unencrypted",
                    w.name,
                    redacted_url(&w.url)
                ));
            }
        }
        if let Some(c) = &self.callback
            && c.token.is_none()
        {
            out.push(format!(
                "callback: no token: anyone who reaches {} can send hints{}",
                c.listen,
                if c.enrol_blocklists {
                    " and enrol blocklists to watch"
                } else {
                    ""
                }
            ));
        }
        for u in &self.tencent.base_urls {
            if plain(u) {
                out.push(format!(
                    "tencent.base_url: {} is plain http: the UserSig crosses the network unencrypted",
                    redacted_url(u)
                ));
            }
        }
        out
    }

    /// What `check-config` prints: everything that would be watched and
    /// delivered to, and where secrets come from, never the secrets.
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let t = &self.tencent;
        let _ = writeln!(out, "configuration: {}", self.path.display());
        let _ = writeln!(out, "tencent: sdkappid {} as {}", t.sdkappid, t.identifier);
        let _ = writeln!(
            out,
            "  endpoint: {}",
            t.base_urls
                .iter()
                .map(|u| redacted_url(u))
                .collect::<Vec<_>>()
                .join(" (backup: ")
                + if t.base_urls.len() > 1 { ")" } else { "" }
        );
        let _ = writeln!(out, "  secret key: [redacted] ({})", t.secret_origin);
        let _ = writeln!(
            out,
            "  {} requests/s per API, timeout {}, UserSig valid {}",
            t.requests_per_second,
            duration::format(t.timeout),
            duration::format(t.usersig_ttl)
        );
        let _ = writeln!(
            out,
            "store: {} (delivered events kept {})",
            self.store_path.display(),
            self.retention
                .map(duration::format)
                .unwrap_or_else(|| "for ever".into())
        );
        let schedule = match &self.sync.schedule {
            Schedule::Interval(d) => format!("every {}", duration::format(*d)),
            Schedule::Cron(c) => format!("cron `{c}`"),
        };
        let _ = writeln!(
            out,
            "sync: {schedule}, page size {}, first walk: {}",
            self.sync.page_size,
            match self.sync.initial {
                Initial::Baseline => "baseline (no events)",
                Initial::Emit => "emit *.added",
            }
        );
        let _ = writeln!(out, "watching {} sources:", self.sources.len());
        for s in &self.sources {
            let _ = writeln!(out, "  {s}");
        }
        if let Some(d) = &self.discovery {
            let kinds: Vec<&str> = [("groups", d.groups), ("rooms", d.rooms)]
                .iter()
                .filter(|(_, on)| *on)
                .map(|(k, _)| *k)
                .collect();
            let list = |p: &[Pattern]| {
                p.iter()
                    .map(|p| p.as_str().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "discovery: {} every {}, include [{}], exclude [{}]",
                kinds.join(" and "),
                duration::format(d.interval),
                list(&d.include),
                list(&d.exclude)
            );
        }
        if let Some(c) = &self.callback {
            let _ = writeln!(
                out,
                "callbacks: POST {}{} ({}){}",
                c.listen,
                c.path,
                match &c.token_origin {
                    Some(o) => format!("Sign checked, token [redacted] ({o})"),
                    None => "no token: unsigned".into(),
                },
                if c.enrol_blocklists {
                    ", blocklists enrolled"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(out, "delivering to {} webhooks:", self.webhooks.len());
        for w in &self.webhooks {
            let list = |p: &[Pattern]| p.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(", ");
            let _ = writeln!(
                out,
                "  {} -> {} (events: {}; sources: {}; {} secret(s), [redacted] from {}; timeout {})",
                w.name,
                redacted_url(&w.url),
                list(&w.events),
                list(&w.sources),
                w.keys.len(),
                w.secret_origin,
                duration::format(w.timeout)
            );
        }
        for (i, r) in self.propagate.iter().enumerate() {
            let names = |v: &[SourceSpec]| {
                v.iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                out,
                "propagate[{i}]: {} -> {}{}",
                names(&r.from),
                names(&r.to),
                if r.lift { " (lifts too)" } else { "" }
            );
        }
        match self.http_listen {
            Some(a) => {
                let _ = writeln!(out, "http: {a} (/healthz, /readyz, /metrics)");
            }
            None => {
                let _ = writeln!(out, "http: off");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
