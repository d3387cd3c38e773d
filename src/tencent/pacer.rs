//! Even pacing of calls to one API.
//!
//! The vendor counts calls in a rolling one-second window. A token bucket
//! with a burst would send up to twice the limit inside one second after an
//! idle spell, so this hands out evenly spaced slots instead. The spacing
//! is a little wider than 1/rate so that network jitter, which can bunch
//! arrivals at the server, never pushes a window over the limit.
//!
//! Slots also fall on a grid shared by every pacer of one client (multiples
//! of the interval from one origin). APIs paced at the same rate then send at
//! the same instants: one timer wake-up sends a request to each, instead of
//! one wake-up per API. On a 2-core machine a wake-up costs more CPU than
//! parsing a page, so this cuts the daemon's CPU per walked entry.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Fraction of the configured rate actually used: leaves ~30 ms of jitter
/// room in each one-second window while keeping utilisation above 95%.
pub const HEADROOM: f64 = 0.97;

#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    /// Where this pacer's grid starts; shared by the pacers of one client.
    origin: Instant,
    next: Mutex<Instant>,
}

impl Pacer {
    pub fn new(per_second: u32) -> Self {
        Self::on_grid_from(per_second, Instant::now())
    }

    /// A pacer whose slots fall on multiples of its interval after `origin`.
    pub fn on_grid_from(per_second: u32, origin: Instant) -> Self {
        Pacer {
            interval: Duration::from_secs_f64(1.0 / (per_second as f64 * HEADROOM)),
            origin,
            next: Mutex::new(origin),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Reserves the next free slot and returns when it is due. Slots are
    /// handed out in order, so concurrent callers queue fairly.
    pub fn reserve(&self) -> Instant {
        let mut next = self.next.lock().unwrap();
        let slot = self.on_grid((*next).max(Instant::now()));
        *next = slot + self.interval;
        slot
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

    pub async fn acquire(&self) {
        tokio::time::sleep_until(self.reserve()).await;
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

    #[tokio::test(start_paused = true)]
    async fn hold_delays_later_slots() {
        let p = Pacer::new(100);
        p.hold(Duration::from_secs(2));
        assert!(p.reserve() - Instant::now() >= Duration::from_secs(2));
    }
}
