//! When an event is tried next, and what a receiver's answer means for it. Pure logic.

use std::time::Duration;

use crate::store::outbox::After;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A `2xx`.
    Delivered,
    /// `410 Gone`: the receiver wants no more events; the subscription is disabled.
    Gone,
    /// Any other status, or no answer; with the delay a `429` or `503` asked for, if any.
    Failed { retry_after: Option<Duration> },
}

impl Answer {
    /// The meaning of an HTTP status and its `Retry-After` header (seconds; an HTTP date is not
    /// honoured and counts as absent).
    pub fn of_status(status: u16, retry_after: Option<&str>) -> Self {
        match status {
            200..=299 => Self::Delivered,
            410 => Self::Gone,
            429 | 503 => Self::Failed {
                retry_after: retry_after.and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs),
            },
            _ => Self::Failed { retry_after: None },
        }
    }
}

/// What becomes of an event whose attempt number `attempt` (1 for the first) failed, on the
/// schedule `schedule_secs` (one delay per attempt; the first is the delay after the commit),
/// with `jitter` (a fraction) drawn from `random` (in `[-1, 1]`): the next attempt `now_ms` plus
/// that attempt's delay (or `retry_after`, if longer), or dead after the last attempt.
pub fn after_failure(
    schedule_secs: &[f64],
    attempt: usize,
    jitter: f64,
    random: f64,
    retry_after: Option<Duration>,
    now_ms: i64,
) -> After {
    let Some(delay) = schedule_secs.get(attempt) else { return After::Dead };
    let jittered = (delay * (1.0 + jitter * random.clamp(-1.0, 1.0))).max(0.0);
    let wait = retry_after.map_or(jittered, |r| jittered.max(r.as_secs_f64()));
    After::RetryAt(now_ms + (wait * 1000.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: [f64; 8] = [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0];

    #[test]
    fn failures_follow_the_schedule_then_the_event_is_dead() {
        assert_eq!(after_failure(&SCHEDULE, 1, 0.0, 0.0, None, 1_000), After::RetryAt(6_000));
        assert_eq!(after_failure(&SCHEDULE, 2, 0.0, 0.0, None, 1_000), After::RetryAt(301_000));
        assert_eq!(after_failure(&SCHEDULE, 7, 0.0, 0.0, None, 0), After::RetryAt(36_000_000));
        assert_eq!(after_failure(&SCHEDULE, 8, 0.0, 0.0, None, 0), After::Dead, "8 attempts in all");
    }

    #[test]
    fn jitter_moves_a_delay_by_at_most_its_fraction() {
        assert_eq!(after_failure(&SCHEDULE, 2, 0.1, 1.0, None, 0), After::RetryAt(330_000));
        assert_eq!(after_failure(&SCHEDULE, 2, 0.1, -1.0, None, 0), After::RetryAt(270_000));
        assert_eq!(after_failure(&SCHEDULE, 2, 0.1, 7.0, None, 0), After::RetryAt(330_000), "clamped");
    }

    #[test]
    fn retry_after_is_honoured_when_longer() {
        let asked = Some(Duration::from_secs(120));
        assert_eq!(after_failure(&SCHEDULE, 1, 0.0, 0.0, asked, 0), After::RetryAt(120_000));
        assert_eq!(after_failure(&SCHEDULE, 3, 0.0, 0.0, asked, 0), After::RetryAt(1_800_000));
    }

    #[test]
    fn only_2xx_delivers_and_410_is_gone() {
        assert_eq!(Answer::of_status(204, None), Answer::Delivered);
        assert_eq!(Answer::of_status(301, None), Answer::Failed { retry_after: None });
        assert_eq!(Answer::of_status(410, None), Answer::Gone);
        assert_eq!(Answer::of_status(429, Some("7")), Answer::Failed { retry_after: Some(Duration::from_secs(7)) });
        assert_eq!(Answer::of_status(503, Some("Wed, 21 Oct 2015 07:28:00 GMT")), Answer::Failed { retry_after: None });
        assert_eq!(Answer::of_status(500, Some("7")), Answer::Failed { retry_after: None });
    }
}
