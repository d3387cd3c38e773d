//! `[discovery]` and `[callback]`: finding sources instead of listing them,
//! and the vendor's callbacks as hints.

use std::net::SocketAddr;
use std::time::Duration;

use super::raw::{RawCallback, RawDiscovery};
use super::{ConfigError, Environment, Secret, SecretOrigin, TencentSettings, defaults, err};
use crate::source::{Pattern, SourceKind, SourceSpec};

/// Which groups and rooms are watched without being listed in `[sources]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySettings {
    /// List the app's audio-video groups (`get_appid_group_list`).
    pub groups: bool,
    /// List the app's live rooms (`get_room_list`).
    pub rooms: bool,
    /// Globs over source specs; a found source is watched if one matches.
    pub include: Vec<Pattern>,
    /// Globs over source specs; a found source matching one is not watched.
    pub exclude: Vec<Pattern>,
    /// How often the listings are walked.
    pub interval: Duration,
}

impl DiscoverySettings {
    /// Whether a found (listed or created) group or room is to be watched.
    pub fn admits(&self, spec: &SourceSpec) -> bool {
        let kind_on = match spec.kind {
            SourceKind::Group => self.groups,
            SourceKind::Room => self.rooms,
            SourceKind::Blocklist => false,
        };
        let text = spec.to_string();
        kind_on
            && self.include.iter().any(|p| p.matches(&text))
            && !self.exclude.iter().any(|p| p.matches(&text))
    }
}

/// Which found sources (discovered, or named by a callback) are watched
/// under a configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoundFilter {
    pub discovery: Option<DiscoverySettings>,
    pub enrol_blocklists: bool,
}

impl FoundFilter {
    /// Groups and rooms while discovery lets them through; blocklists while
    /// callbacks enrol them.
    pub fn admits(&self, spec: &SourceSpec) -> bool {
        match spec.kind {
            SourceKind::Blocklist => self.enrol_blocklists,
            _ => self.discovery.as_ref().is_some_and(|d| d.admits(spec)),
        }
    }
}

/// The listener for the vendor's third-party callbacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackSettings {
    /// Its own address: `/metrics` can stay on loopback while callbacks
    /// come in through a reverse proxy.
    pub listen: SocketAddr,
    /// The path the vendor posts to.
    pub path: String,
    /// The callback token (`Sign` = SHA-256 of token + RequestTime); without
    /// one, callbacks are not authenticated.
    pub token: Option<Secret>,
    pub token_origin: Option<SecretOrigin>,
    /// A user named in a blocklist callback gets their blocklist watched.
    pub enrol_blocklists: bool,
}

pub(super) fn discovery(
    raw: Option<RawDiscovery>,
    tencent: &TencentSettings,
) -> Result<Option<DiscoverySettings>, ConfigError> {
    let Some(d) = raw else { return Ok(None) };
    let live = tencent.region.is_none_or(|r| r.has_live_rooms());
    if d.rooms == Some(true) && !live {
        return err(format!(
            "discovery.rooms: the live-room service is not offered in region `{}` (china, singapore, silicon-valley, jakarta)",
            tencent.region.map(|r| r.as_str()).unwrap_or_default()
        ));
    }
    let patterns = |key: &str, list: Option<Vec<String>>| -> Result<Vec<Pattern>, ConfigError> {
        let list = list.unwrap_or_default();
        for (i, p) in list.iter().enumerate() {
            let kind = p.split_once(':').map(|(k, _)| k).unwrap_or(p);
            if !matches!(kind, "group" | "room" | "*") && !kind.contains('*') {
                return err(format!(
                    "discovery.{key}[{i}]: `{p}` matches no group or room (write `group:…` or `room:…`)"
                ));
            }
        }
        Ok(list.into_iter().map(Pattern::new).collect())
    };
    let mut include = patterns("include", d.include)?;
    if include.is_empty() {
        include.push(Pattern::new("*"));
    }
    let exclude = patterns("exclude", d.exclude)?;
    let interval = super::nonzero_duration(
        "discovery.interval",
        d.interval.as_deref(),
        defaults::DISCOVERY_INTERVAL,
    )?;
    if interval < Duration::from_secs(1) {
        return err("discovery.interval: at least 1s (the group listing allows one call a second)");
    }
    let s = DiscoverySettings {
        groups: d.groups.unwrap_or(true),
        rooms: d.rooms.unwrap_or(live),
        include,
        exclude,
        interval,
    };
    if !s.groups && !s.rooms {
        return err(
            "discovery: groups and rooms are both off: remove the section or switch one on",
        );
    }
    Ok(Some(s))
}

pub(super) fn callback(
    raw: Option<RawCallback>,
    http_listen: Option<SocketAddr>,
    env: &Environment,
) -> Result<Option<CallbackSettings>, ConfigError> {
    let Some(c) = raw else { return Ok(None) };
    let Some(listen) = c.listen.as_deref() else {
        return err("callback.listen: missing (an address like 0.0.0.0:9188)");
    };
    let listen: SocketAddr = listen.parse().map_err(|_| {
        ConfigError::invalid(format!(
            "callback.listen: `{listen}` is not an address like 0.0.0.0:9188"
        ))
    })?;
    if Some(listen) == http_listen && listen.port() != 0 {
        return err(
            "callback.listen: the same address as http.listen: give callbacks their own port",
        );
    }
    let path = c.path.unwrap_or_else(|| defaults::CALLBACK_PATH.into());
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return err(format!(
            "callback.path: `{path}` must start with `/` and hold no `?`, `#` or space"
        ));
    }
    let resolved = super::secret::resolve(
        "callback.token",
        c.token.as_deref(),
        c.token_file.as_deref(),
        "tim-callback-token",
        env.credentials_dir.as_deref(),
    )
    .map_err(ConfigError::invalid)?;
    if let Some((t, _)) = &resolved
        && t.expose().is_empty()
    {
        return err("callback.token: empty");
    }
    let (token, token_origin) = match resolved {
        Some((t, o)) => (Some(t), Some(o)),
        None => (None, None),
    };
    Ok(Some(CallbackSettings {
        listen,
        path,
        token,
        token_origin,
        enrol_blocklists: c.enrol_blocklists.unwrap_or(false),
    }))
}
