//! Which of two writes to one key wins: the later by a hybrid clock (wall
//! time in microseconds, never going back, and moved past every version
//! seen), then the higher node id. Every node decides the same way, so every
//! copy converges whatever order the writes arrive in.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A write's place in the order: compared by `micros`, then `node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct Version {
    pub micros: u64,
    pub node: u32,
}

/// One node's source of versions.
#[derive(Debug)]
pub(crate) struct Clock {
    node: u32,
    last: u64,
}

impl Clock {
    pub fn new(node: usize) -> Self {
        Clock {
            node: node as u32,
            last: 0,
        }
    }

    /// A version later than every one this clock made or saw, at `now`
    /// (microseconds since the epoch) when the wall clock is ahead.
    pub fn next(&mut self, now: u64) -> Version {
        self.last = now.max(self.last + 1);
        Version {
            micros: self.last,
            node: self.node,
        }
    }

    /// A write made elsewhere: this clock's next versions come after it, so
    /// that a write made after reading another wins over it even if the wall
    /// clocks differ.
    pub fn saw(&mut self, version: Version) {
        self.last = self.last.max(version.micros);
    }
}

/// The wall clock in microseconds since the epoch.
pub(crate) fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The wall clock within a few milliseconds, for a read's expiry check: a
/// fraction of the precise clock's cost on the read path.
pub(crate) fn coarse_now_micros() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    match clock_gettime(ClockId::CLOCK_REALTIME_COARSE) {
        Ok(t) => t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000,
        Err(_) => now_micros(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_never_go_back_even_when_the_wall_clock_does() {
        let mut clock = Clock::new(3);
        let a = clock.next(1_000);
        let b = clock.next(900);
        assert!(b > a);
        assert_eq!(b.micros, 1_001);
    }

    #[test]
    fn a_write_after_seeing_another_wins_over_it() {
        let mut clock = Clock::new(1);
        let seen = Version {
            micros: 5_000,
            node: 2,
        };
        clock.saw(seen);
        assert!(clock.next(10) > seen);
    }

    #[test]
    fn equal_times_are_ordered_by_node() {
        let a = Version { micros: 7, node: 1 };
        let b = Version { micros: 7, node: 2 };
        assert!(b > a);
    }
}
