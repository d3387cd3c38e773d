//! The vendor's third-party callbacks (CONTRACT.md "Callbacks (inbound)"),
//! as pure functions: the `Sign` check, and what a body says. A callback is
//! a hint of *where* to look sooner, never a fact: nothing here emits.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The answer to an accepted callback.
pub const OK_ANSWER: &str = r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#;

/// How far `RequestTime` may be from now, in seconds.
pub const MAX_SKEW_S: i64 = 60;

/// The largest body accepted (the vendor's bodies are a few KiB; a
/// `PairList` or `MemberList` of thousands stays well below this).
pub const MAX_BODY: usize = 1 << 20;

/// The commands bansync acts on; any other is acknowledged and counted as
/// `other` (metric labels stay bounded).
pub const COMMANDS: &[&str] = &[
    "Sns.CallbackBlackListAdd",
    "Sns.CallbackBlackListDelete",
    "Group.CallbackAfterCreateGroup",
    "Live.CallbackAfterCreateRoom",
    "Group.CallbackAfterGroupDestroyed",
    "Live.CallbackAfterDestroyRoom",
    "Group.CallbackAfterMemberExit",
    "Alert.RequestOverLimit",
];

/// The command as a metric label.
pub fn command_label(command: &str) -> &'static str {
    COMMANDS
        .iter()
        .find(|c| **c == command)
        .copied()
        .unwrap_or("other")
}

/// `Sign`: the lowercase hex SHA-256 of token + RequestTime.
pub fn sign(token: &str, request_time: &str) -> String {
    let mut h = Sha256::new();
    h.update(token.as_bytes());
    h.update(request_time.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a callback was refused (HTTP 403), as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `SdkAppid` missing or another app's.
    Appid,
    /// `Sign` missing or wrong while a token is configured.
    Sign,
    /// `RequestTime` missing, unreadable or more than a minute off.
    Time,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Appid => "refused_appid",
            Refusal::Sign => "refused_sign",
            Refusal::Time => "refused_time",
        }
    }
}

/// The query parameters that decide whether a callback is accepted.
#[derive(Debug, Clone, Default)]
pub struct Envelope<'a> {
    pub sdkappid: Option<&'a str>,
    pub request_time: Option<&'a str>,
    pub sign: Option<&'a str>,
}

/// Compares in time that does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a callback may be acted on: our app, and with a token, a valid
/// `Sign` over a `RequestTime` within a minute of `now_s`.
pub fn check(e: &Envelope<'_>, app: u64, token: Option<&str>, now_s: i64) -> Result<(), Refusal> {
    if e.sdkappid.and_then(|a| a.trim().parse::<u64>().ok()) != Some(app) {
        return Err(Refusal::Appid);
    }
    let Some(token) = token else {
        // Unsigned: a RequestTime, if the sender gives one, must still be
        // within the window (a replayed old callback is refused).
        return match e.request_time.map(|t| t.trim().parse::<i64>()) {
            None => Ok(()),
            Some(Ok(t)) if (now_s - t).abs() <= MAX_SKEW_S => Ok(()),
            Some(_) => Err(Refusal::Time),
        };
    };
    let Some(time) = e.request_time else {
        return Err(Refusal::Time);
    };
    let Ok(t) = time.trim().parse::<i64>() else {
        return Err(Refusal::Time);
    };
    // The signature is checked first: a stale but valid Sign is a replay,
    // a wrong one a forgery; both are refused, and counted apart.
    let Some(given) = e.sign else {
        return Err(Refusal::Sign);
    };
    let want = sign(token, time);
    if !same(given.to_ascii_lowercase().as_bytes(), want.as_bytes()) {
        return Err(Refusal::Sign);
    }
    if (now_s - t).abs() > MAX_SKEW_S {
        return Err(Refusal::Time);
    }
    Ok(())
}

