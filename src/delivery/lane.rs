//! One lane's bookkeeping: which owed deliveries of a (webhook, source)
//! pair are in memory, and whether the store holds more. Pure: the
//! dispatcher does the I/O and tells the lane what happened.
//!
//! The rule that keeps a lane from skipping a row it owes is a low-water
//! mark, `taken_to`: every owed delivery of the lane with an id at or below
//! it is in `buf` or already finished. Loads read the store strictly above
//! it, in id order. A delivery announced by the writer is taken straight
//! into `buf` only when the writer says the lane's previous owed delivery
//! is at or below `taken_to` (nothing of the lane lies between); otherwise
//! the lane only learns that the store holds more, and reads it in order.
//! Rows added by other processes (`deliveries retry`, `replay`) get ids
//! above every row committed before them, so announcements of later rows
//! name them as previous and the lane reads them first.

use std::collections::VecDeque;

pub use crate::store::Announced;
use crate::store::OwedDelivery;

/// Deliveries a lane holds in memory; the rest wait in the store.
pub const LANE_BUFFER: usize = 64;

#[derive(Debug, Default)]
pub struct Lane {
    /// The lane's next deliveries, in id order.
    pub buf: VecDeque<OwedDelivery>,
    /// Every owed delivery of this lane with an id at or below this is in
    /// `buf` or finished.
    taken_to: i64,
    /// The store may hold owed deliveries above `taken_to` not in `buf`.
    more_in_store: bool,
    /// A load from the store is under way.
    pub loading: bool,
    /// An attempt is under way.
    pub attempting: bool,
    /// Announcements that arrived while a load was under way.
    held: Vec<Announced>,
    /// Waiting until then (a retry time, or a read after a failed one).
    pub waiting_until: Option<tokio::time::Instant>,
    /// When the head may be tried, on the monotonic clock (set when it
    /// becomes the head, or after an attempt).
    pub head_due: Option<tokio::time::Instant>,
    /// In its webhook's ready queue.
    pub queued: bool,
}

impl Lane {
    /// Something to send, or to read from the store.
    pub fn has_work(&self) -> bool {
        !self.buf.is_empty() || self.more_in_store
    }

    pub fn busy(&self) -> bool {
        self.loading || self.attempting
    }

    /// The id a load reads above.
    pub fn load_after(&self) -> i64 {
        self.taken_to
    }

    /// A delivery committed by this process's writer.
    pub fn announce(&mut self, a: Announced) {
        if self.loading {
            // The load may or may not see it; decide once it is back.
            self.held.push(a);
            return;
        }
        self.take(a);
    }

    fn take(&mut self, a: Announced) {
        let d = a.delivery;
        if d.id <= self.taken_to {
            return; // already in buf or finished
        }
        let contiguous = a.prev_owed.is_none_or(|p| p <= self.taken_to);
        if !self.more_in_store && contiguous && self.buf.len() < LANE_BUFFER {
            self.taken_to = d.id;
            self.buf.push_back(d);
        } else {
            self.more_in_store = true;
        }
    }

    /// A load read `rows` (ids above `load_after`, in order, at most
    /// `LANE_BUFFER`).
    pub fn loaded(&mut self, rows: Vec<OwedDelivery>) {
        self.loading = false;
        self.more_in_store = rows.len() >= LANE_BUFFER;
        for d in rows {
            debug_assert!(d.id > self.taken_to, "loads read above the mark");
            self.taken_to = self.taken_to.max(d.id);
            self.buf.push_back(d);
        }
        for a in std::mem::take(&mut self.held) {
            self.take(a);
        }
    }

    /// A load failed: nothing it would have read is dropped.
    pub fn load_failed(&mut self) {
        self.loading = false;
        self.more_in_store = true;
        for a in std::mem::take(&mut self.held) {
            self.take(a);
        }
    }

