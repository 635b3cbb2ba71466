//! Messages over the mesh: send to one node, broadcast to all, receive
//! `(from, message)`. Frames are length-delimited (tokio-util's codec) with a
//! maximum size; messages are serde values encoded with postcard.
//!
//! Each other node has one outgoing queue (bounded) and one writer task, which
//! live as long as this node: per-sender order is kept, a slow receiver makes
//! `send` wait instead of growing memory, and messages to a node that is
//! restarting wait in its queue until its next incarnation is meshed.
//!
//! On the receiving side, `Receiver::recv` reads the streams itself, cuts one
//! frame with the codec and decodes it: no reader task, no queue in between.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::task::{Context, Poll};

use bytes::{BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::codec::LengthDelimitedCodec;
use tracing::Instrument;

use super::halves;
use super::inbox::{Event, Inbox, Incoming};
use super::outbox::{self, Outbox, Stream};
use super::peer::{Item, PeerQueue, Remesh};
use super::StreamId;

/// Settings of the message layer; the same in every node (the body is the same
/// code everywhere).
///
/// ```
/// let options = multinode::mesh::Options::new()
///     .max_frame_len(64 * 1024)
///     .queue(256);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Options {
    max_frame_len: usize,
    queue: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_frame_len: 1024 * 1024,
            queue: 1024,
        }
    }
}

impl Options {
    /// The defaults: frames up to 1 MiB, 1024 messages queued per node.
    ///
    /// ```
    /// let options = multinode::mesh::Options::new();
    /// # let _ = options;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The largest encoded message, in bytes (default 1 MiB; at most 4 GiB − 1,
    /// the length prefix having 4 bytes). A larger one is a
    /// [`SendError::TooLarge`] for the sender; a frame announcing more closes the
    /// stream it came on.
    ///
    /// ```
    /// let options = multinode::mesh::Options::new().max_frame_len(4096);
    /// # let _ = options;
    /// ```
    pub fn max_frame_len(mut self, bytes: usize) -> Self {
        self.max_frame_len = bytes.clamp(1, u32::MAX as usize);
        self
    }

    /// How many messages may wait for each node (default 1024). Past that,
    /// `send` waits and `try_send` fails. (Incoming messages wait in the
    /// streams' socket buffers until [`Receiver::recv`] reads them.)
    ///
    /// ```
    /// let options = multinode::mesh::Options::new().queue(64);
    /// # let _ = options;
    /// ```
    pub fn queue(mut self, messages: usize) -> Self {
        self.queue = messages.max(1);
        self
    }

    fn codec(&self) -> LengthDelimitedCodec {
        LengthDelimitedCodec::builder()
            .max_frame_length(self.max_frame_len)
            .new_codec()
    }
}

/// Why a message was not queued.
///
/// ```
/// let error = multinode::mesh::SendError::UnknownNode(7);
/// assert_eq!(error.to_string(), "node 7 is not another node of this program");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// No such node (or this node itself).
    UnknownNode(usize),
    /// The node is gone for good: not restarted (`restart = false`), or scaled down.
    Gone(usize),
    /// The node's queue is full (only from `try_send`).
    Full(usize),
    /// The encoded message is larger than [`Options::max_frame_len`].
    TooLarge {
        /// Its encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message could not be encoded.
    Encode(String),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::UnknownNode(id) => {
                write!(f, "node {id} is not another node of this program")
            }
            SendError::Gone(id) => write!(f, "node {id} is gone and will not come back"),
            SendError::Full(id) => write!(f, "the queue to node {id} is full"),
            SendError::TooLarge { len, max } => {
                write!(f, "a message of {len} bytes is over the limit of {max}")
            }
            SendError::Encode(error) => write!(f, "cannot encode the message: {error}"),
        }
    }
}

impl std::error::Error for SendError {}

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
    pub async fn send(&self, to: usize, message: &M) -> Result<(), SendError> {
        let max = self.router.options.max_frame_len;
        let write = |buffer: &mut BytesMut| write_frame(message, max, buffer);
        // The common case: no wait, and no reference count taken on the queue.
        let outbox = match self.router.try_send_with(to, write) {
            Err(SendError::Full(_)) => self.router.outbox(to)?,
            done => return done,
        };
        outbox.send_with(write).await
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
    pub fn try_send(&self, to: usize, message: &M) -> Result<(), SendError> {
        let max = self.router.options.max_frame_len;
        self.router
            .try_send_with(to, |buffer| write_frame(message, max, buffer))
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
        let mut frame = BytesMut::new();
        write_frame(message, self.router.options.max_frame_len, &mut frame)?;
        let copy = |buffer: &mut BytesMut| {
            buffer.extend_from_slice(&frame);
            Ok(())
        };
        for outbox in self.router.outboxes() {
            let _ = outbox.send_with(copy).await; // Err: gone meanwhile
        }
        Ok(())
    }
}

