//! Messages over the mesh, the public side: send to one node, broadcast to all,
//! receive `(from, message)`. The frames are `wire`'s; the routes to the other
//! nodes are `router`'s.
//!
//! Each other node has one outgoing queue (bounded) and one writer task, which
//! live as long as this node: per-sender order is kept, a slow receiver makes
//! `send` wait instead of growing memory, and messages to a node that is
//! restarting wait in its queue until its next incarnation is meshed.
//!
//! On the receiving side, `Receiver::recv` reads the streams itself, cuts one
//! frame with the codec and decodes it: no reader task, no queue in between.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::halves;
use super::inbox::{Inbox, Incoming};
use super::node_id::NodeId;
use super::outbox::Stream;
use super::peer::{Item, PeerQueue};
use super::remote;
use super::router::Router;
use super::send_error::SendError;
use super::wire::{self, Options};
use crate::config::Cluster;

/// Sends messages to other nodes; cheap to clone. Made by
/// [`Nodes::take_messages`](crate::Nodes::take_messages).
///
/// ```no_run
/// #[derive(serde::Serialize, serde::Deserialize, Debug)]
/// enum Event { Invalidate(String) }
///
/// #[multinode::main(nodes = 4)]
/// async fn main(mut nodes: multinode::Nodes) {
///     let (tx, mut rx) = nodes.take_messages::<Event>().expect("taken once");
///     tx.broadcast(&Event::Invalidate("user:42".into())).await.unwrap();
///     while let Some((from, event)) = rx.recv().await {
///         println!("node {from}: {event:?}");
///     }
/// }
/// ```
pub struct Sender<M> {
    router: Arc<Router>,
    _message: PhantomData<fn(&M)>,
}

impl<M> Clone for Sender<M> {
    fn clone(&self) -> Self {
        Sender {
            router: self.router.clone(),
            _message: PhantomData,
        }
    }
}

impl<M> fmt::Debug for Sender<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("me", &self.router.me)
            .finish_non_exhaustive()
    }
}

