//! How fast the model drains its queue, for an honest `Retry-After` on overload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Exponentially weighted seconds of model time per input.
pub(super) struct DrainRate {
    seconds_per_input: AtomicU64,
}

impl Default for DrainRate {
    fn default() -> Self {
        Self {
            seconds_per_input: AtomicU64::new(0.01f64.to_bits()),
        }
    }
}

impl DrainRate {
    pub(super) fn record(&self, inputs: usize, took: Duration) {
        if inputs == 0 {
            return;
        }
        let sample = took.as_secs_f64() / inputs as f64;
        let old = f64::from_bits(self.seconds_per_input.load(Ordering::Relaxed));
        let new = 0.8 * old + 0.2 * sample;
        self.seconds_per_input
            .store(new.to_bits(), Ordering::Relaxed);
    }

    /// Whole seconds until `pending` inputs are drained, at least 1 and at most 60.
    pub(super) fn retry_after(&self, pending: usize) -> u64 {
        let per_input = f64::from_bits(self.seconds_per_input.load(Ordering::Relaxed));
        ((pending as f64 * per_input).ceil() as u64).clamp(1, 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_follows_the_measured_rate() {
        let rate = DrainRate::default();
        for _ in 0..50 {
            rate.record(10, Duration::from_millis(500));
        }
        assert_eq!(rate.retry_after(100), 5);
        assert_eq!(rate.retry_after(0), 1);
        assert_eq!(rate.retry_after(1_000_000), 60);
    }
}
