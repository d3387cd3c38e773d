use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const NOW: i64 = 1_800_000_000;
const NOW_MS: i64 = NOW * 1000;

fn st(a: &str, v: i64, s: EntryState) -> StoredEntry {
    StoredEntry {
        account: a.into(),
        value: v,
        state: s,
    }
}

fn types(o: &DiffOutcome) -> Vec<(&'static str, String)> {
    o.changes
        .iter()
        .map(|c| (c.kind.as_str(), c.account.clone().unwrap_or_default()))
        .collect()
}

fn apply(stored: &[StoredEntry], o: &DiffOutcome) -> Vec<StoredEntry> {
    let mut m: BTreeMap<String, StoredEntry> = stored
        .iter()
        .map(|s| (s.account.clone(), s.clone()))
        .collect();
    for d in &o.deletes {
        m.remove(d);
    }
    for u in &o.upserts {
        m.insert(u.account.clone(), u.clone());
    }
    m.into_values().collect()
}

#[test]
fn new_entry_is_added_unless_baseline() {
    let w = [Entry::new("u", NOW + 60)];
    let o = diff(SourceKind::Room, &[], &w, NOW_MS, false, Initial::Baseline);
    assert_eq!(types(&o), [("ban.added", "u".into())]);
    let o = diff(SourceKind::Room, &[], &w, NOW_MS, true, Initial::Baseline);
    assert!(o.changes.is_empty());
    assert_eq!(o.upserts, [st("u", NOW + 60, EntryState::Present)]);
    let o = diff(
        SourceKind::Blocklist,
        &[],
        &[Entry::new("b", 5)],
        NOW_MS,
        true,
        Initial::Emit,
    );
    assert_eq!(types(&o), [("block.added", "b".into())]);
}

#[test]
fn changed_end_is_updated_with_previous() {
    let s = [st("u", NOW + 60, EntryState::Present)];
    let o = diff(
        SourceKind::Group,
        &s,
        &[Entry::new("u", NOW + 120)],
        NOW_MS,
        false,
        Initial::Baseline,
    );
    assert_eq!(types(&o), [("ban.updated", "u".into())]);
    assert_eq!(o.changes[0].previous, Some(NOW + 60));
    assert_eq!(o.changes[0].value, Some(NOW + 120));
}

#[test]
fn absence_needs_two_walks() {
    let s = [st("u", NOW + 60, EntryState::Present)];
    let o = diff(SourceKind::Room, &s, &[], NOW_MS, false, Initial::Baseline);
    assert!(o.changes.is_empty(), "one walk never reports an absence");
    let s2 = apply(&s, &o);
    assert_eq!(s2, [st("u", NOW + 60, EntryState::AbsentOnce)]);
    let o = diff(SourceKind::Room, &s2, &[], NOW_MS, false, Initial::Baseline);
    assert_eq!(types(&o), [("ban.lifted", "u".into())]);
    assert!(apply(&s2, &o).is_empty());
}

#[test]
fn skipped_then_seen_again_is_silent() {
    let s = [st("u", NOW + 60, EntryState::AbsentOnce)];
    let o = diff(
        SourceKind::Room,
        &s,
        &[Entry::new("u", NOW + 60)],
        NOW_MS,
        false,
        Initial::Baseline,
    );
    assert!(o.changes.is_empty());
    assert_eq!(o.upserts, [st("u", NOW + 60, EntryState::Present)]);
}

#[test]
fn block_removed_and_updated() {
    let s = [
        st("a", 10, EntryState::AbsentOnce),
        st("b", 20, EntryState::Present),
    ];
    let o = diff(
        SourceKind::Blocklist,
        &s,
        &[Entry::new("b", 30)],
        NOW_MS,
        false,
        Initial::Baseline,
    );
    assert_eq!(
        types(&o),
        [("block.removed", "a".into()), ("block.updated", "b".into())]
    );
}

#[test]
fn blocks_never_expire() {
    let s = [st("a", 10, EntryState::Present)];
    let o = diff(
        SourceKind::Blocklist,
        &s,
        &[Entry::new("a", 10)],
        NOW_MS,
        false,
        Initial::Baseline,
    );
    assert!(o.is_empty());
}

#[test]
fn expiry_found_by_a_walk_is_reported_once_at_its_end() {
    let s = [st("u", NOW - 5, EntryState::Present)];
    let o = diff(
        SourceKind::Room,
        &s,
        &[Entry::new("u", NOW - 5)],
        NOW_MS,
        false,
        Initial::Baseline,
    );
    assert_eq!(types(&o), [("ban.expired", "u".into())]);
    assert_eq!(o.changes[0].at_ms, (NOW - 5) * 1000);
    let s2 = apply(&s, &o);
    let o = diff(
        SourceKind::Room,
        &s2,
        &[Entry::new("u", NOW - 5)],
        NOW_MS,
        false,
        Initial::Baseline,
    );
    assert!(o.is_empty(), "once only");
    let o = diff(SourceKind::Room, &s2, &[], NOW_MS, false, Initial::Baseline);
    assert!(
        o.changes.is_empty(),
        "an expired ban that disappears emits nothing more"
    );
    assert_eq!(o.deletes, ["u"]);
}

