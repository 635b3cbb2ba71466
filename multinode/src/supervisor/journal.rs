//! The lifecycle events the status page lists (`admin::Journal`): what the
//! supervisor did and saw, in a person's words.

use super::machine::Action;
use super::notice::Notice;
use super::slot::{Generation, Slot};
use super::Supervisor;

impl Supervisor {
    /// Records `action`, if a person would want to see it.
    pub(super) fn journal_action(&self, action: &Action) {
        let event = match action {
            Action::Drain { slot, generation } => {
                format!("node {slot} (generation {generation}) drains")
            }
            Action::Kill { slot, generation } => {
                format!("node {slot} (generation {generation}) killed")
            }
            Action::Notify(Notice::Ready { nodes, generation }) => {
                format!("all {nodes} nodes ready (generation {generation})")
            }
            Action::Notify(Notice::Reloading { nodes }) => {
                format!("reload: replacing {nodes} nodes one at a time")
            }
            Action::Notify(Notice::ReloadStopped { slot }) => {
                format!("reload stopped: node {slot}'s replacement failed")
            }
            Action::Notify(Notice::Stopping { nodes }) => format!("stopping {nodes} nodes"),
            Action::Notify(Notice::Upgraded { pid }) => {
                format!("upgraded: the new master is pid {pid}")
            }
            Action::StartUpgrade { .. } => "upgrade: starting a new master".to_owned(),
            Action::KillUpgrade { .. } => "upgrade: killing the new master".to_owned(),
            Action::StopUpgrade { .. } => "upgrade: stopping the new master too".to_owned(),
            _ => return,
        };
        self.journal.record(event);
    }

    /// Records that incarnation `generation` of `slot` started as `pid`.
    pub(super) fn journal_started(&self, slot: Slot, generation: Generation, pid: u32) {
        self.journal.record(format!(
            "node {slot} started (generation {generation}, pid {pid})"
        ));
    }

    /// Records that incarnation `generation` of `slot` is ready.
    pub(super) fn journal_ready(&self, slot: Slot, generation: Generation) {
        self.journal
            .record(format!("node {slot} ready (generation {generation})"));
    }

    /// Records that incarnation `generation` of `slot` exited with `status`.
    pub(super) fn journal_exited(&self, slot: Slot, generation: Generation, status: &str) {
        self.journal.record(format!(
            "node {slot} (generation {generation}) exited: {status}"
        ));
    }
}
