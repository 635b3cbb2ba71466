//! Raw peers: the labelled streams the master hands this node, each turned into a
//! [`Peer`] by the handshake, and the queue the body takes them from.

use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Notify};
use tracing::Instrument;

use super::handshake::handshake;
use crate::control::incarnation::Incarnation;

/// A direct stream to another node, handed out once the handshake has crossed in
/// both directions: the other process is live, and the stream is writable at once.
/// When that process dies, reads see EOF.
///
/// It is an `AsyncRead + AsyncWrite` byte stream; split it with
/// [`into_split`](Self::into_split) or `tokio::io::split`.
///
/// ```no_run
/// use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
///
/// #[multinode::main(nodes = 3)]
/// async fn main(mut nodes: multinode::Nodes) {
///     let mut peers = nodes.take_peers().expect("taken once");
///     let me = nodes.id();
///     while let Some(peer) = peers.recv().await {
///         tokio::spawn(async move {
///             println!("node {} (generation {}) is up", peer.id(), peer.generation());
///             let (read, mut write) = peer.into_split();
///             write.write_all(format!("hello from {me}\n").as_bytes()).await?;
///             let mut lines = BufReader::new(read).lines();
///             while let Some(line) = lines.next_line().await? {
///                 println!("{line}");
///             }
///             std::io::Result::Ok(()) // EOF: that process is gone
///         });
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Peer {
    id: usize,
    generation: u64,
    /// The master's number for this stream (see [`StreamId`](super::stream_id::StreamId)).
    link: u64,
    stream: UnixStream,
}

impl Peer {
    /// The other node's id (its slot).
    ///
    /// ```no_run
    /// # fn f(peer: multinode::Peer) {
    /// println!("connected to node {}", peer.id());
    /// # }
    /// ```
    pub fn id(&self) -> usize {
        self.id
    }

    /// Which incarnation of its slot the other process is.
    ///
    /// ```no_run
    /// # fn f(peer: multinode::Peer) {
    /// if peer.generation() > 1 {
    ///     println!("node {} was restarted", peer.id());
    /// }
    /// # }
    /// ```
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Which stream to that node this is, for the message layer.
    pub(crate) fn stream_id(&self) -> super::stream_id::StreamId {
        super::stream_id::StreamId {
            generation: self.generation,
            number: self.link,
        }
    }

    /// Splits the stream into a read half and a write half that can move to
    /// different tasks.
    ///
    /// ```no_run
    /// # async fn f(peer: multinode::Peer) -> std::io::Result<()> {
    /// use tokio::io::AsyncWriteExt;
    /// let (_read, mut write) = peer.into_split();
    /// write.write_all(b"ping\n").await
    /// # }
    /// ```
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.stream.into_split()
    }

    /// The underlying Unix stream.
    ///
    /// ```no_run
    /// # fn f(peer: multinode::Peer) {
    /// let stream: tokio::net::UnixStream = peer.into_inner();
    /// # let _ = stream;
    /// # }
    /// ```
    pub fn into_inner(self) -> UnixStream {
        self.stream
    }
}

impl AsyncRead for Peer {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Peer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The receiver of [`Peer`]s: one for every other live node, and a new one each
/// time a node is (re)started. Taken once with
/// [`Nodes::take_peers`](crate::Nodes::take_peers).
///
/// ```no_run
/// #[multinode::main(nodes = 2)]
/// async fn main(mut nodes: multinode::Nodes) {
///     let mut peers = nodes.take_peers().expect("taken once");
///     while let Some(peer) = peers.recv().await {
///         println!("node {} generation {}", peer.id(), peer.generation());
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Peers {
    queue: Arc<PeerQueue>,
}

impl Peers {
    pub(crate) fn new(queue: Arc<PeerQueue>) -> Self {
        Peers { queue }
    }