    /// A rescan found owed deliveries of this lane up to `max_id`.
    pub fn store_has_up_to(&mut self, max_id: i64) {
        if max_id > self.taken_to {
            self.more_in_store = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    fn owed(id: i64) -> OwedDelivery {
        OwedDelivery {
            id,
            webhook: Arc::from("h"),
            source_id: 1,
            event_id: Arc::from(format!("evt_{id}")),
            body: Arc::from("{}"),
            attempts: 0,
            next_attempt_ms: 0,
            last_attempt_ms: None,
            committed_ms: 0,
        }
    }

    /// What happens to one lane, in some order.
    #[derive(Debug, Clone)]
    enum Step {
        /// This process commits a row and announces it.
        Commit,
        /// Another process commits a row (no announcement).
        Foreign,
        /// A rescan reads the lane's highest owed id.
        Rescan,
        /// A load starts (if none is under way and `buf` is empty).
        StartLoad,
        /// The load under way answers, or fails. `late`: it read the store
        /// just before answering rather than when it started.
        FinishLoad { fail: bool, late: bool },
        /// The head is delivered (or dies).
        Finish,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::Commit),
            1 => Just(Step::Foreign),
            1 => Just(Step::Rescan),
            2 => Just(Step::StartLoad),
            2 => (any::<bool>(), any::<bool>()).prop_map(|(fail, late)| Step::FinishLoad { fail, late }),
            3 => Just(Step::Finish),
        ]
    }

    /// Drives the lane against a model store; at every step the lane may
    /// only hold the lowest owed rows in order, and once steps end every
    /// owed row is sent, in id order, without a restart.
    fn run(steps: &[Step]) -> Result<(), TestCaseError> {
        let mut store: BTreeSet<i64> = BTreeSet::new(); // owed rows
        let mut next_id = 0;
        let mut lane = Lane::default();
        let mut load: Option<Vec<OwedDelivery>> = None; // what the load read
        let mut sent = Vec::new();
        let finish = |lane: &mut Lane, store: &mut BTreeSet<i64>, sent: &mut Vec<i64>| {
            if let Some(d) = lane.buf.pop_front() {
                store.remove(&d.id);
                sent.push(d.id);
            }
        };
        for s in steps {
            match s {
                Step::Commit => {
                    next_id += 1;
                    let prev = store.iter().next_back().copied();
                    store.insert(next_id);
                    lane.announce(Announced {
                        delivery: owed(next_id),
                        prev_owed: prev,
                    });
                }
                Step::Foreign => {
                    next_id += 1;
                    store.insert(next_id);
                }
                Step::Rescan => {
                    if let Some(max) = store.iter().next_back() {
                        lane.store_has_up_to(*max);
                    }
                }
                Step::StartLoad => {
                    if !lane.loading && lane.buf.is_empty() && lane.has_work() {
                        lane.loading = true;
                        let after = lane.load_after();
                        load = Some(
                            store
                                .range(after + 1..)
                                .take(LANE_BUFFER)
                                .map(|id| owed(*id))
                                .collect(),
                        );
                    }
                }
                Step::FinishLoad { fail, late } => {
                    if let Some(mut rows) = load.take() {
                        if *late {
                            rows = store
                                .range(lane.load_after() + 1..)
                                .take(LANE_BUFFER)
                                .map(|id| owed(*id))
                                .collect();
                        }
                        if *fail {
                            lane.load_failed();
                        } else {
                            lane.loaded(rows);
                        }
                    }
                }
                Step::Finish => finish(&mut lane, &mut store, &mut sent),
            }
            // The buffer is the lowest owed rows, in order.
            let lowest: Vec<i64> = store.iter().take(lane.buf.len()).copied().collect();
            let buffered: Vec<i64> = lane.buf.iter().map(|d| d.id).collect();
            prop_assert_eq!(&buffered, &lowest, "buffer is not the lane's head");
            prop_assert!(
                lane.buf.len() <= LANE_BUFFER,
                "the buffer outgrew its bound"
            );
        }
        // Quiet: a rescan, then the lane drains everything.
        if let Some(rows) = load.take() {
            lane.loaded(rows);
        }
        if let Some(max) = store.iter().next_back() {
            lane.store_has_up_to(*max);
        }
        for _ in 0..10_000 {
            if !lane.buf.is_empty() {
                finish(&mut lane, &mut store, &mut sent);
            } else if lane.has_work() {
                lane.loading = true;
                let after = lane.load_after();
                let rows = store
                    .range(after + 1..)
                    .take(LANE_BUFFER)
                    .map(|id| owed(*id))
                    .collect();
                lane.loaded(rows);
            } else {
                break;
            }
        }
        prop_assert!(store.is_empty(), "stranded: {:?}", store);
        prop_assert!(!lane.has_work(), "a drained lane keeps asking the store");
        let mut sorted = sent.clone();
        sorted.sort();
        prop_assert_eq!(sent, sorted, "sent out of order");
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn no_owed_row_is_skipped_or_reordered(steps in proptest::collection::vec(step(), 0..200)) {
            run(&steps)?;
        }
    }

