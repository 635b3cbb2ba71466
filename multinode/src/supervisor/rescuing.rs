//! The supervisor's side of the rescue (with `reuse_port`): which queues are
//! watched, and where a connection taken from a node that is not accepting goes.

use std::net::TcpStream;

use tokio::sync::mpsc;
use tracing::warn;

use super::rescue::{Report, Rescue};
use super::slot::Slot;
use super::Supervisor;
use crate::config::Balance;
use crate::control::incarnation::Incarnation;
use crate::control::ToWorker;

impl Supervisor {
    /// With `ReusePort`, starts watching every slot's queue; their reports
    /// come on the channel returned.
    pub(super) fn watch_queues(&mut self) -> mpsc::UnboundedReceiver<Report> {
        let (reports, received) = mpsc::unbounded_channel();
        if self.config.balance.per_slot() {
            let first = self.config.serving_slots().start;
            let mut rescue = Rescue::new(self.shm.clone(), first, reports);
            for (slot, socket) in self.listeners.per_slot() {
                rescue.watch(slot, socket);
            }
            self.rescue = Some(rescue);
            if self.config.balance == Balance::Sticky {
                self.steer(); // each address to its slot, from the start
            }
        }
        received
    }

    /// Watches the queue of a slot added by SIGTTIN.
    pub(super) fn watch_queue(&mut self, slot: Slot) {
        if let (Some(rescue), Ok(socket)) = (&mut self.rescue, self.listeners.for_slot(slot)) {
            rescue.watch(slot, socket);
        }
        self.steer_again();
    }

    /// Closes the socket of a slot that ended for good; its watch (and copy of
    /// the socket) goes first. When the last copy closes, the kernel moves the
    /// group's last socket into its place.
    pub(super) fn close_queue(&mut self, slot: Slot) {
        if let Some(rescue) = &mut self.rescue {
            rescue.forget(slot);
        }
        self.listeners.close_slot(slot);
        if let Some(rescue) = &mut self.rescue {
            rescue.silent.retain(|s| *s != slot);
        }
        self.steer_again();
    }

    pub(super) fn on_rescue(&mut self, report: Report) {
        let Some(rescue) = &mut self.rescue else {
            return;
        };
        match report {
            Report::Silent(slot) => rescue.silent.push(slot),
            Report::Accepting(slot) => rescue.silent.retain(|s| *s != slot),
            Report::Taken { from, stream } => return self.hand_over(from, stream),
        }
        self.steer();
    }

    /// The group changed: while steering, steer anew (the sockets' places
    /// moved); `Sticky` always steers.
    fn steer_again(&self) {
        let sticky = self.config.balance == Balance::Sticky;
        if sticky || self.rescue.as_ref().is_some_and(|r| !r.silent.is_empty()) {
            self.steer();
        }
    }

    /// New connections to the nodes that accept only (to all when all do).
    fn steer(&self) {
        let Some(rescue) = &self.rescue else {
            return;
        };
        if let Err(error) = self
            .listeners
            .steer_away(&rescue.silent, self.config.balance)
        {
            warn!(
                "cannot steer connections away from nodes {:?}: {error}",
                rescue.silent
            );
        }
    }

    /// Hands a connection taken from a node that was not accepting to another.
    fn hand_over(&mut self, from: Slot, stream: TcpStream) {
        let Some(rescue) = &mut self.rescue else {
            return;
        };
        let to = rescue.target(from);
        if to == 0 && self.config.master_listen {
            let _ = self.master_handed.send(stream);
            return;
        }
        let worker = self
            .machine
            .serving(to)
            .and_then(|generation| self.workers.get(&Incarnation::new(to, generation)));
        // Nobody to serve it (the node is gone meanwhile): it closes.
        if let Some(worker) = worker {
            worker.send(ToWorker::Connection, Some(stream.into()));
        }
    }
}
