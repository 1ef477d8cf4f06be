//! How long a broken watch waits before it tries again.
//!
//! kube-runtime's default backs off to 30 s; a gateway whose allow-list is
//! frozen during an outage should catch up within seconds of the API server
//! coming back, and a single watcher per gateway costs the server little.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::runtime::utils::Backoff;

/// The first retry.
const FIRST_DELAY: Duration = Duration::from_millis(500);
/// The longest wait between retries, and so the longest catch-up delay.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Doubling delays from [`FIRST_DELAY`] to [`MAX_DELAY`], each shortened by
/// up to a quarter so that replicas restarted together do not retry in step.
/// Reset by kube-runtime whenever the watch delivers an event.
#[derive(Default)]
pub struct WatchBackoff {
    failures: u32,
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let full = FIRST_DELAY.saturating_mul(1 << self.failures.min(16)).min(MAX_DELAY);
        self.failures = self.failures.saturating_add(1);
        // Sub-second clock noise is jitter enough, without a random source.
        let noise = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let jitter = full.mul_f64((noise % 1000) as f64 / 4000.0);
        Some(full - jitter)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next().unwrap()).collect();
        assert!(delays[0] <= FIRST_DELAY && delays[0] >= FIRST_DELAY * 3 / 4);
        assert!(delays[1] > FIRST_DELAY && delays[1] <= FIRST_DELAY * 2);
        assert!(delays.iter().all(|d| *d <= MAX_DELAY));
        assert!(delays[7] >= MAX_DELAY * 3 / 4);
        backoff.reset();
        assert!(backoff.next().unwrap() <= FIRST_DELAY);
    }
}
