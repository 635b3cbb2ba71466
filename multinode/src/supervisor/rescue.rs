//! With `reuse_port` each node has its own queue in the kernel, which hashes
//! every arrival to one of them: what it hashes to a node that stopped accepting
//! (stopped, blocked, booting, between two incarnations) would wait there until
//! that node runs again. So the master watches each queue; once one holds
//! connections on two looks in a row while its node has been silent, the master
//! accepts from it itself, until the node accepts again, and hands each
//! connection to the least busy node that accepts; meanwhile the supervisor
//! steers new connections to the other nodes' sockets (`Listeners::steer_away`),
//! so that only what was queued before, or in between, takes that way.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{info, warn};

use super::slot::Slot;
use crate::shm::load_table::now_ms;
use crate::shm::segment::Segment;

/// How often each queue is looked at.
const LOOK_EVERY: Duration = Duration::from_millis(5);

/// How long a node with connections queued must have left the table unstamped
/// to count as not accepting: a serving node stamps every `balance::PULSE`
/// (10 ms), so this is missed only by a node that did not run. Each millisecond
/// here is one that every client whose connection the kernel queued there
/// waits, so it is kept short: a wrong guess costs only a brief detour.
const QUIET: Duration = Duration::from_millis(25);

/// What a watch tells the supervisor.
pub(super) enum Report {
    /// Node `slot` is not accepting: steer new connections away from it.
    Silent(Slot),
    /// A connection taken from the queue of node `from`, to hand to another.
    Taken { from: Slot, stream: TcpStream },
    /// Node `slot` accepts again.
    Accepting(Slot),
}

/// The watch over every node's queue.
pub(super) struct Rescue {
    shm: Arc<Segment>,
    /// The first serving slot.
    first: Slot,
    reports: mpsc::UnboundedSender<Report>,
    /// Each watched slot's watch, stopped when dropped.
    watches: BTreeMap<Slot, DropGuard>,
    /// The last node handed a connection.
    last: Slot,
    /// The nodes new connections are steered away from.
    pub(super) silent: Vec<Slot>,
}

impl Rescue {
    pub(super) fn new(
        shm: Arc<Segment>,
        first: Slot,
        reports: mpsc::UnboundedSender<Report>,
    ) -> Self {
        Rescue {
            shm,
            first,
            reports,
            watches: BTreeMap::new(),
            last: first,
            silent: Vec::new(),
        }
    }

    /// Watches `slot`'s queue, on a copy of its socket (in the supervisor's runtime).
    pub(super) fn watch(&mut self, slot: Slot, socket: &TcpListener) {
        let socket = match socket.try_clone() {
            Ok(socket) => socket,
            Err(error) => return warn!(node = slot, "cannot watch the node's queue: {error}"),
        };
        let stop = CancellationToken::new();
        let watch = Watch {
            slot,
            first: self.first,
            socket,
            shm: self.shm.clone(),
            reports: self.reports.clone(),
        };
        tokio::spawn(watch.run(stop.clone()));
        self.watches.insert(slot, stop.drop_guard());
    }

    /// Stops watching `slot` (its socket is closed: nothing must keep it open).
    pub(super) fn forget(&mut self, slot: Slot) {
        self.watches.remove(&slot);
    }

    /// The node to hand a connection from `from` to: the least busy other node
    /// that accepts, in turn among equals; `from` itself if there is none (it
    /// serves the connection once it runs again).
    pub(super) fn target(&mut self, from: Slot) -> Slot {
        let target = self.shm.table().least_busy_but(from, self.first, self.last);
        self.last = target.unwrap_or(self.last);
        target.unwrap_or(from)
    }
}

/// One node's queue, watched.
struct Watch {
    slot: Slot,
    first: Slot,
    socket: TcpListener,
    shm: Arc<Segment>,
    reports: mpsc::UnboundedSender<Report>,
}

impl Watch {
    async fn run(self, stop: CancellationToken) {
        let mut every = tokio::time::interval(LOOK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut waited = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            let stuck = self.queued() && !self.accepting() && self.others_accept();
            if !(stuck && waited) {
                waited = stuck;
                continue;
            }
            waited = false;
            warn!(
                node = self.slot,
                "node {} is not accepting: the master hands its queue to the others", self.slot
            );
            let _ = self.reports.send(Report::Silent(self.slot));
            let taken = tokio::select! {
                _ = stop.cancelled() => return,
                taken = self.take_over(&mut every) => taken,
            };
            // The take-over ends when the node accepts again, or when no other
            // node does (its queue is then left to it).
            match self.accepting() {
                true => info!(
                    node = self.slot,
                    handed = taken,
                    "node {} accepts again",
                    self.slot
                ),
                false => warn!(
                    node = self.slot,
                    handed = taken,
                    "no other node accepts: node {}'s queue is left to it",
                    self.slot
                ),
            }
            let _ = self.reports.send(Report::Accepting(self.slot));
        }
    }

    /// Accepts every arrival until the node accepts again (or nobody else
    /// does); returns how many it took.
    async fn take_over(&self, every: &mut tokio::time::Interval) -> u64 {
        // Registered only now: the master is not woken by the queue otherwise.
        let socket = self
            .socket
            .try_clone()
            .and_then(tokio::net::TcpListener::from_std);
        let socket = match socket {
            Ok(socket) => socket,
            Err(error) => {
                warn!(
                    node = self.slot,
                    "cannot accept from the node's queue: {error}"
                );
                return 0;
            }
        };
        let mut taken = 0;
        loop {
            tokio::select! {
                accepted = socket.accept() => {
                    let stream = accepted.and_then(|(stream, _)| stream.into_std());
                    match stream {
                        Ok(stream) => {
                            taken += 1;
                            let _ = self.reports.send(Report::Taken { from: self.slot, stream });
                        }
                        // Out of descriptors, say: the next look tries again.
                        Err(_) => { every.tick().await; }
                    }
                }
                _ = every.tick() => {
                    if self.accepting() || !self.others_accept() {
                        return taken;
                    }
                }
            }
        }
    }

    /// Whether connections wait in the queue.
    fn queued(&self) -> bool {
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).is_ok_and(|ready| ready > 0)
    }

    /// Whether the node's accept loop ran lately.
    fn accepting(&self) -> bool {
        let silent = QUIET.as_millis() as u64;
        self.shm.table().accepting(self.slot, now_ms(), silent)
    }

    /// Whether another node would take what the master takes.
    fn others_accept(&self) -> bool {
        self.shm
            .table()
            .least_busy_but(self.slot, self.first, self.slot)
            .is_some()
    }
}
