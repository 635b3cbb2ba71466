//! The model test's random events, and how proptest draws them.

use proptest::prelude::*;

use crate::supervisor::machine::Command;

/// One random event.
#[derive(Clone, Debug)]
pub(super) enum Op {
    Exit {
        pick: usize,
        success: bool,
    },
    Ready {
        pick: usize,
    },
    Heartbeat {
        pick: usize,
    },
    DrainsItself {
        pick: usize,
    },
    Signal(Command),
    AddNode,
    /// Time passes (the whole group may have been stopped meanwhile).
    Wait {
        ms: u64,
    },
    HeartbeatAll,
    /// The next start fails, for lack of resources or not.
    FailNextSpawn {
        resources: bool,
    },
    MasterReady,
    BodyDone {
        code: i32,
    },
    /// A new master (an upgrade's) reports ready: in time, or late (after it
    /// was told to stop or die, its word already on its way).
    UpgradeReady {
        pick: usize,
    },
    /// A new master fails before it is ready: it exits, or says something
    /// other than "ready" and lives on.
    UpgradeFails {
        pick: usize,
        exits: bool,
    },
    /// The recycler finds a worker due, or over the hard ceiling.
    Verdict {
        pick: usize,
        kill: bool,
    },
}

pub(super) fn op() -> impl Strategy<Value = Op> {
    let pick = 0..8usize;
    prop_oneof![
        4 => (pick.clone(), any::<bool>()).prop_map(|(pick, success)| Op::Exit { pick, success }),
        6 => pick.clone().prop_map(|pick| Op::Ready { pick }),
        2 => pick.clone().prop_map(|pick| Op::Heartbeat { pick }),
        1 => pick.clone().prop_map(|pick| Op::DrainsItself { pick }),
        2 => Just(Op::Signal(Command::Reload)),
        2 => Just(Op::Signal(Command::RemoveNode)),
        1 => Just(Op::Signal(Command::Terminate)),
        1 => Just(Op::Signal(Command::Interrupt)),
        2 => Just(Op::AddNode),
        4 => (1..40_000u64).prop_map(|ms| Op::Wait { ms }),
        3 => Just(Op::HeartbeatAll),
        1 => any::<bool>().prop_map(|resources| Op::FailNextSpawn { resources }),
        1 => Just(Op::MasterReady),
        1 => (0..2i32).prop_map(|code| Op::BodyDone { code }),
        2 => Just(Op::Signal(Command::Upgrade)),
        2 => (0..3usize).prop_map(|pick| Op::UpgradeReady { pick }),
        1 => (0..3usize, any::<bool>()).prop_map(|(pick, exits)| Op::UpgradeFails { pick, exits }),
        3 => (pick, any::<bool>()).prop_map(|(pick, kill)| Op::Verdict { pick, kill }),
    ]
}
