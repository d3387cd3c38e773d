//! Configuration: the TOML file, overridden by `BANSYNC_<SECTION>__<KEY>`
//! environment variables, secrets from files or systemd credentials, then
//! validated into [`Settings`]. Every error names the key at fault.

mod raw;
pub mod secret;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;

use crate::diff::Initial;
use crate::duration;
use crate::event::EventType;
use crate::source::{Pattern, SourceKind, SourceSpec};
pub use secret::{Secret, SecretOrigin};

use raw::RawConfig;

/// Checks a cron expression (six fields, seconds first).
pub fn validate_cron(expr: &str) -> Result<(), String> {
    tokio_cron_scheduler::Job::new_async(expr, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| format!("{e:?}; write six fields with seconds first, e.g. `0 */5 * * * *`"))
}

/// The retry delays of CONTRACT.md, after the first attempt.
pub const DEFAULT_RETRY_SCHEDULE: &[u64] = &[5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400];

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Interval(Duration),
    Cron(String),
}

#[derive(Debug, Clone)]
pub struct SyncSettings {
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
    pub sync: SyncSettings,
    pub sources: Vec<SourceSpec>,
    pub webhooks: Vec<WebhookSettings>,
    pub propagate: Vec<PropagateRule>,
    pub http_listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub log_level: String,
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
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read configuration file `{}`: {e}",
            path.display()
        ))
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
        .source(Some(env.vars.iter().cloned().collect()));
    let layered = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(env_source)
        .build()
        .map_err(|e| {
            ConfigError(format!(
                "configuration: {}",
                without_snippet(&e.to_string())
            ))
        })?;
    let mut value: serde_json::Value = layered
        .try_deserialize()
        .map_err(|e| ConfigError(format!("configuration: {e}")))?;
    coerce_env_strings(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ConfigError(format!("{path}: {}", e.inner()))
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
    ];
    let Some(top) = v.as_object_mut() else { return };
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
        Some(s) => duration::parse(s).map_err(|e| ConfigError(format!("{key}: {e}"))),
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

