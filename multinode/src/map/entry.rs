//! One key's state in every copy of the map: its value (or that it was
//! removed), the version of the write that made it, and when it expires.

use serde::{Deserialize, Serialize};

use super::version::Version;

/// A write to one key, as it is kept and as it travels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry<V> {
    /// `None`: removed. The removal is kept for a while, so that an older
    /// write still on its way does not bring the key back.
    pub value: Option<V>,
    pub version: Version,
    /// Wall time in microseconds after which the entry is gone; 0: never.
    pub expires: u64,
}

impl<V> Entry<V> {
    /// Whether this entry replaces `old`: the later version wins.
    pub fn wins_over(&self, old: &Entry<V>) -> bool {
        self.version > old.version
    }

    /// Whether it is past its time at `now`.
    pub fn expired(&self, now: u64) -> bool {
        self.expires != 0 && self.expires <= now
    }

    /// The value, if the key holds one at `now`.
    pub fn live(&self, now: u64) -> Option<&V> {
        self.value.as_ref().filter(|_| !self.expired(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: Option<u8>, micros: u64, node: u32, expires: u64) -> Entry<u8> {
        Entry {
            value,
            version: Version { micros, node },
            expires,
        }
    }

    #[test]
    fn the_later_version_wins_whatever_it_holds() {
        let set = entry(Some(1), 10, 1, 0);
        let removed = entry(None, 11, 2, 0);
        assert!(removed.wins_over(&set));
        assert!(!set.wins_over(&removed));
        assert!(!set.wins_over(&set));
    }

    #[test]
    fn an_expired_entry_holds_nothing() {
        let e = entry(Some(1), 10, 1, 100);
        assert_eq!(e.live(99), Some(&1));
        assert_eq!(e.live(100), None);
        assert_eq!(entry(Some(1), 10, 1, 0).live(u64::MAX), Some(&1));
    }
}