impl<M: Serialize> Sender<M> {
    /// Queues `message` for node `to`, waiting while its queue is full (a slow
    /// receiver slows its senders down). A node that is restarting gets it once its
    /// next incarnation is meshed.
    ///
    /// ```no_run
    /// # async fn f(tx: multinode::mesh::Sender<String>) -> Result<(), multinode::mesh::SendError> {
    /// tx.send(2, &"hello, node 2".to_string()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, to: impl Into<NodeId>, message: &M) -> Result<(), SendError> {
        let to = self.router.resolve(to.into());
        let max = self.router.options.max_frame_len;
        let tally = &self.router.tally;
        if !to.is_local() {
            let frame = self.frame(message)?;
            let sent = self.router.remote_send(&to, &frame[wire::LENGTH..]).await;
            return tally.sent(sent, frame.len());
        }
        let mut bytes = 0;
        let write = |buffer: &mut BytesMut| {
            let start = buffer.len();
            let written = wire::write_frame(message, max, buffer);
            bytes = buffer.len() - start;
            written
        };
        // The common case: no wait, and no reference count taken on the queue.
        let mut write = write;
        let outbox = match self.router.try_send_with(&to, &mut write) {
            Err(SendError::Full(_)) => match self.router.outbox(&to) {
                Ok(outbox) => outbox,
                Err(error) => return tally.sent(Err(error), 0),
            },
            done => return tally.sent(done, bytes),
        };
        let sent = outbox.send_with(&mut write).await;
        tally.sent(sent, bytes)
    }

    /// Queues `message` for node `to` without waiting: [`SendError::Full`] when its
    /// queue is full.
    ///
    /// ```no_run
    /// # fn f(tx: multinode::mesh::Sender<String>) {
    /// if let Err(error) = tx.try_send(2, &"hello".to_string()) {
    ///     eprintln!("{error}");
    /// }
    /// # }
    /// ```
    pub fn try_send(&self, to: impl Into<NodeId>, message: &M) -> Result<(), SendError> {
        let to = self.router.resolve(to.into());
        let max = self.router.options.max_frame_len;
        let tally = &self.router.tally;
        if !to.is_local() {
            let frame = self.frame(message)?;
            let sent = self.router.remote_try_send(&to, &frame[wire::LENGTH..]);
            return tally.sent(sent, frame.len());
        }
        let mut bytes = 0;
        let sent = self.router.try_send_with(&to, |buffer| {
            let start = buffer.len();
            let written = wire::write_frame(message, max, buffer);
            bytes = buffer.len() - start;
            written
        });
        tally.sent(sent, bytes)
    }

    /// Queues `message` for every other node (encoded once), waiting while a queue
    /// is full. Nodes gone for good are skipped.
    ///
    /// ```no_run
    /// # async fn f(tx: multinode::mesh::Sender<String>) -> Result<(), multinode::mesh::SendError> {
    /// tx.broadcast(&"to everyone".to_string()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn broadcast(&self, message: &M) -> Result<(), SendError> {
        let frame = self.frame(message)?;
        let copy = |buffer: &mut BytesMut| {
            buffer.extend_from_slice(&frame);
            Ok(())
        };
        // Other machines first: their way is the longer.
        self.router.remote_broadcast(&frame[wire::LENGTH..]).await;
        let tally = &self.router.tally;
        // Each queue with room takes it at once; only the full ones are
        // waited for, after.
        let full = self
            .router
            .offer_each(|outbox| match outbox.try_send_quietly(copy) {
                Err(SendError::Full(_)) => false,
                sent => {
                    let _ = tally.sent(sent, frame.len()); // Err: gone meanwhile
                    true
                }
            });
        for outbox in full {
            let sent = outbox.send_with(copy).await; // Err: gone meanwhile
            let _ = tally.sent(sent, frame.len());
        }
        Ok(())
    }

    /// `message` as one frame.
    fn frame(&self, message: &M) -> Result<BytesMut, SendError> {
        // Room for most messages at once: growing by doubling from nothing
        // would reallocate at every power of two.
        let mut frame = BytesMut::with_capacity(256);
        wire::write_frame(message, self.router.options.max_frame_len, &mut frame)?;
        Ok(frame)
    }
}

impl<M> Sender<M> {
    /// The other nodes this node can send to now, in id order.
    ///
    /// ```no_run
    /// # fn f(tx: multinode::mesh::Sender<String>) {
    /// println!("talking to nodes {:?}", tx.nodes());
    /// # }
    /// ```
    pub fn nodes(&self) -> Vec<NodeId> {
        let links = self.router.links();
        links.live.keys().map(|id| NodeId::local(*id)).collect()
    }

    /// The other machines of the cluster now (their `MULTINODE_MACHINE` names),
    /// read from Redis every second; none without a cluster. Their node `k`
    /// is `NodeId::remote(name, k)`.
    ///
    /// ```no_run
    /// # fn f(tx: multinode::mesh::Sender<String>) {
    /// for machine in tx.machines() {
    ///     println!("machine {machine} is in the cluster");
    /// }
    /// # }
    /// ```
    pub fn machines(&self) -> Vec<String> {
        self.router.machines().borrow().clone()
    }

    /// The nodes of the other machines of the cluster, in order: each node
    /// renews a key in Redis every second, which lives 5 s. So a node (or a
    /// machine) that started is listed within about a second, and one that
    /// stopped or died is gone within 6 s. None without a cluster.
    ///
    /// ```no_run
    /// # fn f(tx: multinode::mesh::Sender<String>) {
    /// for node in tx.remote_nodes() {
    ///     println!("node {} of machine {:?}", node.id(), node.machine());
    /// }
    /// # }
    /// ```
    pub fn remote_nodes(&self) -> Vec<NodeId> {
        self.router.remote_nodes()
    }

