//! Repeated warnings, rate-limited: the first at once, then at most one line a
//! second with how many were held back.

use std::time::{Duration, Instant};

const PERIOD: Duration = Duration::from_secs(1);

/// One kind of repeated warning.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// Whether to log now; `Some(n)`: yes, and `n` like it were held back since
    /// the last line.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < PERIOD => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_with_a_count() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        assert_eq!(throttle.admit(start), Some(0));
        for ms in 1..50 {
            assert_eq!(throttle.admit(start + Duration::from_millis(ms * 10)), None);
        }
        assert_eq!(throttle.admit(start + PERIOD), Some(49));
        assert_eq!(throttle.admit(start + PERIOD * 3), Some(0));
    }
}
