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
mod tests;