    /// The next peer; `None` once the master is gone.
    ///
    /// ```no_run
    /// # async fn f(mut peers: multinode::mesh::Peers) {
    /// if let Some(peer) = peers.recv().await {
    ///     println!("node {}", peer.id());
    /// }
    /// # }
    /// ```
    pub async fn recv(&mut self) -> Option<Peer> {
        loop {
            match self.queue.pop().await? {
                Item::Peer(peer) => return Some(peer),
                Item::Gone(_) => continue,
            }
        }
    }
}

/// A stream labelled by the master, before its handshake, or the news that a
/// node will not come back.
#[derive(Debug)]
pub(crate) enum Inbound {
    Peer {
        id: usize,
        generation: u64,
        /// The master's number for this stream.
        link: u64,
        fd: OwnedFd,
    },
    Gone {
        id: usize,
    },
}

/// What the queue holds.
#[derive(Debug)]
pub(crate) enum Item {
    Peer(Peer),
    /// Node `id` is gone for good: not restarted, or scaled down.
    Gone(usize),
}

impl Item {
    fn id(&self) -> usize {
        match self {
            Item::Peer(peer) => peer.id,
            Item::Gone(id) => *id,
        }
    }
}

/// Peers that passed the handshake, until the body takes them. A peer nobody took
/// is dropped (its stream closed) when a newer incarnation of its node arrives,
/// so that a node that never takes its peers holds one stream per node at most.
#[derive(Debug, Default)]
pub(crate) struct PeerQueue {
    items: Mutex<VecDeque<Item>>,
    notify: Notify,
    closed: AtomicBool,
    /// Where this node asks the master for streams.
    remesh: Option<mpsc::UnboundedSender<MeshRequest>>,
}

/// What a node asks of the master about its mesh streams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum MeshRequest {
    /// Its body took the mesh (peers, messages or a map): a stream to every
    /// node, and to every node started later. A node that never asks holds
    /// none but those of the nodes that did.
    Join,
    /// A new stream to incarnation `generation` of node `id`: the message
    /// layer closed the last one for a bad frame, though both ends live.
    Again { id: usize, generation: u64 },
}

impl PeerQueue {
    /// A queue whose node asks `remesh` for its streams.
    pub(crate) fn new(remesh: mpsc::UnboundedSender<MeshRequest>) -> Self {
        PeerQueue {
            remesh: Some(remesh),
            ..PeerQueue::default()
        }
    }

    /// Where to ask for a stream to be meshed again, if anywhere.
    pub(crate) fn remesh(&self) -> Option<mpsc::UnboundedSender<MeshRequest>> {
        self.remesh.clone()
    }

    /// Asks the master for a stream to every node: the body takes the mesh.
    pub(crate) fn join(&self) {
        if let Some(remesh) = &self.remesh {
            let _ = remesh.send(MeshRequest::Join); // Err: the master is gone
        }
    }

