//! The configuration file exactly as written (CONTRACT.md), before any
//! checking. Unknown keys are refused so that a typo never silently falls
//! back to a default.
//!
//! No `Debug`: these hold secrets in the clear (`secret_key`, `secret`)
//! until validation wraps them in [`super::Secret`].

use serde::Deserialize;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub tencent: Option<RawTencent>,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub sync: RawSync,
    pub sources: Option<RawSources>,
    #[serde(default)]
    pub webhook: Vec<RawWebhook>,
    #[serde(default)]
    pub propagate: Vec<RawPropagate>,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub log: RawLog,
    pub discovery: Option<RawDiscovery>,
    pub callback: Option<RawCallback>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub groups: Option<bool>,
    pub rooms: Option<bool>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub interval: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCallback {
    pub listen: Option<String>,
    pub path: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<String>,
    pub enrol_blocklists: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTencent {
    pub sdkappid: Option<u64>,
    pub identifier: Option<String>,
    pub secret_key: Option<String>,
    pub secret_key_file: Option<String>,
    pub region: Option<String>,
    pub base_url: Option<String>,
    pub usersig_ttl: Option<String>,
    pub requests_per_second: Option<u32>,
    pub timeout: Option<String>,
    pub ca_file: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub path: Option<String>,
    pub retention: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    pub mode: Option<String>,
    pub interval: Option<String>,
    pub cron: Option<String>,
    pub page_size: Option<u32>,
    pub initial: Option<String>,
    /// How soon a source with unconfirmed absences is walked again.
    pub confirm_delay: Option<String>,
    /// How many walks may run at once (the rate limiter paces them).
    pub max_concurrent_walks: Option<u32>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSources {
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub rooms: Vec<String>,
    #[serde(default)]
    pub blocklists: Vec<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    pub name: Option<String>,
    pub url: Option<String>,
    pub secret: Option<String>,
    pub secret_file: Option<String>,
    pub events: Option<Vec<String>>,
    pub sources: Option<Vec<String>>,
    pub timeout: Option<String>,
    /// Delays between attempts; defaults to the schedule in CONTRACT.md.
    pub retry_schedule: Option<Vec<String>>,
    /// Attempts in flight at once to this receiver.
    pub max_in_flight: Option<u32>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPropagate {
    #[serde(default)]
    pub from: Vec<String>,
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub lift: bool,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}
