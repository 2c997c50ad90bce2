//! Properties of the server's timestamps ([`next_timestamp`]) over a wall clock that does what
//! real ones do: steps back (an NTP correction), repeats a reading (several pushes in one
//! millisecond), stalls, jumps forward (a suspended machine waking up).
//!
//! Failures are not persisted to files: a real one is kept as a named unit test instead, which
//! stays meaningful when a strategy changes (a stored seed silently stops reproducing then).

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::*;

fn config() -> Config {
    Config { failure_persistence: None, ..Config::default() }
}

/// A wall clock that gives these readings in turn, one per push, as the store asks for them.
struct Scripted {
    readings: Vec<i64>,
    next: AtomicUsize,
}

impl Clock for Scripted {
    fn now_ms(&self) -> i64 {
        self.readings[self.next.fetch_add(1, Ordering::Relaxed)]
    }
}

/// Readings from around today's epoch milliseconds, each a step from the one before.
fn readings() -> impl Strategy<Value = Vec<i64>> {
    let step = prop_oneof![
        3 => Just(0i64),
        3 => 1..3i64,
        2 => -5..0i64,
        1 => -100_000..-5i64,
        1 => 1_000..10_000_000i64,
    ];
    (1_700_000_000_000..1_800_000_000_000i64, prop::collection::vec(step, 1..64)).prop_map(|(start, steps)| {
        steps
            .into_iter()
            .scan(start, |wall, step| {
                *wall += step;
                Some(*wall)
            })
            .collect()
    })
}

/// The timestamps of successive pushes to one scope whose last timestamp was `last`, each taken
/// as the store takes it: one wall-clock reading, then [`next_timestamp`].
fn timestamps(readings: &[i64], last: i64) -> Vec<(i64, i64)> {
    let clock = Scripted { readings: readings.to_vec(), next: AtomicUsize::new(0) };
    let mut last = last;
    readings
        .iter()
        .map(|_| {
            let wall = clock.now_ms();
            last = next_timestamp(wall, last);
            (wall, last)
        })
        .collect()
}

/// A previous timestamp near the readings: behind, at or ahead of the first one.
fn last_before(readings: &[i64], offset: i64) -> i64 {
    (readings[0] + offset).max(0)
}

proptest! {
    #![proptest_config(config())]

    /// "Successive pushes to an entity get strictly increasing values, never equal and never going
    /// backwards, even when the wall clock steps back."
    #[test]
    fn timestamps_strictly_increase_whatever_the_wall_clock_does(readings in readings(), offset in -1_000..1_000i64) {
        let last = last_before(&readings, offset);
        let mut previous = last;
        for (wall, at) in timestamps(&readings, last) {
            prop_assert!(at > previous, "{} after {} (wall {})", at, previous, wall);
            previous = at;
        }
    }

    /// A timestamp is never behind the wall clock it was taken from, so timestamps read as epoch
    /// milliseconds and a pull's cursor is comparable with the time a client knows.
    #[test]
    fn a_timestamp_is_never_behind_the_wall_clock(readings in readings(), offset in -1_000..1_000i64) {
        for (wall, at) in timestamps(&readings, last_before(&readings, offset)) {
            prop_assert!(at >= wall, "{} behind the wall clock {}", at, wall);
        }
    }

    /// Nor is it further ahead than it must be: the least value after the last timestamp and not
    /// behind the wall clock. So it is the wall clock itself whenever that is ahead, and after a
    /// step back it rejoins the wall clock as soon as the wall clock passes it.
    #[test]
    fn a_timestamp_runs_ahead_of_the_wall_clock_only_as_far_as_it_must(
        readings in readings(),
        offset in -1_000..1_000i64,
    ) {
        let mut previous = last_before(&readings, offset);
        for (wall, at) in timestamps(&readings, previous) {
            prop_assert!(at - 1 <= previous || at - 1 < wall, "{} after {} with the wall clock at {}", at, previous, wall);
            previous = at;
        }
    }
}
