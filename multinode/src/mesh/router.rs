//! The message layer's routes: one link per other node, each an outgoing queue
//! with its writer task over the node's current stream.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::BytesMut;
use tokio::sync::mpsc;

use super::node_id::NodeId;
use super::outbox::{self, Outbox, Stream};
use super::remote::Remote;
use super::send_error::SendError;
use super::wire::Options;

/// The outgoing side: one link per other node.
pub(super) struct Router {
    pub me: usize,
    pub options: Options,
    /// The route to the other machines of the cluster, if any.
    remote: Option<Remote>,
    /// Read by every send (shared), written when a node is meshed or gone.
    links: RwLock<Links>,
    /// The counters on the status board.
    pub tally: super::tally::Tally,
    /// Told when a queue that was empty is not.
    pub backlog: Arc<tokio::sync::Notify>,
}

impl Drop for Router {
    /// Ends the task that counts what waits in the queues.
    fn drop(&mut self) {
        self.backlog.notify_one();
    }
}

#[derive(Default)]
pub(super) struct Links {
    pub live: BTreeMap<usize, Link>,
    /// Nodes gone for good.
    gone: BTreeSet<usize>,
}

pub(super) struct Link {
    /// The node's outgoing queue.
    outbox: Arc<Outbox>,
    /// Streams to its incarnations, for its writer task.
    streams: mpsc::UnboundedSender<Stream>,
}

impl Router {
    pub fn new(
        me: usize,
        options: Options,
        remote: Option<Remote>,
        tally: super::tally::Tally,
    ) -> Self {
        Router {
            me,
            options,
            remote,
            links: RwLock::new(Links::default()),
            tally,
            backlog: Arc::default(),
        }
    }

