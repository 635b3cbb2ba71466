//! A slot's life: ready, drained, exited, restarted after a backoff, or ended.

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::commands::abort_reload;
use super::{raise_exit_code, Action, Machine, Phase, SpawnFailure, KILL_GRACE, STABLE_UPTIME};
use super::{BACKOFF_FIRST, BACKOFF_MAX};
use crate::supervisor::slot::{backoff, Current, Deadline, Generation, Slot};

impl Machine {
    pub(super) fn ready(
        &mut self,
        slot: Slot,
        generation: Generation,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let drain_deadline = now + self.settings.shutdown_timeout + KILL_GRACE;
        let Some(state) = self.slots.get_mut(&slot) else {
            return;
        };
        match std::mem::replace(&mut state.current, Current::Ended) {
            Current::Booting(mut p) if p.generation == generation => {
                p.deadline = Deadline::None;
                state.current = Current::Serving(p);
            }
            Current::Replacing { mut old, mut new } if new.generation == generation => {
                new.deadline = Deadline::None;
                info!(
                    node = slot,
                    generation = old.generation,
                    "draining the old incarnation"
                );
                old.deadline = Deadline::KillAt(drain_deadline);
                out.push(Action::Drain {
                    slot,
                    generation: old.generation,
                });
                state.draining.push(old);
                state.current = Current::Serving(new);
            }
            other => {
                state.current = other;
                return;
            }
        }
        state.boot_failures = 0;
        info!(node = slot, generation, "node ready");
        out.push(Action::Serving { slot });
        self.all_ready(now, out);
    }

    /// A worker drains on its own (SIGTERM sent to it): a replacement starts now,
    /// and the old one has until its deadline.
    pub(super) fn drains_itself(
        &mut self,
        slot: Slot,
        generation: Generation,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if matches!(self.phase, Phase::Stopping { .. }) {
            return;
        }
        let deadline = now + self.settings.shutdown_timeout + KILL_GRACE;
        let Some(state) = self.slots.get_mut(&slot) else {
            return;
        };
        let mut draining = match std::mem::replace(&mut state.current, Current::Ended) {
            Current::Booting(p) | Current::Serving(p) if p.generation == generation => {
                info!(
                    node = slot,
                    generation, "node draining by itself; starting its replacement"
                );
                p
            }
            Current::Replacing { old, new } if old.generation == generation => {
                state.current = Current::Booting(new);
                old
            }
            Current::Replacing { old, new } if new.generation == generation => {
                state.current = Current::Serving(old);
                abort_reload(&mut self.phase, slot, "it drained before it was ready", out);
                new
            }
            other => {
                state.current = other;
                return;
            }
        };
        draining.deadline = Deadline::KillAt(deadline);
        let state = self.slots.get_mut(&slot).expect("exists");
        state.draining.push(draining);
        if matches!(state.current, Current::Ended) {
            match self.settings.restart {
                true => self.restart_now(slot, now, out),
                false => self.end_slot(slot, out),
            }
        }
    }

    pub(super) fn exited(
        &mut self,
        slot: Slot,
        generation: Generation,
        success: bool,
        status: String,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let stopping = matches!(self.phase, Phase::Stopping { .. });
        let Some(state) = self.slots.get_mut(&slot) else {
            return;
        };
        if let Some(at) = state
            .draining
            .iter()
            .position(|p| p.generation == generation)
        {
            state.draining.remove(at);
            if matches!(state.current, Current::Removed) && !state.has_processes() {
                info!(node = slot, "node removed");
            }
            if stopping {
                info!(node = slot, generation, %status, "node stopped");
                if !success {
                    raise_exit_code(&mut self.phase, 1); // it did not drain cleanly
                }
            } else {
                info!(node = slot, generation, %status, "old incarnation exited");
            }
            return;
        }
        let (process, was_ready) = match std::mem::replace(&mut state.current, Current::Ended) {
            Current::Booting(p) if p.generation == generation => (p, false),
            Current::Serving(p) if p.generation == generation => (p, true),
            Current::Replacing { old, new } if new.generation == generation => {
                state.current = Current::Serving(old);
                let why = format!("it exited before it was ready ({status})");
                abort_reload(&mut self.phase, slot, &why, out);
                return;
            }
            Current::Replacing { old, new } if old.generation == generation => {
                // The old one died: the new one boots on, and the reload with it.
                warn!(node = slot, generation, %status, "node exited while being replaced");
                state.current = Current::Booting(new);
                return;
            }
            other => {
                state.current = other;
                return;
            }
        };
        warn!(node = slot, generation, %status, "node exited");
        self.after_exit(slot, was_ready, now - process.started, status, now, out);
    }

