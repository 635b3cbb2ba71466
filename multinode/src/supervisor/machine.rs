//! The supervisor's decisions, without I/O: events in (a process ready, exited or
//! silent, a signal, a timer), actions out (spawn, drain, kill, tell the mesh, exit).
//!
//! Every slot is a [`Current`] plus the incarnations it is draining; the server is
//! in one [`Phase`]. Time is an input (`now`), so a model test can drive it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::notice::Notice;
use super::slot::{Current, Generation, Process, Slot, SlotState};
use super::slots::Slots;

mod commands;
mod events;
mod lifecycle;
mod recycle;
mod timers;
mod upgrade;

use super::recycles::Recycles;
pub(crate) use events::{Action, Command, Input, SpawnFailure};

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
    /// How long a new master (SIGUSR2) has to be ready.
    pub upgrade_timeout: Duration,
}

/// Where an upgrade stands, from the old master's side.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Upgrade {
    Idle,
    /// The new master of upgrade `attempt` is starting; it is killed if not
    /// ready by `deadline`.
    Starting {
        deadline: Instant,
        attempt: u32,
    },
    /// The new master serves: this one stops, and no longer speaks for the
    /// service.
    HandedOver,
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
    pub(crate) slots: Slots,
    pub(crate) phase: Phase,
    pub(crate) master: Master,
    /// When the watchdog next looks (while it is on and nothing stops).
    next_watchdog: Option<Instant>,
    all_ready_logged: bool,
    /// 1 + the rolling restarts done.
    pub(super) generation: u32,
    pub(crate) upgrade: Upgrade,
    /// The upgrades started so far: the next one's attempt is one more.
    upgrades: u32,
    /// What happened since the start, for the metrics.
    pub(crate) counters: Counters,
    /// The workers due for recycling.
    pub(super) recycles: Recycles,
}

/// The supervisor's totals since the start.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Counters {
    pub reloads: u64,
    pub boot_failures: u64,
    pub watchdog_kills: u64,
    /// Workers recycled for `max_requests`, for `max_memory`, and killed
    /// over `max_memory_hard`.
    pub recycled_requests: u64,
    pub recycled_memory: u64,
    pub memory_kills: u64,
}

impl Machine {
    pub(crate) fn new(settings: Settings) -> Self {
        Machine {
            settings,
            slots: Slots::default(),
            phase: Phase::Running,
            master: Master::Booting,
            next_watchdog: None,
            all_ready_logged: false,
            generation: 1,
            upgrade: Upgrade::Idle,
            upgrades: 0,
            counters: Counters::default(),
            recycles: Recycles::default(),
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
                    self.all_ready(now, &mut out);
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
            Input::Tick => {
                self.upgrade_tick(now, &mut out);
                self.tick(now, &mut out)
            }
            Input::Signal(Command::Upgrade) => self.upgrade(now, &mut out),
            Input::UpgradeReady { attempt, pid } => self.upgraded(attempt, pid, now, &mut out),
            Input::UpgradeFailed { attempt, why } => self.upgrade_failed(attempt, &why, &mut out),
            Input::Verdict(verdict) => self.on_verdict(verdict, &mut out),
        }
        self.advance_reload(now, &mut out);
        self.advance_recycling(now, &mut out);
        self.finish(&mut out);
        out
    }

