//! Why a message was not queued.

use std::fmt;

use super::node_id::NodeId;

/// Why a message was not queued.
///
/// ```
/// let error = multinode::mesh::SendError::UnknownNode(7.into());
/// assert_eq!(error.to_string(), "node 7 is not another node of this program");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// No such node (or this node itself).
    UnknownNode(NodeId),
    /// The node is gone for good: not restarted (`restart = false`), or scaled
    /// down; or its machine left the cluster.
    Gone(NodeId),
    /// The node's queue is full (only from `try_send`).
    Full(NodeId),
    /// The encoded message is larger than [`Options::max_frame_len`](crate::mesh::Options::max_frame_len).
    TooLarge {
        /// Its encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message could not be encoded.
    Encode(String),
    /// The node is on another machine, and this node cannot reach the
    /// cluster's Redis now.
    Disconnected(NodeId),
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
            SendError::Disconnected(id) => {
                write!(
                    f,
                    "node {id} is on another machine, and the cluster's Redis is out of reach"
                )
            }
        }
    }
}

impl std::error::Error for SendError {}
