//! The model test: random sequences of events fed to the state machine, against a
//! small world of processes that does what the actions say, with invariants
//! checked after every step and liveness checked at the end.

mod op;
mod world;

use std::time::Duration;

use proptest::prelude::*;

use super::machine::{Command, Input, Phase};
use super::slot::{Current, Slot};
use op::{op, Op};
use world::{Fate, World};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn any_sequence_of_events_keeps_the_invariants_and_ends(
        ops in proptest::collection::vec(op(), 0..80),
        restart in prop_oneof![4 => Just(true), 1 => Just(false)],
        drained in any::<bool>(),
    ) {
        run(ops, restart, drained)?;
    }
}

/// One sequence of events, then time for everything to end, then a stop.
fn run(ops: Vec<Op>, restart: bool, drained: bool) -> Result<(), TestCaseError> {
    let mut world = World::new(restart);
    for op in ops {
        world.apply(op);
    }
    // Every upgrade's deadline passes; then one tree serves, or none.
    world.wait(Duration::from_secs(31));
    world.check_trees();
    if world.exit.is_none() && !matches!(world.machine.phase, Phase::Stopping { .. }) {
        // A reload always ends, and the phase comes back to running.
        world.settle(120, drained);
        if world.exit.is_none() && !matches!(world.machine.phase, Phase::Stopping { .. }) {
            prop_assert!(
                matches!(world.machine.phase, Phase::Running),
                "still {:?}",
                world.machine.phase
            );
            // Every member slot serves again (none left empty for good).
            for (slot, state) in world.machine.slots.iter() {
                if state.current.is_member() {
                    prop_assert!(
                        matches!(state.current, Current::Serving(_)),
                        "slot {slot}: {:?}",
                        state.current
                    );
                }
            }
        }
    }
    // A stop always ends with an exit code, whether or not the nodes drain.
    world.feed(Input::Signal(Command::Terminate));
    if !world.master_body_done {
        world.master_body_done = true;
        world.feed(Input::BodyDone { code: 0 });
    }
    world.settle(60, drained);
    prop_assert!(
        world.exit.is_some(),
        "no exit; phase {:?}",
        world.machine.phase
    );
    let alive = world.trees.iter().filter(|(_, t)| t.fate == Fate::Alive);
    let others: Vec<_> = alive.filter(|(a, _)| Some(**a) != world.adopted).collect();
    prop_assert!(others.is_empty(), "new masters left serving: {others:?}");
    Ok(())
}

#[test]
fn a_slot_removed_while_it_backs_off_is_not_started_again() {
    let mut world = World::new(true);
    world.settle(1, true);
    // Three quick deaths of node 3: it backs off.
    for _ in 0..3 {
        let generation = world.machine.slots[&3].generation;
        world.exit((3, generation), false);
        world.settle(1, true);
        world.feed(Input::MasterReady);
    }
    world.feed(Input::Signal(Command::RemoveNode));
    world.settle(30, true);
    assert!(matches!(world.machine.slots[&3].current, Current::Removed));
    assert!(world.processes.keys().all(|(slot, _)| *slot != 3));
}

#[test]
fn a_frozen_group_is_not_a_hung_worker_but_a_worker_stopped_alone_is() {
    let mut world = World::new(true);
    world.settle(2, true);
    // Everything stopped for 20 s: the supervisor's first look comes late.
    world.wait(Duration::from_secs(20));
    assert!(world.processes.values().all(|(_, killed)| !killed));
    // Node 1 alone stops sending heartbeats.
    for _ in 0..6 {
        for (slot, generation) in world.processes.keys().copied().collect::<Vec<_>>() {
            if slot != 1 {
                world.feed(Input::Heartbeat { slot, generation });
            }
        }
        world.wait(Duration::from_secs(1));
    }
    let killed: Vec<Slot> = world
        .processes
        .iter()
        .filter(|(_, (_, killed))| *killed)
        .map(|((slot, _), _)| *slot)
        .collect();
    assert_eq!(killed, vec![1]);
}

/// Found by the model test in CI: a node ready and, in the same step, taken up
/// by the rolling restart is marked serving, and serves until its replacement
/// is ready.
#[test]
fn a_node_ready_and_replaced_in_one_step_is_marked_serving() {
    let ops = vec![
        Op::Ready { pick: 7 },
        Op::Verdict {
            pick: 4,
            kill: false,
        },
        Op::Ready { pick: 6 },
        Op::Exit {
            pick: 2,
            success: false,
        },
        Op::AddNode,
        Op::Exit {
            pick: 2,
            success: false,
        },
        Op::Signal(Command::Reload),
    ];
    run(ops, true, false).unwrap();
}
