//! The receiving side of the message layer: `Receiver::recv` reads the
//! streams itself (the inbox), cuts one frame and decodes it, and takes turns
//! with the messages from other machines.

use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::mesh::inbox::{Event, Inbox};
use crate::mesh::node_id::NodeId;
use crate::mesh::peer::MeshRequest;
use crate::mesh::remote::Subscription;
use crate::mesh::stream_id::StreamId;
use crate::mesh::tally::Tally;

/// Receives `(from, message)` from every other node, in each sender's order;
/// `from` is a [`NodeId`], which prints and compares as the plain id for a
/// node of this machine.
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
    /// The counters on the status board.
    tally: Tally,
    inbox: Inbox,
    /// Messages from the other machines of the cluster.
    remote: Option<Subscription>,
    /// Whose turn it is to be asked first: the other machines' or this one's.
    remote_first: bool,
    /// Malformed messages from other machines are logged at most once a second.
    malformed: crate::throttle::Throttle,
    /// Where to ask for a stream closed for a bad frame to be meshed again.
    remesh: Option<mpsc::UnboundedSender<MeshRequest>>,
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
        let discard = async move {
            while poll_fn(|cx| inbox.poll_next(cx, &mut |_| ()))
                .await
                .is_some()
            {}
        };
        runtime.spawn(discard.instrument(self.span.clone()));
    }
}

impl<M> Receiver<M> {
    pub(super) fn new(
        tally: Tally,
        inbox: Inbox,
        remote: Option<Subscription>,
        remesh: Option<mpsc::UnboundedSender<MeshRequest>>,
    ) -> Self {
        Receiver {
            tally,
            inbox,
            remote,
            remote_first: false,
            malformed: crate::throttle::Throttle::default(),
            remesh,
            span: tracing::Span::current(),
            _message: PhantomData,
        }
    }
}

impl<M: DeserializeOwned> Receiver<M> {
    /// The next message and the id of the node that sent it; `None` once the
    /// master is gone and every stream has ended. A frame that is not one
    /// (over [`Options::max_frame_len`](crate::mesh::Options::max_frame_len))
    /// or a message that does not decode as `M` closes the stream it came on
    /// (logged, naming the node); the messages before it are delivered.
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
    pub async fn recv(&mut self) -> Option<(NodeId, M)> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The local streams and the other machines take turns: after a message
    /// from one, the other is asked first, so that a flood from either never
    /// holds back the other.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<(NodeId, M)>> {
        if self.remote_first {
            if let Poll::Ready(message) = self.poll_remote(cx) {
                self.remote_first = false;
                return Poll::Ready(Some(message));
            }
            return self.poll_local(cx);
        }
        match self.poll_local(cx) {
            Poll::Ready(Some(message)) => {
                self.remote_first = self.remote.is_some();
                Poll::Ready(Some(message))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => self.poll_remote(cx).map(Some),
        }
    }

    /// The next message from another machine (one that does not decode as
    /// `M` is dropped, and logged at most once a second).
    fn poll_remote(&mut self, cx: &mut Context<'_>) -> Poll<(NodeId, M)> {
        let Some(remote) = self.remote.as_mut() else {
            return Poll::Pending;
        };
        while let Poll::Ready(Some(arrival)) = remote.poll_recv(cx) {
            let decoded = postcard::from_bytes::<M>(arrival.body());
            let bytes = arrival.body().len();
            let from = arrival.from;
            match decoded {
                Ok(message) => {
                    self.tally.received(bytes);
                    return Poll::Ready((from, message));
                }
                Err(error) => {
                    if let Some(held) = self.malformed.admit(std::time::Instant::now()) {
                        self.span.in_scope(|| {
                            tracing::warn!(
                                held_back = held,
                                "cluster: dropped a malformed message ({error}) from node {from}"
                            )
                        });
                    }
                }
            }
        }
        Poll::Pending
    }

    /// The next message from a node of this machine; `None` once none will come.
    #[inline]
    fn poll_local(&mut self, cx: &mut Context<'_>) -> Poll<Option<(NodeId, M)>> {
        loop {
            let mut decode = |body: &[u8]| (body.len(), postcard::from_bytes::<M>(body));
            let Some(event) = std::task::ready!(self.inbox.poll_next(cx, &mut decode)) else {
                return Poll::Ready(None);
            };
            match event {
                Event::Frame { from, link, body } => match body {
                    (len, Ok(message)) => {
                        self.tally.received(len);
                        return Poll::Ready(Some((NodeId::local(from), message)));
                    }
                    (_, Err(error)) => {
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
            let _ = remesh.send(MeshRequest::Again { id, generation });
        }
    }
}
