//! The vendor endpoints bansync calls: paths, request bodies and response
//! shapes, as the vendor's pages and NOTES.md give them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Api {
    GroupBanList,
    RoomBanList,
    BlockList,
    RoomBan,
    RoomUnban,
    GroupBan,
    GroupUnban,
    /// The app's groups (discovery).
    GroupList,
    /// The app's live rooms (discovery).
    RoomList,
}

impl Api {
    pub const ALL: [Api; 9] = [
        Api::GroupBanList,
        Api::RoomBanList,
        Api::BlockList,
        Api::RoomBan,
        Api::RoomUnban,
        Api::GroupBan,
        Api::GroupUnban,
        Api::GroupList,
        Api::RoomList,
    ];

    /// `service/command`, as it appears after `/v4/`.
    pub fn path(self) -> &'static str {
        match self {
            Api::GroupBanList => "group_open_http_svc/get_group_ban_member",
            Api::RoomBanList => "live_engine_http_srv/get_banned_member_list",
            Api::BlockList => "sns/black_list_get",
            Api::RoomBan => "live_engine_http_srv/ban_member",
            Api::RoomUnban => "live_engine_http_srv/unban_member",
            Api::GroupBan => "group_open_http_svc/ban_group_member",
            Api::GroupUnban => "group_open_http_svc/unban_group_member",
            Api::GroupList => "group_open_http_svc/get_appid_group_list",
            Api::RoomList => "live_engine_http_srv/get_room_list",
        }
    }

    /// The vendor's own limit for this API, where it is below the usual
    /// 200 calls a second (NOTES.md): the pacer never goes faster.
    pub fn vendor_limit(self) -> Option<u32> {
        match self {
            Api::GroupList => Some(1),
            Api::RoomList => Some(10),
            _ => None,
        }
    }

    pub fn from_path(path: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|a| a.path() == path)
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Most entries a ban-list page may hold (`Limit`).
pub const MAX_PAGE_SIZE: u32 = 100;

/// Accounts per ban/unban request, for every ban endpoint.
pub const MAX_ACCOUNTS_PER_BAN: usize = 20;
/// The live-room `Reason` limit, in bytes.
pub const MAX_REASON_BYTES: usize = 200;
/// The group `Description` limit, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 1000;

/// Cuts `s` to at most `max` bytes without splitting a UTF-8 character.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GroupBanListRequest<'a> {
    pub group_id: &'a str,
    pub limit: u32,
    pub offset: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RoomBanListRequest<'a> {
    pub room_id: &'a str,
    pub offset: u64,
    pub limit: u32,
}

#[derive(Debug, Serialize)]
pub struct BlockListRequest<'a> {
    #[serde(rename = "From_Account")]
    pub from_account: &'a str,
    #[serde(rename = "StartIndex")]
    pub start_index: u64,
    #[serde(rename = "MaxLimited")]
    pub max_limited: u32,
    #[serde(rename = "LastSequence")]
    pub last_sequence: u64,
}

#[derive(Debug, Serialize)]
pub struct RoomBanRequest<'a> {
    #[serde(rename = "RoomId")]
    pub room_id: &'a str,
    #[serde(rename = "MemberList_Account")]
    pub members: &'a [String],
    #[serde(rename = "Reason")]
    pub reason: &'a str,
    #[serde(rename = "Duration")]
    pub duration: u64,
}

#[derive(Debug, Serialize)]
pub struct RoomUnbanRequest<'a> {
    #[serde(rename = "RoomId")]
    pub room_id: &'a str,
    #[serde(rename = "MemberList_Account")]
    pub members: &'a [String],
}

#[derive(Debug, Serialize)]
pub struct GroupBanRequest<'a> {
    #[serde(rename = "GroupId")]
    pub group_id: &'a str,
    #[serde(rename = "Members_Account")]
    pub members: &'a [String],
    #[serde(rename = "Duration")]
    pub duration: u64,
    #[serde(rename = "Description")]
    pub description: &'a str,
}

#[derive(Debug, Serialize)]
pub struct GroupUnbanRequest<'a> {
    #[serde(rename = "GroupId")]
    pub group_id: &'a str,
    #[serde(rename = "Members_Account")]
    pub members: &'a [String],
}

/// The most groups one `get_appid_group_list` page may hold.
pub const MAX_GROUP_LIST_PAGE: u32 = 10_000;
/// The most rooms one `get_room_list` page may hold.
pub const MAX_ROOM_LIST_PAGE: u32 = 20;

#[derive(Debug, Serialize)]
pub struct GroupListRequest<'a> {
    #[serde(rename = "Limit")]
    pub limit: u32,
    #[serde(rename = "Next")]
    pub next: u64,
    #[serde(rename = "GroupType")]
    pub group_type: &'a str,
}

#[derive(Debug, Serialize)]
pub struct RoomListRequest<'a> {
    #[serde(rename = "Next")]
    pub next: &'a str,
    #[serde(rename = "Count")]
    pub count: u32,
}

/// The envelope every answer carries.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub action_status: Option<&'a str>,
    pub error_code: Option<i64>,
    pub error_info: Option<&'a str>,
    pub request_id: Option<&'a str>,
}

pub trait VendorResponse: for<'de> Deserialize<'de> {
    fn envelope(&self) -> Envelope<'_>;
}

