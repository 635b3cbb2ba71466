//! Every worker slot's state, with what the supervisor asks after each event
//! kept up to date from the slots that changed rather than recounted over all
//! of them: which changed since it last published them, the next deadline,
//! and how many are not scaled down. Looking at every slot after each event
//! made a start of N nodes quadratic in N.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::slot::{Current, Slot, SlotState};

/// The slots by number. Every way to change one records it, so the figures
/// below are brought up to date from those alone.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    map: BTreeMap<Slot, SlotState>,
    /// Changed since the last [`Slots::take_changed`].
    changed: BTreeSet<Slot>,
    /// Changed since the figures below were brought up to date.
    stale: BTreeSet<Slot>,
    /// Each slot's next deadline, in order, and by slot.
    dues: BTreeSet<(Instant, Slot)>,
    due_of: BTreeMap<Slot, Instant>,
    /// The slots scaled down (SIGTTOU).
    removed: BTreeSet<Slot>,
}

impl std::ops::Deref for Slots {
    type Target = BTreeMap<Slot, SlotState>;

    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl Slots {
    pub fn get_mut(&mut self, slot: &Slot) -> Option<&mut SlotState> {
        let state = self.map.get_mut(slot)?;
        self.changed.insert(*slot);
        self.stale.insert(*slot);
        Some(state)
    }

    /// `slot`'s state, made (empty) if it has none.
    pub fn get_or_new(&mut self, slot: Slot) -> &mut SlotState {
        self.changed.insert(slot);
        self.stale.insert(slot);
        self.map.entry(slot).or_insert_with(SlotState::new)
    }

    /// Every slot, each recorded as changed.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Slot, &mut SlotState)> {
        self.changed.extend(self.map.keys().copied());
        self.stale.extend(self.map.keys().copied());
        self.map.iter_mut()
    }

    /// The slots changed since the last call.
    pub fn take_changed(&mut self) -> BTreeSet<Slot> {
        std::mem::take(&mut self.changed)
    }

    /// The earliest deadline of any slot ([`SlotState::due`]).
    pub fn next_due(&mut self) -> Option<Instant> {
        self.refresh();
        self.dues.first().map(|(at, _)| *at)
    }

    /// How many slots are not scaled down.
    pub fn not_removed(&mut self) -> usize {
        self.refresh();
        self.map.len() - self.removed.len()
    }

    fn refresh(&mut self) {
        for slot in std::mem::take(&mut self.stale) {
            if let Some(at) = self.due_of.remove(&slot) {
                self.dues.remove(&(at, slot));
            }
            let Some(state) = self.map.get(&slot) else {
                continue;
            };
            if let Some(at) = state.due() {
                self.due_of.insert(slot, at);
                self.dues.insert((at, slot));
            }
            match state.current {
                Current::Removed => self.removed.insert(slot),
                _ => self.removed.remove(&slot),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::supervisor::slot::Process;

    #[test]
    fn every_way_to_change_a_slot_records_it_once_until_taken() {
        let mut slots = Slots::default();
        slots.get_or_new(3);
        slots.get_or_new(5).crashes = 1;
        assert_eq!(slots.take_changed(), BTreeSet::from([3, 5]));
        assert!(slots.take_changed().is_empty());
        assert_eq!(slots[&5].crashes, 1);
        assert!(slots.get_mut(&4).is_none(), "no slot 4");
        slots.get_mut(&5).unwrap().crashes = 2;
        assert_eq!(slots.take_changed(), BTreeSet::from([5]));
        slots.iter_mut().for_each(|(_, state)| state.crashes = 0);
        assert_eq!(slots.take_changed(), BTreeSet::from([3, 5]));
    }

    /// What a slot can be made, by a step of a proptest.
    fn current(kind: u8, at: Instant) -> Current {
        let process = Process::booting(1, at, Duration::ZERO);
        match kind % 5 {
            0 => Current::Booting(process),
            1 => Current::Serving(Process {
                deadline: crate::supervisor::slot::Deadline::None,
                ..process
            }),
            2 => Current::BackingOff { until: at },
            3 => Current::Removed,
            _ => Current::Ended,
        }
    }

    proptest! {
        /// After any changes, through any of the ways to make them, the next
        /// deadline and the count are those of every slot looked at afresh.
        #[test]
        fn the_figures_are_those_of_every_slot(
            steps in proptest::collection::vec((0usize..6, 0u8..5, 0u64..100, 0u8..3, any::<bool>()), 1..60)
        ) {
            let start = Instant::now();
            let mut slots = Slots::default();
            for (slot, kind, ms, how, look) in steps {
                let new = current(kind, start + Duration::from_millis(ms));
                match how {
                    0 => slots.get_or_new(slot).current = new,
                    1 => match slots.get_mut(&slot) {
                        Some(state) => state.current = new,
                        None => continue,
                    },
                    _ => slots.iter_mut().filter(|(s, _)| **s == slot).for_each(|(_, state)| state.current = new.clone()),
                }
                if look {
                    let due = slots.values().filter_map(SlotState::due).min();
                    let removed = slots.values().filter(|s| matches!(s.current, Current::Removed)).count();
                    prop_assert_eq!(slots.next_due(), due);
                    prop_assert_eq!(slots.not_removed(), slots.len() - removed);
                }
            }
        }
    }
}