/// What a callback says, for the commands bansync acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    /// `Sns.CallbackBlackListAdd` (`added`) or `...Delete`: (from, to) pairs.
    Blocklist {
        added: bool,
        pairs: Vec<(String, String)>,
    },
    /// A group was created; `kind` is its `Type` (only `AVChatRoom` counts).
    GroupCreated {
        group: String,
        kind: String,
    },
    RoomCreated {
        room: String,
    },
    GroupDestroyed {
        group: String,
    },
    RoomDestroyed {
        room: String,
    },
    /// A member left a group; `kicked` for `ExitType` `Kicked`.
    MemberExit {
        group: String,
        kicked: bool,
    },
    /// An API of the app passed 80% of its limit.
    OverLimit {
        service: String,
        command: String,
    },
    /// Anything else: acknowledged, counted, ignored.
    Other,
}

/// Reads a callback body. An error names what is missing; the callback is
/// then acknowledged (the vendor does not retry) and counted as bad.
pub fn parse(command: &str, body: &[u8]) -> Result<Callback, String> {
    if command_label(command) == "other" {
        return Ok(Callback::Other);
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let text = |v: &Value, k: &str| -> Result<String, String> {
        match v.get(k).and_then(Value::as_str) {
            Some(s) if !s.is_empty() => Ok(s.to_string()),
            _ => Err(format!("{k} missing or not a string")),
        }
    };
    Ok(match command {
        "Sns.CallbackBlackListAdd" | "Sns.CallbackBlackListDelete" => {
            let list = v
                .get("PairList")
                .and_then(Value::as_array)
                .ok_or("PairList missing or not a list")?;
            let pairs = list
                .iter()
                .map(|p| Ok((text(p, "From_Account")?, text(p, "To_Account")?)))
                .collect::<Result<_, String>>()?;
            Callback::Blocklist {
                added: command.ends_with("Add"),
                pairs,
            }
        }
        "Group.CallbackAfterCreateGroup" => Callback::GroupCreated {
            group: text(&v, "GroupId")?,
            kind: text(&v, "Type").unwrap_or_default(),
        },
        "Live.CallbackAfterCreateRoom" => {
            let info = v.get("RoomInfo").ok_or("RoomInfo missing")?;
            Callback::RoomCreated {
                room: text(info, "RoomId")?,
            }
        }
        "Group.CallbackAfterGroupDestroyed" => Callback::GroupDestroyed {
            group: text(&v, "GroupId")?,
        },
        "Live.CallbackAfterDestroyRoom" => Callback::RoomDestroyed {
            room: text(&v, "RoomId")?,
        },
        "Group.CallbackAfterMemberExit" => Callback::MemberExit {
            group: text(&v, "GroupId")?,
            kicked: v.get("ExitType").and_then(Value::as_str) == Some("Kicked"),
        },
        "Alert.RequestOverLimit" => Callback::OverLimit {
            service: text(&v, "ServiceName")?,
            command: text(&v, "Command")?,
        },
        _ => Callback::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(app: &'a str, time: Option<&'a str>, sign: Option<&'a str>) -> Envelope<'a> {
        Envelope {
            sdkappid: Some(app),
            request_time: time,
            sign,
        }
    }

    #[test]
    fn sign_is_sha256_of_token_and_time() {
        // printf 'tok1700000000' | sha256sum
        assert_eq!(
            sign("tok", "1700000000"),
            "1f4112aa726e20f097d526ff82863c835ad47a6a34dc4ca14240702535c75dbc"
        );
        assert_eq!(sign("tok", "1700000000").len(), 64);
        assert_ne!(sign("tok", "1700000000"), sign("tok", "1700000001"));
        assert_ne!(sign("tok", "1700000000"), sign("tok2", "1700000000"));
    }

    #[test]
    fn check_refuses_each_fault_by_name() {
        let t = "1700000000";
        let good = sign("tok", t);
        let now = 1_700_000_010;
        assert_eq!(
            check(&env("14", Some(t), Some(&good)), 14, Some("tok"), now),
            Ok(())
        );
        // Upper-case hex is the same signature.
        let upper = good.to_ascii_uppercase();
        assert_eq!(
            check(&env("14", Some(t), Some(&upper)), 14, Some("tok"), now),
            Ok(())
        );
        assert_eq!(
            check(&env("15", Some(t), Some(&good)), 14, Some("tok"), now),
            Err(Refusal::Appid)
        );
        let none = Envelope::default();
        assert_eq!(check(&none, 14, None, now), Err(Refusal::Appid));
        assert_eq!(
            check(&env("14", Some(t), Some(&good)), 14, Some("other"), now),
            Err(Refusal::Sign)
        );
        assert_eq!(
            check(&env("14", Some(t), None), 14, Some("tok"), now),
            Err(Refusal::Sign)
        );
        assert_eq!(
            check(&env("14", None, Some(&good)), 14, Some("tok"), now),
            Err(Refusal::Time)
        );
        assert_eq!(
            check(&env("14", Some("soon"), Some(&good)), 14, Some("tok"), now),
            Err(Refusal::Time)
        );
        // A valid signature over a stale or future time: refused either way.
        assert_eq!(
            check(
                &env("14", Some(t), Some(&good)),
                14,
                Some("tok"),
                1_700_000_061
            ),
            Err(Refusal::Time)
        );
        assert_eq!(
            check(
                &env("14", Some(t), Some(&good)),
                14,
                Some("tok"),
                1_700_000_060
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &env("14", Some(t), Some(&good)),
                14,
                Some("tok"),
                1_699_999_939
            ),
            Err(Refusal::Time)
        );
        // Without a token, the app is checked, and the time if given.
        assert_eq!(check(&env("14", None, None), 14, None, now), Ok(()));
        assert_eq!(check(&env("14", Some(t), None), 14, None, now), Ok(()));
        assert_eq!(
            check(&env("14", Some(t), None), 14, None, now + 120),
            Err(Refusal::Time)
        );
        assert_eq!(
            check(&env("14", Some("x"), None), 14, None, now),
            Err(Refusal::Time)
        );
    }

    #[test]
    fn parses_the_vendor_bodies() {
        let b = br#"{"CallbackCommand":"Sns.CallbackBlackListAdd","PairList":[{"From_Account":"alice","To_Account":"bob"}]}"#;
        assert_eq!(
            parse("Sns.CallbackBlackListAdd", b).unwrap(),
            Callback::Blocklist {
                added: true,
                pairs: vec![("alice".into(), "bob".into())]
            }
        );
        let b = br#"{"RoomInfo":{"RoomId":"live-9","RoomType":"Live","Owner_Account":"o"}}"#;
        assert_eq!(
            parse("Live.CallbackAfterCreateRoom", b).unwrap(),
            Callback::RoomCreated {
                room: "live-9".into()
            }
        );
        let b = br#"{"GroupId":"@TGS#1","Type":"AVChatRoom","ExitType":"Kicked","ExitMemberList":[{"Member_Account":"x"}]}"#;
        assert_eq!(
            parse("Group.CallbackAfterMemberExit", b).unwrap(),
            Callback::MemberExit {
                group: "@TGS#1".into(),
                kicked: true
            }
        );
        let b = br#"{"ServiceName":"group_open_http_svc","Command":"get_group_ban_member","Request":170,"Limit":200}"#;
        assert_eq!(
            parse("Alert.RequestOverLimit", b).unwrap(),
            Callback::OverLimit {
                service: "group_open_http_svc".into(),
                command: "get_group_ban_member".into()
            }
        );
        assert_eq!(
            parse("C2C.CallbackAfterSendMsg", b"not even json").unwrap(),
            Callback::Other
        );
        assert!(
            parse("Sns.CallbackBlackListAdd", b"{}")
                .unwrap_err()
                .contains("PairList")
        );
        assert!(
            parse("Live.CallbackAfterDestroyRoom", b"{\"RoomId\":\"\"}")
                .unwrap_err()
                .contains("RoomId")
        );
        assert!(
            parse("Group.CallbackAfterCreateGroup", b"[")
                .unwrap_err()
                .contains("JSON")
        );
        assert_eq!(
            command_label("Sns.CallbackBlackListAdd"),
            "Sns.CallbackBlackListAdd"
        );
        assert_eq!(command_label("anything"), "other");
    }
}
