//! What the operator's signals do: a rolling restart, one node more or less, a stop.

use std::collections::VecDeque;
use std::time::Instant;

use tracing::{error, info, warn};

use super::{raise_exit_code, Action, Machine, Phase, KILL_GRACE};
use crate::supervisor::notice::Notice;
use crate::supervisor::slot::{Current, Deadline, Slot};

impl Machine {
    pub(super) fn reload(&mut self, now: Instant, out: &mut Vec<Action>) {
        match &mut self.phase {
            Phase::Running => {
                let queue: VecDeque<Slot> = self.members().into();
                info!(nodes = queue.len(), "SIGHUP: rolling restart");
                let nodes = self.serving_nodes();
                self.counters.reloads += 1;
                out.push(Action::Notify(Notice::Reloading { nodes }));
                self.phase = Phase::Reloading {
                    queue,
                    replacing: None,
                    again: false,
                };
                self.advance_reload(now, out);
            }
            Phase::Reloading { again, .. } => {
                info!("SIGHUP: a rolling restart is under way; another follows it");
                *again = true;
            }
            Phase::Stopping { .. } | Phase::Done => {}
        }
    }

    /// Moves the rolling restart on: the next slot is replaced once the last one
    /// serves from its new incarnation and its old one is gone (or killed).
    pub(super) fn advance_reload(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.recycles.busy() {
            return; // one node replaced at a time: the reload goes on after it
        }
        loop {
            // Not on every event: the members are counted only while reloading.
            if !matches!(self.phase, Phase::Reloading { .. }) {
                return;
            }
            let members = self.members();
            let Phase::Reloading {
                queue,
                replacing,
                again,
            } = &mut self.phase
            else {
                return;
            };
            if let Some(slot) = *replacing {
                let state = &self.slots[&slot];
                if matches!(state.current, Current::Replacing { .. }) || !state.draining.is_empty()
                {
                    return;
                }
                *replacing = None;
            }
            let Some(slot) = queue.pop_front() else {
                info!("rolling restart done");
                if std::mem::take(again) {
                    self.generation += 1;
                    self.counters.reloads += 1;
                    *queue = members.into();
                    info!(nodes = queue.len(), "SIGHUP: rolling restart");
                    continue;
                }
                self.phase = Phase::Running;
                self.reloaded(out);
                return;
            };
            // A slot not serving now starts again from the same path by itself.
            if let Some(Current::Serving(_)) = self.slots.get(&slot).map(|s| &s.current) {
                *replacing = Some(slot);
                self.replace(slot, now, out);
                return;
            }
        }
    }

    /// Starts the replacement of serving `slot`: the old incarnation serves
    /// until the new one is ready.
    pub(super) fn replace(&mut self, slot: Slot, now: Instant, out: &mut Vec<Action>) {
        let new = self.new_process(slot, now);
        let state = self.slots.get_mut(&slot).expect("exists");
        let Current::Serving(old) = std::mem::replace(&mut state.current, Current::Ended) else {
            unreachable!("only a serving slot is replaced")
        };
        state.current = Current::Replacing { old, new };
        self.spawn(slot, out);
    }

    pub(super) fn add_node(&mut self, slot: Slot, now: Instant, out: &mut Vec<Action>) {
        if self.slot_to_add() != Some(slot) {
            return;
        }
        info!(node = slot, "SIGTTIN: adding a node");
        let process = self.new_process(slot, now);
        let state = self.slots.get_mut(&slot).expect("just made");
        state.crashes = 0;
        state.boot_failures = 0;
        state.last_error = None;
        state.current = Current::Booting(process);
        self.spawn(slot, out);
    }

    pub(super) fn remove_node(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !matches!(self.phase, Phase::Running | Phase::Reloading { .. }) {
            return;
        }
        let members = self.members();
        let serving = members.len() + usize::from(self.settings.master_serves);
        let Some(&slot) = members.last().filter(|_| serving > 1) else {
            warn!("SIGTTOU: one node left; not removing it");
            return;
        };
        info!(node = slot, "SIGTTOU: removing the node");
        let deadline = now + self.settings.shutdown_timeout + KILL_GRACE;
        self.drain_slot(slot, Current::Removed, deadline, out);
        out.push(Action::Gone { slot });
        out.push(Action::CloseListener { slot });
        if !self.slots[&slot].has_processes() {
            info!(node = slot, "node removed");
        }
    }

    /// Starts a graceful stop of every node: each stops accepting, drains within
    /// `shutdown_timeout`, and exits; whatever is left then is killed.
    pub(super) fn stop(&mut self, reason: &str, code: i32, now: Instant, out: &mut Vec<Action>) {
        if matches!(self.phase, Phase::Stopping { .. } | Phase::Done) {
            raise_exit_code(&mut self.phase, code);
            return;
        }
        let processes = self
            .slots
            .values()
            .flat_map(|s| s.current.processes())
            .count();
        let nodes = processes + usize::from(self.settings.master_serves);
        info!("{reason}: stopping {nodes} nodes gracefully");
        let deadline = now + self.settings.shutdown_timeout + KILL_GRACE;
        self.phase = Phase::Stopping { deadline, code };
        self.next_watchdog = None;
        self.stop_upgrade(out);
        if self.upgrade != super::Upgrade::HandedOver {
            out.push(Action::Notify(Notice::Stopping { nodes }));
        }
        out.push(Action::StopMaster);
        let slots: Vec<Slot> = self.slots.keys().copied().collect();
        for slot in slots {
            let then = match self.slots[&slot].current {
                Current::Removed => Current::Removed,
                _ => Current::Ended,
            };
            self.drain_slot(slot, then, deadline, out);
            for process in &mut self.slots.get_mut(&slot).expect("exists").draining {
                if let Deadline::KillAt(at) = &mut process.deadline {
                    *at = (*at).min(deadline);
                }
            }
        }
    }
}

/// A replacement failed before it was ready: its old incarnation (put back by
/// the caller) keeps serving, and the rolling restart stops here.
pub(super) fn abort_reload(phase: &mut Phase, slot: Slot, why: &str, out: &mut Vec<Action>) {
    error!(
        node = slot,
        "the replacement failed: {why}; the old incarnation keeps serving; rolling restart stopped"
    );
    if let Phase::Reloading { .. } = phase {
        *phase = Phase::Running;
        out.push(Action::Notify(Notice::ReloadStopped { slot }));
    }
}
