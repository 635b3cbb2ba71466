//! The load table: one cache line per slot in the shared segment, that every
//! node updates as it opens and closes connections, and that the accept loops
//! consult. Every mode keeps the per-node totals there, which the master
//! reports when it stops.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// Slots the table has room for: every node a master can run, so that scaling up
/// never needs a new table.
pub(crate) const TABLE_SLOTS: usize = crate::config::ranges::MAX_NODES + 1;

/// How many more connections in all than an equally busy node a node may have
/// accepted and still accept now: this many, or a sixteenth of the other's total
/// if that is more (a tie-break that seldom fires under sustained load).
const TIE_SPREAD: u64 = 8;

/// One slot's line in the table.
#[repr(C, align(64))]
struct Entry {
    /// Connections open now, over its live incarnations.
    active: AtomicU32,
    /// 1 while an incarnation of the slot is serving (set by the master).
    live: AtomicU32,
    /// Connections accepted since the start, over every incarnation.
    connections: AtomicU64,
    /// Requests served since the start, over every incarnation.
    requests: AtomicU64,
    /// Of `active`, what each incarnation holds, by generation modulo 4 (a slot
    /// has two incarnations at once during a replacement, three at the most
    /// while one still drains): what an incarnation that exits takes away.
    held: [AtomicU32; HELD],
    /// When the slot's accept loop last ran (ms of `CLOCK_MONOTONIC`, the same
    /// clock in every process).
    stamp: AtomicU64,
    /// When a node last gave up waiting for this one to take a connection it
    /// left to it; later than `stamp`: this node is not accepting (stopped,
    /// blocked, or gone from its accept loop).
    suspect: AtomicU64,
}

impl Entry {
    /// Serving, and accepting as far as anyone knows: its accept loop ran, and
    /// nobody found it silent since.
    fn is_candidate(&self) -> bool {
        let stamp = self.stamp.load(Relaxed);
        self.live.load(Relaxed) == 1 && stamp != 0 && self.suspect.load(Relaxed) <= stamp
    }
}

/// How many incarnations of a slot the table tells apart.
const HELD: usize = 4;

/// The whole server's line, after the slots'.
#[repr(C, align(64))]
struct Summary {
    /// Where the serving slots end: every slot that ever served is below
    /// (SIGTTIN moves it up; nothing moves it down).
    serving_end: AtomicU32,
    /// How many nodes serve as the server stands now: the configured count,
    /// moved by SIGTTIN and SIGTTOU (the master keeps it).
    nodes: AtomicU32,
}

/// The table's layout: the slots' lines, then the server's.
#[repr(C)]
pub(crate) struct LoadTable {
    lines: [Entry; TABLE_SLOTS],
    summary: Summary,
}

impl LoadTable {
    fn entry(&self, slot: usize) -> &Entry {
        assert!(slot < TABLE_SLOTS, "slot {slot} is beyond the table");
        &self.lines[slot]
    }

    /// Where the serving slots end (the master sets it at start and on SIGTTIN).
    pub(crate) fn set_serving_end(&self, end: usize) {
        self.summary.serving_end.store(end as u32, Relaxed);
    }

    /// Moves the end of the serving slots up to `end`, if it is below (SIGTTIN).
    pub(crate) fn extend_serving_end(&self, end: usize) {
        self.summary.serving_end.fetch_max(end as u32, Relaxed);
    }

    /// Where the serving slots end: every slot that ever served is below.
    pub(crate) fn serving_end(&self) -> usize {
        self.summary.serving_end.load(Relaxed) as usize
    }

    /// How many nodes serve now, as configured (the master, at start and
    /// whenever SIGTTIN or SIGTTOU changes it).
    pub(crate) fn set_nodes(&self, nodes: usize) {
        self.summary.nodes.store(nodes as u32, Relaxed);
    }

    /// How many nodes serve now, as configured.
    pub(crate) fn nodes(&self) -> usize {
        self.summary.nodes.load(Relaxed) as usize
    }

    /// Marks a slot serving or not (the master, on ready, drain and exit). A
    /// slot that stops serving forgets its accept loop's stamp: the next
    /// incarnation is waited for only once its own accept loop runs.
    pub(crate) fn set_live(&self, slot: usize, live: bool) {
        let entry = self.entry(slot);
        entry.live.store(u32::from(live), Relaxed);
        if !live {
            entry.stamp.store(0, Relaxed);
        }
    }

    /// Incarnation `generation` of `slot` accepted a connection.
    pub(crate) fn opened(&self, slot: usize, generation: u64) {
        let entry = self.entry(slot);
        entry.held[generation as usize % HELD].fetch_add(1, Relaxed);
        entry.active.fetch_add(1, Relaxed);
        entry.connections.fetch_add(1, Relaxed);
    }

