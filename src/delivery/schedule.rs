//! The retry schedule: when to try a failed delivery again, or give up.

use std::time::Duration;

use rand::Rng;

/// The most a `Retry-After` may push an attempt back.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// After `attempts` attempts have failed (the one just made included),
/// the delay before the next, or `None` when the delivery is dead.
/// `Retry-After`, when the receiver sent one, takes the schedule's place.
pub fn next_delay(
    schedule: &[Duration],
    attempts: u32,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Option<Duration> {
    let base = *schedule.get(attempts.checked_sub(1)? as usize)?;
    if let Some(ra) = retry_after {
        return Some(ra.min(MAX_RETRY_AFTER));
    }
    Some(base.mul_f64(jitter))
}

/// How long to wait before a delivery stored as due at `next_attempt_ms`
/// (after its last attempt at `last_attempt_ms`, if any) at wall time
/// `now_ms`. Never longer than the delay it was given: if the wall clock
/// stepped back since, the stored time lies further ahead than intended,
/// and waiting for it would hold the delivery back by the whole step.
pub fn wait_for(next_attempt_ms: i64, last_attempt_ms: Option<i64>, now_ms: i64) -> Duration {
    let remaining = next_attempt_ms - now_ms;
    if remaining <= 0 {
        return Duration::ZERO;
    }
    let intended = last_attempt_ms.map_or(0, |l| (next_attempt_ms - l).max(0));
    Duration::from_millis(remaining.min(intended) as u64)
}

/// A factor in [0.8, 1.2): the ±20% jitter that keeps retries of many
/// deliveries from arriving in lockstep.
pub fn jitter() -> f64 {
    rand::thread_rng().gen_range(0.8..1.2)
}

/// Parses `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - now;
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::defaults::RETRY_SCHEDULE as DEFAULT_RETRY_SCHEDULE;

    fn schedule() -> Vec<Duration> {
        DEFAULT_RETRY_SCHEDULE
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect()
    }

    #[test]
    fn follows_the_contract_then_dies() {
        let s = schedule();
        let expect = [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400];
        for (i, secs) in expect.iter().enumerate() {
            assert_eq!(
                next_delay(&s, i as u32 + 1, None, 1.0),
                Some(Duration::from_secs(*secs))
            );
        }
        assert_eq!(
            next_delay(&s, 10, None, 1.0),
            None,
            "ten attempts, then dead"
        );
        assert_eq!(next_delay(&s, 0, None, 1.0), None);
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_spreads() {
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for _ in 0..1000 {
            let j = jitter();
            lo = lo.min(j);
            hi = hi.max(j);
            assert!((0.8..1.2).contains(&j));
            let d = next_delay(&schedule(), 2, None, j).unwrap();
            assert!(d >= Duration::from_secs(240) && d < Duration::from_secs(360));
        }
        // 1000 draws from [0.8, 1.2) cover most of it: retries do not move
        // in lockstep (the chance this fails by luck is below 1e-80).
        assert!(lo < 0.85 && hi > 1.15, "jitter spread only {lo}..{hi}");
    }

    #[test]
    fn retry_after_takes_the_place_of_the_schedule_but_not_of_death() {
        let s = schedule();
        assert_eq!(
            next_delay(&s, 1, Some(Duration::from_secs(120)), 1.0),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            next_delay(&s, 1, Some(Duration::from_secs(10 * 86400)), 1.0),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(next_delay(&s, 10, Some(Duration::from_secs(1)), 1.0), None);
    }

    #[test]
    fn a_clock_stepped_back_never_stretches_a_wait() {
        // Due in 5 s, as scheduled 5 s after an attempt.
        assert_eq!(wait_for(10_000, Some(5_000), 5_000), Duration::from_secs(5));
        // The clock stepped back an hour: still at most the 5 s intended.
        assert_eq!(
            wait_for(10_000, Some(5_000), 5_000 - 3_600_000),
            Duration::from_secs(5)
        );
        // Never attempted (due when committed), clock stepped back: now.
        assert_eq!(wait_for(10_000, None, 9_000), Duration::ZERO);
        // Stepped forward, or simply late: now.
        assert_eq!(wait_for(10_000, Some(5_000), 20_000), Duration::ZERO);
        // Partway through its delay: the rest of it.
        assert_eq!(wait_for(10_000, Some(5_000), 8_000), Duration::from_secs(2));
    }

    #[test]
    fn parses_both_retry_after_forms() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
