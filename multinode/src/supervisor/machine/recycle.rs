//! Recycling, the state machine's side: a worker the recycler found due is
//! replaced the rolling way (its replacement ready first, then it drains), one
//! node at a time, in the order they came due, and only while nothing else is
//! replaced or draining: never during a reload, a stop or an upgrade.

use std::time::Instant;

use tracing::{error, info, warn};

use super::{Action, Machine, Phase, Upgrade};
use crate::supervisor::recycler::{Verdict, Why};
use crate::supervisor::recycles::Recycling;
use crate::supervisor::slot::{Current, Deadline};

impl Machine {
    pub(super) fn on_verdict(&mut self, verdict: Verdict, out: &mut Vec<Action>) {
        match verdict {
            Verdict::Recycle {
                slot,
                generation,
                why,
            } => {
                let queued = self
                    .recycles
                    .queue
                    .iter()
                    .any(|(s, g, _)| (*s, *g) == (slot, generation));
                if !queued {
                    info!(node = slot, generation, "due for recycling: {why}");
                    self.recycles.queue.push_back((slot, generation, why));
                }
            }
            Verdict::Kill {
                slot,
                generation,
                resident,
                ceiling,
            } => {
                // Once: a process killed already is only waited for.
                let process = self.slots.get_mut(&slot).and_then(|s| {
                    s.current
                        .processes_mut()
                        .find(|p| p.generation == generation && p.deadline != Deadline::Killed)
                });
                if let Some(process) = process {
                    process.deadline = Deadline::Killed;
                    error!(
                        node = slot,
                        generation,
                        "killing node {slot}: its resident memory, {} MiB, is over max_memory_hard ({} MiB)",
                        resident >> 20,
                        ceiling >> 20
                    );
                    self.counters.memory_kills += 1;
                    out.push(Action::Kill { slot, generation });
                }
            }
        }
    }

    /// Moves recycling on: the next worker due is replaced once the last one
    /// is done and nothing else is replaced or draining.
    pub(super) fn advance_recycling(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Recycling::Replacing { slot, generation } = self.recycles.now {
            let state = &self.slots[&slot];
            if matches!(state.current, Current::Replacing { .. }) || !state.draining.is_empty() {
                return;
            }
            match state.current.serving() == Some(generation) {
                // Asked for again by the recycler, later.
                true => warn!(
                    node = slot,
                    generation,
                    "recycling node {slot} failed: its replacement did not become ready: it serves on"
                ),
                false => info!(node = slot, "recycled"),
            }
            self.recycles.now = Recycling::Idle;
        }
        if self.recycles.queue.is_empty()
            || !matches!(self.phase, Phase::Running)
            || self.upgrade != Upgrade::Idle
        {
            return;
        }
        let quiet = self
            .slots
            .values()
            .all(|s| !matches!(s.current, Current::Replacing { .. }) && s.draining.is_empty());
        if !quiet {
            return;
        }
        while let Some((slot, generation, why)) = self.recycles.queue.pop_front() {
            let serving = self.slots.get(&slot).and_then(|s| s.current.serving());
            if serving != Some(generation) {
                continue; // replaced or gone meanwhile
            }
            info!(node = slot, generation, "recycling node {slot}: {why}");
            match why {
                Why::Requests { .. } => self.counters.recycled_requests += 1,
                Why::Memory { .. } => self.counters.recycled_memory += 1,
            }
            self.replace(slot, now, out);
            self.recycles.now = Recycling::Replacing { slot, generation };
            return;
        }
    }
}