fn validate(raw: RawConfig, path: &Path, env: &Environment) -> Result<Settings, ConfigError> {
    let Some(t) = raw.tencent else {
        return err("tencent: section missing (sdkappid, identifier, secret_key, region)");
    };
    let sdkappid = match t.sdkappid {
        None => return err("tencent.sdkappid: missing"),
        Some(0) => return err("tencent.sdkappid: must not be 0"),
        Some(n) if n > u32::MAX as u64 * 2 => return err("tencent.sdkappid: not a valid SDKAppID"),
        Some(n) => n,
    };
    let identifier = match t.identifier.as_deref().map(str::trim) {
        None | Some("") => return err("tencent.identifier: missing (an App admin account)"),
        Some(s) => s.to_string(),
    };
    let (secret_key, secret_origin) = secret::resolve(
        "tencent.secret_key",
        t.secret_key.as_deref(),
        t.secret_key_file.as_deref(),
        "tim-secret-key",
        env.credentials_dir.as_deref(),
    )
    .map_err(ConfigError)?
    .ok_or_else(|| {
        ConfigError(
            "tencent.secret_key: missing (set secret_key, secret_key_file, or the systemd credential tim-secret-key)"
                .into(),
        )
    })?;
    if secret_key.expose().trim().is_empty() {
        return err("tencent.secret_key: empty");
    }
    let (region, base_urls) = match (t.region.as_deref(), t.base_url.as_deref()) {
        (Some(_), Some(_)) => {
            return err("tencent.base_url: give either region or base_url, not both");
        }
        (None, None) => return err(format!("tencent.region: missing ({})", Region::NAMES)),
        (Some(r), None) => {
            let region = Region::parse(r).ok_or_else(|| {
                ConfigError(format!(
                    "tencent.region: unknown region `{r}` ({})",
                    Region::NAMES
                ))
            })?;
            let (a, b) = region.domains();
            (
                Some(region),
                vec![format!("https://{a}"), format!("https://{b}")],
            )
        }
        (None, Some(u)) => {
            let url = reqwest::Url::parse(u)
                .map_err(|e| ConfigError(format!("tencent.base_url: `{u}`: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return err(format!("tencent.base_url: `{u}` is not an http(s) URL"));
            }
            (None, vec![u.trim_end_matches('/').to_string()])
        }
    };
    let usersig_ttl = parse_duration(
        "tencent.usersig_ttl",
        t.usersig_ttl.as_deref(),
        Duration::from_secs(86400),
    )?;
    if usersig_ttl < Duration::from_secs(300) {
        return err("tencent.usersig_ttl: must be at least 5m (the sig is renewed before it ends)");
    }
    let requests_per_second = t.requests_per_second.unwrap_or(200);
    if requests_per_second == 0 || requests_per_second > 100_000 {
        return err("tencent.requests_per_second: must be between 1 and 100000");
    }
    let timeout = nonzero_duration(
        "tencent.timeout",
        t.timeout.as_deref(),
        Duration::from_secs(10),
    )?;

    let store_path = {
        let p = PathBuf::from(raw.store.path.as_deref().unwrap_or("bansync.db"));
        if p.as_os_str().is_empty() {
            return err("store.path: empty");
        }
        if p.is_relative() {
            match &env.state_dir {
                Some(dir) => dir.join(p),
                None => p,
            }
        } else {
            p
        }
    };

    let s = raw.sync;
    let schedule = match (s.interval.as_deref(), s.cron.as_deref()) {
        (Some(_), Some(_)) => return err("sync.cron: give either interval or cron, not both"),
        (None, Some(c)) => {
            validate_cron(c).map_err(|e| ConfigError(format!("sync.cron: `{c}`: {e}")))?;
            Schedule::Cron(c.to_string())
        }
        (i, None) => {
            let d = nonzero_duration("sync.interval", i, Duration::from_secs(300))?;
            // The scheduler counts in whole seconds.
            if d < Duration::from_secs(1) || d.subsec_millis() != 0 {
                return err(format!(
                    "sync.interval: `{}` must be a whole number of seconds, at least 1s",
                    i.unwrap_or_default()
                ));
            }
            Schedule::Interval(d)
        }
    };
    let page_size = s.page_size.unwrap_or(100);
    if !(1..=100).contains(&page_size) {
        return err(format!(
            "sync.page_size: {page_size} is out of range (1 to 100, the vendor's maximum)"
        ));
    }
    let initial = match s.initial.as_deref().unwrap_or("baseline") {
        "baseline" => Initial::Baseline,
        "emit" => Initial::Emit,
        other => {
            return err(format!(
                "sync.initial: unknown value `{other}` (baseline | emit)"
            ));
        }
    };
    let confirm_delay = parse_duration(
        "sync.confirm_delay",
        s.confirm_delay.as_deref(),
        Duration::from_secs(5),
    )?;
    let max_concurrent_walks = s.max_concurrent_walks.unwrap_or(64) as usize;
    if max_concurrent_walks == 0 {
        return err("sync.max_concurrent_walks: must be at least 1");
    }

    let Some(src) = raw.sources else {
        return err("sources: section missing (groups, rooms, blocklists)");
    };
    let mut sources = Vec::new();
    for (key, kind, list) in [
        ("sources.groups", SourceKind::Group, &src.groups),
        ("sources.rooms", SourceKind::Room, &src.rooms),
        ("sources.blocklists", SourceKind::Blocklist, &src.blocklists),
    ] {
        for (i, id) in list.iter().enumerate() {
            crate::source::validate_id(id)
                .map_err(|e| ConfigError(format!("{key}[{i}]: `{id}`: {e}")))?;
            let spec = SourceSpec::new(kind, id.as_str());
            if sources.contains(&spec) {
                return err(format!("{key}[{i}]: `{id}` is listed twice"));
            }
            sources.push(spec);
        }
    }
    if sources.is_empty() {
        return err("sources: no source to watch (groups, rooms and blocklists are all empty)");
    }
    if let Some(r) = region
        && !r.has_live_rooms()
        && sources.iter().any(|s| s.kind == SourceKind::Room)
    {
        return err(format!(
            "sources.rooms: the live-room service is not offered in region `{}` (china, singapore, silicon-valley, jakarta)",
            t.region.as_deref().unwrap_or_default()
        ));
    }

    let mut webhooks: Vec<WebhookSettings> = Vec::new();
    for (i, w) in raw.webhook.into_iter().enumerate() {
        let at = format!("webhook[{i}]");
        let name = match w.name.as_deref().map(str::trim) {
            None | Some("") => return err(format!("{at}.name: missing")),
            Some(n)
                if !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
            {
                return err(format!(
                    "{at}.name: `{n}` may hold only letters, digits, - and _"
                ));
            }
            Some(n) => n.to_string(),
        };
        let at = format!("webhook[{i}] ({name})");
        if webhooks.iter().any(|o| o.name == name) {
            return err(format!("{at}.name: `{name}` is used by two webhooks"));
        }
        let url = match w.url.as_deref() {
            None => return err(format!("{at}.url: missing")),
            Some(u) => {
                let parsed = reqwest::Url::parse(u)
                    .map_err(|e| ConfigError(format!("{at}.url: `{u}`: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                    return err(format!("{at}.url: `{u}` is not an http(s) URL"));
                }
                u.to_string()
            }
        };
        let credential = format!("webhook-{name}-secret");
        let (secret, secret_origin) = secret::resolve(
            &format!("{at}.secret"),
            w.secret.as_deref(),
            w.secret_file.as_deref(),
            &credential,
            env.credentials_dir.as_deref(),
        )
        .map_err(ConfigError)?
        .ok_or_else(|| {
            ConfigError(format!(
                "{at}.secret: missing (secret, secret_file, or credential {credential})"
            ))
        })?;
        let mut keys = Vec::new();
        for (j, part) in secret.expose().split_whitespace().enumerate() {
            let b64 = part.strip_prefix("whsec_").unwrap_or(part);
            let key = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| {
                ConfigError(format!("{at}.secret: secret #{} is not a whsec_ secret (whsec_ followed by base64)", j + 1))
            })?;
            if key.len() < 16 {
                return err(format!(
                    "{at}.secret: secret #{} is shorter than 16 bytes once decoded",
                    j + 1
                ));
            }
            // Kept as raw bytes in a Secret; base64 again so Secret stays a String.
            keys.push(Secret::new(
                base64::engine::general_purpose::STANDARD.encode(key),
            ));
        }
        if keys.is_empty() {
            return err(format!("{at}.secret: empty"));
        }
        let events: Vec<Pattern> = match w.events {
            None => vec![Pattern::new("*")],
            Some(list) if list.is_empty() => {
                return err(format!("{at}.events: empty (omit it for all events)"));
            }
            Some(list) => {
                let mut out = Vec::new();
                for p in list {
                    let pat = Pattern::new(p.as_str());
                    if !EventType::ALL.iter().any(|t| pat.matches(t.as_str())) {
                        return err(format!("{at}.events: `{p}` matches no event type"));
                    }
                    out.push(pat);
                }
                out
            }
        };
        let source_filters = match w.sources {
            None => vec![Pattern::new("*")],
            Some(list) if list.is_empty() => {
                return err(format!("{at}.sources: empty (omit it for all sources)"));
            }
            Some(list) => {
                for p in &list {
                    let kind = p.split(':').next().unwrap_or_default();
                    if !p.contains(':') && p != "*"
                        || !(kind == "*" || SourceKind::ALL.iter().any(|k| k.as_str() == kind))
                    {
                        return err(format!(
                            "{at}.sources: `{p}` is not a source pattern (e.g. room:*, group:@TGS#1)"
                        ));
                    }
                }
                list.into_iter().map(Pattern::new).collect()
            }
        };
        let timeout = nonzero_duration(
            &format!("{at}.timeout"),
            w.timeout.as_deref(),
            Duration::from_secs(15),
        )?;
        let retry_schedule = match w.retry_schedule {
            None => DEFAULT_RETRY_SCHEDULE
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            Some(list) => {
                let mut out = Vec::new();
                for (j, d) in list.iter().enumerate() {
                    out.push(parse_duration(
                        &format!("{at}.retry_schedule[{j}]"),
                        Some(d),
                        Duration::ZERO,
                    )?);
                }
                out
            }
        };
        let max_in_flight = w.max_in_flight.unwrap_or(16) as usize;
        if max_in_flight == 0 {
            return err(format!("{at}.max_in_flight: must be at least 1"));
        }
        webhooks.push(WebhookSettings {
            name,
            url,
            keys,
            secret_origin,
            events,
            sources: source_filters,
            timeout,
            retry_schedule,
            max_in_flight,
        });
    }

    let mut propagate = Vec::new();
    for (i, r) in raw.propagate.into_iter().enumerate() {
        let at = format!("propagate[{i}]");
        let parse_list = |key: &str, list: &[String]| -> Result<Vec<SourceSpec>, ConfigError> {
            if list.is_empty() {
                return err(format!("{at}.{key}: empty"));
            }
            list.iter()
                .map(|s| {
                    let spec: SourceSpec = s
                        .parse()
                        .map_err(|e| ConfigError(format!("{at}.{key}: {e}")))?;
                    if spec.kind == SourceKind::Blocklist {
                        return err(format!(
                            "{at}.{key}: `{s}`: only groups and rooms hold bans"
                        ));
                    }
                    Ok(spec)
                })
                .collect()
        };
        let from = parse_list("from", &r.from)?;
        let to = parse_list("to", &r.to)?;
        for f in &from {
            if !sources.contains(f) {
                return err(format!(
                    "{at}.from: `{f}` is not a watched source (add it under [sources])"
                ));
            }
            if to.contains(f) {
                return err(format!("{at}.to: `{f}` is both origin and target"));
            }
        }
        propagate.push(PropagateRule {
            from,
            to,
            lift: r.lift,
        });
    }

    let http_listen = match raw.http.listen.as_deref() {
        None => Some("127.0.0.1:9187".parse().unwrap()),
        Some("") | Some("off") => None,
        Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| {
            ConfigError(format!(
                "http.listen: `{a}` is not an address like 127.0.0.1:9187"
            ))
        })?),
    };
    let log_format = match raw.log.format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return err(format!(
                "log.format: unknown format `{other}` (text | json)"
            ));
        }
    };
    let log_level = raw.log.level.unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        return err(format!(
            "log.level: `{log_level}` is not a level or filter (error, warn, info, debug, trace)"
        ));
    }

    Ok(Settings {
        path: path.to_path_buf(),
        tencent: TencentSettings {
            sdkappid,
            identifier,
            secret_key,
            secret_origin,
            region,
            base_urls,
            usersig_ttl,
            requests_per_second,
            timeout,
        },
        store_path,
        sync: SyncSettings {
            schedule,
            page_size,
            blocklist_page_size: 1000,
            initial,
            confirm_delay,
            max_concurrent_walks,
        },
        sources,
        webhooks,
        propagate,
        http_listen,
        log_format,
        log_level,
    })
}

impl Settings {
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
            t.base_urls.join(" (backup: ") + if t.base_urls.len() > 1 { ")" } else { "" }
        );
        let _ = writeln!(out, "  secret key: [redacted] ({})", t.secret_origin);
        let _ = writeln!(
            out,
            "  {} requests/s per API, timeout {}, UserSig valid {}",
            t.requests_per_second,
            duration::format(t.timeout),
            duration::format(t.usersig_ttl)
        );
        let _ = writeln!(out, "store: {}", self.store_path.display());
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
        let _ = writeln!(out, "delivering to {} webhooks:", self.webhooks.len());
        for w in &self.webhooks {
            let list = |p: &[Pattern]| p.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(", ");
            let _ = writeln!(
                out,
                "  {} -> {} (events: {}; sources: {}; {} secret(s), [redacted] from {}; timeout {})",
                w.name,
                w.url,
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