#[test]
fn ended_ban_missing_is_expired_not_lifted() {
    let s = [st("u", NOW - 5, EntryState::AbsentOnce)];
    let o = diff(SourceKind::Room, &s, &[], NOW_MS, false, Initial::Baseline);
    assert_eq!(types(&o), [("ban.expired", "u".into())]);
}

#[test]
fn rebanned_after_expiry_is_added() {
    let s = [st("u", NOW - 5, EntryState::Expired)];
    let o = diff(
        SourceKind::Group,
        &s,
        &[Entry::new("u", NOW + 600)],
        NOW_MS,
        false,
        Initial::Baseline,
    );
    assert_eq!(types(&o), [("ban.added", "u".into())]);
}

#[test]
fn already_ended_unknown_ban_is_ignored() {
    let o = diff(
        SourceKind::Room,
        &[],
        &[Entry::new("u", NOW - 1)],
        NOW_MS,
        false,
        Initial::Emit,
    );
    assert!(o.is_empty());
}

#[test]
fn digest_is_order_independent_and_sensitive() {
    let a = [Entry::new("x", 1), Entry::new("y", 2)];
    let b = [Entry::new("y", 2), Entry::new("x", 1)];
    assert_eq!(digest(&a), digest(&b));
    assert_ne!(
        digest(&a),
        digest(&[Entry::new("x", 1), Entry::new("y", 3)])
    );
    assert_ne!(digest(&a), digest(&a[..1]));
    // Accounts that differ only past the first 8 bytes, or by a swapped value.
    assert_ne!(
        digest(&[Entry::new("user-000000001", 5)]),
        digest(&[Entry::new("user-000000002", 5)])
    );
    assert_ne!(
        digest(&[Entry::new("a", 1), Entry::new("b", 2)]),
        digest(&[Entry::new("a", 2), Entry::new("b", 1)])
    );
}

/// What a consumer believes from the events: the running bans/blocks.
fn visible(kind: SourceKind, stored: &[StoredEntry]) -> BTreeMap<String, i64> {
    stored
        .iter()
        .filter(|s| s.state != EntryState::Expired && !(kind.is_ban_list() && s.value <= NOW))
        .map(|s| (s.account.clone(), s.value))
        .collect()
}

