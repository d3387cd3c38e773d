//! Events: the types of CONTRACT.md's table and the JSON body delivered to
//! webhooks (the Standard Webhooks payload shape).

use serde_json::{Value, json};

use crate::source::SourceKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    BanAdded,
    BanUpdated,
    BanExpired,
    BanLifted,
    BlockAdded,
    BlockUpdated,
    BlockRemoved,
    SourceUnavailable,
    SourceRestored,
    PropagationApplied,
    PropagationFailed,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::BanAdded => "ban.added",
            EventType::BanUpdated => "ban.updated",
            EventType::BanExpired => "ban.expired",
            EventType::BanLifted => "ban.lifted",
            EventType::BlockAdded => "block.added",
            EventType::BlockUpdated => "block.updated",
            EventType::BlockRemoved => "block.removed",
            EventType::SourceUnavailable => "source.unavailable",
            EventType::SourceRestored => "source.restored",
            EventType::PropagationApplied => "propagation.applied",
            EventType::PropagationFailed => "propagation.failed",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub const ALL: [EventType; 11] = [
        EventType::BanAdded,
        EventType::BanUpdated,
        EventType::BanExpired,
        EventType::BanLifted,
        EventType::BlockAdded,
        EventType::BlockUpdated,
        EventType::BlockRemoved,
        EventType::SourceUnavailable,
        EventType::SourceRestored,
        EventType::PropagationApplied,
        EventType::PropagationFailed,
    ];

    /// The added/updated/removed types of a list kind.
    pub fn added(kind: SourceKind) -> Self {
        if kind.is_ban_list() {
            EventType::BanAdded
        } else {
            EventType::BlockAdded
        }
    }
    pub fn updated(kind: SourceKind) -> Self {
        if kind.is_ban_list() {
            EventType::BanUpdated
        } else {
            EventType::BlockUpdated
        }
    }
    pub fn removed(kind: SourceKind) -> Self {
        if kind.is_ban_list() {
            EventType::BanLifted
        } else {
            EventType::BlockRemoved
        }
    }
}

/// One change, as the diff (or the expiry timer, or propagation) finds it,
/// before the store numbers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: EventType,
    pub account: Option<String>,
    /// `banned_until` or `blocked_at`.
    pub value: Option<i64>,
    /// `previous_banned_until` or `previous_blocked_at`.
    pub previous: Option<i64>,
    /// When the change happened or was detected (Unix milliseconds).
    pub at_ms: i64,
    pub error_code: Option<i64>,
    pub error_info: Option<String>,
    pub target: Option<String>,
}

impl Change {
    pub fn entry(
        kind: EventType,
        account: &str,
        value: i64,
        previous: Option<i64>,
        at_ms: i64,
    ) -> Self {
        Change {
            kind,
            account: Some(account.to_string()),
            value: Some(value),
            previous,
            at_ms,
            error_code: None,
            error_info: None,
            target: None,
        }
    }

    /// `ban.expired`: stamped with the moment the ban ended, not when it
    /// was noticed (CONTRACT: "for ban.expired: when it took effect").
    pub fn expired(account: &str, banned_until: i64) -> Self {
        Self::entry(
            EventType::BanExpired,
            account,
            banned_until,
            None,
            banned_until * 1000,
        )
    }

    /// `propagation.applied` / `propagation.failed` about a mirror of
    /// `account` at `target`.
    pub fn propagation(
        kind: EventType,
        account: &str,
        target: &crate::source::SourceSpec,
        until: Option<i64>,
        error_code: Option<i64>,
        error_info: Option<String>,
        at_ms: i64,
    ) -> Self {
        Change {
            kind,
            account: Some(account.to_string()),
            value: until,
            previous: None,
            at_ms,
            error_code,
            error_info,
            target: Some(target.to_string()),
        }
    }

    pub fn source_state(
        kind: EventType,
        code: Option<i64>,
        info: Option<String>,
        at_ms: i64,
    ) -> Self {
        Change {
            kind,
            account: None,
            value: None,
            previous: None,
            at_ms,
            error_code: code,
            error_info: info,
            target: None,
        }
    }
}

/// RFC 3339 in UTC with second precision, as in CONTRACT.md's example.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The type-specific fields of an event's `data`, as ` key=value` pairs,
/// for the lines `events`, `history` and the demo print.
pub fn describe_fields(data: &Value) -> String {
    const FIELDS: [&str; 7] = [
        "banned_until",
        "previous_banned_until",
        "blocked_at",
        "previous_blocked_at",
        "target",
        "error_code",
        "error_info",
    ];
    let mut out = String::new();
    for k in FIELDS {
        if let Some(v) = data.get(k).filter(|v| !v.is_null()) {
            out.push_str(&format!(" {k}={v}"));
        }
    }
    out
}

/// A fresh event id: `evt_` and a time-ordered UUID (v7).
pub fn new_event_id() -> String {
    format!("evt_{}", uuid::Uuid::now_v7().simple())
}

/// The body delivered to webhooks, byte for byte what gets signed.
pub fn body(app: u64, source: &str, seq: i64, id: &str, c: &Change) -> String {
    let mut data = serde_json::Map::new();
    data.insert("id".into(), json!(id));
    data.insert("app".into(), json!(app));
    data.insert("source".into(), json!(source));
    data.insert("seq".into(), json!(seq));
    if let Some(a) = &c.account {
        data.insert("account".into(), json!(a));
    }
    match c.kind {
        EventType::BanAdded
        | EventType::BanUpdated
        | EventType::BanExpired
        | EventType::BanLifted => {
            data.insert("banned_until".into(), json!(c.value));
            data.insert("previous_banned_until".into(), json!(c.previous));
        }
        EventType::BlockAdded | EventType::BlockUpdated | EventType::BlockRemoved => {
            data.insert("blocked_at".into(), json!(c.value));
            data.insert("previous_blocked_at".into(), json!(c.previous));
        }
        EventType::SourceUnavailable => {
            data.insert("error_code".into(), json!(c.error_code));
            data.insert("error_info".into(), json!(c.error_info));
        }
        EventType::SourceRestored => {}
        EventType::PropagationApplied | EventType::PropagationFailed => {
            data.insert("target".into(), json!(c.target));
            data.insert("banned_until".into(), json!(c.value));
            data.insert("error_code".into(), json!(c.error_code));
            if c.error_info.is_some() {
                data.insert("error_info".into(), json!(c.error_info));
            }
        }
    }
    let v = json!({ "type": c.kind.as_str(), "timestamp": rfc3339(c.at_ms), "data": Value::Object(data) });
    serde_json::to_string(&v).expect("JSON values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_matches_contract_shape() {
        let c = Change::entry(
            EventType::BanLifted,
            "user1",
            1719300627,
            None,
            1_795_255_203_000,
        );
        let b: Value =
            serde_json::from_str(&body(1400000000, "room:live-1", 17, "evt_1", &c)).unwrap();
        assert_eq!(b["type"], "ban.lifted");
        assert_eq!(b["timestamp"], "2026-11-21T10:00:03Z");
        assert_eq!(b["data"]["id"], "evt_1");
        assert_eq!(b["data"]["app"], 1400000000u64);
        assert_eq!(b["data"]["source"], "room:live-1");
        assert_eq!(b["data"]["seq"], 17);
        assert_eq!(b["data"]["account"], "user1");
        assert_eq!(b["data"]["banned_until"], 1719300627);
        assert!(b["data"]["previous_banned_until"].is_null());
    }

    #[test]
    fn type_names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
    }
}
