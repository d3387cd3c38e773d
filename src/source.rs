//! Source specifications (`group:ID`, `room:ID`, `blocklist:ACCOUNT`) and the
//! glob patterns webhooks use to select sources and event types.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    Group,
    Room,
    Blocklist,
}

impl SourceKind {
    pub const ALL: [SourceKind; 3] = [SourceKind::Group, SourceKind::Room, SourceKind::Blocklist];

    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Group => "group",
            SourceKind::Room => "room",
            SourceKind::Blocklist => "blocklist",
        }
    }

    /// Ban lists carry an end time and expire; blocklists do not.
    pub fn is_ban_list(self) -> bool {
        !matches!(self, SourceKind::Blocklist)
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One watched list: a group's or room's ban list, or a user's blocklist.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceSpec {
    pub kind: SourceKind,
    pub id: String,
}

impl SourceSpec {
    pub fn new(kind: SourceKind, id: impl Into<String>) -> Self {
        SourceSpec {
            kind,
            id: id.into(),
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}

impl FromStr for SourceSpec {
    type Err = String;

    /// Splits at the first colon, so IDs may themselves contain colons.
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, id) = s.split_once(':').ok_or_else(|| {
            format!("`{s}` is not a source (write group:ID, room:ID or blocklist:ACCOUNT)")
        })?;
        let kind = match kind {
            "group" => SourceKind::Group,
            "room" => SourceKind::Room,
            "blocklist" => SourceKind::Blocklist,
            other => {
                return Err(format!(
                    "`{s}`: unknown source kind `{other}` (group, room or blocklist)"
                ));
            }
        };
        validate_id(id).map_err(|e| format!("`{s}`: {e}"))?;
        Ok(SourceSpec::new(kind, id))
    }
}

/// IDs are sent to the vendor verbatim; reject what it could never hold.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("empty ID".into());
    }
    if id.len() > 256 {
        return Err("ID longer than 256 bytes".into());
    }
    if id.chars().any(|c| c.is_control()) {
        return Err("ID contains a control character".into());
    }
    Ok(())
}

/// A glob where `*` matches any run of characters (`ban.*`, `room:*`,
/// `room:live-*`). Everything else matches literally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    pub fn new(p: impl Into<String>) -> Self {
        Pattern(p.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, text: &str) -> bool {
        glob_match(self.0.as_bytes(), text.as_bytes())
    }
}

fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative matcher with single-star backtracking: linear for the
    // patterns operators write, never exponential.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_at_first_colon() {
        let s: SourceSpec = "group:@TGS#aJRGC4MH6".parse().unwrap();
        assert_eq!(s.kind, SourceKind::Group);
        assert_eq!(s.id, "@TGS#aJRGC4MH6");
        let s: SourceSpec = "room:a:b".parse().unwrap();
        assert_eq!(s.id, "a:b");
        assert_eq!(s.to_string(), "room:a:b");
    }

    #[test]
    fn rejects_bad_specs() {
        assert!(
            "live-1"
                .parse::<SourceSpec>()
                .unwrap_err()
                .contains("not a source")
        );
        assert!(
            "channel:x"
                .parse::<SourceSpec>()
                .unwrap_err()
                .contains("unknown source kind")
        );
        assert!(
            "room:"
                .parse::<SourceSpec>()
                .unwrap_err()
                .contains("empty ID")
        );
    }

    #[test]
    fn globs() {
        assert!(Pattern::new("ban.*").matches("ban.added"));
        assert!(!Pattern::new("ban.*").matches("block.added"));
        assert!(Pattern::new("*").matches(""));
        assert!(Pattern::new("room:*").matches("room:live-1"));
        assert!(Pattern::new("room:live-*-eu").matches("room:live-7-eu"));
        assert!(!Pattern::new("room:live-*-eu").matches("room:live-7-us"));
        assert!(Pattern::new("block.added").matches("block.added"));
        assert!(!Pattern::new("block.added").matches("block.added2"));
        assert!(Pattern::new("a*b*c").matches("aXXbYYc"));
        assert!(!Pattern::new("a*b*c").matches("aXXbYY"));
    }
}

/// How a source came to be watched (`status --json`'s `origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Listed under `[sources]`.
    Configured,
    /// Found in a listing (`[discovery]`).
    Discovered,
    /// Named by a vendor callback (a created room or group, an enrolled
    /// blocklist).
    Callback,
}

impl Origin {
    pub const ALL: [Origin; 3] = [Origin::Configured, Origin::Discovered, Origin::Callback];

    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Configured => "configured",
            Origin::Discovered => "discovered",
            Origin::Callback => "callback",
        }
    }

    pub fn parse(s: &str) -> Option<Origin> {
        Origin::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// One entry of a list: for ban lists `value` is `BannedUntil`, for
/// blocklists `AddBlackTimeStamp` (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    pub account: String,
    pub value: i64,
}

impl Entry {
    pub fn new(account: impl Into<String>, value: i64) -> Self {
        Entry {
            account: account.into(),
            value,
        }
    }
}