    /// A connection of incarnation `generation` of `slot` closed.
    pub(crate) fn closed(&self, slot: usize, generation: u64) {
        let entry = self.entry(slot);
        // Never below zero: the master takes away what an incarnation that
        // exited held.
        let held = &entry.held[generation as usize % HELD];
        if held
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            let _ = entry
                .active
                .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Incarnation `generation` of `slot` exited: its connections died with it
    /// (the master).
    pub(crate) fn release(&self, slot: usize, generation: u64) {
        let entry = self.entry(slot);
        let held = entry.held[generation as usize % HELD].swap(0, Relaxed);
        let _ = entry
            .active
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(held)));
    }

    /// The connections open now on each slot of `slots`.
    pub(crate) fn open_counts(&self, first: usize) -> Vec<(usize, u32)> {
        (first..self.serving_end().min(TABLE_SLOTS))
            .map(|slot| (slot, self.entry(slot).active.load(Relaxed)))
            .collect()
    }

    /// Whether `slot` is among the least busy live nodes of `slots`: no live node
    /// has fewer open connections, and none as busy has accepted far fewer in all
    /// (see [`TIE_SPREAD`]). The tie-break matters when connections are
    /// short: counts are all 0 and, without it, the process that wakes first would
    /// win every race.
    pub(crate) fn least_busy(&self, slot: usize, first: usize) -> bool {
        let me = self.entry(slot);
        let (mine, my_total) = (me.active.load(Relaxed), me.connections.load(Relaxed));
        self.candidates(first)
            .filter(|(other, _)| *other != slot)
            .all(|(_, entry)| {
                let active = entry.active.load(Relaxed);
                let total = entry.connections.load(Relaxed);
                active > mine
                    || (active == mine && total + (total / 16).max(TIE_SPREAD) >= my_total)
            })
    }

    /// A request was served on `slot`.
    #[inline]
    pub(crate) fn request(&self, slot: usize) {
        self.entry(slot).requests.fetch_add(1, Relaxed);
    }

    /// The slots of `first..` that are serving and accepting (their accept loop
    /// ran, and nobody found it silent since), with their lines.
    fn candidates(&self, first: usize) -> impl Iterator<Item = (usize, &Entry)> {
        (first..self.serving_end().min(TABLE_SLOTS))
            .map(|slot| (slot, self.entry(slot)))
            .filter(|(_, entry)| entry.is_candidate())
    }

    /// `slot`'s accept loop runs now: it is accepting.
    pub(crate) fn stamp(&self, slot: usize, now: u64) {
        let stamp = &self.entry(slot).stamp;
        if stamp.load(Relaxed) != now {
            stamp.store(now, Relaxed);
        }
    }

    /// `slot` leaves its accept loop (its node drains): not a candidate until
    /// an accept loop of the slot runs again.
    pub(crate) fn withdraw(&self, slot: usize, now: u64) {
        self.entry(slot).suspect.store(now + 1, Relaxed);
    }

    /// `slot` waited in vain for the nodes less busy than itself to take a
    /// connection: those that have not run their accept loop for `silent` ms
    /// are not accepting, and drop out of the candidates until they do.
    pub(crate) fn suspect_less_busy(&self, slot: usize, first: usize, now: u64, silent: u64) {
        let mine = self.entry(slot).active.load(Relaxed);
        for (_, entry) in self.candidates(first).filter(|(other, _)| *other != slot) {
            let silent = entry.stamp.load(Relaxed) + silent <= now;
            if entry.active.load(Relaxed) <= mine && silent {
                entry.suspect.store(now, Relaxed);
            }
        }
    }

    /// Whether `slot` serves and its accept loop ran within `silent` ms of `now`
    /// (and nobody found it silent since).
    pub(crate) fn accepting(&self, slot: usize, now: u64, silent: u64) -> bool {
        let entry = self.entry(slot);
        entry.is_candidate() && entry.stamp.load(Relaxed) + silent > now
    }

    /// The least busy of the candidates other than `not`, taken from `first..`;
    /// among equals, the first after `after` (so that a run of hand-overs
    /// spreads before the counts move).
    pub(crate) fn least_busy_but(&self, not: usize, first: usize, after: usize) -> Option<usize> {
        self.candidates(first)
            .filter(|(slot, _)| *slot != not)
            .min_by_key(|(slot, entry)| {
                let turn = slot.wrapping_sub(after + 1) % TABLE_SLOTS;
                (entry.active.load(Relaxed), turn)
            })
            .map(|(slot, _)| slot)
    }

    /// The connections open now on `slot`.
    pub(crate) fn open_now(&self, slot: usize) -> u32 {
        self.entry(slot).active.load(Relaxed)
    }

    /// (connections, requests) served by `slot` since the start.
    pub(crate) fn totals(&self, slot: usize) -> (u64, u64) {
        let entry = self.entry(slot);
        (
            entry.connections.load(Relaxed),
            entry.requests.load(Relaxed),
        )
    }
}

