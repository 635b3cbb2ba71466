//! What time does: backoffs end, processes that missed a deadline are killed, and
//! the watchdog looks at heartbeats.

use std::time::Instant;

use tracing::{error, info, warn};

use super::{Action, Machine, Master, Phase, KILL_GRACE};
use crate::supervisor::slot::{Current, Deadline, Slot};

impl Machine {
    pub(super) fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Phase::Stopping { deadline, .. } = self.phase {
            if now >= deadline {
                // The master's own node too, while its body has not returned.
                let master = !matches!(self.master, Master::Returned(_));
                let left: Vec<Slot> = master
                    .then_some(0)
                    .into_iter()
                    .chain(
                        self.slots
                            .iter()
                            .filter(|(_, s)| s.has_processes())
                            .map(|(slot, _)| *slot),
                    )
                    .collect();
                error!(
                    "nodes {left:?} still running {:?} after the stop; killing them",
                    self.settings.shutdown_timeout + KILL_GRACE,
                );
                out.push(Action::KillAllAndExit { code: 1 });
                self.phase = Phase::Done;
            }
            return;
        }
        let slots: Vec<Slot> = self.slots.keys().copied().collect();
        for slot in slots {
            let state = self.slots.get_mut(&slot).expect("exists");
            if let Current::BackingOff { until } = state.current {
                if now >= until {
                    self.restart_now(slot, now, out);
                }
            }
            let state = self.slots.get_mut(&slot).expect("exists");
            for process in state.processes_mut() {
                let why = match process.deadline {
                    Deadline::ReadyBy(at) if now >= at => "not ready in time",
                    Deadline::KillAt(at) if now >= at => "still running at its drain deadline",
                    _ => continue,
                };
                warn!(
                    node = slot,
                    generation = process.generation,
                    "{why}; killing it"
                );
                process.deadline = Deadline::Killed;
                out.push(Action::Kill {
                    slot,
                    generation: process.generation,
                });
            }
        }
        self.watchdog(now, out);
    }

    /// Kills the processes whose runtime sent no heartbeat for the watchdog's
    /// timeout. A check that comes late means the supervisor itself did not run
    /// (the whole group stopped, as by Ctrl-Z, or frozen): nobody's silence counts
    /// for that time.
    pub(super) fn watchdog(&mut self, now: Instant, out: &mut Vec<Action>) {
        let (Some(at), Some(every), Some(timeout)) = (
            self.next_watchdog,
            self.heartbeat_every(),
            self.settings.watchdog,
        ) else {
            return;
        };
        if now < at {
            return;
        }
        self.next_watchdog = Some(now + every);
        let late = now - at;
        let frozen = late > every;
        if frozen {
            info!(
                "the supervisor did not run for {late:?} (the whole group stopped?): heartbeats count from now"
            );
        }
        for (slot, state) in self.slots.iter_mut() {
            for process in state.processes_mut() {
                if frozen {
                    process.heartbeat = now;
                }
                let silent = now - process.heartbeat;
                if silent > timeout && process.deadline != Deadline::Killed {
                    warn!(
                        node = *slot,
                        generation = process.generation,
                        "no heartbeat for {silent:?} (timeout {timeout:?}): the node is stuck; killing it"
                    );
                    process.deadline = Deadline::Killed;
                    self.counters.watchdog_kills += 1;
                    out.push(Action::Kill {
                        slot: *slot,
                        generation: process.generation,
                    });
                }
            }
        }
    }
}