/// Declares a response struct with the envelope fields inline, so one
/// parse reads both (no `flatten`, which buffers the whole body).
macro_rules! vendor_response {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$m])*
        #[derive(Debug, Deserialize)]
        pub struct $name {
            #[serde(rename = "ActionStatus", default)]
            pub action_status: Option<String>,
            #[serde(rename = "ErrorCode", default)]
            pub error_code: Option<i64>,
            #[serde(rename = "ErrorInfo", default)]
            pub error_info: Option<String>,
            #[serde(rename = "RequestId", default)]
            pub request_id: Option<String>,
            $($(#[$fm])* pub $field: $ty,)*
        }
        impl VendorResponse for $name {
            fn envelope(&self) -> Envelope<'_> {
                Envelope {
                    action_status: self.action_status.as_deref(),
                    error_code: self.error_code,
                    error_info: self.error_info.as_deref(),
                    request_id: self.request_id.as_deref(),
                }
            }
        }
    };
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct BannedAccount {
    #[serde(rename = "Member_Account")]
    pub account: String,
    #[serde(rename = "BannedUntil")]
    pub banned_until: i64,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct BlockedAccount {
    #[serde(rename = "To_Account")]
    pub account: String,
    #[serde(rename = "AddBlackTimeStamp")]
    pub added_at: i64,
}

vendor_response!(GroupBanListResponse {
    #[serde(rename = "BannedAccountList", default)]
    banned: Option<Vec<BannedAccount>>,
    #[serde(rename = "NextOffset", default)]
    next_offset: Option<u64>,
});

#[derive(Debug, Deserialize)]
pub struct RoomBanListBody {
    #[serde(rename = "BannedAccountList", default)]
    pub banned: Option<Vec<BannedAccount>>,
    #[serde(rename = "NextOffset", default)]
    pub next_offset: Option<u64>,
}

vendor_response!(
    /// The live service wraps its payload in `Response`; accept the flat
    /// form too, which some deployments return.
    RoomBanListResponse {
        #[serde(rename = "Response", default)]
        response: Option<RoomBanListBody>,
        #[serde(rename = "BannedAccountList", default)]
        banned: Option<Vec<BannedAccount>>,
        #[serde(rename = "NextOffset", default)]
        next_offset: Option<u64>,
    }
);

vendor_response!(BlockListResponse {
    #[serde(rename = "BlackListItem", default)]
    items: Option<Vec<BlockedAccount>>,
    #[serde(rename = "StartIndex", default)]
    start_index: Option<u64>,
    /// The vendor's sample spells it `CurruentSequence`; its table does not.
    #[serde(rename = "CurrentSequence", alias = "CurruentSequence", default)]
    current_sequence: Option<u64>,
});

vendor_response!(PlainResponse {});

#[derive(Debug, Deserialize)]
pub struct GroupIdItem {
    #[serde(rename = "GroupId")]
    pub group_id: String,
}

vendor_response!(GroupListResponse {
    #[serde(rename = "GroupIdList", default)]
    groups: Option<Vec<GroupIdItem>>,
    /// 0 ends the listing; a u64 that may not fit a double.
    #[serde(rename = "Next", default)]
    next: Option<u64>,
    #[serde(rename = "TotalCount", default)]
    total: Option<u64>,
});

#[derive(Debug, Deserialize)]
pub struct RoomItem {
    #[serde(rename = "RoomId")]
    pub room_id: String,
}

#[derive(Debug, Deserialize)]
pub struct RoomListBody {
    #[serde(rename = "Next", default)]
    pub next: Option<String>,
    #[serde(rename = "RoomList", default)]
    pub rooms: Option<Vec<RoomItem>>,
}

vendor_response!(
    /// Wrapped in `Response` like the other live endpoints; flat accepted.
    RoomListResponse {
        #[serde(rename = "Response", default)]
        response: Option<RoomListBody>,
        #[serde(rename = "Next", default)]
        next: Option<String>,
        #[serde(rename = "RoomList", default)]
        rooms: Option<Vec<RoomItem>>,
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_truncation_keeps_whole_characters() {
        assert_eq!(truncate_utf8("abc", 200), "abc");
        let s = "é".repeat(150); // 300 bytes
        let t = truncate_utf8(&s, 200);
        assert_eq!(t.len(), 200);
        let s = format!("a{}", "€".repeat(100)); // 1 + 300 bytes
        let t = truncate_utf8(&s, 200);
        assert_eq!(t.len(), 199);
        assert!(t.chars().all(|c| c == 'a' || c == '€'));
    }

    #[test]
    fn parses_both_sequence_spellings_and_room_shapes() {
        let a: BlockListResponse = serde_json::from_str(
            r#"{"BlackListItem":[{"To_Account":"id1","AddBlackTimeStamp":1}],"StartIndex":0,"CurruentSequence":13,"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","ErrorDisplay":""}"#,
        )
        .unwrap();
        assert_eq!(a.current_sequence, Some(13));
        let b: BlockListResponse = serde_json::from_str(
            r#"{"BlackListItem":[],"StartIndex":0,"CurrentSequence":14,"ErrorCode":0}"#,
        )
        .unwrap();
        assert_eq!(b.current_sequence, Some(14));
        let wrapped: RoomBanListResponse = serde_json::from_str(
            r#"{"ErrorCode":0,"ActionStatus":"OK","RequestId":"Id-1","Response":{"BannedAccountList":[{"Member_Account":"user2","BannedUntil":1719300627}],"NextOffset":0}}"#,
        )
        .unwrap();
        assert_eq!(
            wrapped.response.unwrap().banned.unwrap()[0].account,
            "user2"
        );
        assert_eq!(wrapped.request_id.as_deref(), Some("Id-1"));
        let flat: RoomBanListResponse = serde_json::from_str(
            r#"{"ErrorCode":0,"BannedAccountList":[{"Member_Account":"u","BannedUntil":5}],"NextOffset":3}"#,
        )
        .unwrap();
        assert_eq!(flat.next_offset, Some(3));
    }
}
