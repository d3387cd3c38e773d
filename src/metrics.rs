//! Process metrics in the Prometheus text format.
//!
//! Label values come only from bounded sets (API paths, vendor codes,
//! source kinds, event types, configured webhook names), never from source
//! IDs or accounts, so the output stays small with 100,000 sources.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const WALK_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0];

#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len()];
        }
        for (i, b) in bounds.iter().enumerate() {
            if v <= *b {
                self.buckets[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in bounds.iter().enumerate() {
            let n = self.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Inner {
    api_requests: BTreeMap<(&'static str, String), u64>,
    api_latency: BTreeMap<&'static str, Histogram>,
    walks: BTreeMap<(&'static str, &'static str), u64>,
    walk_seconds: BTreeMap<&'static str, Histogram>,
    events: BTreeMap<String, u64>,
    deliveries: BTreeMap<(String, &'static str), u64>,
    delivery_latency: BTreeMap<String, Histogram>,
    propagations: BTreeMap<&'static str, u64>,
    hinted_walks: BTreeMap<&'static str, u64>,
    retired: BTreeMap<&'static str, u64>,
    callbacks: BTreeMap<(&'static str, &'static str), u64>,
    listings: BTreeMap<(&'static str, &'static str), u64>,
    walk_calls: BTreeMap<(&'static str, &'static str), u64>,
    oldest_walk_age: BTreeMap<&'static str, f64>,
    /// `sync.interval` in seconds (none with a cron schedule).
    sync_interval: Option<f64>,
}

/// Figures read from the store at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub entries_by_kind: Vec<(&'static str, u64)>,
    pub sources_by_kind_status: Vec<(&'static str, String, u64)>,
    /// Oldest and newest last complete walk (Unix seconds), per kind.
    pub last_walk_by_kind: Vec<(&'static str, Option<i64>, Option<i64>)>,
    /// Per webhook: pending, dead, age of the oldest owed delivery (s), disabled.
    pub webhooks: Vec<(String, u64, u64, f64, bool)>,
    /// Sources not retired, by origin (configured, discovered, callback).
    pub sources_by_origin: Vec<(&'static str, u64)>,
    /// Per listed kind: the last complete listing (Unix s) and what it found.
    pub listings: Vec<(String, Option<i64>, u64)>,
    /// The process's own figures (read at scrape time).
    pub process: Option<ProcessFigures>,
}

/// The process's resources, in the names Prometheus client libraries use.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessFigures {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub start_time_seconds: f64,
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// One vendor call: `code` is "0" for success, the vendor code, or a
    /// failure kind (`transport`, `http_502`, `malformed`).
    pub fn api_request(&self, api: &'static str, code: &str, latency: Duration) {
        let mut m = self.inner.lock().unwrap();
        *m.api_requests.entry((api, code.to_string())).or_default() += 1;
        m.api_latency
            .entry(api)
            .or_default()
            .observe(LATENCY_BUCKETS, latency.as_secs_f64());
    }

    pub fn walk(&self, kind: &'static str, outcome: &'static str, took: Duration) {
        let mut m = self.inner.lock().unwrap();
        *m.walks.entry((kind, outcome)).or_default() += 1;
        m.walk_seconds
            .entry(kind)
            .or_default()
            .observe(WALK_BUCKETS, took.as_secs_f64());
    }

    pub fn events(&self, event_type: &str, n: u64) {
        let mut m = self.inner.lock().unwrap();
        *m.events.entry(event_type.to_string()).or_default() += n;
    }

    pub fn delivery(
        &self,
        webhook: &str,
        outcome: &'static str,
        commit_to_delivery: Option<Duration>,
    ) {
        let mut m = self.inner.lock().unwrap();
        *m.deliveries
            .entry((webhook.to_string(), outcome))
            .or_default() += 1;
        if let Some(d) = commit_to_delivery {
            m.delivery_latency
                .entry(webhook.to_string())
                .or_default()
                .observe(LATENCY_BUCKETS, d.as_secs_f64());
        }
    }

    /// The calls (pages) of a walk, by source kind and why it was walked.
    pub fn walk_calls(&self, kind: &'static str, reason: &'static str, pages: u64) {
        *self
            .inner
            .lock()
            .unwrap()
            .walk_calls
            .entry((kind, reason))
            .or_default() += pages;
    }

    /// The longest any watched source of `kind` has gone since its last
    /// walk started (`None`: none watched).
    pub fn oldest_walk_age(&self, kind: &'static str, age_s: Option<f64>) {
        let mut m = self.inner.lock().unwrap();
        match age_s {
            Some(a) => m.oldest_walk_age.insert(kind, a),
            None => m.oldest_walk_age.remove(kind),
        };
    }

    /// The configured interval (for alerts on sources left unwalked).
    pub fn set_sync_interval(&self, interval: Option<Duration>) {
        self.inner.lock().unwrap().sync_interval = interval.map(|d| d.as_secs_f64());
    }

    /// A walk a callback moved earlier.
    pub fn hinted_walk(&self, kind: &'static str) {
        *self
            .inner
            .lock()
            .unwrap()
            .hinted_walks
            .entry(kind)
            .or_default() += 1;
    }

    /// A found source retired (gone from the listings and the vendor).
    pub fn retired(&self, kind: &'static str) {
        *self.inner.lock().unwrap().retired.entry(kind).or_default() += 1;
    }

    /// A callback, by command (`hint::command_label`) and outcome.
    pub fn callback(&self, command: &'static str, outcome: &'static str) {
        *self
            .inner
            .lock()
            .unwrap()
            .callbacks
            .entry((command, outcome))
            .or_default() += 1;
    }

    /// A discovery listing by kind and outcome (complete, partial).
    pub fn listing(&self, kind: &'static str, outcome: &'static str) {
        *self
            .inner
            .lock()
            .unwrap()
            .listings
            .entry((kind, outcome))
            .or_default() += 1;
    }

    pub fn propagation(&self, outcome: &'static str, n: u64) {
        *self
            .inner
            .lock()
            .unwrap()
            .propagations
            .entry(outcome)
            .or_default() += n;
    }

    /// Total vendor calls answered with `code`, for tests and the benchmark.
    pub fn api_count(&self, code: &str) -> u64 {
        let m = self.inner.lock().unwrap();
        m.api_requests
            .iter()
            .filter(|((_, c), _)| c == code)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn render(&self, g: &Gauges) -> String {
        let m = self.inner.lock().unwrap();
        let mut out = String::with_capacity(8192);
        let _ = writeln!(
            out,
            "# HELP bansync_build_info The running version (always 1)."
        );
        let _ = writeln!(out, "# TYPE bansync_build_info gauge");
        let _ = writeln!(
            out,
            "bansync_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            out,
            "# HELP bansync_sync_interval_seconds sync.interval: the longest a source should go unwalked."
        );
        let _ = writeln!(out, "# TYPE bansync_sync_interval_seconds gauge");
        if let Some(i) = m.sync_interval {
            let _ = writeln!(out, "bansync_sync_interval_seconds {i}");
        }
        let p = g.process.unwrap_or_default();
        for (name, kind, help, value) in [
            (
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time spent in seconds.",
                p.cpu_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                p.resident_bytes as f64,
            ),
            (
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                p.open_fds as f64,
            ),
            (
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                p.max_fds as f64,
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the Unix epoch in seconds.",
                p.start_time_seconds,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            if g.process.is_some() {
                let _ = writeln!(out, "{name} {value}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP bansync_api_requests_total Vendor API calls by API and answer code (0 = success)."
        );
        let _ = writeln!(out, "# TYPE bansync_api_requests_total counter");
        for ((api, code), n) in &m.api_requests {
            let _ = writeln!(
                out,
                "bansync_api_requests_total{{api=\"{api}\",code=\"{}\"}} {n}",
                escape(code)
            );
        }
        let _ = writeln!(
            out,
            "# HELP bansync_api_request_duration_seconds Vendor API call latency."
        );
        let _ = writeln!(out, "# TYPE bansync_api_request_duration_seconds histogram");
        for (api, h) in &m.api_latency {
            h.render(
                &mut out,
                "bansync_api_request_duration_seconds",
                &format!("api=\"{api}\""),
                LATENCY_BUCKETS,
            );
        }
        let _ = writeln!(
            out,
            "# HELP bansync_walks_total Walks of a source's list by kind and outcome."
        );
        let _ = writeln!(out, "# TYPE bansync_walks_total counter");
        for ((kind, outcome), n) in &m.walks {
            let _ = writeln!(
                out,
                "bansync_walks_total{{kind=\"{kind}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP bansync_walk_duration_seconds Time to walk one source's whole list."
        );
        let _ = writeln!(out, "# TYPE bansync_walk_duration_seconds histogram");
        for (kind, h) in &m.walk_seconds {
            h.render(
                &mut out,
                "bansync_walk_duration_seconds",
                &format!("kind=\"{kind}\""),
                WALK_BUCKETS,
            );
        }
        let _ = writeln!(out, "# HELP bansync_events_total Events emitted by type.");
        let _ = writeln!(out, "# TYPE bansync_events_total counter");
        for (t, n) in &m.events {
            let _ = writeln!(out, "bansync_events_total{{type=\"{}\"}} {n}", escape(t));
        }
        let _ = writeln!(
            out,
            "# HELP bansync_deliveries_total Delivery attempts by webhook and outcome."
        );
        let _ = writeln!(out, "# TYPE bansync_deliveries_total counter");
        for ((w, outcome), n) in &m.deliveries {
            let _ = writeln!(
                out,
                "bansync_deliveries_total{{webhook=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(w)
            );
        }
        let _ = writeln!(
            out,
            "# HELP bansync_delivery_latency_seconds From the event's commit to its successful delivery."
        );
        let _ = writeln!(out, "# TYPE bansync_delivery_latency_seconds histogram");
        for (w, h) in &m.delivery_latency {
            h.render(
                &mut out,
                "bansync_delivery_latency_seconds",
                &format!("webhook=\"{}\"", escape(w)),
                LATENCY_BUCKETS,
            );
        }
        let _ = writeln!(
            out,
            "# HELP bansync_propagations_total Mirrored ban actions by outcome."
        );
        let _ = writeln!(out, "# TYPE bansync_propagations_total counter");
        for (o, n) in &m.propagations {
            let _ = writeln!(out, "bansync_propagations_total{{outcome=\"{o}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP bansync_hinted_walks_total Walks a vendor callback moved earlier, by kind."
        );
        let _ = writeln!(out, "# TYPE bansync_hinted_walks_total counter");
        for (k, n) in &m.hinted_walks {
            let _ = writeln!(out, "bansync_hinted_walks_total{{kind=\"{k}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP bansync_sources_retired_total Found sources retired: missing from two listings and gone at the vendor."
        );
        let _ = writeln!(out, "# TYPE bansync_sources_retired_total counter");
        for (k, n) in &m.retired {
            let _ = writeln!(out, "bansync_sources_retired_total{{kind=\"{k}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP bansync_callbacks_total Vendor callbacks by command and outcome (accepted, refused_*, bad_body)."
        );
        let _ = writeln!(out, "# TYPE bansync_callbacks_total counter");
        for ((c, o), n) in &m.callbacks {
            let _ = writeln!(
                out,
                "bansync_callbacks_total{{command=\"{c}\",outcome=\"{o}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP bansync_discovery_listings_total Discovery listings by kind and outcome."
        );
        let _ = writeln!(out, "# TYPE bansync_discovery_listings_total counter");
        for ((k, o), n) in &m.listings {
            let _ = writeln!(
                out,
                "bansync_discovery_listings_total{{kind=\"{k}\",outcome=\"{o}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP bansync_walk_calls_total Calls (pages) spent walking, by source kind and why the walk was made."
        );
        let _ = writeln!(out, "# TYPE bansync_walk_calls_total counter");
        for ((k, r), n) in &m.walk_calls {
            let _ = writeln!(
                out,
                "bansync_walk_calls_total{{kind=\"{k}\",reason=\"{r}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP bansync_oldest_walk_age_seconds The longest a watched source has gone since its last walk started, by kind."
        );
        let _ = writeln!(out, "# TYPE bansync_oldest_walk_age_seconds gauge");
        for (k, a) in &m.oldest_walk_age {
            let _ = writeln!(
                out,
                "bansync_oldest_walk_age_seconds{{kind=\"{k}\"}} {a:.1}"
            );
        }
        drop(m);
        let _ = writeln!(
            out,
            "# HELP bansync_sources_by_origin Sources not retired, by how they came to be watched."
        );
        let _ = writeln!(out, "# TYPE bansync_sources_by_origin gauge");
        for (o, n) in &g.sources_by_origin {
            let _ = writeln!(out, "bansync_sources_by_origin{{origin=\"{o}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP bansync_discovery_last_complete_listing_timestamp_seconds The last complete listing, by kind."
        );
        let _ = writeln!(
            out,
            "# TYPE bansync_discovery_last_complete_listing_timestamp_seconds gauge"
        );
        for (k, at, _) in &g.listings {
            if let Some(t) = at {
                let _ = writeln!(
                    out,
                    "bansync_discovery_last_complete_listing_timestamp_seconds{{kind=\"{}\"}} {t}",
                    escape(k)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP bansync_discovery_listed Sources the last complete listing found, by kind."
        );
        let _ = writeln!(out, "# TYPE bansync_discovery_listed gauge");
        for (k, _, n) in &g.listings {
            let _ = writeln!(
                out,
                "bansync_discovery_listed{{kind=\"{}\"}} {n}",
                escape(k)
            );
        }
        let _ = writeln!(
            out,
            "# HELP bansync_entries Entries held (bans and blocks) by source kind."
        );
        let _ = writeln!(out, "# TYPE bansync_entries gauge");
        for (kind, n) in &g.entries_by_kind {
            let _ = writeln!(out, "bansync_entries{{kind=\"{kind}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP bansync_sources Sources by kind and status.");
        let _ = writeln!(out, "# TYPE bansync_sources gauge");
        for (kind, status, n) in &g.sources_by_kind_status {
            let _ = writeln!(
                out,
                "bansync_sources{{kind=\"{kind}\",status=\"{}\"}} {n}",
                escape(status)
            );
        }
        let _ = writeln!(
            out,
            "# HELP bansync_last_complete_walk_oldest_timestamp_seconds The stalest source's last complete walk, by kind."
        );
        let _ = writeln!(
            out,
            "# TYPE bansync_last_complete_walk_oldest_timestamp_seconds gauge"
        );
        for (kind, oldest, _) in &g.last_walk_by_kind {
            if let Some(t) = oldest {
                let _ = writeln!(
                    out,
                    "bansync_last_complete_walk_oldest_timestamp_seconds{{kind=\"{kind}\"}} {t}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP bansync_last_complete_walk_newest_timestamp_seconds The freshest source's last complete walk, by kind."
        );
        let _ = writeln!(
            out,
            "# TYPE bansync_last_complete_walk_newest_timestamp_seconds gauge"
        );
        for (kind, _, newest) in &g.last_walk_by_kind {
            if let Some(t) = newest {
                let _ = writeln!(
                    out,
                    "bansync_last_complete_walk_newest_timestamp_seconds{{kind=\"{kind}\"}} {t}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP bansync_deliveries_pending Deliveries owed, by webhook."
        );
        let _ = writeln!(out, "# TYPE bansync_deliveries_pending gauge");
        for (w, pending, _, _, _) in &g.webhooks {
            let _ = writeln!(
                out,
                "bansync_deliveries_pending{{webhook=\"{}\"}} {pending}",
                escape(w)
            );
        }
        let _ = writeln!(
            out,
            "# HELP bansync_deliveries_dead Deliveries that ran out of attempts, by webhook."
        );
        let _ = writeln!(out, "# TYPE bansync_deliveries_dead gauge");
        for (w, _, dead, _, _) in &g.webhooks {
            let _ = writeln!(
                out,
                "bansync_deliveries_dead{{webhook=\"{}\"}} {dead}",
                escape(w)
            );
        }
        let _ = writeln!(
            out,
            "# HELP bansync_oldest_pending_delivery_age_seconds Age of the oldest owed delivery, by webhook."
        );
        let _ = writeln!(
            out,
            "# TYPE bansync_oldest_pending_delivery_age_seconds gauge"
        );
        for (w, _, _, age, _) in &g.webhooks {
            let _ = writeln!(
                out,
                "bansync_oldest_pending_delivery_age_seconds{{webhook=\"{}\"}} {age}",
                escape(w)
            );
        }
        let _ = writeln!(
            out,
            "# HELP bansync_webhook_disabled 1 while a webhook is disabled (it answered 410 Gone)."
        );
        let _ = writeln!(out, "# TYPE bansync_webhook_disabled gauge");
        for (w, _, _, _, disabled) in &g.webhooks {
            let _ = writeln!(
                out,
                "bansync_webhook_disabled{{webhook=\"{}\"}} {}",
                escape(w),
                u8::from(*disabled)
            );
        }
        out
    }
}