    /// The other machines of the cluster as they join and leave: the list
    /// changes within about a second of a master starting, and within 6 s of
    /// one dying (5 s at once when it stops). Without a cluster the list stays
    /// empty and `changed()` fails at once.
    ///
    /// ```no_run
    /// # async fn f(tx: multinode::mesh::Sender<String>) {
    /// let mut machines = tx.watch_machines();
    /// while machines.changed().await.is_ok() {
    ///     println!("the other machines now: {:?}", *machines.borrow());
    /// }
    /// # }
    /// ```
    pub fn watch_machines(&self) -> tokio::sync::watch::Receiver<Vec<String>> {
        self.router.machines()
    }
}

/// Starts the message layer: a link to every node of `ids` but this one, and a
/// task that takes the peers from `queue` as they pass their handshake.
pub(crate) fn start<M>(
    me: usize,
    ids: impl IntoIterator<Item = usize>,
    queue: Arc<PeerQueue>,
    options: Options,
    (cluster, shm): (Option<&Cluster>, Option<Arc<crate::shm::segment::Segment>>),
    leave: tokio_util::sync::CancellationToken,
) -> (Sender<M>, Receiver<M>)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let tally = super::tally::Tally::new(shm, me);
    let trust = remote::Trust {
        kind: super::fingerprint::of::<M>(),
        type_name: std::any::type_name::<M>(),
        max_len: options.max_frame_len,
        tally: tally.clone(),
    };
    let started = cluster.map(|c| remote::start(c, (me, options.queue), leave, trust));
    let (remote_route, remote) = match started {
        Some(Ok((route, arrivals))) => (Some(route), Some(arrivals)),
        Some(Err(error)) => {
            tracing::error!("{error}: messages stay on this machine");
            (None, None)
        }
        None => (None, None),
    };
    let router = Arc::new(Router::new(me, options, remote_route, tally.clone()));
    tokio::spawn(count_queued(Arc::downgrade(&router)));
    for id in ids.into_iter().filter(|id| *id != me) {
        router.link(id);
    }
    let remesh = queue.remesh();
    let (arrive, arrivals) = mpsc::unbounded_channel();
    let dispatch = {
        let router = router.clone();
        async move {
            while let Some(item) = queue.pop().await {
                match item {
                    Item::Peer(peer) => {
                        let (id, link) = (peer.id(), peer.stream_id());
                        let generation = link.generation;
                        let (read, write) = match halves::split(peer.into_inner()) {
                            Ok(halves) => halves,
                            Err(error) => {
                                tracing::error!(
                                    peer = id,
                                    generation,
                                    "mesh: cannot take the stream from node {id} ({error}): closing it"
                                );
                                continue;
                            }
                        };
                        let writer = router.link(id);
                        let _ = writer.send(Stream::Up(link, write));
                        let incoming = Incoming::new(id, link, read, options.max_frame_len, writer);
                        let _ = arrive.send(incoming); // Err: the receiver was dropped
                    }
                    Item::Gone(id) => router.gone(id),
                }
            }
            // The master is gone: no more streams will come.
        }
    };
    tokio::spawn(dispatch.in_current_span());
    let sender = Sender {
        router,
        _message: PhantomData,
    };
    let receiver = Receiver::new(tally, Inbox::new(arrivals), remote, remesh);
    (sender, receiver)
}

/// Puts how many messages wait in this node's queues on the board, four
/// times a second while some do; while none do, it waits for one to be
/// queued, so that an idle node is not woken.
async fn count_queued(router: std::sync::Weak<Router>) {
    loop {
        let Some(router) = router.upgrade() else {
            return;
        };
        let queued = router.outboxes().iter().map(|o| o.frames()).sum();
        router.tally.queued(queued);
        let backlog = router.backlog.clone();
        drop(router);
        match queued {
            // A frame queued since the count left a permit: no wait then.
            0 => backlog.notified().await,
            _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

mod receiver;
#[cfg(test)]
mod tests;

pub use receiver::Receiver;
