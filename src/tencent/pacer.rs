//! Even pacing of calls to one API.
//!
//! The vendor counts calls in a rolling one-second window. A token bucket
//! with a burst would send up to twice the limit inside one second after an
//! idle spell, so this hands out evenly spaced slots instead. The spacing
//! is a little wider than 1/rate so that network jitter, which can bunch
//! arrivals at the server, never pushes a window over the limit.
//!
//! A slot is reserved before its caller sleeps; a caller woken late (the
//! process stalled) would send together with the callers due next, and the
//! rolling second holding that bunch would see more than the limit. So the
//! last second of actual sends is kept too, and no send goes out while it
//! already holds the budget (see `send_budget`).
//!
//! Slots also fall on a grid shared by every pacer of one client (multiples
//! of the interval from one origin). APIs paced at the same rate then send at
//! the same instants: one timer wake-up sends a request to each, instead of
//! one wake-up per API. On a 2-core machine a wake-up costs more CPU than
//! parsing a page, so this cuts the daemon's CPU per walked entry.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Fraction of the configured rate actually used: leaves ~30 ms of jitter
/// room in each one-second window while keeping utilisation above 95%.
pub const HEADROOM: f64 = 0.97;

/// The vendor's window.
const WINDOW: Duration = Duration::from_secs(1);

/// The rate slots are handed out at: HEADROOM of the limit, but at least
/// one and a half slots under it. At low limits a percentage leaves less
/// than one request of room: at 25/s, 97% puts 24 or 25 slots in a rolling
/// second, and arrivals bunched by a few milliseconds of jitter make 26
/// (measured: one rate-limit answer in a ten-minute benchmark on a busy
/// machine). Below 3/s, 90%.
pub fn paced_rate(per_second: u32) -> f64 {
    let r = f64::from(per_second.max(1));
    if r >= 3.0 {
        (r * HEADROOM).min(r - 1.5)
    } else {
        r * 0.9
    }
}

/// Most sends let into any rolling second: halfway between the paced rate
/// and the limit. Even pacing alone fills a second to HEADROOM × rate, give
/// or take a timer tick of jitter; a budget of exactly that would make the
/// guard hold (and wake again) ordinary sends, costing CPU for nothing. The
/// guard is for bunches after a stall, and still keeps half the margin.
fn send_budget(per_second: u32) -> usize {
    (((paced_rate(per_second) + f64::from(per_second)) / 2.0) as usize).max(1)
}

