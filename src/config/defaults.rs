//! Every default, in one place. `config/bansync.toml` shows the same values
//! (set, or commented out); a test loads both and compares them.

use std::time::Duration;

/// `tencent.usersig_ttl`.
pub const USERSIG_TTL: Duration = Duration::from_secs(86400);
/// `tencent.requests_per_second`: per API, as the vendor allows.
pub const REQUESTS_PER_SECOND: u32 = 200;
/// `tencent.timeout`.
pub const TENCENT_TIMEOUT: Duration = Duration::from_secs(10);
/// `store.path`, under `$STATE_DIRECTORY` when systemd sets it.
pub const STORE_PATH: &str = "bansync.db";
/// `store.retention`: delivered events older than this are deleted.
pub const RETENTION: Duration = Duration::from_secs(90 * 86400);
/// `sync.interval`.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(300);
/// `sync.page_size`: the vendor's maximum for ban lists.
pub const PAGE_SIZE: u32 = 100;
/// Blocklists are read this many at a time (not configurable).
pub const BLOCKLIST_PAGE_SIZE: u32 = 1000;
/// `sync.initial`.
pub const INITIAL: &str = "baseline";
/// `sync.confirm_delay`.
pub const CONFIRM_DELAY: Duration = Duration::from_secs(5);
/// `sync.max_concurrent_walks`.
pub const MAX_CONCURRENT_WALKS: u32 = 64;
/// `webhook.timeout`.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(15);
/// `webhook.retry_schedule` (seconds): CONTRACT.md's delays after the
/// first attempt.
pub const RETRY_SCHEDULE: &[u64] = &[5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400];
/// `webhook.max_in_flight`.
pub const MAX_IN_FLIGHT: u32 = 16;
/// `discovery.interval`: how often the listings are walked.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(600);
/// `callback.path`.
pub const CALLBACK_PATH: &str = "/tencent/callback";
/// `http.listen`.
pub const HTTP_LISTEN: &str = "127.0.0.1:9187";
/// `log.format`.
pub const LOG_FORMAT: &str = "text";
/// `log.level`.
pub const LOG_LEVEL: &str = "info";