fn replay(mut view: BTreeMap<String, i64>, changes: &[Change]) -> BTreeMap<String, i64> {
    for c in changes {
        let a = c.account.clone().unwrap();
        match c.kind {
            EventType::BanAdded | EventType::BlockAdded => {
                assert!(!view.contains_key(&a), "added twice: {a}");
                view.insert(a, c.value.unwrap());
            }
            EventType::BanUpdated | EventType::BlockUpdated => {
                assert_eq!(
                    view.get(&a),
                    c.previous.as_ref(),
                    "updated from a value not held: {a}"
                );
                view.insert(a, c.value.unwrap());
            }
            EventType::BanExpired | EventType::BanLifted | EventType::BlockRemoved => {
                view.remove(&a);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    view
}

fn arb_kind() -> impl Strategy<Value = SourceKind> {
    prop_oneof![
        Just(SourceKind::Room),
        Just(SourceKind::Group),
        Just(SourceKind::Blocklist)
    ]
}

fn arb_state() -> impl Strategy<Value = EntryState> {
    prop_oneof![
        Just(EntryState::Present),
        Just(EntryState::AbsentOnce),
        Just(EntryState::Expired)
    ]
}

/// Small account and value alphabets so that collisions (same account in
/// both lists, equal values, ends around `NOW`) are common.
fn arb_stored() -> impl Strategy<Value = Vec<StoredEntry>> {
    proptest::collection::btree_map(0u8..12, (NOW - 3..NOW + 3, arb_state()), 0..10).prop_map(|m| {
        m.into_iter()
            // An Expired entry's end may be ahead of NOW: the clock stepped
            // back after the ban was reported ended.
            .map(|(a, (v, s))| st(&format!("u{a}"), v, s))
            .collect()
    })
}

fn arb_walk() -> impl Strategy<Value = Vec<Entry>> {
    proptest::collection::btree_map(0u8..12, NOW - 3..NOW + 3, 0..10).prop_map(|m| {
        m.into_iter()
            .map(|(a, v)| Entry::new(format!("u{a}"), v))
            .collect()
    })
}

proptest! {
    #[test]
    fn events_carry_the_old_view_to_the_new(kind in arb_kind(), stored in arb_stored(), walked in arb_walk()) {
        // Blocklists have no Expired state.
        let stored: Vec<_> = stored.into_iter().map(|mut s| {
            if kind == SourceKind::Blocklist && s.state == EntryState::Expired { s.state = EntryState::Present; }
            s
        }).collect();
        // The view before: what earlier events announced. An ended ban whose
        // expiry is still due counts as running until its event.
        let before: BTreeMap<String, i64> = stored.iter()
            .filter(|s| s.state != EntryState::Expired)
            .map(|s| (s.account.clone(), s.value)).collect();
        let o = diff(kind, &stored, &walked, NOW_MS, false, Initial::Baseline);
        let after = apply(&stored, &o);
        prop_assert_eq!(replay(before, &o.changes), visible(kind, &after));
    }

    #[test]
    fn an_unchanged_list_emits_nothing(kind in arb_kind(), walked in arb_walk()) {
        let first = diff(kind, &[], &walked, NOW_MS, false, Initial::Emit);
        let stored = apply(&[], &first);
        let again = diff(kind, &stored, &walked, NOW_MS, false, Initial::Emit);
        prop_assert!(again.changes.is_empty());
        prop_assert!(again.upserts.is_empty() && again.deletes.is_empty());
    }

    #[test]
    fn one_missing_walk_never_removes(kind in arb_kind(), stored in arb_stored(), walked in arb_walk()) {
        let present: Vec<_> = stored.into_iter()
            .filter(|s| s.state == EntryState::Present && s.value > NOW)
            .collect();
        let o = diff(kind, &present, &walked, NOW_MS, false, Initial::Baseline);
        prop_assert!(o.changes.iter().all(|c| !matches!(c.kind, EventType::BanLifted | EventType::BlockRemoved)));
    }

        #[test]
    fn an_ended_ban_seen_again_with_its_end_emits_nothing(kind in arb_kind(), v in NOW - 3..NOW + 3, trust in any::<bool>()) {
        prop_assume!(kind.is_ban_list());
        let stored = [st("u", v, EntryState::Expired)];
        let o = diff_walk(kind, &stored, &[Entry::new("u", v)], NOW_MS, false, Initial::Emit, trust);
        prop_assert!(o.changes.is_empty(), "{:?}", o.changes);
    }

    /// A walk that could not prove absences forgets nothing it did not
    /// see: not even a ban it reported ended, which the vendor may still
    /// list (and the clock may be put back behind its end).
    #[test]
    fn an_untrusted_walk_keeps_everything_it_did_not_see(kind in arb_kind(), stored in arb_stored(), walked in arb_walk()) {
        let o = diff_walk(kind, &stored, &walked, NOW_MS, false, Initial::Emit, false);
        let seen: std::collections::HashSet<&str> = walked.iter().map(|e| e.account.as_str()).collect();
        for s in &stored {
            if !seen.contains(s.account.as_str()) {
                prop_assert!(!o.deletes.contains(&s.account), "dropped {} ({:?}) unseen", s.account, s.state);
            }
        }
        prop_assert!(o.changes.iter().all(|c| !matches!(c.kind, EventType::BanLifted | EventType::BlockRemoved)));
    }

    /// The store skips the diff when a walk's fingerprint equals what it
    /// holds. Whatever walk (stable or not) left the store as it is, such a
    /// walk changes nothing but expiries (which the timer reports anyway).
    #[test]
    fn a_walk_matching_the_stored_fingerprint_changes_nothing(
        kind in arb_kind(), stored in arb_stored(), w1 in arb_walk(), trust in any::<bool>(), seed in any::<u64>()
    ) {
        let stored: Vec<_> = stored.into_iter().map(|mut s| {
            if kind == SourceKind::Blocklist && s.state == EntryState::Expired { s.state = EntryState::Present; }
            s
        }).collect();
        let o1 = diff_walk(kind, &stored, &w1, NOW_MS, false, Initial::Emit, trust);
        let after = apply(&stored, &o1);
        let held = digest_pairs(stored_after(&stored, &o1));
        prop_assert_eq!(held, digest_pairs(after.iter().map(|s| (s.account.as_str(), s.value))));
        prop_assume!(after.iter().all(|s| s.state != EntryState::AbsentOnce));
        // A walk that shows exactly what is held, in some order.
        let mut w2: Vec<Entry> = after.iter().map(|s| Entry::new(s.account.clone(), s.value)).collect();
                let turn = (seed as usize) % w2.len().max(1);
        w2.rotate_left(turn);
        prop_assert_eq!(digest(&w2), held);
        let o2 = diff(kind, &after, &w2, NOW_MS, false, Initial::Emit);
        prop_assert!(o2.changes.iter().all(|c| c.kind == EventType::BanExpired), "{:?}", o2.changes);
    }

    #[test]
    fn diff_is_deterministic_whatever_the_walk_order(kind in arb_kind(), stored in arb_stored(), walked in arb_walk()) {
        let mut rev = walked.clone();
        rev.reverse();
        prop_assert_eq!(
            diff(kind, &stored, &walked, NOW_MS, false, Initial::Emit),
            diff(kind, &stored, &rev, NOW_MS, false, Initial::Emit)
        );
    }
}

/// The codes are stored in SQLite: they must never change.
#[test]
fn entry_state_codes_are_the_stored_ones() {
    for (s, c) in [
        (EntryState::Present, 0),
        (EntryState::AbsentOnce, 1),
        (EntryState::Expired, 2),
    ] {
        assert_eq!(s.code(), c);
        assert_eq!(EntryState::from_code(c), s);
    }
}

#[test]
fn only_bans_still_running_have_an_end_to_watch() {
    for state in [EntryState::Present, EntryState::AbsentOnce] {
        assert_eq!(st("a", 42, state).expires_at(SourceKind::Room), Some(42));
        assert_eq!(st("a", 42, state).expires_at(SourceKind::Group), Some(42));
        assert_eq!(st("a", 42, state).expires_at(SourceKind::Blocklist), None);
    }
    assert_eq!(
        st("a", 42, EntryState::Expired).expires_at(SourceKind::Room),
        None
    );
}

#[test]
fn an_outcome_is_empty_only_with_nothing_to_emit_or_write() {
    assert!(DiffOutcome::default().is_empty());
    let change = DiffOutcome {
        changes: vec![Change::expired("a", NOW)],
        ..DiffOutcome::default()
    };
    let upsert = DiffOutcome {
        upserts: vec![st("a", 1, EntryState::Present)],
        ..DiffOutcome::default()
    };
    let delete = DiffOutcome {
        deletes: vec!["a".into()],
        ..DiffOutcome::default()
    };
    for o in [change, upsert, delete] {
        assert!(!o.is_empty(), "{o:?}");
    }
}

/// The entry hash mixes fully: flipping any one bit of the value or of the
/// account changes about half of the 64 output bits, on average. (A
/// weakened mixer still tells a few examples apart; it shows here.)
#[test]
fn the_entry_hash_avalanches() {
    let mut rng_state = 0x1234_5678_9ABC_DEF0u64;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let (mut flips, mut total) = (0u64, 0u64);
    for _ in 0..300 {
        let value = (next() >> 1) as i64;
        let account = format!("user-{:012}", next() % 1_000_000_000_000);
        let h = entry_hash(&account, value);
        for bit in 0..63 {
            flips += (h ^ entry_hash(&account, value ^ (1 << bit))).count_ones() as u64;
            total += 1;
        }
        let mut bytes = account.clone().into_bytes();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            let other = String::from_utf8(bytes.clone()).unwrap();
            flips += (h ^ entry_hash(&other, value)).count_ones() as u64;
            total += 1;
            bytes[i] ^= 1;
        }
    }
    let mean = flips as f64 / total as f64;
    assert!((30.0..34.0).contains(&mean), "mean bits changed {mean}");
}

/// An ended ban listed again with another end that has also passed: no
/// event, but the store takes the vendor's end (else every later walk
/// would differ from the store's fingerprint and be diffed in full).
#[test]
fn an_ended_ban_listed_with_another_past_end_is_stored_silently() {
    let stored = [st("a", NOW - 100, EntryState::Expired)];
    let w = [Entry::new("a", NOW - 50)];
    let o = diff(
        SourceKind::Room,
        &stored,
        &w,
        NOW_MS,
        false,
        Initial::Baseline,
    );
    assert!(o.changes.is_empty());
    assert_eq!(o.upserts, [st("a", NOW - 50, EntryState::Expired)]);
    let same = [Entry::new("a", NOW - 100)];
    let o = diff(
        SourceKind::Room,
        &stored,
        &same,
        NOW_MS,
        false,
        Initial::Baseline,
    );
    assert!(o.is_empty(), "{o:?}");
}

/// The fingerprint counts its entries (the last 8 bytes), beside the two
/// hash aggregates.
#[test]
fn the_digest_counts_its_entries() {
    assert_eq!(digest(&[])[16..], 0u64.to_le_bytes());
    let three = [Entry::new("a", 1), Entry::new("b", 2), Entry::new("c", 3)];
    assert_eq!(digest(&three)[16..], 3u64.to_le_bytes());
}
