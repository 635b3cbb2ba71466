//! The mesh, as the master makes it: one socketpair per pair of live
//! incarnations, each end sent to its node; made again, at a pace, when a
//! node asks.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use tracing::{error, info};

use super::process::{Event, Report};
use super::slot::{Generation, Slot};
use super::Supervisor;
use crate::control::incarnation::Incarnation;
use crate::control::{ToMaster, ToWorker};
use crate::mesh::peer::Inbound;

/// The shortest time between two new streams for one pair of nodes.
const REMESH_PACE: Duration = Duration::from_secs(1);

impl Supervisor {
    /// Meshes incarnation `generation` of `slot` with the master's node and each
    /// of `with`.
    pub(super) fn mesh(&mut self, slot: Slot, generation: Generation, with: &[(Slot, Generation)]) {
        let with = with
            .iter()
            .map(|(slot, generation)| Incarnation::new(*slot, *generation));
        for other in std::iter::once(Incarnation::MASTER).chain(with) {
            self.pair(Incarnation::new(slot, generation), other);
        }
    }

    /// Meshes two incarnations again, at the request of one whose stream to the
    /// other broke (a bad frame) while both live; at most once a second per pair
    /// (a later request waits its turn).
    pub(super) fn remesh(&mut self, from: Incarnation, to: Incarnation) {
        let key = (from.slot.min(to.slot), from.slot.max(to.slot));
        let now = Instant::now();
        let next = self.remeshed.get(&key).map(|last| *last + REMESH_PACE);
        if let Some(next) = next.filter(|next| *next > now) {
            let again = Event {
                slot: from.slot,
                generation: from.generation,
                report: Report::Said(ToMaster::Remesh {
                    id: to.slot,
                    generation: to.generation,
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
    fn pair(&mut self, a: Incarnation, b: Incarnation) {
        let live = |node: Incarnation| node.slot == 0 || self.workers.contains_key(&node);
        if a == b || !live(a) || !live(b) {
            return; // one exited meanwhile: its replacement is meshed anew
        }
        let pair = match std::os::unix::net::UnixStream::pair() {
            // Out of descriptors: the reserve is for this (taken again after).
            Err(error) if super::process::is_lack_of_resources(&error) => {
                self.reserve.release();
                let pair = std::os::unix::net::UnixStream::pair();
                self.reserve.refill();
                pair
            }
            pair => pair,
        };
        let (x, y) = match pair {
            Ok(pair) => pair,
            Err(error) => {
                error!(node = a.slot, "cannot mesh with node {}: {error}", b.slot);
                return;
            }
        };
        self.links += 1;
        for (to, other, fd) in [(a, b, OwnedFd::from(x)), (b, a, OwnedFd::from(y))] {
            let (id, generation, link) = (other.slot, other.generation, self.links);
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
