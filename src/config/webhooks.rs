//! `[[webhook]]`: where events are delivered, signed with which secrets.

use std::time::Duration;

use base64::Engine;

use super::raw::RawWebhook;
use super::{
    ConfigError, Environment, Secret, WebhookSettings, defaults, err, nonzero_duration,
    parse_duration, secret,
};
use crate::event::EventType;
use crate::source::{Pattern, SourceKind};

pub(super) fn validate(
    raw: Vec<RawWebhook>,
    env: &Environment,
) -> Result<Vec<WebhookSettings>, ConfigError> {
    let mut webhooks: Vec<WebhookSettings> = Vec::new();
    for (i, w) in raw.into_iter().enumerate() {
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
                    .map_err(|e| ConfigError::invalid(format!("{at}.url: `{u}`: {e}")))?;
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
        .map_err(ConfigError::invalid)?
        .ok_or_else(|| {
            ConfigError::invalid(format!(
                "{at}.secret: missing (secret, secret_file, or credential {credential})"
            ))
        })?;
        let mut keys = Vec::new();
        for (j, part) in secret.expose().split_whitespace().enumerate() {
            let b64 = part.strip_prefix("whsec_").unwrap_or(part);
            let key = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| {
                ConfigError::invalid(format!("{at}.secret: secret #{} is not a whsec_ secret (whsec_ followed by base64)", j + 1))
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
            defaults::WEBHOOK_TIMEOUT,
        )?;
        let retry_schedule = match w.retry_schedule {
            None => defaults::RETRY_SCHEDULE
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
        let max_in_flight = w.max_in_flight.unwrap_or(defaults::MAX_IN_FLIGHT) as usize;
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
    Ok(webhooks)
}