    /// Queues `item`, replacing what is queued for the same node, unless that is a
    /// newer incarnation (handshakes finish in any order).
    fn push(&self, item: Item) {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        let id = item.id();
        if let Item::Peer(peer) = &item {
            let newer_queued = items.iter().any(
                |queued| matches!(queued, Item::Peer(q) if q.id == id && q.generation > peer.generation),
            );
            if newer_queued {
                return;
            }
        }
        items.retain(|queued| queued.id() != id);
        items.push_back(item);
        drop(items);
        self.notify.notify_one();
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// The next item; `None` once closed and empty. One consumer at a time.
    pub(crate) async fn pop(&self) -> Option<Item> {
        loop {
            let notified = self.notify.notified();
            if let Some(item) = self
                .items
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            {
                return Some(item);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            notified.await;
        }
    }
}

/// Starts this node's side of the mesh, fed with the streams the master labels;
/// it asks `remesh` for its streams, and for those it had to close.
pub(crate) fn start(
    me: Incarnation,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    remesh: mpsc::UnboundedSender<MeshRequest>,
) -> Arc<PeerQueue> {
    let queue = Arc::new(PeerQueue::new(remesh));
    tokio::spawn(run(me, inbound, queue.clone()).in_current_span());
    queue
}

/// This node's side of the mesh: runs the handshake on every stream the master
/// hands over and queues the peers that pass it. Ends when the master is gone.
pub(crate) async fn run(
    me: Incarnation,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
    queue: Arc<PeerQueue>,
) {
    let handshakes = tokio_util::task::TaskTracker::new();
    while let Some(item) = inbound.recv().await {
        match item {
            Inbound::Peer {
                id,
                generation,
                link,
                fd,
            } => {
                let queue = queue.clone();
                let shake = async move {
                    match handshake(fd, me, Incarnation::new(id, generation)).await {
                        Ok(stream) => {
                            tracing::debug!(peer = id, generation, "mesh: connected");
                            queue.push(Item::Peer(Peer {
                                id,
                                generation,
                                link,
                                stream,
                            }));
                        }
                        Err(error) => tracing::warn!(
                            peer = id,
                            generation,
                            "mesh: stream to node {id} closed: {error}"
                        ),
                    }
                };
                handshakes.spawn(shake.in_current_span());
            }
            Inbound::Gone { id } => queue.push(Item::Gone(id)),
        }
    }
    handshakes.close();
    handshakes.wait().await;
    queue.close();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A node's mesh task fed by hand, as the master would.
    fn node(me: (usize, u64)) -> (mpsc::UnboundedSender<Inbound>, Peers) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = Arc::new(PeerQueue::default());
        tokio::spawn(run(Incarnation::new(me.0, me.1), rx, queue.clone()));
        (tx, Peers::new(queue))
    }

    /// Meshes two nodes' tasks as the master would: one socketpair, an end each,
    /// labelled with the other's id and generation.
    pub(crate) fn connect(
        a: &mpsc::UnboundedSender<Inbound>,
        b: &mpsc::UnboundedSender<Inbound>,
        ids: ((usize, u64), (usize, u64)),
    ) {
        let (x, y) = std::os::unix::net::UnixStream::pair().unwrap();
        let ((a_id, a_gen), (b_id, b_gen)) = ids;
        a.send(Inbound::Peer {
            id: b_id,
            generation: b_gen,
            link: 0,
            fd: x.into(),
        })
        .unwrap();
        b.send(Inbound::Peer {
            id: a_id,
            generation: a_gen,
            link: 0,
            fd: y.into(),
        })
        .unwrap();
    }

    #[tokio::test]
    async fn peers_talk_and_see_eof_when_the_other_is_gone() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (one, mut one_peers) = node((1, 1));
        let (two, mut two_peers) = node((2, 4));
        connect(&one, &two, ((1, 1), (2, 4)));
        let mut to_two = one_peers.recv().await.unwrap();
        let to_one = two_peers.recv().await.unwrap();
        assert_eq!((to_two.id(), to_two.generation()), (2, 4));
        assert_eq!((to_one.id(), to_one.generation()), (1, 1));
        let (mut read, mut write) = tokio::io::split(to_one);
        write.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        to_two.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        drop(to_two);
        assert_eq!(read.read(&mut buf).await.unwrap(), 0, "EOF");
    }

    #[tokio::test]
    async fn an_untaken_older_incarnation_is_dropped_for_the_newer() {
        let (one, rx) = mpsc::unbounded_channel();
        let queue = Arc::new(PeerQueue::default());
        let mut one_peers = Peers::new(queue.clone());
        let one_done = tokio::spawn(run(Incarnation::new(1, 1), rx, queue));
        let (old, _old_peers) = node((2, 1));
        let (new, _new_peers) = node((2, 2));
        // The newer one first: handshakes may finish in any order.
        connect(&one, &new, ((1, 1), (2, 2)));
        connect(&one, &old, ((1, 1), (2, 1)));
        one.send(Inbound::Gone { id: 9 }).unwrap();
        drop(one);
        one_done.await.unwrap(); // every handshake finished, nothing taken yet
        let mut seen = Vec::new();
        while let Some(peer) = one_peers.recv().await {
            seen.push((peer.id(), peer.generation()));
        }
        assert_eq!(seen, vec![(2, 2)], "only the newest incarnation is kept");
    }
}
