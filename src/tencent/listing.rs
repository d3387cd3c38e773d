//! Listings for discovery: the app's audio-video groups
//! (`get_appid_group_list`, 1 call/s) and live rooms (`get_room_list`,
//! 10 calls/s). The client's pacers hold each to its own limit, apart from
//! the ban-list APIs, so a listing never slows a walk.
//!
//! A listing is *complete* only if every page answered and the cursor ran
//! to its end without repeating. The room listing is sorted by viewers, so
//! its pages shift while it is read: a room can be skipped even by a
//! complete listing. That is why a source is retired only after two
//! complete listings miss it *and* the vendor says it is gone.

use std::collections::HashSet;

use super::api::*;
use super::client::TencentClient;
use crate::source::{SourceKind, SourceSpec};

/// Listings beyond this many pages are runaway pagination.
pub const MAX_PAGES: usize = 100_000;

/// What one listing found.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Every distinct source seen, in the order first seen.
    pub found: Vec<SourceSpec>,
    /// Every page answered and the cursor ended.
    pub complete: bool,
    /// Why it is not complete.
    pub error: Option<String>,
    pub pages: usize,
}

impl Listing {
    fn add(&mut self, seen: &mut HashSet<String>, kind: SourceKind, id: &str) {
        if let Err(e) = crate::source::validate_id(id) {
            // An id bansync could not walk: the listing cannot be trusted
            // to be whole either.
            self.error
                .get_or_insert_with(|| format!("listed an unusable id: {e}"));
            return;
        }
        if seen.insert(id.to_string()) {
            self.found.push(SourceSpec::new(kind, id));
        }
    }

    fn fail(mut self, e: impl std::fmt::Display) -> Listing {
        self.complete = false;
        self.error = Some(e.to_string());
        self
    }
}

/// Lists the app's audio-video groups (`GroupType` AVChatRoom).
pub async fn groups(client: &TencentClient, page_size: u32) -> Listing {
    let mut out = Listing::default();
    let mut seen = HashSet::new();
    let mut cursors = HashSet::new();
    let mut next = 0u64;
    let limit = page_size.clamp(1, MAX_GROUP_LIST_PAGE);
    loop {
        if out.pages >= MAX_PAGES {
            return out.fail(format!("more than {MAX_PAGES} pages"));
        }
        let req = GroupListRequest {
            limit,
            next,
            group_type: "AVChatRoom",
        };
        let page: GroupListResponse = match client.call(Api::GroupList, &req).await {
            Ok(p) => p,
            Err(e) => return out.fail(e),
        };
        out.pages += 1;
        let items = page.groups.unwrap_or_default();
        if items.len() > limit as usize {
            return out.fail(format!("asked for {limit} groups, got {}", items.len()));
        }
        for g in &items {
            out.add(&mut seen, SourceKind::Group, &g.group_id);
        }
        match page.next {
            None => return out.fail("the answer has no Next"),
            Some(0) => break,
            Some(n) if n == next || !cursors.insert(n) => {
                return out.fail(format!(
                    "the cursor {n} came back: the listing would not end"
                ));
            }
            Some(n) => next = n,
        }
    }
    out.complete = out.error.is_none();
    out
}

/// Lists the app's live rooms.
pub async fn rooms(client: &TencentClient) -> Listing {
    let mut out = Listing::default();
    let mut seen = HashSet::new();
    let mut cursors = HashSet::new();
    let mut next = String::new();
    loop {
        if out.pages >= MAX_PAGES {
            return out.fail(format!("more than {MAX_PAGES} pages"));
        }
        let req = RoomListRequest {
            next: &next,
            count: MAX_ROOM_LIST_PAGE,
        };
        let page: RoomListResponse = match client.call(Api::RoomList, &req).await {
            Ok(p) => p,
            Err(e) => return out.fail(e),
        };
        out.pages += 1;
        let (items, cursor) = match page.response {
            Some(b) => (b.rooms, b.next),
            None => (page.rooms, page.next),
        };
        let items = items.unwrap_or_default();
        if items.len() > MAX_ROOM_LIST_PAGE as usize {
            return out.fail(format!(
                "asked for {MAX_ROOM_LIST_PAGE} rooms, got {}",
                items.len()
            ));
        }
        for r in &items {
            out.add(&mut seen, SourceKind::Room, &r.room_id);
        }
        match cursor {
            None => return out.fail("the answer has no Next"),
            Some(n) if n.is_empty() => break,
            Some(n) if n.len() > 1024 || !cursors.insert(n.clone()) => {
                return out.fail("the cursor came back (or is absurd): the listing would not end");
            }
            Some(n) => next = n,
        }
    }
    out.complete = out.error.is_none();
    out
}

/// The listing of `kind` (groups or rooms).
pub async fn list(client: &TencentClient, kind: SourceKind) -> Listing {
    match kind {
        SourceKind::Group => groups(client, MAX_GROUP_LIST_PAGE).await,
        SourceKind::Room => rooms(client).await,
        SourceKind::Blocklist => Listing::default().fail("blocklists are not listed"),
    }
}
