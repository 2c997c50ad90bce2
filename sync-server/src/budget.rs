//! The memory all request bodies may hold at once. Each push reserves its body's size (from
//! `Content-Length` before reading, or chunk by chunk) for as long as it is being handled; when the
//! budget is spent, further pushes are refused at once with `503` instead of being read, so no
//! number of concurrent uploads can exhaust the server's memory.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reservations are counted in units of this many bytes, rounded up.
const UNIT: usize = 1024;

/// The shared budget of body bytes in memory.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    total_units: usize,
    max_bytes: usize,
}

/// The share of the budget one request holds; given back when dropped.
#[derive(Debug, Default)]
pub struct Reservation(Option<OwnedSemaphorePermit>);

/// The budget is spent: the request was not read and may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is holding its maximum of {max_bytes} bytes of request bodies; retry shortly")]
pub struct BudgetSpent {
    /// The configured budget.
    pub max_bytes: usize,
}

impl BodyBudget {
    /// A budget of `max_bytes` (rounded up to whole KiB).
    pub fn new(max_bytes: usize) -> Self {
        let units = max_bytes.div_ceil(UNIT).min(Semaphore::MAX_PERMITS);
        Self { units: Arc::new(Semaphore::new(units)), total_units: units, max_bytes }
    }

    /// The bytes reserved now, in whole KiB per request (what `/metrics` shows).
    pub fn held_bytes(&self) -> usize {
        (self.total_units - self.units.available_permits()) * UNIT
    }

    /// Adds room for `bytes` more to `reservation`, or fails at once when the budget has no room.
    pub fn reserve(&self, reservation: &mut Reservation, bytes: usize) -> Result<(), BudgetSpent> {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        if units == 0 {
            return Ok(());
        }
        let permit = Arc::clone(&self.units)
            .try_acquire_many_owned(units)
            .map_err(|_| BudgetSpent { max_bytes: self.max_bytes })?;
        match &mut reservation.0 {
            Some(held) => held.merge(permit),
            empty => *empty = Some(permit),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_given_back() {
        let budget = BodyBudget::new(10 * 1024);
        let mut first = Reservation::default();
        budget.reserve(&mut first, 6 * 1024).unwrap();
        budget.reserve(&mut first, 1).unwrap(); // rounds up to one unit
        let mut second = Reservation::default();
        assert!(budget.reserve(&mut second, 4 * 1024).is_err());
        budget.reserve(&mut second, 3 * 1024).unwrap();
        assert_eq!(budget.held_bytes(), 10 * 1024);
        drop(first);
        assert_eq!(budget.held_bytes(), 3 * 1024);
        budget.reserve(&mut second, 7 * 1024).unwrap();
        budget.reserve(&mut second, 0).unwrap();
        drop(second);
        assert_eq!(budget.held_bytes(), 0);
    }
}
