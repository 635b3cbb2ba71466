//! The model test's world: the processes, as the operating system would have
//! them, doing what the state machine's actions say; the invariants checked
//! after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::op::Op;
use crate::supervisor::machine::{Action, Input, Machine, Phase, Settings, SpawnFailure, Upgrade};
use crate::supervisor::recycler::{Verdict, Why};
use crate::supervisor::slot::{Current, Deadline, Generation, Slot, SlotState};

/// A new master, as the world has it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Tree {
    said_ready: bool,
    pub fate: Fate,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Fate {
    Alive,
    /// Told to drain its tree and exit.
    Stopping,
    Killed,
    Exited,
}

/// The processes, as the operating system would have them.
pub(super) struct World {
    pub machine: Machine,
    now: Instant,
    /// Live processes: whether told to drain, whether killed.
    pub processes: BTreeMap<(Slot, Generation), (bool, bool)>,
    fail_next_spawn: Option<SpawnFailure>,
    pub exit: Option<i32>,
    pub master_body_done: bool,
    /// The new masters upgrades started, by attempt (1, 2, ...).
    pub trees: BTreeMap<u32, Tree>,
    /// The one the machine handed over to, if any.
    pub adopted: Option<u32>,
    /// The machine began to stop before any hand-over: no tree may serve on.
    stopped_before_hand_over: bool,
}

impl World {
    pub(super) fn new(restart: bool) -> Self {
        let now = Instant::now();
        let settings = Settings {
            workers: 1..4,
            master_serves: true,
            restart,
            boot_failures: 3,
            shutdown_timeout: Duration::from_secs(5),
            watchdog: Some(Duration::from_secs(4)),
            max_slot: 6,
            nodes: 4,
            started: now,
            upgrade_timeout: Duration::from_secs(30),
        };
        let mut world = World {
            machine: Machine::new(settings),
            now,
            processes: BTreeMap::new(),
            fail_next_spawn: None,
            exit: None,
            master_body_done: false,
            trees: BTreeMap::new(),
            adopted: None,
            stopped_before_hand_over: false,
        };
        world.feed(Input::Start);
        world
    }

    /// Feeds `input`, carries out the actions, and checks the invariants.
    pub(super) fn feed(&mut self, input: Input) {
        if self.exit.is_some() {
            return;
        }
        let adding = match input {
            Input::AddNode { slot } => Some(slot),
            _ => None,
        };
        let ended_before: BTreeSet<Slot> = self
            .machine
            .slots
            .iter()
            .filter(|(_, s)| !s.current.is_member())
            .map(|(slot, _)| *slot)
            .collect();
        let was_stopping = matches!(self.machine.phase, Phase::Stopping { .. } | Phase::Done);
        let actions = self.machine.handle(input, self.now);
        let stopping = matches!(self.machine.phase, Phase::Stopping { .. } | Phase::Done);
        if stopping && !was_stopping && self.machine.upgrade != Upgrade::HandedOver {
            self.stopped_before_hand_over = true;
        }
        let mut follow = Vec::new();
        for action in actions {
            match action {
                Action::Spawn {
                    slot, generation, ..
                } => {
                    assert!(
                        !ended_before.contains(&slot) || adding == Some(slot),
                        "slot {slot}, removed or ended, was started again"
                    );
                    match self.fail_next_spawn.take() {
                        Some(failure) => follow.push(Input::SpawnFailed {
                            slot,
                            generation,
                            failure,
                        }),
                        None => {
                            let fresh = self.processes.insert((slot, generation), (false, false));
                            assert!(fresh.is_none(), "generation {generation} of {slot} reused");
                        }
                    }
                }
                Action::Drain { slot, generation } => {
                    self.processes
                        .get_mut(&(slot, generation))
                        .expect("drains a live process")
                        .0 = true;
                }
                Action::Kill { slot, generation } => {
                    if let Some(process) = self.processes.get_mut(&(slot, generation)) {
                        process.1 = true;
                    }
                }
                Action::Exit { code } => {
                    assert!(self.processes.is_empty(), "exit with processes left");
                    self.exit = Some(code);
                }
                Action::KillAllAndExit { code } => {
                    self.processes.clear();
                    self.exit = Some(code);
                }
                Action::Serving { slot } => {
                    // By the step's end its replacement may have begun (a reload
                    // or a recycling reached it): the ready one serves on meanwhile.
                    let state = &self.machine.slots[&slot];
                    assert!(
                        matches!(
                            state.current,
                            Current::Serving(_) | Current::Replacing { .. }
                        ),
                        "slot {slot} marked serving while {:?}",
                        state.current
                    );
                }
                Action::Gone { .. }
                | Action::CloseListener { .. }
                | Action::StopMaster
                | Action::Notify(_) => {}
                Action::StartUpgrade { attempt } => {
                    assert_eq!(attempt, self.trees.len() as u32 + 1, "attempts count up");
                    let fresh = Tree {
                        said_ready: false,
                        fate: Fate::Alive,
                    };
                    self.trees.insert(attempt, fresh);
                }
                Action::KillUpgrade { attempt } => self.told(attempt, Fate::Killed),
                Action::StopUpgrade { attempt } => self.told(attempt, Fate::Stopping),
            }
        }
        // A failed start is reported back at once, as the supervisor's loop does.
        for input in follow {
            self.feed(input);
        }
        self.check();
    }

