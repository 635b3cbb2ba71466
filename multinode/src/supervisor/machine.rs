//! The supervisor's decisions, without I/O: events in (a process ready, exited or
//! silent, a signal, a timer), actions out (spawn, drain, kill, tell the mesh, exit).
//!
//! Every slot is a [`Current`] plus the incarnations it is draining; the server is
//! in one [`Phase`]. Time is an input (`now`), so a model test can drive it.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::slot::{backoff, Current, Deadline, Generation, Process, Slot, SlotState};

/// How long a worker must have run for its exit not to count as a crash loop.
pub(crate) const STABLE_UPTIME: Duration = Duration::from_secs(2);
/// The first and the largest delay before restarting a crash-looping worker.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// What a draining process gets beyond `shutdown_timeout` before it is killed.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(1);
/// How long a started process may take to report ready.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the state machine needs of the configuration.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// The worker slots at start.
    pub workers: std::ops::Range<Slot>,
    /// Whether the master's own node serves (counts as a node that stays).
    pub master_serves: bool,
    pub restart: bool,
    pub boot_failures: u32,
    pub shutdown_timeout: Duration,
    /// The watchdog's timeout, if any.
    pub watchdog: Option<Duration>,
    /// The highest slot SIGTTIN may add.
    pub max_slot: Slot,
    /// How many nodes serve, for the "all ready" line.
    pub nodes: usize,
    /// When the master started, for the "all ready" line.
    pub started: Instant,
}

/// Why a process could not be started.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SpawnFailure {
    /// Short of descriptors, processes or memory: retried, never a failed boot.
    Resources(String),
    /// Anything else (the executable is gone, say): a failed boot.
    Other(String),
}

/// A signal's meaning to the supervisor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Command {
    /// SIGHUP: replace every worker, one at a time.
    Reload,
    /// SIGTTOU: the highest node drains and is gone.
    RemoveNode,
    /// SIGTERM: stop gracefully.
    Terminate,
    /// SIGINT: stop gracefully; a second one stops at once.
    Interrupt,
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Input {
    /// The supervisor starts: start every worker slot.
    Start,
    Ready {
        slot: Slot,
        generation: Generation,
    },
    Heartbeat {
        slot: Slot,
        generation: Generation,
    },
    /// A worker drains on its own (it got SIGTERM).
    Draining {
        slot: Slot,
        generation: Generation,
    },
    /// Why a worker is about to fail.
    Failed {
        slot: Slot,
        generation: Generation,
        reason: String,
    },
    Exited {
        slot: Slot,
        generation: Generation,
        success: bool,
        status: String,
    },
    SpawnFailed {
        slot: Slot,
        generation: Generation,
        failure: SpawnFailure,
    },
    Signal(Command),
    /// SIGTTIN, once the slot's listener is open: the slot is [`Machine::slot_to_add`].
    AddNode {
        slot: Slot,
    },
    /// The master's own body runs.
    MasterReady,
    /// The master's own body returned with this exit code.
    BodyDone {
        code: i32,
    },
    /// Time passed: deadlines due at `now` are acted on.
    Tick,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Action {
    /// Start incarnation `generation` of `slot`, telling it the member slots, and
    /// mesh it with each of `mesh_with` (the master's node is always meshed).
    Spawn {
        slot: Slot,
        generation: Generation,
        members: Vec<Slot>,
        mesh_with: Vec<(Slot, Generation)>,
    },
    Drain {
        slot: Slot,
        generation: Generation,
    },
    Kill {
        slot: Slot,
        generation: Generation,
    },
    /// Tell every node that `slot` is gone for good.
    Gone {
        slot: Slot,
    },
    /// The slot ended for good: close its own listening socket, if it has one.
    CloseListener {
        slot: Slot,
    },
    /// Fire the master node's shutdown.
    StopMaster,
    /// Every process is gone and the master's body returned: exit with this code.
    Exit {
        code: i32,
    },
    /// Kill whatever is left and exit now.
    KillAllAndExit {
        code: i32,
    },
}

/// What the whole server is doing.
#[derive(Clone, Debug)]
pub(crate) enum Phase {
    Running,
    /// A rolling restart: `replacing` is the slot being replaced (until its new
    /// incarnation serves and its old one is gone), `queue` the slots after it.
    Reloading {
        queue: VecDeque<Slot>,
        replacing: Option<Slot>,
        /// Another SIGHUP came meanwhile: one more rolling restart follows.
        again: bool,
    },
    /// Everything stops; whatever is left at `deadline` is killed.
    Stopping {
        deadline: Instant,
        code: i32,
    },
    /// The exit was ordered.
    Done,
}

/// The master's own node.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Master {
    Booting,
    Serving,
    Returned(i32),
}

