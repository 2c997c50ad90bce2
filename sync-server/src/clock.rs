//! The wall clock the server's timestamps start from, injectable so tests can make it step back.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock milliseconds since the epoch. It may step backwards; the store never
/// lets that show in a timestamp (see [`next_timestamp`]).
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time in milliseconds since the epoch.
    fn now_ms(&self) -> i64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}

/// The default clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// The timestamp of the next change to an entity whose last one was `last`: the wall clock when it
/// is ahead, else `last + 1`. Strictly increasing whatever the wall clock does, and close to epoch
/// milliseconds whenever the write rate stays under one push per millisecond.
pub fn next_timestamp(wall_ms: i64, last: i64) -> i64 {
    wall_ms.max(last.saturating_add(1))
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_increase_even_when_the_wall_clock_steps_back() {
        assert_eq!(next_timestamp(1000, 0), 1000);
        assert_eq!(next_timestamp(1000, 1000), 1001);
        assert_eq!(next_timestamp(500, 1001), 1002);
        assert_eq!(next_timestamp(5000, 1002), 5000);
    }
}
