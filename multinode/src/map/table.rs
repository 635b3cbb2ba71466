//! One node's copy of the map: every key's latest write, merged by version,
//! with the count of keys that hold a value kept as writes come.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

use super::entry::Entry;

#[derive(Debug)]
pub(crate) struct Table<K, V> {
    entries: HashMap<K, Entry<V>>,
    /// Entries that hold a value (removals not counted).
    values: usize,
}

impl<K: Hash + Eq, V> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            entries: HashMap::new(),
            values: 0,
        }
    }
}

impl<K, V> Table<K, V> {
    /// How many keys hold a value (those expired since the last sweep included).
    pub fn len(&self) -> usize {
        self.values
    }
}

impl<K: Hash + Eq, V> Table<K, V> {
    /// Takes `entry` for `key` if it is later than what is there; whether it
    /// was taken.
    pub fn merge(&mut self, key: K, entry: Entry<V>) -> bool {
        let adds = usize::from(entry.value.is_some());
        match self.entries.get_mut(&key) {
            Some(old) if !entry.wins_over(old) => false,
            Some(old) => {
                self.values = self.values + adds - usize::from(old.value.is_some());
                *old = entry;
                true
            }
            None => {
                self.values += adds;
                self.entries.insert(key, entry);
                true
            }
        }
    }

    /// `key`'s value at `now` (microseconds since the epoch), the clock read
    /// only for an entry that expires.
    pub fn get<Q>(&self, key: &Q, now: impl FnOnce() -> u64) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entry = self.entries.get(key)?;
        match entry.expires {
            0 => entry.value.as_ref(),
            _ => entry.live(now()),
        }
    }

    /// Whether a value for `key` may be written under a bound of `max` keys:
    /// a key that holds one already always may.
    pub fn has_room(&self, key: &K, max: usize) -> bool {
        self.values < max || self.entries.get(key).is_some_and(|e| e.value.is_some())
    }

    /// Forgets what expired by `now`: values past their time, and removals
    /// past the time they are kept.
    pub fn sweep(&mut self, now: u64) -> usize {
        let before = self.entries.len();
        let mut values = 0;
        self.entries.retain(|_, entry| {
            let keep = !entry.expired(now);
            values += usize::from(keep && entry.value.is_some());
            keep
        });
        self.values = values;
        before - self.entries.len()
    }

    /// Every entry, removals included, for a snapshot.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &Entry<V>)> {
        self.entries.iter()
    }

    /// Every key that holds a value at `now`, with it.
    pub fn live(&self, now: u64) -> impl Iterator<Item = (&K, &V)> {
        self.entries
            .iter()
            .filter_map(move |(k, e)| Some((k, e.live(now)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::version::Version;
    use super::*;
    use proptest::prelude::*;

    fn entry(value: Option<u32>, micros: u64, node: u32) -> Entry<u32> {
        Entry {
            value,
            version: Version { micros, node },
            expires: 0,
        }
    }

    #[test]
    fn a_later_write_replaces_and_an_earlier_one_does_not() {
        let mut table = Table::default();
        assert!(table.merge("k", entry(Some(1), 10, 1)));
        assert!(!table.merge("k", entry(Some(2), 9, 2)));
        assert_eq!(table.get(&"k", || 0), Some(&1));
        assert!(table.merge("k", entry(None, 11, 1)));
        assert_eq!(table.get(&"k", || 0), None);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn the_bound_counts_values_and_lets_a_held_key_be_rewritten() {
        let mut table = Table::default();
        table.merge(1, entry(Some(1), 1, 0));
        table.merge(2, entry(None, 1, 0));
        assert!(!table.has_room(&3, 1));
        assert!(table.has_room(&1, 1));
        assert!(table.has_room(&2, 2));
    }

    #[test]
    fn a_sweep_forgets_what_expired() {
        let mut table = Table::default();
        let mut soon = entry(Some(1), 1, 0);
        soon.expires = 100;
        table.merge(1, soon);
        table.merge(2, entry(Some(2), 1, 0));
        assert_eq!(table.sweep(99), 0);
        assert_eq!(table.sweep(100), 1);
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(&1, || 100), None);
    }

    proptest! {
        /// Copies that get the same writes in any order hold the same thing.
        #[test]
        fn copies_converge_whatever_the_order(
            writes in prop::collection::vec((0u8..8, prop::option::of(0u32..100), 0u64..50, 0u32..4), 0..64),
            seed in any::<u64>(),
        ) {
            // Every write has a version of its own, as the clocks make them.
            let writes: Vec<_> = writes
                .into_iter()
                .enumerate()
                .map(|(i, (k, v, t, n))| (k, v, t * 64 + i as u64, n))
                .collect();
            let mut a = Table::default();
            for (k, v, t, n) in &writes {
                a.merge(*k, entry(*v, *t, *n));
            }
            let mut shuffled = writes.clone();
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut b = Table::default();
            for (k, v, t, n) in &shuffled {
                b.merge(*k, entry(*v, *t, *n));
            }
            let mut left: Vec<_> = a.live(0).map(|(k, v)| (*k, *v)).collect();
            let mut right: Vec<_> = b.live(0).map(|(k, v)| (*k, *v)).collect();
            left.sort();
            right.sort();
            prop_assert_eq!(left, right);
            prop_assert_eq!(a.len(), b.len());
        }
    }
}