/// Appends `message` to `buffer` as one frame of tokio-util's length-delimited
/// codec as [`Options::codec`] reads it (a 4-byte big-endian length, then the
/// postcard encoding), written in place: no copy and no allocation of its own.
/// Nothing of a message over `max` bytes is kept beyond `max`; the caller takes
/// back what was appended on error.
fn write_frame<M: Serialize>(
    message: &M,
    max: usize,
    buffer: &mut BytesMut,
) -> Result<(), SendError> {
    let start = buffer.len();
    buffer.put_u32(0); // the length, written below
    let mut body = Bounded {
        buffer: &mut *buffer,
        room: max,
        len: 0,
    };
    postcard::to_io(message, &mut body).map_err(|e| SendError::Encode(e.to_string()))?;
    let len = body.len;
    if len > max {
        return Err(SendError::TooLarge { len, max });
    }
    let prefix = u32::try_from(len).expect("max_frame_len fits the 4-byte length");
    buffer[start..start + 4].copy_from_slice(&prefix.to_be_bytes());
    Ok(())
}

/// Appends to a buffer up to `room` bytes, and counts every byte written.
struct Bounded<'a> {
    buffer: &'a mut BytesMut,
    room: usize,
    len: usize,
}

impl std::io::Write for Bounded<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.len + bytes.len() <= self.room {
            self.buffer.extend_from_slice(bytes);
        }
        self.len += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
    pub fn nodes(&self) -> Vec<usize> {
        self.router.links().live.keys().copied().collect()
    }
}

/// Receives `(from, message)` from every other node, in each sender's order.
/// Made by [`Nodes::take_messages`](crate::Nodes::take_messages).
///
/// ```no_run
/// # async fn f(mut rx: multinode::mesh::Receiver<String>) {
/// while let Some((from, text)) = rx.recv().await {
///     println!("node {from} says {text}");
/// }
/// # }
/// ```
pub struct Receiver<M> {
    inbox: Inbox,
    /// Where to ask for a stream closed for a bad frame to be meshed again.
    remesh: Option<mpsc::UnboundedSender<Remesh>>,
    /// The node's span, for the errors logged from whatever task receives.
    span: tracing::Span,
    _message: PhantomData<fn() -> M>,
}

impl<M> fmt::Debug for Receiver<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("streams", &self.inbox.len())
            .finish_non_exhaustive()
    }
}

impl<M> Drop for Receiver<M> {
    /// A node that no longer reads its messages still reads its streams, and
    /// discards what comes: its peers never wait on it, and each stream's end is
    /// still seen, so that no descriptor is kept per peer restart.
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // the runtime is going: so is the process
        };
        let mut inbox = std::mem::replace(&mut self.inbox, Inbox::closed());
        let discard = async move { while poll_fn(|cx| inbox.poll_next(cx)).await.is_some() {} };
        runtime.spawn(discard.instrument(self.span.clone()));
    }
}

impl<M: DeserializeOwned> Receiver<M> {
    /// The next message and the id of the node that sent it; `None` once the
    /// master is gone and every stream has ended. A frame that is not one (over
    /// [`Options::max_frame_len`]) or a message that does not decode as `M`
    /// closes the stream it came on (logged, naming the node); the messages
    /// before it are delivered.
    ///
    /// The streams are read only by `recv`: until it is called, messages wait
    /// in the sockets, and their senders wait once those are full.
    ///
    /// Cancel safe: a message is taken only by the call that returns it, so
    /// `recv` can be a branch of `tokio::select!`.
    ///
    /// ```no_run
    /// # async fn f(mut rx: multinode::mesh::Receiver<u64>) {
    /// if let Some((from, n)) = rx.recv().await {
    ///     println!("{n} from node {from}");
    /// }
    /// # }
    /// ```
    pub async fn recv(&mut self) -> Option<(usize, M)> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<(usize, M)>> {
        loop {
            let Some(event) = std::task::ready!(self.inbox.poll_next(cx)) else {
                return Poll::Ready(None);
            };
            match event {
                Event::Frame { from, link, body } => match postcard::from_bytes::<M>(&body) {
                    Ok(message) => return Poll::Ready(Some((from, message))),
                    Err(error) => {
                        self.inbox.close(from, link);
                        self.closed(from, link, &format!("a malformed message ({error})"));
                    }
                },
                Event::Ended { id, link } => self.span.in_scope(|| {
                    let generation = link.generation;
                    tracing::debug!(peer = id, generation, "mesh: node {id} closed its stream")
                }),
                Event::Failed { id, link, error } => self.closed(id, link, &error),
            }
        }
    }