    /// When [`Input::Tick`] is next due, if ever.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        if let Phase::Stopping { deadline, .. } = self.phase {
            return Some(deadline);
        }
        if matches!(self.phase, Phase::Done) {
            return None;
        }
        let upgrade = self.upgrade_deadline();
        [self.slots.next_due(), self.next_watchdog, upgrade]
            .into_iter()
            .flatten()
            .min()
    }

    /// The slot SIGTTIN would add: the lowest worker slot that is not a member.
    pub(crate) fn slot_to_add(&self) -> Option<Slot> {
        if !matches!(self.phase, Phase::Running | Phase::Reloading { .. }) {
            return None;
        }
        (self.settings.workers.start..=self.settings.max_slot)
            .find(|slot| self.slots.get(slot).is_none_or(|s| !s.current.is_member()))
    }

    /// The incarnation of worker slot `slot` that serves, if one does.
    pub(crate) fn serving(&self, slot: Slot) -> Option<Generation> {
        self.slots.get(&slot)?.current.serving()
    }

    /// How many nodes serve as the server is configured now: the master's
    /// own if it serves, and every worker slot not scaled down (SIGTTOU).
    pub(crate) fn nodes(&mut self) -> usize {
        self.slots.not_removed() + usize::from(self.settings.master_serves)
    }

    /// What the whole server is doing, in a word, for a status line.
    pub(crate) fn doing(&self) -> &'static str {
        match (&self.phase, self.upgrade) {
            (Phase::Stopping { .. } | Phase::Done, _) => "stopping",
            (_, Upgrade::Starting { .. }) => "upgrading",
            (_, Upgrade::HandedOver) => "handed over to a new master",
            (Phase::Reloading { .. }, _) => "reloading",
            (Phase::Running, _) => "serving",
        }
    }

    pub(crate) fn members(&self) -> Vec<Slot> {
        self.slots
            .iter()
            .filter(|(_, s)| s.current.is_member())
            .map(|(slot, _)| *slot)
            .collect()
    }

    fn start_all(&mut self, now: Instant, out: &mut Vec<Action>) {
        for slot in self.settings.workers.clone() {
            self.slots.get_or_new(slot);
        }
        // Every slot is a member before the first starts: each learns them all.
        for slot in self.settings.workers.clone() {
            let process = self.new_process(slot, now);
            self.slots.get_mut(&slot).expect("inserted").current = Current::Booting(process);
        }
        // Listed once, not once a slot: a start is linear in the slots.
        let members = self.members();
        for slot in self.settings.workers.clone() {
            self.spawn_with(slot, members.clone(), out);
        }
        self.next_watchdog = self.heartbeat_every().map(|every| now + every);
    }

    /// The next incarnation of `slot`, booting; the caller puts it in place and
    /// then calls [`Self::spawn`].
    fn new_process(&mut self, slot: Slot, now: Instant) -> Process {
        let state = self.slots.get_or_new(slot);
        state.generation += 1;
        Process::booting(state.generation, now, READY_TIMEOUT)
    }

    /// Orders the start of the booting incarnation of `slot` just put in place.
    fn spawn(&mut self, slot: Slot, out: &mut Vec<Action>) {
        let members = self.members();
        self.spawn_with(slot, members, out);
    }

    fn spawn_with(&mut self, slot: Slot, members: Vec<Slot>, out: &mut Vec<Action>) {
        let generation = self.slots[&slot].generation;
        out.push(Action::Spawn {
            slot,
            generation,
            members,
        });
    }

    /// Whether incarnation `generation` of `slot` is the current one of a
    /// member slot: one that a node just started is meshed with, if it joined.
    pub(crate) fn is_current_member(&self, slot: Slot, generation: Generation) -> bool {
        self.slots.get(&slot).is_some_and(|s| {
            s.current.is_member() && s.current.processes().any(|p| p.generation == generation)
        })
    }

    /// The incarnations of the member nodes but `slot`: those a node of
    /// `slot` may mesh with (the master's node aside).
    pub(super) fn mesh_members(&self, slot: Slot) -> Vec<(Slot, Generation)> {
        self.slots
            .iter()
            .filter(|(other, s)| **other != slot && s.current.is_member())
            .flat_map(|(other, s)| s.current.processes().map(|p| (*other, p.generation)))
            .collect()
    }

    /// Starts `slot` again now, as a fresh incarnation.
    fn restart_now(&mut self, slot: Slot, now: Instant, out: &mut Vec<Action>) {
        let process = self.new_process(slot, now);
        self.slots.get_mut(&slot).expect("exists").current = Current::Booting(process);
        self.spawn(slot, out);
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

    /// The number of nodes that serve or will: the members and the master's.
    pub(super) fn serving_nodes(&self) -> usize {
        self.members().len() + usize::from(self.settings.master_serves)
    }

    /// Every node serves: a rolling restart moved the generation on.
    pub(super) fn reloaded(&mut self, out: &mut Vec<Action>) {
        self.generation += 1;
        out.push(Action::Notify(Notice::Ready {
            nodes: self.serving_nodes(),
            generation: self.generation,
        }));
    }

    /// Logs, and tells the service manager, once at start that every node is ready.
    pub(super) fn all_ready(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.all_ready_logged || self.master != Master::Serving {
            return;
        }
        // From the last: the slots start in order, so the one still booting is
        // found at once while they start, rather than after those that serve.
        let workers_ready = self
            .slots
            .values()
            .rev()
            .filter(|s| s.current.is_member())
            .all(|s| matches!(s.current, Current::Serving(_)));
        if workers_ready {
            self.all_ready_logged = true;
            info!(
                elapsed_ms = (now - self.settings.started).as_secs_f64() * 1000.0,
                "all {} nodes ready", self.settings.nodes
            );
            out.push(Action::Notify(Notice::Ready {
                nodes: self.serving_nodes(),
                generation: self.generation,
            }));
        }
    }
}

/// How often workers send heartbeats for a watchdog `timeout`.
pub(crate) fn heartbeat_every(timeout: Duration) -> Duration {
    (timeout / 4).max(Duration::from_millis(10))
}

/// A stop's exit code becomes `new` unless something already made it non-zero.
pub(super) fn raise_exit_code(phase: &mut Phase, new: i32) {
    if let Phase::Stopping { code, .. } = phase {
        if *code == 0 {
            *code = new;
        }
    }
}
