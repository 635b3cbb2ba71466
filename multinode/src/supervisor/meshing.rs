//! The mesh, as the master makes it: one socketpair per pair of live
//! incarnations, each end sent to its node; made again, at a pace, when a
//! node asks.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use tracing::{error, info};

use super::process::{Event, Report};
use super::slot::{Generation, Slot};
use super::Supervisor;
use crate::control::{ToMaster, ToWorker};
use crate::mesh::peer::Inbound;

/// The shortest time between two new streams for one pair of nodes.
const REMESH_PACE: Duration = Duration::from_secs(1);

impl Supervisor {
    /// Meshes incarnation `generation` of `slot` with the master's node and each
    /// of `with`.
    pub(super) fn mesh(&mut self, slot: Slot, generation: Generation, with: &[(Slot, Generation)]) {
        for &other in std::iter::once(&(0, 1)).chain(with) {
            self.pair((slot, generation), other);
        }
    }

    /// Meshes two incarnations again, at the request of one whose stream to the
    /// other broke (a bad frame) while both live; at most once a second per pair
    /// (a later request waits its turn).
    pub(super) fn remesh(&mut self, from: (Slot, Generation), to: (Slot, Generation)) {
        let key = (from.0.min(to.0), from.0.max(to.0));
        let now = Instant::now();
        let next = self.remeshed.get(&key).map(|last| *last + REMESH_PACE);
        if let Some(next) = next.filter(|next| *next > now) {
            let again = Event {
                slot: from.0,
                generation: from.1,
                report: Report::Said(ToMaster::Remesh {
                    id: to.0,
                    generation: to.1,
                }),
            };
            let events = self.events.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(next.into()).await;
                let _ = events.send(again);
            });
            return;
        }
        self.remeshed.insert(key, now);
        info!("meshing nodes {} and {} again", key.0, key.1);
        self.pair(from, to);
    }

    /// One Unix stream socketpair between two incarnations, each end sent to its
    /// node labelled with the other's id and generation and a new link number.
    /// The master's node (0, generation 1) gets its end directly.
    fn pair(&mut self, a: (Slot, Generation), b: (Slot, Generation)) {
        let live = |(slot, generation): (Slot, Generation)| {
            slot == 0 || self.workers.contains_key(&(slot, generation))
        };
        if a == b || !live(a) || !live(b) {
            return; // one exited meanwhile: its replacement is meshed anew
        }
        let (x, y) = match std::os::unix::net::UnixStream::pair() {
            Ok(pair) => pair,
            Err(error) => {
                error!(node = a.0, "cannot mesh with node {}: {error}", b.0);
                return;
            }
        };
        self.links += 1;
        for (to, other, fd) in [(a, b, OwnedFd::from(x)), (b, a, OwnedFd::from(y))] {
            let (id, generation, link) = (other.0, other.1, self.links);
            match self.workers.get(&to) {
                Some(worker) => worker.send(
                    ToWorker::Peer {
                        id,
                        generation,
                        link,
                    },
                    Some(fd),
                ),
                None => {
                    let inbound = Inbound::Peer {
                        id,
                        generation,
                        link,
                        fd,
                    };
                    let _ = self.master_mesh.send(inbound);
                }
            }
        }
    }
}