    /// What the machine told new master `attempt`: it dies, or drains.
    fn told(&mut self, attempt: u32, fate: Fate) {
        let tree = self
            .trees
            .get_mut(&attempt)
            .expect("told a master it started");
        assert_ne!(
            Some(attempt),
            self.adopted,
            "the master handed over to was told {fate:?}"
        );
        if tree.fate == Fate::Alive || fate == Fate::Killed && tree.fate == Fate::Stopping {
            tree.fate = fate;
        }
    }

    /// The `pick`-th new master that has not said ready, if any.
    fn pick_tree(&self, pick: usize) -> Option<u32> {
        let quiet: Vec<u32> = self
            .trees
            .iter()
            .filter(|(_, t)| !t.said_ready && t.fate != Fate::Exited)
            .map(|(attempt, _)| *attempt)
            .collect();
        (!quiet.is_empty()).then(|| quiet[pick % quiet.len()])
    }

    /// New master `attempt` says it is ready.
    fn upgrade_ready(&mut self, attempt: u32) {
        self.trees.get_mut(&attempt).expect("started").said_ready = true;
        let handed_over = self.machine.upgrade == Upgrade::HandedOver;
        self.feed(Input::UpgradeReady {
            attempt,
            pid: attempt,
        });
        if !handed_over && self.machine.upgrade == Upgrade::HandedOver {
            assert!(self.adopted.is_none(), "handed over twice");
            assert!(!self.stopped_before_hand_over, "handed over after a stop");
            assert_eq!(
                self.trees[&attempt].fate,
                Fate::Alive,
                "handed over to a master told to go"
            );
            self.adopted = Some(attempt);
        }
        if self.adopted != Some(attempt) && self.exit.is_none() {
            let fate = self.trees[&attempt].fate;
            assert_ne!(
                fate,
                Fate::Alive,
                "master {attempt} said ready, was not taken, and lives on"
            );
        }
    }

    /// Once inputs settle: exactly one tree serves, or none after a stop, and
    /// no new master is left that nobody will stop.
    pub(super) fn check_trees(&self) {
        let old_serves = self.exit.is_none()
            && !matches!(self.machine.phase, Phase::Stopping { .. } | Phase::Done);
        let alive: Vec<u32> = self
            .trees
            .iter()
            .filter(|(_, t)| t.fate == Fate::Alive)
            .map(|(attempt, _)| *attempt)
            .collect();
        if self.stopped_before_hand_over {
            assert!(
                alive.is_empty(),
                "stopped, but new masters {alive:?} serve on"
            );
        } else {
            let serving = usize::from(old_serves) + alive.len();
            assert_eq!(
                serving, 1,
                "old tree serves: {old_serves}; new masters alive: {alive:?}"
            );
            assert!(
                alive.iter().all(|a| Some(*a) == self.adopted),
                "{alive:?}, adopted {:?}",
                self.adopted
            );
        }
    }

    /// The invariants that hold after every step.
    fn check(&mut self) {
        if self.exit.is_some() {
            return;
        }
        let tracked: BTreeSet<(Slot, Generation)> = self
            .machine
            .slots
            .iter()
            .flat_map(|(slot, s)| s.processes().map(|p| (*slot, p.generation)))
            .collect();
        let live: BTreeSet<_> = self.processes.keys().copied().collect();
        assert_eq!(
            tracked, live,
            "every live process is tracked, and only those"
        );
        for (slot, state) in self.machine.slots.iter() {
            for process in &state.draining {
                assert!(
                    matches!(process.deadline, Deadline::KillAt(_) | Deadline::Killed),
                    "slot {slot}: a draining process without a deadline"
                );
            }
            if let Current::Booting(p) = &state.current {
                assert!(
                    !matches!(p.deadline, Deadline::None | Deadline::KillAt(_)),
                    "slot {slot}: a booting process without a ready deadline"
                );
            }
            if let Current::Replacing { old, new } = &state.current {
                assert!(old.generation < new.generation);
            }
        }
        // The next deadline, kept up to date from the slots that changed, is
        // no later than any slot's (while stopping, it is the stop's).
        if let Some(due) = self.machine.slots.values().filter_map(SlotState::due).min() {
            let stopping = matches!(self.machine.phase, Phase::Stopping { .. });
            let next = self.machine.next_deadline();
            assert!(
                next.is_some_and(|next| stopping || next <= due),
                "a deadline nobody waits for"
            );
        }
        let replacing = self
            .machine
            .slots
            .values()
            .filter(|s| matches!(s.current, Current::Replacing { .. }))
            .count();
        assert!(replacing <= 1, "{replacing} slots replaced at once");
        if let Phase::Reloading {
            replacing: Some(slot),
            ..
        } = &self.machine.phase
        {
            assert!(self.machine.slots.contains_key(slot));
        }
    }