    /// Stream `link` from node `id` was closed for `error`: logged, and the
    /// master asked for a new one, so that the pair is not cut off for good.
    fn closed(&self, id: usize, link: StreamId, error: &str) {
        let generation = link.generation;
        self.span.in_scope(|| {
            tracing::error!(
                peer = id,
                generation,
                "mesh: {error} from node {id}: closing the stream from node {id}; asking for a new one"
            )
        });
        if let Some(remesh) = &self.remesh {
            let _ = remesh.send(Remesh { id, generation });
        }
    }
}

/// The outgoing side: one link per other node.
struct Router {
    me: usize,
    options: Options,
    /// Read by every send (shared), written when a node is meshed or gone.
    links: RwLock<Links>,
}

#[derive(Default)]
struct Links {
    live: BTreeMap<usize, Link>,
    /// Nodes gone for good.
    gone: BTreeSet<usize>,
}

struct Link {
    /// The node's outgoing queue.
    outbox: Arc<Outbox>,
    /// Streams to its incarnations, for its writer task.
    streams: mpsc::UnboundedSender<Stream>,
}

impl Router {
    fn links(&self) -> RwLockReadGuard<'_, Links> {
        self.links.read().unwrap_or_else(|e| e.into_inner())
    }

    fn links_mut(&self) -> RwLockWriteGuard<'_, Links> {
        self.links.write().unwrap_or_else(|e| e.into_inner())
    }

    fn outbox(&self, to: usize) -> Result<Arc<Outbox>, SendError> {
        self.with_outbox(to, |outbox| Ok(outbox.clone()))
    }

    /// [`Outbox::try_send_with`] on node `to`'s queue.
    fn try_send_with(
        &self,
        to: usize,
        write: impl FnOnce(&mut BytesMut) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        self.with_outbox(to, |outbox| outbox.try_send_with(write))
    }

    fn with_outbox<T>(
        &self,
        to: usize,
        f: impl FnOnce(&Arc<Outbox>) -> Result<T, SendError>,
    ) -> Result<T, SendError> {
        let links = self.links();
        match links.live.get(&to) {
            Some(link) => f(&link.outbox),
            None if links.gone.contains(&to) => Err(SendError::Gone(to)),
            None => Err(SendError::UnknownNode(to)),
        }
    }

    fn outboxes(&self) -> Vec<Arc<Outbox>> {
        self.links()
            .live
            .values()
            .map(|l| l.outbox.clone())
            .collect()
    }

    /// The link to node `id`, made (with its writer task) on first use.
    fn link(&self, id: usize) -> mpsc::UnboundedSender<Stream> {
        let mut links = self.links_mut();
        links.gone.remove(&id);
        let link = links.live.entry(id).or_insert_with(|| {
            let outbox = Arc::new(Outbox::new(id, self.options.queue));
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
    fn gone(&self, id: usize) {
        let mut links = self.links_mut();
        if let Some(link) = links.live.remove(&id) {
            link.outbox.close();
        }
        links.gone.insert(id);
    }
}

/// Starts the message layer: a link to every node of `ids` but this one, and a
/// task that takes the peers from `queue` as they pass their handshake.
pub(crate) fn start<M>(
    me: usize,
    ids: impl IntoIterator<Item = usize>,
    queue: Arc<PeerQueue>,
    options: Options,
) -> (Sender<M>, Receiver<M>)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let router = Arc::new(Router {
        me,
        options,
        links: RwLock::new(Links::default()),
    });
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
                        let incoming = Incoming::new(id, link, read, options.codec(), writer);
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
    let receiver = Receiver {
        inbox: Inbox::new(arrivals),
        remesh,
        span: tracing::Span::current(),
        _message: PhantomData,
    };
    (sender, receiver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::peer::tests::connect;
    use crate::mesh::{run, Inbound};
    use proptest::prelude::*;
    use std::time::Duration;
    use tokio_util::codec::Decoder;

    type Node = (mpsc::UnboundedSender<Inbound>, Arc<PeerQueue>);

    /// `n` nodes (ids 0..n) in this process, meshed as the master would mesh them.
    fn mesh(n: usize) -> Vec<Node> {
        let nodes: Vec<Node> = (0..n)
            .map(|id| {
                let (tx, rx) = mpsc::unbounded_channel();
                let queue = Arc::new(PeerQueue::default());
                tokio::spawn(run((id, 1), rx, queue.clone()));
                (tx, queue)
            })
            .collect();
        for a in 0..n {
            for b in a + 1..n {
                connect(&nodes[a].0, &nodes[b].0, ((a, 1), (b, 1)));
            }
        }
        nodes
    }

    fn messages<M>(nodes: &[Node], id: usize, options: Options) -> (Sender<M>, Receiver<M>)
    where
        M: Serialize + DeserializeOwned + Send + 'static,
    {
        start(id, 0..nodes.len(), nodes[id].1.clone(), options)
    }

    #[test]
    fn both_halves_can_go_to_any_task() {
        fn send_and_sync<T: Send + Sync>() {}
        send_and_sync::<Sender<String>>();
        send_and_sync::<Receiver<String>>();
    }

    #[tokio::test]
    async fn every_node_hears_every_other_once_in_order() {
        let nodes = mesh(4);
        let layers: Vec<_> = (0..4)
            .map(|id| messages::<(usize, u32)>(&nodes, id, Options::new()))
            .collect();
        let mut receivers = Vec::new();
        for (id, (tx, rx)) in layers.into_iter().enumerate() {
            assert_eq!(tx.nodes(), (0..4).filter(|n| *n != id).collect::<Vec<_>>());
            for seq in 0..100 {
                tx.broadcast(&(id, seq)).await.unwrap();
            }
            assert_eq!(tx.send(id, &(id, 0)).await, Err(SendError::UnknownNode(id)));
            assert_eq!(tx.send(9, &(id, 0)).await, Err(SendError::UnknownNode(9)));
            receivers.push(rx);
        }
        for (id, rx) in receivers.iter_mut().enumerate() {
            let mut next = [0u32; 4];
            for _ in 0..300 {
                let (from, (sender, seq)) = rx.recv().await.unwrap();
                assert_eq!(from, sender);
                assert_ne!(from, id);
                assert_eq!(seq, next[from], "per-sender order");
                next[from] += 1;
            }
            let more = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await;
            assert!(more.is_err(), "nothing twice: {:?}", more.ok());
        }
    }

    #[tokio::test]
    async fn a_cancelled_recv_loses_nothing() {
        let nodes = mesh(2);
        let (tx, _rx0) = messages::<u32>(&nodes, 0, Options::new());
        let (_tx1, mut rx) = messages::<u32>(&nodes, 1, Options::new());
        let sending = tokio::spawn(async move {
            for n in 0..2000 {
                tx.send(1, &n).await.unwrap();
                if n % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        let (mut next, mut cancelled) = (0, 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while next < 2000 && tokio::time::Instant::now() < deadline {
            // A select! whose other branch is often ready first.
            tokio::select! {
                biased;
                _ = tokio::task::yield_now(), if next % 3 == 0 => cancelled += 1,
                got = rx.recv() => {
                    assert_eq!(got, Some((0, next)), "in order, none lost");
                    next += 1;
                }
            }
        }
        assert_eq!(next, 2000);
        assert!(cancelled > 0);
        sending.await.unwrap();
    }

    #[tokio::test]
    async fn a_slow_receiver_makes_the_sender_wait() {
        let nodes = mesh(2);
        let options = Options::new().queue(8);
        let (tx, _rx0) = messages::<Vec<u8>>(&nodes, 0, options);
        let (_tx1, mut rx) = messages::<Vec<u8>>(&nodes, 1, options);
        let big = vec![7u8; 64 * 1024];
        // Node 1 reads nothing: the socket, its inbox and node 0's queue fill up,
        // and then try_send fails instead of queueing more.
        let mut queued = 0;
        let full = loop {
            match tx.try_send(1, &big) {
                Ok(()) => queued += 1,
                Err(error) => break error,
            }
            if queued > 10_000 {
                panic!("10 000 messages of 64 KiB queued: no back-pressure");
            }
            tokio::task::yield_now().await;
        };
        assert_eq!(full, SendError::Full(1));
        assert!(queued < 100, "{queued} queued");
        // Once node 1 reads, every queued message arrives.
        for _ in 0..queued {
            assert_eq!(rx.recv().await.unwrap().1.len(), big.len());
        }
        let too_big = vec![0u8; options.max_frame_len + 1];
        assert!(matches!(
            tx.send(1, &too_big).await,
            Err(SendError::TooLarge { .. })
        ));
        // What was encoded for it is gone: the next message arrives intact.
        tx.send(1, &vec![1, 2, 3]).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().1, vec![1, 2, 3]);
    }

    /// Receives on its own task, as a node's body would; what it gets comes out
    /// of the channel.
    fn receiving(mut rx: Receiver<String>) -> mpsc::UnboundedReceiver<(usize, String)> {
        let (got, heard) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                let _ = got.send(message);
            }
        });
        heard
    }

    #[tokio::test]
    async fn a_bad_frame_closes_that_stream_only() {
        use tokio::io::AsyncWriteExt;
        // Node 0 takes its streams raw, as a misbehaving peer would.
        let nodes = mesh(3);
        let mut rogue = crate::mesh::Peers::new(nodes[0].1.clone());
        let (tx1, rx1) = messages::<String>(&nodes, 1, Options::new().max_frame_len(1024));
        let (tx2, rx2) = messages::<String>(&nodes, 2, Options::new().max_frame_len(1024));
        let (mut heard1, mut heard2) = (receiving(rx1), receiving(rx2));
        let (mut to_one, mut to_two) = {
            let (a, b) = (rogue.recv().await.unwrap(), rogue.recv().await.unwrap());
            if a.id() == 1 {
                (a, b)
            } else {
                (b, a)
            }
        };
        let mut buf = [0u8; 1];
        let closed = |read| matches!(read, Ok(Ok(0) | Err(_)));
        // A length prefix far over the limit.
        to_one.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let read = tokio::io::AsyncReadExt::read(&mut to_one, &mut buf);
        let read = tokio::time::timeout(Duration::from_secs(5), read).await;
        assert!(closed(read), "node 1 closed the stream");
        // Node 1 still talks with node 2, both ways.
        tx2.send(1, &"still here".to_string()).await.unwrap();
        assert_eq!(heard1.recv().await, Some((2, "still here".to_string())));
        tx1.send(2, &"me too".to_string()).await.unwrap();
        // A whole frame whose body is no String: node 2 closes that stream when
        // its receiver comes to it, and gets node 1's message after it.
        to_two.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
        tx1.send(2, &"after".to_string()).await.unwrap();
        let read = tokio::io::AsyncReadExt::read(&mut to_two, &mut buf);
        let read = tokio::time::timeout(Duration::from_secs(5), read).await;
        assert!(closed(read), "node 2 closed the stream");
        for text in ["me too", "after"] {
            assert_eq!(heard2.recv().await, Some((1, text.to_string())));
        }
    }

    #[test]
    fn an_oversized_length_prefix_allocates_nothing() {
        let mut codec = Options::new().max_frame_len(1024).codec();
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert!(codec.decode(&mut buf).is_err());
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn frames_are_what_the_codec_reads() {
        let options = Options::new().max_frame_len(64);
        let mut buffer = BytesMut::new();
        let texts = ["", "one", "a longer message of some forty bytes....."];
        for text in texts {
            write_frame(&text, 64, &mut buffer).unwrap();
        }
        let too_large = "x".repeat(100);
        assert_eq!(
            write_frame(&too_large, 64, &mut BytesMut::new()),
            Err(SendError::TooLarge { len: 101, max: 64 })
        );
        let mut codec = options.codec();
        for text in texts {
            let frame = codec.decode(&mut buffer).unwrap().expect("a whole frame");
            assert_eq!(postcard::from_bytes::<&str>(&frame).unwrap(), text);
        }
        assert!(buffer.is_empty());
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Sample {
        Text(String),
        Numbers(Vec<u64>),
        Pair(u8, Option<i32>),
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Random and mutated input never panics the frame decoder or the message
        /// decoder, and the buffer never grows past the input plus one frame.
        #[test]
        fn frames_and_messages_never_panic(
            input in proptest::collection::vec(any::<u8>(), 0..512),
            valid in proptest::collection::vec(any::<u64>(), 0..8),
            flip in any::<(usize, u8)>(),
        ) {
            let max = 256;
            let mut stream = BytesMut::new();
            let sample = Sample::Numbers(valid);
            let body = postcard::to_stdvec(&sample).unwrap();
            stream.extend_from_slice(&(body.len() as u32).to_be_bytes());
            stream.extend_from_slice(&body);
            stream.extend_from_slice(&input);
            let at = flip.0 % stream.len();
            stream[at] ^= flip.1;
            let limit = stream.len() + max + 8;
            let mut codec = Options::new().max_frame_len(max).codec();
            while let Ok(Some(frame)) = codec.decode(&mut stream) {
                let _ = postcard::from_bytes::<Sample>(&frame);
                prop_assert!(stream.capacity() <= limit);
            }
            prop_assert!(stream.capacity() <= limit);
        }
    }
}
