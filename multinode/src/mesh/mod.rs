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

#[cfg(feature = "cluster")]
mod arrival;
#[cfg(feature = "cluster")]
mod backlog;
#[cfg(feature = "cluster")]
mod bridge;
#[cfg(feature = "cluster")]
mod envelope;
#[doc(hidden)]
pub mod fingerprint;
mod halves;
mod handshake;
mod inbox;
#[cfg(feature = "cluster")]
mod machines;
mod messages;
mod node_id;
#[cfg(feature = "cluster")]
mod outage;
mod outbox;
pub(crate) mod peer;
mod remote;
mod router;
mod send_error;
mod signal;
#[cfg(feature = "cluster")]
mod strangers;
mod stream_id;
#[cfg(feature = "cluster")]
mod subscription;
mod tally;
mod trust;
mod wire;

/// Raw bytes as a message: `nodes.take_messages::<multinode::mesh::Bytes>()`.
///
/// ```
/// let message = multinode::mesh::Bytes::from_static(b"raw payload");
/// assert_eq!(message.len(), 11);
/// ```
pub use bytes::Bytes;
pub(crate) use messages::start as start_messages;
pub use messages::{Receiver, Sender};
pub use node_id::NodeId;
pub use peer::{Peer, Peers};
pub use send_error::SendError;
pub use wire::Options;
