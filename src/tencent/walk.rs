//! Walkers: page one list to its end and return all of it, or an error.
//! Never a short list: a page that fails, an offset that does not advance
//! or skips entries, a page larger than asked, or a runaway page count all
//! end the walk with an error.

use std::collections::HashMap;

use super::api::*;
use super::client::TencentClient;
use super::errors::{ApiError, ErrorClass};
use crate::source::{Entry, SourceKind, SourceSpec};

/// Ban lists beyond this many entries are treated as runaway pagination.
pub const MAX_BAN_ENTRIES: usize = 2_000_000;
/// Blocklists hold at most 1000 entries; allow slack for lists that change.
pub const MAX_BLOCK_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum WalkError {
    /// The list's owner does not exist: a state, not a failure of the walk.
    #[error("{spec} does not exist: {error}")]
    Gone { spec: String, error: ApiError },
    #[error("{0}")]
    Api(ApiError),
    #[error("inconsistent pagination: {0}")]
    Inconsistent(String),
}

impl WalkError {
    pub fn is_gone(&self) -> bool {
        matches!(self, WalkError::Gone { .. })
    }

    /// Whether retrying this source soon could help.
    pub fn is_fatal(&self) -> bool {
        matches!(self, WalkError::Api(e) if matches!(e.class(), ErrorClass::Fatal | ErrorClass::Bug))
    }
}

/// A page as the walker needs it, whatever the API's shape.
struct Page<T> {
    items: Vec<T>,
    next: u64,
}

/// Checks one page against the cursor rules shared by all three APIs.
fn check_page(offset: u64, asked: u32, got: usize, next: u64) -> Result<(), WalkError> {
    if got > asked as usize {
        return Err(WalkError::Inconsistent(format!(
            "asked for {asked} entries at offset {offset}, got {got}"
        )));
    }
    if next != 0 && (next <= offset || next > offset + got as u64) {
        return Err(WalkError::Inconsistent(format!(
            "offset {offset} with {got} entries pointed to next offset {next}"
        )));
    }
    Ok(())
}

/// What paging found: the entries, and whether the list shifted under the
/// walk (entries removed or inserted before the cursor between two page
/// requests, which makes a walk skip or repeat entries).
struct Paged {
    entries: Vec<Entry>,
    shifted: bool,
}

