//! Even pacing of calls to one API.
//!
//! The vendor counts calls in a rolling one-second window. A token bucket
//! with a burst would send up to twice the limit inside one second after an
//! idle spell, so this hands out evenly spaced slots instead. The spacing
//! is a little wider than 1/rate so that network jitter, which can bunch
//! arrivals at the server, never pushes a window over the limit.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Fraction of the configured rate actually used: leaves ~30 ms of jitter
/// room in each one-second window while keeping utilisation above 95%.
pub const HEADROOM: f64 = 0.97;

#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    pub fn new(per_second: u32) -> Self {
        Pacer {
            interval: Duration::from_secs_f64(1.0 / (per_second as f64 * HEADROOM)),
            next: Mutex::new(Instant::now()),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Reserves the next free slot and returns when it is due. Slots are
    /// handed out in order, so concurrent callers queue fairly.
    pub fn reserve(&self) -> Instant {
        let mut next = self.next.lock().unwrap();
        let now = Instant::now();
        let slot = (*next).max(now);
        *next = slot + self.interval;
        slot
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
    async fn hold_delays_later_slots() {
        let p = Pacer::new(100);
        p.hold(Duration::from_secs(2));
        assert!(p.reserve() - Instant::now() >= Duration::from_secs(2));
    }
}