#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    /// Where this pacer's grid starts; shared by the pacers of one client.
    origin: Instant,
    next: Mutex<Instant>,
    /// Most sends in any rolling second.
    budget: usize,
    /// When the sends of the last second went out, oldest first.
    sent: Mutex<VecDeque<Instant>>,
    /// Until when the rate is halved (`slow_down`).
    slowed_until: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer with a grid of its own (the client shares one among its APIs).
    #[cfg(test)]
    fn new(per_second: u32) -> Self {
        Self::on_grid_from(per_second, Instant::now())
    }

    /// A pacer whose slots fall on multiples of its interval after `origin`.
    pub fn on_grid_from(per_second: u32, origin: Instant) -> Self {
        Pacer {
            interval: Duration::from_secs_f64(1.0 / paced_rate(per_second)),
            origin,
            next: Mutex::new(origin),
            budget: send_budget(per_second),
            sent: Mutex::new(VecDeque::new()),
            slowed_until: Mutex::new(None),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Reserves the next free slot and returns when it is due. Slots are
    /// handed out in order, so concurrent callers queue fairly.
    pub fn reserve(&self) -> Instant {
        let slowed = self.slowed(Instant::now());
        let mut next = self.next.lock().unwrap();
        let slot = self.on_grid((*next).max(Instant::now()));
        *next = slot
            + if slowed {
                self.interval * 2
            } else {
                self.interval
            };
        slot
    }

    /// Halves the rate for `period` from now (a later call extends it).
    pub fn slow_down(&self, period: Duration) {
        let until = Instant::now() + period;
        let mut s = self.slowed_until.lock().unwrap();
        *s = Some(s.map_or(until, |u| u.max(until)));
    }

    /// Calls a second this pacer hands out at `now`.
    pub fn rate(&self, now: Instant) -> f64 {
        let r = 1.0 / self.interval.as_secs_f64();
        if self.slowed(now) { r / 2.0 } else { r }
    }

    /// Whether the rate is halved at `now`.
    pub fn slowed(&self, now: Instant) -> bool {
        self.slowed_until.lock().unwrap().is_some_and(|u| now < u)
    }

    /// The first grid point at or after `t`.
    fn on_grid(&self, t: Instant) -> Instant {
        let step = self.interval.as_nanos();
        let steps = t
            .saturating_duration_since(self.origin)
            .as_nanos()
            .div_ceil(step);
        self.origin + Duration::from_nanos((steps * step) as u64)
    }

    /// Waits for a slot, then for room in the rolling second of sends.
    pub async fn acquire(&self) {
        tokio::time::sleep_until(self.reserve()).await;
        while let Some(room_at) = self.record_send() {
            tokio::time::sleep_until(room_at).await;
        }
    }

    /// Records a send now if the last second has room for it; otherwise
    /// returns when it will.
    fn record_send(&self) -> Option<Instant> {
        let mut sent = self.sent.lock().unwrap();
        let now = Instant::now();
        while sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            sent.pop_front();
        }
        let budget = if self.slowed(now) {
            (self.budget / 2).max(1)
        } else {
            self.budget
        };
        if sent.len() < budget {
            sent.push_back(now);
            None
        } else {
            sent.front().map(|t| *t + WINDOW)
        }
    }

    /// Pushes every later slot back by `pause` (the vendor said slow down).
    pub fn hold(&self, pause: Duration) {
        let mut next = self.next.lock().unwrap();
        let until = Instant::now() + pause;
        if *next < until {
            *next = until;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slots_are_evenly_spaced_without_burst() {
        let p = Pacer::new(200);
        let start = Instant::now();
        let slots: Vec<Instant> = (0..401).map(|_| p.reserve()).collect();
        // No one-second window holds more than 200 slots...
        for w in slots.windows(201) {
            assert!(w[200] - w[0] > Duration::from_secs(1));
        }
        // ...and the rate stays above 95% of the limit.
        assert!(slots[400] - start < Duration::from_secs_f64(400.0 / (200.0 * 0.95)));
    }

    /// At low limits a rolling second of even slots keeps a whole request
    /// of room under the limit; at 200/s the rate is 97% as before.
    #[test]
    fn low_limits_keep_a_request_of_room() {
        for limit in [3u32, 5, 10, 20, 25, 50, 100, 200, 1000] {
            let p = Pacer::on_grid_from(limit, Instant::now());
            let spacing = p.interval().as_secs_f64();
            // The most slots any one-second window can hold.
            let most = (1.0 / spacing).floor() as u32 + 1;
            assert!(
                most < limit || (most == limit && limit >= 100),
                "{limit}: {most} slots in a second"
            );
            assert!(send_budget(limit) < limit as usize, "{limit}");
        }
        assert!((paced_rate(200) - 194.0).abs() < 1e-9);
        assert!((paced_rate(25) - 23.5).abs() < 1e-9);
        assert!((paced_rate(1) - 0.9).abs() < 1e-9);
        assert_eq!(send_budget(1), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_is_not_banked() {
        let p = Pacer::new(10);
        p.reserve();
        tokio::time::advance(Duration::from_secs(5)).await;
        let a = p.reserve();
        let b = p.reserve();
        assert!(b - a >= Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn pacers_of_one_rate_share_their_slots() {
        let origin = Instant::now();
        let (a, b) = (
            Pacer::on_grid_from(200, origin),
            Pacer::on_grid_from(200, origin),
        );
        a.reserve();
        tokio::time::advance(Duration::from_micros(1700)).await;
        let (sa, sb) = (a.reserve(), b.reserve());
        // b asked later than a's first slot, off the grid; it lands on the
        // same grid point as a's second.
        assert_eq!(sa, sb);
        // Every slot is a whole number of intervals from the shared epoch.
        for _ in 0..50 {
            let s = b.reserve();
            assert_eq!((s - origin).as_nanos() % b.interval().as_nanos(), 0);
        }
    }

    /// Callers hold slots and the process stalls for 200 ms: the callers
    /// whose slots passed wake together, and the ones due after them must
    /// wait until the rolling second has room.
    #[tokio::test(start_paused = true)]
    async fn a_stall_never_bunches_more_than_the_budget_into_one_second() {
        let p = std::sync::Arc::new(Pacer::new(200));
        let sends = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for _ in 0..600 {
            let (p, sends) = (p.clone(), sends.clone());
            tasks.push(tokio::spawn(async move {
                p.acquire().await;
                sends.lock().unwrap().push(Instant::now());
            }));
        }
        // Every task reserves its slot, then the clock jumps past 40 of them.
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_millis(200)).await;
        for t in tasks {
            t.await.unwrap();
        }
        let mut sends = sends.lock().unwrap().clone();
        sends.sort();
        assert_eq!(sends.len(), 600);
        let budget = send_budget(200);
        assert!(budget < 200);
        for (i, t) in sends.iter().enumerate() {
            let in_window = sends[i..].iter().take_while(|s| **s - *t < WINDOW).count();
            assert!(
                in_window <= budget,
                "{in_window} sends in the second after {i}"
            );
        }
        // The stall cost time, not throughput: 600 sends still take about
        // 600 slots (plus the stall), not a second more.
        let span = sends[599] - sends[0];
        assert!(
            span < Duration::from_secs_f64(600.0 / 194.0 + 0.3),
            "{span:?}"
        );
    }

    /// `Alert.RequestOverLimit`: half the rate for five minutes, then the
    /// full rate again (on tokio's paused clock).
    #[tokio::test(start_paused = true)]
    async fn slow_down_halves_the_rate_for_its_period() {
        let p = Pacer::new(100);
        let count_in = |p: &Pacer, d: Duration| {
            let end = Instant::now() + d;
            let mut n = 0;
            while p.reserve() < end {
                n += 1;
            }
            n
        };
        let full = count_in(&p, Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(11)).await;
        p.slow_down(Duration::from_secs(300));
        let slow = count_in(&p, Duration::from_secs(10));
        assert!(
            (full / 2 - 2..=full / 2 + 2).contains(&slow),
            "{full} then {slow}"
        );
        tokio::time::advance(Duration::from_secs(298)).await;
        assert!(p.slowed(Instant::now()), "still within five minutes");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!p.slowed(Instant::now()));
        let _ = p.reserve();
        let again = count_in(&p, Duration::from_secs(10));
        assert!(
            (full - 2..=full + 2).contains(&again),
            "{full} then {again}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn hold_delays_later_slots() {
        let p = Pacer::new(100);
        p.hold(Duration::from_secs(2));
        assert!(p.reserve() - Instant::now() >= Duration::from_secs(2));
    }
}
