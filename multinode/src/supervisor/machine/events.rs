//! What the state machine takes and gives: the events that happen to the
//! server (inputs, the operator's commands among them) and the actions it
//! answers with.

use crate::supervisor::notice::Notice;
use crate::supervisor::recycler::Verdict;
use crate::supervisor::slot::{Generation, Slot};

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
    /// SIGUSR2: hand everything to a new master started from the executable.
    Upgrade,
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
    /// The recycler's verdict on a worker.
    Verdict(Verdict),
    /// The new master of upgrade `attempt` is ready.
    UpgradeReady {
        attempt: u32,
        pid: u32,
    },
    /// The new master of upgrade `attempt` failed before it was ready.
    UpgradeFailed {
        attempt: u32,
        why: String,
    },
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Action {
    /// Start incarnation `generation` of `slot`, telling it the member slots, and
    /// mesh it with the nodes that joined the mesh.
    Spawn {
        slot: Slot,
        generation: Generation,
        members: Vec<Slot>,
    },
    /// The slot serves from a new incarnation: mark it live in the load table.
    Serving {
        slot: Slot,
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
    /// Tell the service manager (systemd) where the server stands.
    Notify(Notice),
    /// Start a new master from the executable, with every listening socket.
    StartUpgrade {
        attempt: u32,
    },
    /// Kill that new master (with its tree): not ready in time, failed, or
    /// ready too late.
    KillUpgrade {
        attempt: u32,
    },
    /// That new master drains its own tree and exits: a stop came while it
    /// started.
    StopUpgrade {
        attempt: u32,
    },
}
