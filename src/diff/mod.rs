//! The diff: from what is stored about a source and one complete walk of
//! its list, the changes to emit and the new stored state. Pure code, no
//! I/O, so it is tested exhaustively.
//!
//! Per stored entry the state machine is:
//!
//! ```text
//!            seen                       missing once        missing twice
//!  (new) ───────────▶ Present ───────────────▶ AbsentOnce ───────────▶ (gone: *.lifted / block.removed)
//!                      ▲  │ end passed              │ seen again (no event, or *.updated)
//!                      │  ▼ (ban.expired)           ▼
//!  seen with another ─ Expired ◀─────────────── Present
//!  end: ban.added      │ missing: dropped silently; seen with the same end
//!                      │ (the vendor lags, the clock stepped back): nothing
//! ```
//!
//! An absence is never reported on the strength of one walk: offsets shift
//! when a list changes mid-walk, so a still-banned account can be skipped.

use std::collections::HashMap;

use crate::event::{Change, EventType};
use crate::source::{Entry, SourceKind};

/// What a new source's first walk does (`sync.initial`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initial {
    /// A new source's first walk records what is there and emits nothing.
    Baseline,
    /// A new source's first walk emits `*.added` for every entry.
    Emit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryState {
    /// On the list at the last complete walk.
    Present,
    /// Missing from the last complete walk; one more miss confirms it.
    AbsentOnce,
    /// A ban whose end has passed and been reported (`ban.expired`).
    Expired,
}

impl EntryState {
    pub fn code(self) -> i64 {
        match self {
            EntryState::Present => 0,
            EntryState::AbsentOnce => 1,
            EntryState::Expired => 2,
        }
    }