    /// The `pick`-th live process, if any.
    fn pick(&self, pick: usize) -> Option<(Slot, Generation)> {
        let n = self.processes.len();
        (n > 0).then(|| *self.processes.keys().nth(pick % n).expect("in range"))
    }

    pub(super) fn exit(&mut self, (slot, generation): (Slot, Generation), success: bool) {
        self.processes.remove(&(slot, generation));
        self.feed(Input::Exited {
            slot,
            generation,
            success,
            status: "test".into(),
        });
    }

    pub(super) fn wait(&mut self, by: Duration) {
        self.now += by;
        self.feed(Input::Tick);
    }

    pub(super) fn apply(&mut self, op: Op) {
        match op {
            Op::Exit { pick, success } => {
                if let Some(process) = self.pick(pick) {
                    self.exit(process, success);
                }
            }
            Op::Ready { pick } => {
                if let Some((slot, generation)) = self.pick(pick) {
                    self.feed(Input::Ready { slot, generation });
                }
            }
            Op::Heartbeat { pick } => {
                if let Some((slot, generation)) = self.pick(pick) {
                    self.feed(Input::Heartbeat { slot, generation });
                }
            }
            Op::DrainsItself { pick } => {
                if let Some((slot, generation)) = self.pick(pick) {
                    self.feed(Input::Draining { slot, generation });
                }
            }
            Op::Signal(command) => self.feed(Input::Signal(command)),
            Op::AddNode => {
                if let Some(slot) = self.machine.slot_to_add() {
                    self.feed(Input::AddNode { slot });
                }
            }
            Op::Wait { ms } => self.wait(Duration::from_millis(ms)),
            Op::HeartbeatAll => self.heartbeat_all(),
            Op::FailNextSpawn { resources } => {
                self.fail_next_spawn = Some(match resources {
                    true => SpawnFailure::Resources("EMFILE".into()),
                    false => SpawnFailure::Other("ENOENT".into()),
                })
            }
            Op::MasterReady => self.feed(Input::MasterReady),
            Op::BodyDone { code } => {
                if !self.master_body_done {
                    self.master_body_done = true;
                    self.feed(Input::BodyDone { code });
                }
            }
            Op::UpgradeReady { pick } => {
                if let Some(attempt) = self.pick_tree(pick) {
                    self.upgrade_ready(attempt);
                }
            }
            Op::Verdict { pick, kill } => {
                if let Some((slot, generation)) = self.pick(pick) {
                    let verdict = match kill {
                        true => Verdict::Kill {
                            slot,
                            generation,
                            resident: 2,
                            ceiling: 1,
                        },
                        false => Verdict::Recycle {
                            slot,
                            generation,
                            why: Why::Requests {
                                served: 1,
                                limit: 1,
                            },
                        },
                    };
                    self.feed(Input::Verdict(verdict));
                }
            }
            Op::UpgradeFails { pick, exits } => {
                let live = self
                    .pick_tree(pick)
                    .filter(|a| self.trees[a].fate == Fate::Alive);
                if let Some(attempt) = live {
                    let tree = self.trees.get_mut(&attempt).expect("started");
                    match exits {
                        true => tree.fate = Fate::Exited,
                        false => tree.said_ready = true, // it said something else
                    }
                    let why = format!("master {attempt} failed");
                    self.feed(Input::UpgradeFailed { attempt, why });
                    let fate = self.trees[&attempt].fate;
                    assert_ne!(fate, Fate::Alive, "master {attempt} failed and lives on");
                }
            }
        }
    }

    fn heartbeat_all(&mut self) {
        for (slot, generation) in self.processes.keys().copied().collect::<Vec<_>>() {
            self.feed(Input::Heartbeat { slot, generation });
        }
    }

    /// A while of a healthy world: the processes started get ready, the killed
    /// ones exit, and those told to drain exit if `drained`; one second a round.
    pub(super) fn settle(&mut self, rounds: usize, drained: bool) {
        for _ in 0..rounds {
            for ((slot, generation), (told, killed)) in self.processes.clone() {
                if killed || (told && drained) {
                    self.exit((slot, generation), !killed);
                } else {
                    self.feed(Input::Ready { slot, generation });
                }
            }
            self.heartbeat_all();
            self.wait(Duration::from_secs(1));
        }
    }
}