/// Milliseconds of `CLOCK_MONOTONIC`: the same clock in every process.
pub(crate) fn now_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::zeroed::zeroed;

    #[test]
    fn the_least_busy_node_is_found_by_its_open_connections() {
        let table = zeroed::<LoadTable>();
        let other = &table;
        table.set_serving_end(2);
        table.set_live(0, true);
        table.stamp(0, 1); // its accept loop ran
        other.set_live(1, true);
        other.stamp(1, 1); // its accept loop ran
        other.entry(1).active.store(3, Relaxed);
        table.entry(0).requests.fetch_add(5, Relaxed);
        assert_eq!(other.totals(0), (0, 5));
        assert!(table.least_busy(0, 0));
        assert!(!other.least_busy(1, 0));
        table.set_live(0, false); // a dead node does not count
        assert!(other.least_busy(1, 0));
        // Equally busy: the node far ahead in total connections waits its turn.
        table.set_live(0, true);
        table.stamp(0, 1); // its accept loop ran
        other.entry(1).active.store(0, Relaxed);
        table.entry(1).connections.store(TIE_SPREAD + 1, Relaxed);
        assert!(!table.least_busy(1, 0));
        assert!(table.least_busy(0, 0));
        // A node added later (SIGTTIN) counts once the end moves past it.
        table.set_live(2, true);
        table.stamp(2, 1); // its accept loop ran
        table.entry(0).connections.store(TIE_SPREAD + 1, Relaxed);
        assert!(table.least_busy(0, 0));
        table.set_serving_end(3);
        assert!(!table.least_busy(0, 0), "node 2 has accepted far fewer");
    }

    #[test]
    fn an_incarnation_that_exits_takes_away_only_what_it_held() {
        let table = zeroed::<LoadTable>();
        table.set_serving_end(2);
        for _ in 0..3 {
            table.opened(1, 1); // the old incarnation, being replaced
        }
        table.opened(1, 2); // its replacement
        assert_eq!(table.open_counts(0), vec![(0, 0), (1, 4)]);
        table.release(1, 1); // killed with its 3 connections
        assert_eq!(table.open_counts(0), vec![(0, 0), (1, 1)]);
        table.closed(1, 1); // a late close of the dead one changes nothing
        assert_eq!(table.open_counts(0), vec![(0, 0), (1, 1)]);
        table.closed(1, 2);
        assert_eq!(table.open_counts(0), vec![(0, 0), (1, 0)]);
        assert_eq!(table.totals(1), (4, 0));
    }

    #[test]
    fn a_node_silent_too_long_is_no_candidate_until_it_runs_again() {
        let table = zeroed::<LoadTable>();
        table.set_serving_end(3);
        for slot in 0..3 {
            table.set_live(slot, true);
            table.stamp(slot, 1_000);
        }
        table.opened(0, 1); // node 0 is the busiest
                            // At 1 030 ms, nodes 1 and 2 have been silent 30 ms: slow, not stopped.
        table.suspect_less_busy(0, 0, 1_030, 50);
        assert!(
            !table.least_busy(0, 0),
            "node 0 still leaves arrivals to them"
        );
        // At 1 060 ms node 2 ran (stamped), node 1 did not.
        table.stamp(2, 1_055);
        table.suspect_less_busy(0, 0, 1_060, 50);
        let candidates: Vec<usize> = table.candidates(0).map(|(slot, _)| slot).collect();
        assert_eq!(candidates, vec![0, 2], "node 1 is not accepting");
        table.stamp(1, 1_061); // it runs again
        assert_eq!(table.candidates(0).count(), 3);
        // A node leaving its accept loop is no candidate at once.
        table.withdraw(2, 1_070);
        assert_eq!(table.candidates(0).count(), 2);
        // A node whose accept loop never ran (its body has not taken the
        // listener yet) is not waited for.
        table.set_live(1, false);
        table.set_live(1, true);
        assert_eq!(table.candidates(0).count(), 1);
    }

    #[test]
    fn hand_overs_go_to_the_least_busy_accepting_node_in_turn() {
        let table = zeroed::<LoadTable>();
        table.set_serving_end(4);
        for slot in 0..4 {
            table.set_live(slot, true);
            table.stamp(slot, 1000);
        }
        assert!(table.accepting(2, 1040, 50));
        assert!(!table.accepting(2, 1050, 50), "silent for 50 ms");
        table.withdraw(3, 1000);
        assert!(!table.accepting(3, 1001, 50), "left its accept loop");
        // Equally busy: in turn, never the stuck one (1) nor the withdrawn one (3).
        assert_eq!(table.least_busy_but(1, 0, 0), Some(2));
        assert_eq!(table.least_busy_but(1, 0, 2), Some(0));
        table.opened(0, 1);
        assert_eq!(
            table.least_busy_but(1, 0, 2),
            Some(2),
            "the least busy first"
        );
        table.set_live(2, false);
        table.set_live(0, false);
        assert_eq!(table.least_busy_but(1, 0, 0), None);
    }
}
