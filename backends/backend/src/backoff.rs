//! Retry delays shared by every backend and the core.

use std::time::Duration;

/// Exponential backoff with jitter: each delay is drawn from `[d/2, d]` where
/// `d` doubles from `start` up to `cap`, so many clients retrying after one
/// outage do not all knock at once.
#[derive(Debug, Clone)]
pub struct Backoff {
    start: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `start` and never above `cap`.
    pub fn new(start: Duration, cap: Duration) -> Backoff {
        Backoff {
            start,
            cap,
            next: start.min(cap),
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(self.cap);
        let half = base / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.start.min(self.cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let d1 = b.next_delay();
        assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
        let _ = b.next_delay();
        for _ in 0..5 {
            let d = b.next_delay();
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
