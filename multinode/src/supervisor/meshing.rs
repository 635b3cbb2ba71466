//! The mesh, as the master makes it: one socketpair per pair of live
//! incarnations of which one at least joined the mesh (its body took peers,
//! messages or a map), each end sent to its node; made again, at a pace, when
//! a node asks. A program that never takes the mesh (a plain HTTP server) has
//! no stream at all, and its start does not grow with the square of the nodes.

use std::collections::BTreeSet;
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
    /// Meshes incarnation `generation` of `slot`, just started, with the
    /// master's node and the current incarnations of the other member slots,
    /// those of them that joined the mesh. Found from the few that joined, not
    /// from every slot: a start of N nodes that never take the mesh stays
    /// linear in N.
    pub(super) fn mesh(&mut self, slot: Slot, generation: Generation) {
        let with = self.joined.iter().filter(|other| {
            other.slot != slot && self.machine.is_current_member(other.slot, other.generation)
        });
        let others: Vec<_> = std::iter::once(Incarnation::MASTER)
            .chain(with.copied())
            .collect();
        for other in at_start(others, &self.joined) {
            self.pair(Incarnation::new(slot, generation), other);
        }
    }

    /// `node` joins the mesh: it is meshed with every live incarnation that
    /// had not (those that had, it was meshed with already).
    pub(super) fn join(&mut self, node: Incarnation) {
        if !self.joined.insert(node) {
            return;
        }
        let members = self.machine.mesh_members(node.slot).into_iter();
        let members = members.map(|(slot, generation)| Incarnation::new(slot, generation));
        let others: Vec<_> = std::iter::once(Incarnation::MASTER)
            .chain(members)
            .collect();
        for other in at_join(others, &self.joined) {
            self.pair(node, other);
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

/// Of the live incarnations `others`, those a node just started is meshed
/// with: the ones that joined the mesh.
fn at_start(
    others: impl IntoIterator<Item = Incarnation>,
    joined: &BTreeSet<Incarnation>,
) -> Vec<Incarnation> {
    others.into_iter().filter(|o| joined.contains(o)).collect()
}

/// Of the live incarnations `others`, those a node that just joined is meshed
/// with: the ones that had not joined (a pair is meshed once, when the first
/// of the two joins or, if one had, when the later of the two starts).
fn at_join(
    others: impl IntoIterator<Item = Incarnation>,
    joined: &BTreeSet<Incarnation>,
) -> Vec<Incarnation> {
    others.into_iter().filter(|o| !joined.contains(o)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Nodes start and join in any order: every pair of which one at least
    /// joined is meshed once, and no other pair.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Start,
        Join(usize),
    }

    proptest! {
        #[test]
        fn a_pair_is_meshed_once_if_either_joined(
            steps in proptest::collection::vec(
                prop_oneof![Just(Step::Start), (0..6usize).prop_map(Step::Join)],
                0..20,
            )
        ) {
            let mut live: Vec<Incarnation> = Vec::new();
            let mut joined = BTreeSet::new();
            let mut pairs = Vec::new();
            for step in steps {
                match step {
                    Step::Start => {
                        let new = Incarnation::new(live.len() + 1, 1);
                        for other in at_start(live.clone(), &joined) {
                            pairs.push((other.min(new), other.max(new)));
                        }
                        live.push(new);
                    }
                    Step::Join(pick) if !live.is_empty() => {
                        let node = live[pick % live.len()];
                        if joined.insert(node) {
                            let others = live.iter().copied().filter(|o| *o != node);
                            for other in at_join(others, &joined) {
                                pairs.push((other.min(node), other.max(node)));
                            }
                        }
                    }
                    Step::Join(_) => {}
                }
            }
            let made: BTreeSet<_> = pairs.iter().copied().collect();
            prop_assert_eq!(made.len(), pairs.len(), "a pair meshed twice: {:?}", pairs);
            for (i, a) in live.iter().enumerate() {
                for b in &live[i + 1..] {
                    let wanted = joined.contains(a) || joined.contains(b);
                    prop_assert_eq!(made.contains(&(*a.min(b), *a.max(b))), wanted);
                }
            }
        }
    }
}
