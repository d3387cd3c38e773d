//! Events: the types of CONTRACT.md's table and the JSON body delivered to
//! webhooks (the Standard Webhooks payload shape).

use serde_json::Value;

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

/// The body delivered to webhooks, byte for byte what gets signed: a
/// [`payload::Body`], so `bansync schema` describes exactly this.
pub fn body(app: u64, source: &str, seq: i64, id: &str, c: &Change) -> String {
    use crate::payload::*;
    let common = Common {
        id: id.to_string(),
        app,
        source: source.to_string(),
        seq,
    };
    let timestamp = Timestamp(rfc3339(c.at_ms));
    let account = c.account.clone().unwrap_or_default();
    let ban = || BanData {
        common: common.clone(),
        account: account.clone(),
        banned_until: c.value.unwrap_or_default(),
        previous_banned_until: c.previous,
    };
    let block = || BlockData {
        common: common.clone(),
        account: account.clone(),
        blocked_at: c.value.unwrap_or_default(),
        previous_blocked_at: c.previous,
    };
    let propagation = || PropagationData {
        common: common.clone(),
        account: account.clone(),
        target: c.target.clone().unwrap_or_default(),
        banned_until: c.value,
        error_code: c.error_code,
        error_info: c.error_info.clone(),
    };
    let b = match c.kind {
        EventType::BanAdded => Body::BanAdded {
            timestamp,
            data: ban(),
        },
        EventType::BanUpdated => Body::BanUpdated {
            timestamp,
            data: ban(),
        },
        EventType::BanExpired => Body::BanExpired {
            timestamp,
            data: ban(),
        },
        EventType::BanLifted => Body::BanLifted {
            timestamp,
            data: ban(),
        },
        EventType::BlockAdded => Body::BlockAdded {
            timestamp,
            data: block(),
        },
        EventType::BlockUpdated => Body::BlockUpdated {
            timestamp,
            data: block(),
        },
        EventType::BlockRemoved => Body::BlockRemoved {
            timestamp,
            data: block(),
        },
        EventType::SourceUnavailable => Body::SourceUnavailable {
            timestamp,
            data: UnavailableData {
                common,
                error_code: c.error_code,
                error_info: c.error_info.clone(),
            },
        },
        EventType::SourceRestored => Body::SourceRestored {
            timestamp,
            data: RestoredData { common },
        },
        EventType::PropagationApplied => Body::PropagationApplied {
            timestamp,
            data: propagation(),
        },
        EventType::PropagationFailed => Body::PropagationFailed {
            timestamp,
            data: propagation(),
        },
    };
    serde_json::to_string(&b).expect("bodies serialize")
}

/// The body of a `webhook.test` (`bansync deliveries test`): never stored.
pub fn test_body(app: u64, id: &str, at_ms: i64) -> String {
    let b = crate::payload::Body::WebhookTest {
        timestamp: crate::payload::Timestamp(rfc3339(at_ms)),
        data: crate::payload::TestData {
            id: id.to_string(),
            app,
        },
    };
    serde_json::to_string(&b).expect("bodies serialize")
}

/// One example body of each type (the schema's examples; tests validate
/// them and every body the test receivers get).
pub fn examples() -> Vec<(String, String)> {
    let at = 1_795_255_203_000;
    let target = crate::source::SourceSpec::new(crate::source::SourceKind::Room, "live-2");
    let mut out = Vec::new();
    for (i, t) in EventType::ALL.into_iter().enumerate() {
        let (source, c) = match t {
            EventType::BanAdded | EventType::BanExpired | EventType::BanLifted => (
                "room:live-1",
                Change::entry(t, "user1", 1_795_258_803, None, at),
            ),
            EventType::BanUpdated => (
                "room:live-1",
                Change::entry(t, "user1", 1_795_262_403, Some(1_795_258_803), at),
            ),
            EventType::BlockAdded | EventType::BlockRemoved => (
                "blocklist:alice",
                Change::entry(t, "bob", 1_795_255_100, None, at),
            ),
            EventType::BlockUpdated => (
                "blocklist:alice",
                Change::entry(t, "bob", 1_795_255_190, Some(1_795_255_100), at),
            ),
            EventType::SourceUnavailable => (
                "room:live-3",
                Change::source_state(t, Some(100004), Some("room does not exist".into()), at),
            ),
            EventType::SourceRestored => ("room:live-3", Change::source_state(t, None, None, at)),
            EventType::PropagationApplied => (
                "group:@TGS#demo",
                Change::propagation(t, "spammer", &target, Some(1_795_258_803), None, None, at),
            ),
            EventType::PropagationFailed => (
                "group:@TGS#demo",
                Change::propagation(
                    t,
                    "spammer",
                    &target,
                    Some(1_795_258_803),
                    Some(100004),
                    Some("room does not exist".into()),
                    at,
                ),
            ),
        };
        let id = format!("evt_0193example{i:02}");
        out.push((
            t.as_str().to_string(),
            body(1_400_000_000, source, 17, &id, &c),
        ));
    }
    out.push((
        "webhook.test".into(),
        test_body(1_400_000_000, "evt_0193exampletest", at),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    /// Every example validates against `bansync schema` (a real JSON
    /// Schema validator, draft 2020-12), and each type is in the schema.
    #[test]
    fn every_example_validates_against_the_schema() {
        let schema = crate::payload::schema();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        let v = jsonschema::draft202012::new(&schema).expect("the schema compiles");
        let examples = examples();
        assert_eq!(examples.len(), EventType::ALL.len() + 1);
        for (t, body) in &examples {
            let b: Value = serde_json::from_str(body).unwrap();
            assert_eq!(b["type"], t.as_str());
            let errors: Vec<String> = v.iter_errors(&b).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{t}: {errors:?}\n{body}");
        }
        // And the schema refuses what is not a body.
        for bad in [
            json!({"type": "ban.added", "timestamp": "2026-11-21T10:00:03Z", "data": {"id": "x"}}),
            json!({"type": "ban.nope", "timestamp": "2026-11-21T10:00:03Z", "data": {}}),
            json!({"type": "webhook.test", "data": {"id": "x", "app": 1}}),
        ] {
            assert!(!v.is_valid(&bad), "{bad}");
        }
        let text = schema.to_string();
        for t in EventType::ALL {
            assert!(text.contains(&format!("\"{}\"", t.as_str())), "{t:?}");
        }
    }

    #[test]
    fn type_names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
    }
}
