//! The bodies bansync sends, as types: `event::body` serializes them, and
//! `bansync schema` describes them (JSON Schema, draft 2020-12) from the
//! same types, so the two cannot drift. The shape is Standard Webhooks':
//! `{"type", "timestamp", "data"}`.

use schemars::JsonSchema;
use serde::Serialize;

/// A field always present, an integer or null.
fn nullable_int(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": ["integer", "null"]})
}

/// A field always present, a string or null.
fn nullable_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": ["string", "null"]})
}

/// What every event's `data` carries.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Common {
    /// Unique and stable across retries; also the `webhook-id` header.
    pub id: String,
    /// The app's SDKAppID.
    pub app: u64,
    /// The list it happened on: `group:ID`, `room:ID` or `blocklist:ACCOUNT`.
    pub source: String,
    /// The source's event counter: strictly increasing by one, never reused.
    pub seq: i64,
}

/// `ban.*`: an account on a group's or room's ban list.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BanData {
    #[serde(flatten)]
    pub common: Common,
    pub account: String,
    /// When the ban ends (Unix seconds; 4294967295: for ever).
    pub banned_until: i64,
    /// The end before a `ban.updated`; null otherwise.
    #[schemars(required, schema_with = "nullable_int")]
    pub previous_banned_until: Option<i64>,
}

/// `block.*`: an account on a user's blocklist (`source` is
/// `blocklist:<From_Account>`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BlockData {
    #[serde(flatten)]
    pub common: Common,
    pub account: String,
    /// The vendor's `AddBlackTimeStamp` (Unix seconds).
    pub blocked_at: i64,
    /// The time before a `block.updated`; null otherwise.
    #[schemars(required, schema_with = "nullable_int")]
    pub previous_blocked_at: Option<i64>,
}

/// `source.unavailable`: the room, group or account stopped existing; its
/// entries are kept, nothing is lifted.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct UnavailableData {
    #[serde(flatten)]
    pub common: Common,
    /// The vendor's code (100004, 10010, 30003).
    #[schemars(required, schema_with = "nullable_int")]
    pub error_code: Option<i64>,
    #[schemars(required, schema_with = "nullable_string")]
    pub error_info: Option<String>,
}

/// `source.restored`: it exists again; diffing resumes.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RestoredData {
    #[serde(flatten)]
    pub common: Common,
}

/// `propagation.*`: a mirrored ban applied to, or refused by, a target.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PropagationData {
    #[serde(flatten)]
    pub common: Common,
    pub account: String,
    /// The room or group the mirror is in.
    pub target: String,
    /// The mirrored end; null for a lift.
    #[schemars(required, schema_with = "nullable_int")]
    pub banned_until: Option<i64>,
    /// The vendor's code when refused; null when applied or cancelled.
    #[schemars(required, schema_with = "nullable_int")]
    pub error_code: Option<i64>,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_info: Option<String>,
}

/// `webhook.test`: sent by `bansync deliveries test`, never stored.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TestData {
    pub id: String,
    pub app: u64,
}

/// Every body bansync sends.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type")]
pub enum Body {
    /// An account appears on a ban list (or reappears after its ban ended).
    #[serde(rename = "ban.added")]
    BanAdded { timestamp: Timestamp, data: BanData },
    /// Its `BannedUntil` changed.
    #[serde(rename = "ban.updated")]
    BanUpdated { timestamp: Timestamp, data: BanData },
    /// Its end passed (stamped with that moment; once).
    #[serde(rename = "ban.expired")]
    BanExpired { timestamp: Timestamp, data: BanData },
    /// It left the list before its end, confirmed by two complete walks.
    #[serde(rename = "ban.lifted")]
    BanLifted { timestamp: Timestamp, data: BanData },
    #[serde(rename = "block.added")]
    BlockAdded {
        timestamp: Timestamp,
        data: BlockData,
    },
    /// Unblocked and blocked again between walks.
    #[serde(rename = "block.updated")]
    BlockUpdated {
        timestamp: Timestamp,
        data: BlockData,
    },
    /// It left the blocklist, confirmed by two complete walks.
    #[serde(rename = "block.removed")]
    BlockRemoved {
        timestamp: Timestamp,
        data: BlockData,
    },
    #[serde(rename = "source.unavailable")]
    SourceUnavailable {
        timestamp: Timestamp,
        data: UnavailableData,
    },
    #[serde(rename = "source.restored")]
    SourceRestored {
        timestamp: Timestamp,
        data: RestoredData,
    },
    #[serde(rename = "propagation.applied")]
    PropagationApplied {
        timestamp: Timestamp,
        data: PropagationData,
    },
    #[serde(rename = "propagation.failed")]
    PropagationFailed {
        timestamp: Timestamp,
        data: PropagationData,
    },
    #[serde(rename = "webhook.test")]
    WebhookTest {
        timestamp: Timestamp,
        data: TestData,
    },
}

/// When the change was detected (for `ban.expired`: when it took effect),
/// RFC 3339 in UTC.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(extend("format" = "date-time"))]
pub struct Timestamp(pub String);

/// The schema document `bansync schema` prints.
pub fn schema() -> serde_json::Value {
    let mut s = serde_json::to_value(schemars::schema_for!(Body)).expect("schemas serialize");
    if let Some(o) = s.as_object_mut() {
        o.insert(
            "title".into(),
            serde_json::json!(concat!(
                "bansync ",
                env!("CARGO_PKG_VERSION"),
                " webhook body"
            )),
        );
    }
    s
}