    #[inline]
    pub fn links(&self) -> RwLockReadGuard<'_, Links> {
        self.links.read().unwrap_or_else(|e| e.into_inner())
    }

    fn links_mut(&self) -> RwLockWriteGuard<'_, Links> {
        self.links.write().unwrap_or_else(|e| e.into_inner())
    }

    /// `to` as this node routes it: a node named with this machine's own name
    /// is a node of this machine.
    pub fn resolve(&self, to: NodeId) -> NodeId {
        match (&self.remote, to.machine()) {
            (Some(remote), Some(machine)) if remote.is_own(machine) => NodeId::local(to.id()),
            _ => to,
        }
    }

    /// Queues `body` (a message's bytes) for node `to` of another machine.
    pub async fn remote_send(&self, to: &NodeId, body: &[u8]) -> Result<(), SendError> {
        match &self.remote {
            Some(remote) => remote.send(to, body).await,
            None => Err(SendError::UnknownNode(to.clone())),
        }
    }

    /// [`remote_send`](Self::remote_send) without waiting.
    pub fn remote_try_send(&self, to: &NodeId, body: &[u8]) -> Result<(), SendError> {
        match &self.remote {
            Some(remote) => remote.try_send(to, body),
            None => Err(SendError::UnknownNode(to.clone())),
        }
    }

    /// The other machines of the cluster, now and as they change; without a
    /// cluster, none and no change.
    pub fn machines(&self) -> tokio::sync::watch::Receiver<Vec<String>> {
        match &self.remote {
            Some(remote) => remote.machines(),
            None => tokio::sync::watch::channel(Vec::new()).1,
        }
    }

    /// The nodes of the other machines of the cluster.
    pub fn remote_nodes(&self) -> Vec<NodeId> {
        self.remote.as_ref().map(Remote::nodes).unwrap_or_default()
    }

    /// Queues `body` for every node of the other machines.
    pub async fn remote_broadcast(&self, body: &[u8]) {
        if let Some(remote) = &self.remote {
            remote.broadcast(body).await;
        }
    }

    pub fn outbox(&self, to: &NodeId) -> Result<Arc<Outbox>, SendError> {
        self.with_outbox(to, |outbox| Ok(outbox.clone()))
    }

    /// [`Outbox::try_send_with`] on node `to`'s queue.
    #[inline]
    pub fn try_send_with(
        &self,
        to: &NodeId,
        write: impl FnOnce(&mut BytesMut) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        self.with_outbox(to, |outbox| outbox.try_send_with(write))
    }

    #[inline]
    pub fn with_outbox<T>(
        &self,
        to: &NodeId,
        f: impl FnOnce(&Arc<Outbox>) -> Result<T, SendError>,
    ) -> Result<T, SendError> {
        if !to.is_local() {
            return Err(SendError::UnknownNode(to.clone()));
        }
        let links = self.links();
        match links.live.get(&to.id()) {
            Some(link) => f(&link.outbox),
            None if links.gone.contains(&to.id()) => Err(SendError::Gone(to.clone())),
            None => Err(SendError::UnknownNode(to.clone())),
        }
    }

    /// Offers something to every node's queue in one look at the links:
    /// `offer` says whether the queue took it (by
    /// [`Outbox::try_send_quietly`]); then the writers that a direct write
    /// leaves to wake are woken, after every queue had its offer. The queues
    /// that did not take it, to wait for (no allocation when all took it).
    pub fn offer_each(&self, mut offer: impl FnMut(&Outbox) -> bool) -> Vec<Arc<Outbox>> {
        let links = self.links();
        let refused = links.live.values().filter(|link| !offer(&link.outbox));
        let refused = refused.map(|link| link.outbox.clone()).collect();
        for link in links.live.values() {
            link.outbox.wake_writer();
        }
        refused
    }

    pub fn outboxes(&self) -> Vec<Arc<Outbox>> {
        self.links()
            .live
            .values()
            .map(|l| l.outbox.clone())
            .collect()
    }

    /// The link to node `id`, made (with its writer task) on first use.
    pub fn link(&self, id: usize) -> mpsc::UnboundedSender<Stream> {
        let mut links = self.links_mut();
        links.gone.remove(&id);
        let link = links.live.entry(id).or_insert_with(|| {
            let outbox = Arc::new(Outbox::new(id, self.options.queue, self.backlog.clone()));
            let (streams, streams_rx) = mpsc::unbounded_channel();
            // The node's span goes with the task's few log lines, not around
            // each of its polls: entering a span costs more than some polls.
            let span = tracing::Span::current();
            tokio::spawn(outbox::write_to(id, outbox.clone(), streams_rx, span));
            Link { outbox, streams }
        });
        link.streams.clone()
    }

    /// Node `id` will not come back: its writer ends, and sending to it fails.
    pub fn gone(&self, id: usize) {
        let mut links = self.links_mut();
        if let Some(link) = links.live.remove(&id) {
            link.outbox.close();
        }
        links.gone.insert(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::outbox::tests::link;
    use std::io::Read;

    #[tokio::test]
    async fn an_offer_to_each_leaves_every_writer_woken_for_the_next_direct_write() {
        let router = Router::new(
            0,
            Options::default(),
            None,
            crate::mesh::tally::Tally::new(None, 0),
        );
        let mut far_ends = Vec::new();
        for id in [1, 2] {
            let (near, far) = tokio::net::UnixStream::pair().unwrap();
            let (_read, write) = crate::mesh::halves::split(near).unwrap();
            router.link(id).send(Stream::Up(link(1), write)).unwrap();
            far_ends.push(far.into_std().unwrap());
        }
        let settle = || async {
            for _ in 0..10 {
                tokio::task::yield_now().await; // the writers run, and are idle again
            }
        };
        settle().await;
        let mut got = [0u8; 8];
        for round in 0..3 {
            let refused = router.offer_each(|outbox| {
                outbox
                    .try_send_quietly(|buffer| {
                        buffer.extend_from_slice(b"hi");
                        Ok(())
                    })
                    .is_ok()
            });
            assert!(refused.is_empty());
            for far in &mut far_ends {
                // No await since the offer: written by the sender itself.
                assert_eq!(far.read(&mut got).unwrap(), 2, "round {round}");
            }
            settle().await;
        }
    }
}