/// The supervisor's state.
#[derive(Debug)]
pub(crate) struct Machine {
    pub(crate) settings: Settings,
    pub(crate) slots: BTreeMap<Slot, SlotState>,
    pub(crate) phase: Phase,
    pub(crate) master: Master,
    /// When the watchdog next looks (while it is on and nothing stops).
    next_watchdog: Option<Instant>,
    all_ready_logged: bool,
}

impl Machine {
    pub(crate) fn new(settings: Settings) -> Self {
        Machine {
            settings,
            slots: BTreeMap::new(),
            phase: Phase::Running,
            master: Master::Booting,
            next_watchdog: None,
            all_ready_logged: false,
        }
    }

    /// Acts on `input` at `now`.
    pub(crate) fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if matches!(self.phase, Phase::Done) {
            return out;
        }
        match input {
            Input::Start => self.start_all(now, &mut out),
            Input::Ready { slot, generation } => self.ready(slot, generation, now, &mut out),
            Input::Heartbeat { slot, generation } => {
                if let Some(process) = self.process_mut(slot, generation) {
                    process.heartbeat = now;
                }
            }
            Input::Draining { slot, generation } => {
                self.drains_itself(slot, generation, now, &mut out)
            }
            Input::Failed {
                slot,
                generation,
                reason,
            } => {
                if let Some(state) = self.slots.get_mut(&slot) {
                    if state
                        .current
                        .processes()
                        .any(|p| p.generation == generation)
                    {
                        state.last_error = Some(reason);
                    }
                }
            }
            Input::Exited {
                slot,
                generation,
                success,
                status,
            } => self.exited(slot, generation, success, status, now, &mut out),
            Input::SpawnFailed {
                slot,
                generation,
                failure,
            } => self.spawn_failed(slot, generation, failure, now, &mut out),
            Input::Signal(Command::Reload) => self.reload(now, &mut out),
            Input::Signal(Command::RemoveNode) => self.remove_node(now, &mut out),
            Input::Signal(Command::Terminate) => self.stop("SIGTERM", 0, now, &mut out),
            Input::Signal(Command::Interrupt) => {
                if matches!(self.phase, Phase::Stopping { .. }) {
                    warn!("second SIGINT: stopping at once");
                    out.push(Action::KillAllAndExit { code: 130 });
                    self.phase = Phase::Done;
                    return out;
                }
                self.stop("SIGINT", 0, now, &mut out);
            }
            Input::AddNode { slot } => self.add_node(slot, now, &mut out),
            Input::MasterReady => {
                if self.master == Master::Booting {
                    self.master = Master::Serving;
                    info!(node = 0, generation = 1, "node ready");
                    self.log_all_ready(now);
                }
            }
            Input::BodyDone { code } => {
                self.master = Master::Returned(code);
                let reason = match code {
                    0 => "the master's body returned",
                    _ => "the master's body failed",
                };
                self.stop(reason, 0, now, &mut out);
            }
            Input::Tick => self.tick(now, &mut out),
        }
        self.advance_reload(now, &mut out);
        self.finish(&mut out);
        out
    }

    /// When [`Input::Tick`] is next due, if ever.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if let Phase::Stopping { deadline, .. } = self.phase {
            return Some(deadline);
        }
        if matches!(self.phase, Phase::Done) {
            return None;
        }
        let processes = self
            .slots
            .values()
            .flat_map(|s| s.processes())
            .filter_map(Process::due);
        let backoffs = self.slots.values().filter_map(|s| match s.current {
            Current::BackingOff { until } => Some(until),
            _ => None,
        });
        processes.chain(backoffs).chain(self.next_watchdog).min()
    }

    /// The slot SIGTTIN would add: the lowest worker slot that is not a member.
    pub(crate) fn slot_to_add(&self) -> Option<Slot> {
        if !matches!(self.phase, Phase::Running | Phase::Reloading { .. }) {
            return None;
        }
        (self.settings.workers.start..=self.settings.max_slot)
            .find(|slot| self.slots.get(slot).is_none_or(|s| !s.current.is_member()))
    }

    /// The slots that serve or will again, the master's node aside.
    pub(crate) fn members(&self) -> Vec<Slot> {
        self.slots
            .iter()
            .filter(|(_, s)| s.current.is_member())
            .map(|(slot, _)| *slot)
            .collect()
    }

    fn start_all(&mut self, now: Instant, out: &mut Vec<Action>) {
        for slot in self.settings.workers.clone() {
            self.slots.insert(slot, SlotState::new());
        }
        // Every slot is a member before the first starts: each learns them all.
        for slot in self.settings.workers.clone() {
            let process = self.new_process(slot, now);
            self.slots.get_mut(&slot).expect("inserted").current = Current::Booting(process);
        }
        for slot in self.settings.workers.clone() {
            self.spawn(slot, out);
        }
        self.next_watchdog = self.heartbeat_every().map(|every| now + every);
    }

    /// The next incarnation of `slot`, booting; the caller puts it in place and
    /// then calls [`Self::spawn`].
    fn new_process(&mut self, slot: Slot, now: Instant) -> Process {
        let state = self.slots.entry(slot).or_insert_with(SlotState::new);
        state.generation += 1;
        Process::booting(state.generation, now, READY_TIMEOUT)
    }

    /// Orders the start of the booting incarnation of `slot` just put in place.
    fn spawn(&mut self, slot: Slot, out: &mut Vec<Action>) {
        let generation = self.slots[&slot].generation;
        let mesh_with = self
            .slots
            .iter()
            .filter(|(other, s)| **other != slot && s.current.is_member())
            .flat_map(|(other, s)| s.current.processes().map(|p| (*other, p.generation)))
            .collect();
        out.push(Action::Spawn {
            slot,
            generation,
            members: self.members(),
            mesh_with,
        });
    }

    /// Starts `slot` again now, as a fresh incarnation.
    fn restart_now(&mut self, slot: Slot, now: Instant, out: &mut Vec<Action>) {
        let process = self.new_process(slot, now);
        self.slots.get_mut(&slot).expect("exists").current = Current::Booting(process);
        self.spawn(slot, out);
    }

    fn ready(&mut self, slot: Slot, generation: Generation, now: Instant, out: &mut Vec<Action>) {
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
        self.log_all_ready(now);
    }

    /// A worker drains on its own (SIGTERM sent to it): a replacement starts now,
    /// and the old one has until its deadline.
    fn drains_itself(
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
                abort_reload(&mut self.phase, slot, "it drained before it was ready");
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

    fn exited(
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
                abort_reload(&mut self.phase, slot, &why);
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
    fn after_exit(
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
    fn back_off(&mut self, slot: Slot, now: Instant, out: &mut Vec<Action>) {
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

    fn spawn_failed(
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
                abort_reload(&mut self.phase, slot, "its process could not start");
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
    fn end_slot(&mut self, slot: Slot, out: &mut Vec<Action>) {
        if let Some(state) = self.slots.get_mut(&slot) {
            state.current = Current::Ended;
        }
        out.push(Action::Gone { slot });
        out.push(Action::CloseListener { slot });
    }

    /// Moves every current process of `slot` to draining, with a drain order.
    fn drain_slot(&mut self, slot: Slot, then: Current, deadline: Instant, out: &mut Vec<Action>) {
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

    fn reload(&mut self, now: Instant, out: &mut Vec<Action>) {
        match &mut self.phase {
            Phase::Running => {
                let queue: VecDeque<Slot> = self.members().into();
                info!(nodes = queue.len(), "SIGHUP: rolling restart");
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
    fn advance_reload(&mut self, now: Instant, out: &mut Vec<Action>) {
        loop {
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
                    *queue = members.into();
                    info!(nodes = queue.len(), "SIGHUP: rolling restart");
                    continue;
                }
                self.phase = Phase::Running;
                return;
            };
            // A slot not serving now starts again from the same path by itself.
            if let Some(Current::Serving(_)) = self.slots.get(&slot).map(|s| &s.current) {
                *replacing = Some(slot);
                let new = self.new_process(slot, now);
                let state = self.slots.get_mut(&slot).expect("exists");
                let Current::Serving(old) = std::mem::replace(&mut state.current, Current::Ended)
                else {
                    unreachable!("matched above")
                };
                state.current = Current::Replacing { old, new };
                self.spawn(slot, out);
                return;
            }
        }
    }

    fn add_node(&mut self, slot: Slot, now: Instant, out: &mut Vec<Action>) {
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

    fn remove_node(&mut self, now: Instant, out: &mut Vec<Action>) {
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
    fn stop(&mut self, reason: &str, code: i32, now: Instant, out: &mut Vec<Action>) {
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

    fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Phase::Stopping { deadline, .. } = self.phase {
            if now >= deadline {
                let left: Vec<Slot> = self
                    .slots
                    .iter()
                    .filter(|(_, s)| s.has_processes())
                    .map(|(slot, _)| *slot)
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
    fn watchdog(&mut self, now: Instant, out: &mut Vec<Action>) {
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
                    out.push(Action::Kill {
                        slot: *slot,
                        generation: process.generation,
                    });
                }
            }
        }
    }

    /// How often workers send heartbeats, if the watchdog is on.
    pub(crate) fn heartbeat_every(&self) -> Option<Duration> {
        self.settings.watchdog.map(heartbeat_every)
    }

    /// The exit, once everything has stopped and the master's body returned.
    fn finish(&mut self, out: &mut Vec<Action>) {
        let Phase::Stopping { code, .. } = self.phase else {
            return;
        };
        let left = self.slots.values().any(SlotState::has_processes);
        if !left && matches!(self.master, Master::Returned(_)) {
            info!("every node stopped");
            out.push(Action::Exit { code });
            self.phase = Phase::Done;
        }
    }

    fn process_mut(&mut self, slot: Slot, generation: Generation) -> Option<&mut Process> {
        self.slots
            .get_mut(&slot)?
            .processes_mut()
            .find(|p| p.generation == generation)
    }

    fn log_all_ready(&mut self, now: Instant) {
        let workers_ready = self
            .slots
            .values()
            .filter(|s| s.current.is_member())
            .all(|s| matches!(s.current, Current::Serving(_)));
        if !self.all_ready_logged && self.master == Master::Serving && workers_ready {
            self.all_ready_logged = true;
            info!(
                elapsed_ms = (now - self.settings.started).as_secs_f64() * 1000.0,
                "all {} nodes ready", self.settings.nodes
            );
        }
    }
}

/// How often workers send heartbeats for a watchdog `timeout`.
pub(crate) fn heartbeat_every(timeout: Duration) -> Duration {
    (timeout / 4).max(Duration::from_millis(10))
}

/// A replacement failed before it was ready: its old incarnation (put back by
/// the caller) keeps serving, and the rolling restart stops here.
fn abort_reload(phase: &mut Phase, slot: Slot, why: &str) {
    error!(
        node = slot,
        "the replacement failed: {why}; the old incarnation keeps serving; rolling restart stopped"
    );
    if let Phase::Reloading { .. } = phase {
        *phase = Phase::Running;
    }
}

/// A stop's exit code becomes `new` unless something already made it non-zero.
fn raise_exit_code(phase: &mut Phase, new: i32) {
    if let Phase::Stopping { code, .. } = phase {
        if *code == 0 {
            *code = new;
        }
    }
}