/// Pages `fetch` from offset 0 until the cursor is 0. Every page after the
/// first starts one entry early, and that entry must be the last one already
/// read: if it is not, the list shifted. With `stop_on_shift` the walk ends
/// there (to be restarted); without, it reads on and reports the shift.
async fn page_through<F, Fut>(
    max_entries: usize,
    page_size: u32,
    stop_on_shift: bool,
    mut fetch: F,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<Paged, WalkError>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<Page<Entry>, WalkError>>,
{
    let mut all: Vec<Entry> = Vec::new();
    let mut offset = 0u64;
    let mut overlapping = false;
    let mut shifted = false;
    loop {
        let page = fetch(offset).await?;
        check_page(offset, page_size, page.items.len(), page.next)?;
        let got = page.items.len() as u64;
        // A full page that says the list ended may be a truncated answer:
        // the list is not known to end until a page past it shows nothing more.
        let full = got == u64::from(page_size);
        let mut items = page.items;
        if overlapping {
            let same =
                matches!((items.first(), all.last()), (Some(f), Some(l)) if f.account == l.account);
            if same {
                items.remove(0);
            } else {
                shifted = true;
                if stop_on_shift {
                    return Ok(Paged {
                        entries: all,
                        shifted,
                    });
                }
            }
        }
        all.extend(items);
        progress(all.len());
        if all.len() > max_entries {
            return Err(WalkError::Inconsistent(format!(
                "more than {max_entries} entries: runaway pagination"
            )));
        }
        if page.next == 0 && !full {
            return Ok(Paged {
                entries: all,
                shifted,
            });
        }
        let next = if page.next == 0 {
            offset + got
        } else {
            page.next
        };
        // Start one early to overlap, unless that would not advance.
        overlapping = next - 1 > offset;
        offset = if overlapping { next - 1 } else { next };
    }
}

fn api_err(spec: &SourceSpec, e: ApiError) -> WalkError {
    if e.class() == ErrorClass::SourceGone {
        WalkError::Gone {
            spec: spec.to_string(),
            error: e,
        }
    } else {
        WalkError::Api(e)
    }
}

fn malformed(api: Api, what: &str) -> WalkError {
    WalkError::Api(ApiError {
        api: api.path(),
        kind: super::errors::ApiErrorKind::Malformed(what.to_string()),
        request_id: None,
    })
}

/// The vendor's account ids are at most this long (bytes).
pub const MAX_ACCOUNT_BYTES: usize = 32;

/// Whether `account` can be a vendor account id: 1 to
/// [`MAX_ACCOUNT_BYTES`] bytes, no control characters.
pub fn is_account_id(account: &str) -> bool {
    !account.is_empty()
        && account.len() <= MAX_ACCOUNT_BYTES
        && !account.chars().any(char::is_control)
}

/// The largest time the vendor sends: a ban "for ever" ends at 2^32 - 1.
pub const MAX_VENDOR_TIME: i64 = u32::MAX as i64;

/// One page's entries, checked: an account id that is empty, too long or
/// holds control characters, or a time outside the vendor's range, makes
/// the page (and so the walk) malformed. Nothing of it reaches the store,
/// the logs or a webhook.
fn checked(api: Api, items: impl Iterator<Item = (String, i64)>) -> Result<Vec<Entry>, WalkError> {
    items
        .map(|(account, value)| {
            if !is_account_id(&account) {
                let shown: String = account.chars().take(40).flat_map(char::escape_debug).collect();
                return Err(malformed(
                    api,
                    &format!(
                        "account id `{shown}` ({} bytes) is not a vendor account id (1 to {MAX_ACCOUNT_BYTES} bytes, no control characters)",
                        account.len()
                    ),
                ));
            }
            if !(0..=MAX_VENDOR_TIME).contains(&value) {
                return Err(malformed(api, &format!("time {value} is out of range")));
            }
            Ok(Entry::new(account, value))
        })
        .collect()
}

/// Collapses accounts seen twice (entries inserted mid-walk shift later
/// ones onto the next page); the later sighting is the fresher one.
fn dedupe(entries: Vec<Entry>) -> Vec<Entry> {
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    let mut dup = false;
    for (i, e) in entries.iter().enumerate() {
        if seen.insert(e.account.as_str(), i).is_some() {
            dup = true;
        }
    }
    if !dup {
        return entries;
    }
    let keep: std::collections::HashSet<usize> = seen.into_values().collect();
    entries
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.contains(i))
        .map(|(_, e)| e)
        .collect()
}