    #[test]
    fn a_foreign_row_before_an_announced_one_is_read_first() {
        let mut lane = Lane::default();
        lane.announce(Announced {
            delivery: owed(1),
            prev_owed: None,
        });
        assert_eq!(lane.buf.len(), 1);
        // Row 2 is re-queued by another process, then row 3 is announced.
        lane.announce(Announced {
            delivery: owed(3),
            prev_owed: Some(2),
        });
        assert_eq!(lane.buf.len(), 1, "3 must wait for 2");
        assert!(lane.has_work());
        lane.buf.pop_front();
        lane.loading = true;
        assert_eq!(lane.load_after(), 1);
        lane.loaded(vec![owed(2), owed(3)]);
        let ids: Vec<i64> = lane.buf.iter().map(|d| d.id).collect();
        assert_eq!(ids, [2, 3]);
    }

    #[test]
    fn a_failed_load_keeps_the_lane_owing() {
        let mut lane = Lane::default();
        lane.store_has_up_to(5);
        lane.loading = true;
        lane.announce(Announced {
            delivery: owed(6),
            prev_owed: Some(5),
        });
        lane.load_failed();
        assert!(lane.buf.is_empty());
        assert!(
            lane.has_work(),
            "the rows the load did not read are still owed"
        );
        assert_eq!(lane.load_after(), 0);
    }

    /// Announces rows `from..=to`, each following the one before.
    fn announce_run(lane: &mut Lane, from: i64, to: i64) {
        for id in from..=to {
            lane.announce(Announced {
                delivery: owed(id),
                prev_owed: (id > 1).then_some(id - 1),
            });
        }
    }

    #[test]
    fn the_buffer_holds_at_most_its_bound_and_the_rest_waits_in_the_store() {
        let mut lane = Lane::default();
        announce_run(&mut lane, 1, LANE_BUFFER as i64 + 1);
        assert_eq!(lane.buf.len(), LANE_BUFFER);
        lane.buf.clear();
        assert!(
            lane.has_work(),
            "the row past the bound is read from the store"
        );
    }

    #[test]
    fn a_full_load_means_more_may_wait_and_a_short_one_that_none_does() {
        let mut lane = Lane::default();
        lane.store_has_up_to(100);
        lane.loading = true;
        lane.loaded((1..=LANE_BUFFER as i64).map(owed).collect());
        lane.buf.clear();
        assert!(lane.has_work(), "a full load may have left rows behind");
        lane.loading = true;
        lane.loaded(vec![owed(LANE_BUFFER as i64 + 1)]);
        lane.buf.clear();
        assert!(!lane.has_work(), "a short load read everything");
    }

    #[test]
    fn a_rescan_of_what_the_lane_already_took_asks_for_no_read() {
        let mut lane = Lane::default();
        announce_run(&mut lane, 1, 5);
        lane.buf.clear();
        lane.store_has_up_to(5);
        assert!(!lane.has_work());
        lane.store_has_up_to(6);
        assert!(lane.has_work());
    }

    #[test]
    fn a_failed_load_ends_the_load_and_takes_what_was_held() {
        let mut lane = Lane {
            loading: true,
            ..Lane::default()
        };
        lane.announce(Announced {
            delivery: owed(1),
            prev_owed: None,
        });
        assert!(lane.buf.is_empty(), "held while the load is out");
        lane.load_failed();
        assert!(!lane.loading && !lane.busy());
        assert!(lane.has_work(), "the failed load's rows are still owed");
    }

    #[test]
    fn busy_while_loading_or_attempting() {
        let mut lane = Lane::default();
        assert!(!lane.busy());
        lane.loading = true;
        assert!(lane.busy());
        lane.loading = false;
        lane.attempting = true;
        assert!(lane.busy());
    }
}
