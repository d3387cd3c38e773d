//! Wall-clock time behind a handle, so that tests can step it.
//!
//! Ban ends, expiry, event stamps and retry times all compare against the
//! wall clock, and operators' clocks do get stepped (NTP corrections, a VM
//! resumed from a snapshot). Every engine reads the time through a [`Clock`]:
//! the daemon uses [`Clock::system`]; tests use [`Clock::adjustable`] and
//! step it forwards and backwards to check that no step invents or loses an
//! event. Monotonic waiting (timers, pacing) stays on tokio's clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// A source of wall-clock time: the system's, plus an offset when adjustable.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds added to the system time; `None` for the plain system clock.
    offset_ms: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// The system clock plus an offset that [`Clock::step`] moves (shared by
    /// every clone).
    pub fn adjustable() -> Clock {
        Clock {
            offset_ms: Some(Arc::new(AtomicI64::new(0))),
        }
    }

    /// Unix time in milliseconds.
    pub fn now_ms(&self) -> i64 {
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        system
            + self
                .offset_ms
                .as_ref()
                .map_or(0, |o| o.load(Ordering::Relaxed))
    }

    /// Unix time in whole seconds (rounded down).
    pub fn now_s(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Steps an adjustable clock by `delta_ms` (negative: backwards).
    ///
    /// # Panics
    /// On the system clock, which only the operating system may step.
    pub fn step(&self, delta_ms: i64) {
        self.offset_ms
            .as_ref()
            .expect("only an adjustable clock can be stepped")
            .fetch_add(delta_ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_move_every_clone() {
        let c = Clock::adjustable();
        let other = c.clone();
        let before = other.now_ms();
        c.step(-3_600_000);
        let after = other.now_ms();
        assert!(before - after >= 3_599_000 && before - after <= 3_601_000);
        assert_eq!(c.now_s(), c.now_ms().div_euclid(1000));
    }

    #[test]
    #[should_panic(expected = "adjustable")]
    fn the_system_clock_cannot_be_stepped() {
        Clock::system().step(1);
    }
}
