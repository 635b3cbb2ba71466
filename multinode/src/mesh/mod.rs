//! The mesh: a direct stream between every pair of nodes, for broadcasts, cache
//! invalidation and shared sessions, with no hop through the master.
//!
//! For every pair of live nodes the master makes one Unix stream socketpair and
//! sends each end to its node over the control socket, labelled with the other
//! node's id and generation. Each stream passes a handshake (protocol version,
//! ids, generation) in both directions before it is handed out.
//!
//! Take the streams raw, as [`Peer`]s ([`Nodes::take_peers`](crate::Nodes::take_peers)),
//! or use the message layer on top of them, which most programs want
//! ([`Nodes::take_messages`](crate::Nodes::take_messages)): one or the other.
//!
//! ```no_run
//! #[multinode::main(nodes = 4)]
//! async fn main(mut nodes: multinode::Nodes) {
//!     let (tx, mut rx) = nodes.take_messages::<String>().expect("taken once");
//!     tx.broadcast(&format!("node {} is up", nodes.id())).await.unwrap();
//!     while let Some((from, text)) = rx.recv().await {
//!         println!("from node {from}: {text}");
//!     }
//! }
//! ```

/// The largest buffer an outgoing queue keeps once a burst is through, or an
/// incoming stream once its frames are: room for the next messages, not for
/// ever the largest burst.
const KEEP_CAPACITY: usize = 1024 * 1024;

/// One stream to a node: the incarnation it reaches, and the master's number for
/// that stream. A pair meshed again without a restart (its stream was closed for
/// a bad frame) gets a higher number, so that the old stream's end, seen late,
/// never takes the new stream with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct StreamId {
    pub generation: u64,
    pub number: u64,
}

#[cfg(feature = "cluster")]
mod backlog;
#[cfg(feature = "cluster")]
mod bridge;
mod halves;
mod handshake;
mod inbox;
mod messages;
mod node_id;
mod outbox;
mod peer;
mod remote;
mod router;
#[cfg(feature = "cluster")]
mod subscription;
mod tally;
mod wire;

/// Raw bytes as a message: `nodes.take_messages::<multinode::mesh::Bytes>()`.
///
/// ```
/// let message = multinode::mesh::Bytes::from_static(b"raw payload");
/// assert_eq!(message.len(), 11);
/// ```
pub use bytes::Bytes;
pub(crate) use messages::start as start_messages;
pub use messages::{Receiver, SendError, Sender};
pub use node_id::NodeId;
pub(crate) use peer::{run, Inbound, PeerQueue, Remesh};
pub use peer::{Peer, Peers};
pub use wire::Options;