    pub fn from_code(c: i64) -> EntryState {
        match c {
            1 => EntryState::AbsentOnce,
            2 => EntryState::Expired,
            _ => EntryState::Present,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub account: String,
    pub value: i64,
    pub state: EntryState,
}

impl StoredEntry {
    /// The end time the expiry timer watches: set for bans still running.
    pub fn expires_at(&self, kind: SourceKind) -> Option<i64> {
        (kind.is_ban_list() && self.state != EntryState::Expired).then_some(self.value)
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct DiffOutcome {
    /// In a fixed order (by account), so equal inputs give equal logs.
    pub changes: Vec<Change>,
    pub upserts: Vec<StoredEntry>,
    pub deletes: Vec<String>,
}

impl DiffOutcome {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.upserts.is_empty() && self.deletes.is_empty()
    }
}

/// Diffs one complete walk against the stored entries.
///
/// * `now` is Unix seconds (ban ends are compared with it); `now_ms` stamps
///   detected changes.
/// * `first_walk` with [`Initial::Baseline`] records the list and emits
///   nothing.
pub fn diff(
    kind: SourceKind,
    stored: &[StoredEntry],
    walked: &[Entry],
    now_ms: i64,
    first_walk: bool,
    initial: Initial,
) -> DiffOutcome {
    diff_walk(kind, stored, walked, now_ms, first_walk, initial, true)
}

/// The changes a baselined first walk still reports: the entries a
/// callback named (an enrolling blocklist callback's pairs) that the walk
/// shows, as `*.added`, each with a value (its block time) no earlier than
/// the time given with it: a callback is about a block just made, not one
/// from long before. Ended bans are not bans; accounts the walk does not
/// show are not reported (they were undone before the walk).
pub fn announced(
    kind: SourceKind,
    walked: &[Entry],
    accounts: &[(String, i64)],
    now_ms: i64,
) -> Vec<Change> {
    let now = now_ms.div_euclid(1000);
    walked
        .iter()
        .filter(|w| {
            accounts
                .iter()
                .any(|(a, since)| *a == w.account && (kind.is_ban_list() || w.value >= *since))
        })
        .filter(|w| !(kind.is_ban_list() && w.value <= now))
        .map(|w| Change::entry(EventType::added(kind), &w.account, w.value, None, now_ms))
        .collect()
}

/// [`diff`], for a walk that may not be trusted about absences: when the
/// list kept shifting under the walk (`trust_absences` false), what it saw
/// is applied, but nothing it did not see moves toward a lift or removal.
pub fn diff_walk(
    kind: SourceKind,
    stored: &[StoredEntry],
    walked: &[Entry],
    now_ms: i64,
    first_walk: bool,
    initial: Initial,
    trust_absences: bool,
) -> DiffOutcome {
    let now = now_ms.div_euclid(1000);
    let bans = kind.is_ban_list();
    let ended = |until: i64| bans && until <= now;
    let emit_new = !(first_walk && initial == Initial::Baseline);
    let mut by_account: HashMap<&str, &StoredEntry> =
        stored.iter().map(|s| (s.account.as_str(), s)).collect();
    let mut out = DiffOutcome::default();
    let present = |account: &str, value: i64, state| StoredEntry {
        account: account.into(),
        value,
        state,
    };

    for w in walked {
        let account = w.account.as_str();
        match by_account.remove(account) {
            None => {
                // A ban whose end has already passed is not a ban any more.
                if ended(w.value) {
                    continue;
                }
                if emit_new {
                    out.changes.push(Change::entry(
                        EventType::added(kind),
                        account,
                        w.value,
                        None,
                        now_ms,
                    ));
                }
                out.upserts
                    .push(present(account, w.value, EntryState::Present));
            }
            Some(s) if s.state == EntryState::Expired => {
                if w.value == s.value {
                    // The ban already reported ended, still listed (the
                    // vendor lags, or the clock stepped back): the same
                    // ban, not a new one.
                } else if !ended(w.value) {
                    // Banned again after the previous ban ended.
                    out.changes.push(Change::entry(
                        EventType::BanAdded,
                        account,
                        w.value,
                        None,
                        now_ms,
                    ));
                    out.upserts
                        .push(present(account, w.value, EntryState::Present));
                } else if s.value != w.value {
                    out.upserts
                        .push(present(account, w.value, EntryState::Expired));
                }
            }
            Some(s) => {
                if s.value != w.value {
                    out.changes.push(Change::entry(
                        EventType::updated(kind),
                        account,
                        w.value,
                        Some(s.value),
                        now_ms,
                    ));
                    if ended(w.value) {
                        // Shortened to an end already past: over now.
                        out.changes.push(Change::expired(account, w.value));
                        out.upserts
                            .push(present(account, w.value, EntryState::Expired));
                    } else {
                        out.upserts
                            .push(present(account, w.value, EntryState::Present));
                    }
                } else if ended(w.value) {
                    // The expiry timer has not fired yet; report it once, here.
                    out.changes.push(Change::expired(account, w.value));
                    out.upserts
                        .push(present(account, w.value, EntryState::Expired));
                } else if s.state == EntryState::AbsentOnce {
                    // It was skipped by a shifting walk, not removed.
                    out.upserts
                        .push(present(account, w.value, EntryState::Present));
                }
            }
        }
    }

    // What the walk did not see.
    for s in by_account.into_values() {
        let account = s.account.as_str();
        match s.state {
            // A shifting walk may have skipped it: keep knowing it ended, or
            // the next walk that sees it would take it for a new ban.
            EntryState::Expired if !trust_absences => {}
            EntryState::Expired => out.deletes.push(s.account.clone()),
            _ if ended(s.value) => {
                out.changes.push(Change::expired(account, s.value));
                if trust_absences {
                    out.deletes.push(s.account.clone());
                } else {
                    out.upserts
                        .push(present(account, s.value, EntryState::Expired));
                }
            }
            // A shifting walk may have skipped it: no step toward removal.
            EntryState::Present | EntryState::AbsentOnce if !trust_absences => {}
            EntryState::Present => {
                out.upserts
                    .push(present(account, s.value, EntryState::AbsentOnce))
            }
            EntryState::AbsentOnce => {
                out.changes.push(Change::entry(
                    EventType::removed(kind),
                    account,
                    s.value,
                    None,
                    now_ms,
                ));
                out.deletes.push(s.account.clone());
            }
        }
    }

    out.changes
        .sort_by(|a, b| a.account.cmp(&b.account).then(a.kind.cmp(&b.kind)));
    out.upserts.sort_by(|a, b| a.account.cmp(&b.account));
    out.deletes.sort();
    out
}

/// Order-independent fingerprint of a walked list.
///
/// The store keeps the fingerprint of what it *holds* for a source (see
/// [`digest_pairs`]), never of a walk: a walk whose fingerprint equals it
/// sees exactly what is stored, so (with no absence awaiting confirmation)
/// its diff is empty and the stored entries need not be read. A walk that
/// skipped an entry (the list shifted under it) leaves that entry stored,
/// so the next walk without it cannot look unchanged.
pub fn digest(entries: &[Entry]) -> [u8; 24] {
    digest_pairs(entries.iter().map(|e| (e.account.as_str(), e.value)))
}

/// [`digest`] of (account, value) pairs, in any order.
pub fn digest_pairs<'a>(entries: impl Iterator<Item = (&'a str, i64)>) -> [u8; 24] {
    let (mut sum, mut mix, mut n) = (0u64, 0u64, 0u64);
    for (account, value) in entries {
        n += 1;
        let x = entry_hash(account, value);
        sum = sum.wrapping_add(x);
        mix = mix.wrapping_add(
            x.rotate_left(29).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD6E8_FEB8_6659_FD93,
        );
    }
    let mut d = [0u8; 24];
    d[..8].copy_from_slice(&sum.to_le_bytes());
    d[8..16].copy_from_slice(&mix.to_le_bytes());
    d[16..].copy_from_slice(&n.to_le_bytes());
    d
}

/// The entries stored after `outcome` is applied to `stored`.
pub fn stored_after<'a>(
    stored: &'a [StoredEntry],
    outcome: &'a DiffOutcome,
) -> impl Iterator<Item = (&'a str, i64)> {
    let changed: HashMap<&str, i64> = outcome
        .upserts
        .iter()
        .map(|u| (u.account.as_str(), u.value))
        .collect();
    let deleted: std::collections::HashSet<&str> =
        outcome.deletes.iter().map(String::as_str).collect();
    let kept = stored
        .iter()
        .filter(move |s| {
            !deleted.contains(s.account.as_str()) && !changed.contains_key(s.account.as_str())
        })
        .map(|s| (s.account.as_str(), s.value));
    kept.chain(
        outcome
            .upserts
            .iter()
            .map(|u| (u.account.as_str(), u.value)),
    )
}

/// A fast 64-bit hash of one entry (multiply-rotate over 8-byte words,
/// then a full avalanche). It guards against accidental equality, not an
/// adversary: the lists come from the vendor.
fn entry_hash(account: &str, value: i64) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (account.len() as u64).wrapping_mul(K) ^ (value as u64);
    for chunk in account.as_bytes().chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
    }
    h ^= (value as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    // splitmix64 finaliser
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests;
