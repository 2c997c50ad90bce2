//! Slowing down guessing: failed authentications are counted per client address over a window.
//! From the fourth failure on, each answer waits longer (doubling from 100 ms, at most 2 s); at
//! `max_failures` the address is answered `429` until its window has passed. A success clears
//! the address. The table is bounded: when full, addresses whose window has passed are dropped
//! first, then the oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::AuthError;

/// Addresses tracked at most.
const MAX_ADDRESSES: usize = 10_000;
/// Failures answered without delay.
const FREE_FAILURES: u32 = 3;
/// The first delay, doubled for each further failure ...
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// ... up to this.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Failed authentications per client address.
pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailureLimiter {
    /// At most `max_failures` failures per address within `window`.
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self { max_failures, window, failures: Mutex::new(HashMap::new()) }
    }

    /// Refuses an address that has failed `max_failures` times in its window.
    pub fn check(&self, address: IpAddr) -> Result<(), AuthError> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(&address) {
            Some(&(count, since)) if count >= self.max_failures && since.elapsed() < self.window => {
                let left = self.window.saturating_sub(since.elapsed());
                Err(AuthError::TooManyFailures { retry_after_secs: left.as_secs().max(1) })
            }
            _ => Ok(()),
        }
    }

    /// Authenticates a request from `address` with `attempt`: refused at once while the address
    /// is over its limit; a success clears its count; refused or missing credentials count, and
    /// are answered after the delay the count calls for.
    pub async fn guard(
        &self,
        address: IpAddr,
        attempt: impl std::future::Future<Output = Result<super::Identity, AuthError>>,
    ) -> Result<super::Identity, AuthError> {
        self.check(address)?;
        let result = attempt.await;
        match &result {
            Ok(_) => self.succeeded(address),
            Err(AuthError::Refused(_) | AuthError::Missing { .. }) => {
                let delay = self.failed(address);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
            Err(_) => {}
        }
        result
    }

    /// Counts a failure; returns how long to wait before answering it.
    pub fn failed(&self, address: IpAddr) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&address) {
            let window = self.window;
            failures.retain(|_, (_, since)| since.elapsed() < window);
            if failures.len() >= MAX_ADDRESSES
                && let Some(oldest) = failures.iter().min_by_key(|(_, (_, since))| *since).map(|(a, _)| *a)
            {
                failures.remove(&oldest);
            }
        }
        let entry = failures.entry(address).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        match entry.0.checked_sub(FREE_FAILURES + 1) {
            Some(extra) => FIRST_DELAY.saturating_mul(2u32.saturating_pow(extra)).min(MAX_DELAY),
            None => Duration::ZERO,
        }
    }

    /// Clears an address after a success.
    pub fn succeeded(&self, address: IpAddr) {
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).remove(&address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_slow_down_then_refuse_and_a_success_clears() {
        let limiter = FailureLimiter::new(6, Duration::from_secs(60));
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let delays: Vec<Duration> = (0..6).map(|_| limiter.failed(a)).collect();
        assert_eq!(delays[..3], [Duration::ZERO; 3]);
        assert_eq!(delays[3..], [Duration::from_millis(100), Duration::from_millis(200), Duration::from_millis(400)]);
        assert!(
            matches!(limiter.check(a), Err(AuthError::TooManyFailures { retry_after_secs }) if retry_after_secs <= 60)
        );
        assert!(limiter.check(b).is_ok(), "another address is not affected");
        limiter.succeeded(a);
        assert!(limiter.check(a).is_ok());
    }
}
