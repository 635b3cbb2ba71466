//! Node addresses: a node of this machine is its id alone, as on one machine;
//! a node of another machine of the cluster also names that machine.

use std::fmt;
use std::sync::Arc;

/// A node a message comes from or goes to: node `id` of this machine, or of
/// another machine of the cluster (`cluster` feature). A `usize` converts into
/// a local one and compares equal to it, so single-machine code reads as with
/// plain ids: `tx.send(2, &m)`, `if from == 2`, `println!("{from}")`.
///
/// ```
/// use multinode::mesh::NodeId;
///
/// let local = NodeId::from(2);
/// assert!(local == 2 && local.is_local());
/// assert_eq!(local.to_string(), "2");
/// let remote = NodeId::remote("eu-1", 2);
/// assert!(remote != 2 && remote.machine() == Some("eu-1"));
/// assert_eq!(remote.to_string(), "eu-1/2");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    /// `None`: this machine.
    machine: Option<Arc<str>>,
    id: usize,
}

impl NodeId {
    /// Node `id` of this machine.
    ///
    /// ```
    /// assert_eq!(multinode::mesh::NodeId::local(3), 3);
    /// ```
    pub fn local(id: usize) -> Self {
        NodeId { machine: None, id }
    }

    /// Node `id` of machine `machine` (its `MULTINODE_MACHINE` name).
    ///
    /// ```
    /// let node = multinode::mesh::NodeId::remote("eu-1", 0);
    /// assert_eq!(node.id(), 0);
    /// ```
    pub fn remote(machine: &str, id: usize) -> Self {
        NodeId {
            machine: Some(machine.into()),
            id,
        }
    }

    /// [`remote`](Self::remote) with the machine's name already shared.
    #[cfg(feature = "cluster")]
    pub(crate) fn of_machine(machine: Arc<str>, id: usize) -> Self {
        NodeId {
            machine: Some(machine),
            id,
        }
    }

    /// The node's id on its machine.
    ///
    /// ```
    /// assert_eq!(multinode::mesh::NodeId::from(3).id(), 3);
    /// ```
    pub fn id(&self) -> usize {
        self.id
    }

    /// The name of the node's machine; `None` for this one.
    ///
    /// ```
    /// assert_eq!(multinode::mesh::NodeId::from(3).machine(), None);
    /// ```
    pub fn machine(&self) -> Option<&str> {
        self.machine.as_deref()
    }

    /// Whether the node is on this machine.
    ///
    /// ```
    /// assert!(multinode::mesh::NodeId::from(3).is_local());
    /// ```
    pub fn is_local(&self) -> bool {
        self.machine.is_none()
    }
}

impl From<usize> for NodeId {
    fn from(id: usize) -> Self {
        NodeId::local(id)
    }
}

impl PartialEq<usize> for NodeId {
    fn eq(&self, id: &usize) -> bool {
        self.machine.is_none() && self.id == *id
    }
}

impl PartialEq<NodeId> for usize {
    fn eq(&self, node: &NodeId) -> bool {
        node == self
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.machine {
            None => write!(f, "{}", self.id),
            Some(machine) => write!(f, "{machine}/{}", self.id),
        }
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