    /// What follows the end of a current incarnation: a restart (after a backoff
    /// when it crash-loops), the end of the slot, or, after too many failed boots
    /// in a row, the end of everything.
    pub(super) fn after_exit(
        &mut self,
        slot: Slot,
        was_ready: bool,
        uptime: Duration,
        status: String,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if !self.settings.restart {
            info!(node = slot, "not restarted (restart = false)");
            self.end_slot(slot, out);
            return;
        }
        let limit = self.settings.boot_failures;
        let state = self.slots.get_mut(&slot).expect("exists");
        if !was_ready {
            state.boot_failures += 1;
            self.counters.boot_failures += 1;
        }
        state.crashes = match uptime >= STABLE_UPTIME {
            true => 0,
            false => state.crashes + 1,
        };
        if state.boot_failures >= limit {
            let last = match state.last_error.take() {
                Some(reason) => format!("{reason} ({status})"),
                None => status,
            };
            error!(
                node = slot,
                "failed to start {limit} times in a row; last error: {last}; stopping"
            );
            self.stop("a node cannot start", 1, now, out);
            return;
        }
        self.back_off(slot, now, out);
    }

    /// Starts `slot` again after its backoff (at once when it has not crashed).
    pub(super) fn back_off(&mut self, slot: Slot, now: Instant, out: &mut Vec<Action>) {
        let state = self.slots.get_mut(&slot).expect("exists");
        let delay = backoff(state.crashes, BACKOFF_FIRST, BACKOFF_MAX);
        info!(
            node = slot,
            delay_ms = delay.as_millis() as u64,
            "restarting node"
        );
        if delay.is_zero() {
            self.restart_now(slot, now, out);
        } else {
            state.current = Current::BackingOff { until: now + delay };
        }
    }

    pub(super) fn spawn_failed(
        &mut self,
        slot: Slot,
        generation: Generation,
        failure: SpawnFailure,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(state) = self.slots.get_mut(&slot) else {
            return;
        };
        match std::mem::replace(&mut state.current, Current::Ended) {
            Current::Booting(p) if p.generation == generation => {}
            Current::Replacing { old, new } if new.generation == generation => {
                state.current = Current::Serving(old);
                abort_reload(&mut self.phase, slot, "its process could not start", out);
                return;
            }
            other => {
                state.current = other;
                return;
            }
        }
        match failure {
            SpawnFailure::Resources(why) => {
                // Not the program's fault: retried with backoff, never given up.
                warn!(
                    node = slot,
                    generation, "cannot start a worker process: {why}; retrying"
                );
                state.crashes += 1;
                self.back_off(slot, now, out);
            }
            SpawnFailure::Other(why) => {
                error!(
                    node = slot,
                    generation, "cannot start a worker process: {why}"
                );
                state.last_error = Some(why.clone());
                self.after_exit(slot, false, Duration::ZERO, why, now, out);
            }
        }
    }

    /// The slot will not come back: every node is told, its socket closed.
    pub(super) fn end_slot(&mut self, slot: Slot, out: &mut Vec<Action>) {
        if let Some(state) = self.slots.get_mut(&slot) {
            state.current = Current::Ended;
        }
        out.push(Action::Gone { slot });
        out.push(Action::CloseListener { slot });
    }

    /// Moves every current process of `slot` to draining, with a drain order.
    pub(super) fn drain_slot(
        &mut self,
        slot: Slot,
        then: Current,
        deadline: Instant,
        out: &mut Vec<Action>,
    ) {
        let state = self.slots.get_mut(&slot).expect("exists");
        for mut process in state.current.take_processes(then) {
            process.deadline = Deadline::KillAt(deadline);
            out.push(Action::Drain {
                slot,
                generation: process.generation,
            });
            state.draining.push(process);
        }
    }
}