/// Walks one source's whole list.
pub async fn walk(
    client: &TencentClient,
    spec: &SourceSpec,
    page_size: u32,
    blocklist_page_size: u32,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<Vec<Entry>, WalkError> {
    walk_checked(client, spec, page_size, blocklist_page_size, progress)
        .await
        .map(|w| w.entries)
}

/// A whole list, and whether it can be trusted about absences.
#[derive(Debug, Clone)]
pub struct Walked {
    pub entries: Vec<Entry>,
    /// False when the list kept shifting under the walk: what was seen is
    /// real, but an entry not seen may have been skipped.
    pub stable: bool,
    /// Walks restarted because the list shifted.
    pub restarts: u32,
}

/// Walks restarted at most this often before a shifting list is accepted
/// as unstable.
pub const MAX_SHIFT_RESTARTS: u32 = 2;

/// Walks one source's whole list, restarting when the list shifts under
/// the walk.
pub async fn walk_checked(
    client: &TencentClient,
    spec: &SourceSpec,
    page_size: u32,
    blocklist_page_size: u32,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<Walked, WalkError> {
    let mut restarts = 0;
    loop {
        let last = restarts == MAX_SHIFT_RESTARTS;
        let paged = walk_once(
            client,
            spec,
            page_size,
            blocklist_page_size,
            !last,
            progress,
        )
        .await?;
        if !paged.shifted || last {
            return Ok(Walked {
                entries: dedupe(paged.entries),
                stable: !paged.shifted,
                restarts,
            });
        }
        restarts += 1;
        tracing::debug!(source = %spec, restarts, "list shifted during the walk; walking again");
    }
}

async fn walk_once(
    client: &TencentClient,
    spec: &SourceSpec,
    page_size: u32,
    blocklist_page_size: u32,
    stop_on_shift: bool,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<Paged, WalkError> {
    let entries = match spec.kind {
        SourceKind::Group => {
            let fetch = |offset| async move {
                let req = GroupBanListRequest {
                    group_id: &spec.id,
                    limit: page_size,
                    offset,
                };
                let r: GroupBanListResponse = client
                    .call(Api::GroupBanList, &req)
                    .await
                    .map_err(|e| api_err(spec, e))?;
                let next = r
                    .next_offset
                    .ok_or_else(|| malformed(Api::GroupBanList, "NextOffset missing"))?;
                let items = r.banned.unwrap_or_default();
                Ok(Page {
                    items: checked(
                        Api::GroupBanList,
                        items.into_iter().map(|b| (b.account, b.banned_until)),
                    )?,
                    next,
                })
            };
            page_through(MAX_BAN_ENTRIES, page_size, stop_on_shift, fetch, progress).await?
        }
        SourceKind::Room => {
            let fetch = |offset| async move {
                let req = RoomBanListRequest {
                    room_id: &spec.id,
                    offset,
                    limit: page_size,
                };
                let r: RoomBanListResponse = client
                    .call(Api::RoomBanList, &req)
                    .await
                    .map_err(|e| api_err(spec, e))?;
                let (items, next) = match r.response {
                    Some(body) => (body.banned, body.next_offset),
                    None => (r.banned, r.next_offset),
                };
                let next = next.ok_or_else(|| malformed(Api::RoomBanList, "NextOffset missing"))?;
                let items = items.unwrap_or_default();
                Ok(Page {
                    items: checked(
                        Api::RoomBanList,
                        items.into_iter().map(|b| (b.account, b.banned_until)),
                    )?,
                    next,
                })
            };
            page_through(MAX_BAN_ENTRIES, page_size, stop_on_shift, fetch, progress).await?
        }
        SourceKind::Blocklist => {
            let fetch = |start| async move {
                let req = BlockListRequest {
                    from_account: &spec.id,
                    start_index: start,
                    max_limited: blocklist_page_size,
                    last_sequence: 0,
                };
                let r: BlockListResponse = client
                    .call(Api::BlockList, &req)
                    .await
                    .map_err(|e| api_err(spec, e))?;
                let next = r
                    .start_index
                    .ok_or_else(|| malformed(Api::BlockList, "StartIndex missing"))?;
                let items = r.items.unwrap_or_default();
                Ok(Page {
                    items: checked(
                        Api::BlockList,
                        items.into_iter().map(|b| (b.account, b.added_at)),
                    )?,
                    next,
                })
            };
            page_through(
                MAX_BLOCK_ENTRIES,
                blocklist_page_size,
                stop_on_shift,
                fetch,
                progress,
            )
            .await?
        }
    };
    Ok(entries)
}

/// The outcome of a batched ban or unban: accounts per batch, and the
/// first error if a batch failed (later batches are still tried).
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub applied: Vec<String>,
    pub failed: Vec<(String, ApiError)>,
}

/// What to do to a room's or group's members.
#[derive(Debug, Clone, Copy)]
pub enum Moderation<'a> {
    /// Ban for `duration` seconds, giving `reason` (cut to the API's limit).
    Ban {
        duration: u64,
        reason: &'a str,
    },
    Unban,
}

/// Bans or unbans `accounts` at `target`, 20 a request. `once`: each
/// request is sent once (see [`TencentClient::call_once`]).
pub async fn moderate(
    client: &TencentClient,
    target: &SourceSpec,
    accounts: &[String],
    what: Moderation<'_>,
    once: bool,
) -> BatchOutcome {
    let mut out = BatchOutcome::default();
    for chunk in accounts.chunks(MAX_ACCOUNTS_PER_BAN) {
        let (api, body) = match (target.kind, what) {
            (SourceKind::Room, Moderation::Ban { duration, reason }) => (
                Api::RoomBan,
                serde_json::to_value(RoomBanRequest {
                    room_id: &target.id,
                    members: chunk,
                    reason: truncate_utf8(reason, MAX_REASON_BYTES),
                    duration,
                }),
            ),
            (SourceKind::Group, Moderation::Ban { duration, reason }) => (
                Api::GroupBan,
                serde_json::to_value(GroupBanRequest {
                    group_id: &target.id,
                    members: chunk,
                    duration,
                    description: truncate_utf8(reason, MAX_DESCRIPTION_BYTES),
                }),
            ),
            (SourceKind::Room, Moderation::Unban) => (
                Api::RoomUnban,
                serde_json::to_value(RoomUnbanRequest {
                    room_id: &target.id,
                    members: chunk,
                }),
            ),
            (SourceKind::Group, Moderation::Unban) => (
                Api::GroupUnban,
                serde_json::to_value(GroupUnbanRequest {
                    group_id: &target.id,
                    members: chunk,
                }),
            ),
            (SourceKind::Blocklist, _) => {
                unreachable!("blocklists hold no bans; configuration refuses them")
            }
        };
        let body = body.expect("request bodies serialize");
        let result = if once {
            client.call_once::<PlainResponse>(api, &body).await
        } else {
            client.call::<PlainResponse>(api, &body).await
        };
        record(&mut out, chunk, result.map(|_| ()));
    }
    out
}

/// Bans `accounts` in a room or group for `duration` seconds, 20 a request.
pub async fn ban(
    client: &TencentClient,
    target: &SourceSpec,
    accounts: &[String],
    duration: u64,
    reason: &str,
) -> BatchOutcome {
    moderate(
        client,
        target,
        accounts,
        Moderation::Ban { duration, reason },
        false,
    )
    .await
}

/// Lifts bans of `accounts` in a room or group, 20 a request.
pub async fn unban(
    client: &TencentClient,
    target: &SourceSpec,
    accounts: &[String],
) -> BatchOutcome {
    moderate(client, target, accounts, Moderation::Unban, false).await
}

fn record(out: &mut BatchOutcome, chunk: &[String], result: Result<(), ApiError>) {
    match result {
        Ok(()) => out.applied.extend_from_slice(chunk),
        Err(e) => out
            .failed
            .extend(chunk.iter().map(|a| (a.clone(), e.clone()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_rules() {
        assert!(check_page(0, 100, 100, 100).is_ok());
        assert!(check_page(0, 100, 5, 0).is_ok());
        assert!(check_page(100, 100, 0, 0).is_ok());
        assert!(
            check_page(0, 100, 101, 0).is_err(),
            "page larger than asked"
        );
        assert!(
            check_page(100, 100, 100, 100).is_err(),
            "cursor did not advance"
        );
        assert!(check_page(100, 100, 100, 50).is_err(), "cursor went back");
        assert!(check_page(0, 100, 10, 20).is_err(), "cursor skips entries");
        assert!(
            check_page(0, 100, 10, 5).is_ok(),
            "overlap is allowed, deduplicated later"
        );
    }

    /// Pages `list` with `page`-sized pages; `lie_at`: offsets whose answer
    /// says the list ended there (a truncated answer). Returns the walk and
    /// the offsets asked for.
    fn pager(list: &[&str], page: u32, lie_at: &[u64]) -> (Paged, Vec<u64>) {
        let asked = std::sync::Mutex::new(Vec::new());
        let fetch = |offset: u64| {
            asked.lock().unwrap().push(offset);
            let start = (offset as usize).min(list.len());
            let end = (start + page as usize).min(list.len());
            let items = list[start..end].iter().map(|a| Entry::new(*a, 1)).collect();
            let next = if end < list.len() && !lie_at.contains(&offset) {
                end as u64
            } else {
                0
            };
            async move { Ok(Page { items, next }) }
        };
        let paged = futures::executor::block_on(page_through(1000, page, true, fetch, &mut |_| {}))
            .unwrap();
        (paged, asked.into_inner().unwrap())
    }

    #[test]
    fn a_full_last_page_is_confirmed_by_reading_past_it() {
        let list: Vec<String> = (0..20).map(|i| format!("e{i:02}")).collect();
        let list: Vec<&str> = list.iter().map(String::as_str).collect();
        // One full page that ends the list: a request from its last entry
        // proves the end. (Later pages start one early, so 19 entries end
        // on a full second page.)
        let (p, asked) = pager(&list[..10], 10, &[]);
        assert_eq!((p.entries.len(), asked), (10, vec![0, 9]));
        let (p, asked) = pager(&list[..19], 10, &[]);
        assert_eq!((p.entries.len(), asked), (19, vec![0, 9, 18]));
        assert!(!p.shifted);
        // A last page that is not full: no extra request.
        let (p, asked) = pager(&list[..15], 10, &[]);
        assert_eq!((p.entries.len(), asked), (15, vec![0, 9]));
        // A truncated answer ("the end" after a full first page) is not
        // taken for the end: the walk reads on and sees the whole list.
        let (p, asked) = pager(&list, 10, &[0]);
        assert_eq!(p.entries.len(), 20, "{asked:?}");
        assert!(!p.shifted);
    }

    #[test]
    fn dedupe_keeps_last_sighting() {
        let v = vec![Entry::new("a", 1), Entry::new("b", 2), Entry::new("a", 3)];
        let mut d = dedupe(v);
        d.sort();
        assert_eq!(d, vec![Entry::new("a", 3), Entry::new("b", 2)]);
    }
}
