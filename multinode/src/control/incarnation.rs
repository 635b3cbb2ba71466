//! One incarnation of a node: which slot, and which start of that slot.

use serde::{Deserialize, Serialize};

/// A node's slot (its id, which every replacement keeps) and which start of
/// that slot a process is (its generation, from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct Incarnation {
    pub slot: usize,
    pub generation: u64,
}

impl Incarnation {
    /// The master's own node: slot 0, started once.
    pub const MASTER: Incarnation = Incarnation::new(0, 1);

    pub const fn new(slot: usize, generation: u64) -> Self {
        Incarnation { slot, generation }
    }
}
