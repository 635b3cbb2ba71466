//! The board's process lines (`board.rs`), kept by the supervisor: after the
//! state machine handled its inputs, each slot's state, pid, generation and
//! restarts, and the supervisor's own totals.

use std::sync::atomic::Ordering::Relaxed;

use super::machine::Master;
use super::slot::{Current, Generation, SlotState};
use super::Supervisor;
use crate::control::incarnation::Incarnation;
use crate::shm::board::{self, LastExit};

impl Supervisor {
    /// Writes where every slot that changed stands on the board.
    pub(super) fn publish_status(&mut self) {
        let changed = self.machine.slots.take_changed();
        if !changed.is_empty() {
            self.shm.table().set_nodes(self.machine.nodes());
        }
        let board = self.shm.board();
        for slot in &changed {
            let state = &self.machine.slots[slot];
            let (shown, generation) = shown(state);
            let line = board.process(*slot);
            line.set_state(shown);
            line.restarts
                .store(state.generation.saturating_sub(1) as u32, Relaxed);
            if let Some(generation) = generation {
                let pid = self
                    .workers
                    .get(&Incarnation::new(*slot, generation))
                    .map_or(0, |w| w.pid);
                if line.generation.swap(generation as u32, Relaxed) != generation as u32 {
                    line.started_ms
                        .store(crate::shm::load_table::now_ms(), Relaxed);
                }
                line.pid.store(pid, Relaxed);
            }
        }
        if self.config.master_listen {
            let line = board.process(0);
            let shown = match (self.machine.master, &self.machine.phase) {
                (Master::Booting, _) => board::SlotState::Starting,
                (Master::Returned(_), _) => board::SlotState::Ended,
                (Master::Serving, super::machine::Phase::Stopping { .. }) => {
                    board::SlotState::Draining
                }
                (Master::Serving, _) => board::SlotState::Serving,
            };
            line.set_state(shown);
            line.pid.store(std::process::id(), Relaxed);
            line.generation.store(1, Relaxed);
            let now = crate::shm::load_table::now_ms();
            let _ = line.started_ms.compare_exchange(0, now, Relaxed, Relaxed);
        }
        let counters = self.machine.counters;
        let totals = board.supervisor();
        totals
            .turned_ms
            .store(crate::shm::load_table::now_ms(), Relaxed);
        let stopping = matches!(
            self.machine.phase,
            super::machine::Phase::Stopping { .. } | super::machine::Phase::Done
        );
        totals.stopping.store(u64::from(stopping), Relaxed);
        totals
            .ready_nodes
            .store(self.config.ready_nodes as u64, Relaxed);
        totals.reloads.store(counters.reloads, Relaxed);
        totals.boot_failures.store(counters.boot_failures, Relaxed);
        totals
            .watchdog_kills
            .store(counters.watchdog_kills, Relaxed);
        totals
            .recycled_requests
            .store(counters.recycled_requests, Relaxed);
        totals
            .recycled_memory
            .store(counters.recycled_memory, Relaxed);
        totals.memory_kills.store(counters.memory_kills, Relaxed);
    }

    /// A process of `slot` exited with `status`.
    pub(super) fn record_exit(&self, slot: usize, status: &std::process::ExitStatus) {
        use std::os::unix::process::ExitStatusExt;
        let exit = match (status.code(), status.signal()) {
            (Some(code), _) => LastExit::Code(code),
            (None, Some(signal)) => LastExit::Signal(signal),
            (None, None) => LastExit::None,
        };
        self.shm.board().process(slot).set_last_exit(exit);
    }
}

/// How a slot shows, and its incarnation to show: the one serving, else the
/// newest.
fn shown(state: &SlotState) -> (board::SlotState, Option<Generation>) {
    let newest = state.processes().map(|p| p.generation).max();
    match &state.current {
        Current::Booting(p) => (board::SlotState::Starting, Some(p.generation)),
        Current::Serving(p) | Current::Replacing { old: p, .. } => {
            (board::SlotState::Serving, Some(p.generation))
        }
        Current::BackingOff { .. } => (board::SlotState::BackingOff, newest),
        Current::Removed | Current::Ended if !state.draining.is_empty() => {
            (board::SlotState::Draining, newest)
        }
        Current::Removed | Current::Ended => (board::SlotState::Ended, None),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::supervisor::slot::Process;

    #[test]
    fn a_slot_shows_its_serving_incarnation() {
        let now = Instant::now();
        let process = |g| Process::booting(g, now, Duration::from_secs(1));
        let mut state = SlotState::new();
        state.current = Current::Replacing {
            old: process(2),
            new: process(3),
        };
        assert_eq!(shown(&state), (board::SlotState::Serving, Some(2)));
        state.current = Current::Ended;
        state.draining.push(process(3));
        assert_eq!(shown(&state), (board::SlotState::Draining, Some(3)));
        state.draining.clear();
        assert_eq!(shown(&state), (board::SlotState::Ended, None));
    }
}
