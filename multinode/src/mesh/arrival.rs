//! A message from another machine, as the subscription hands it on.

use super::node_id::NodeId;

/// A message from another machine: its payload as Redis delivered it (not
/// copied), and where its body lies in it.
pub(crate) struct Arrival {
    pub from: NodeId,
    payload: Vec<u8>,
    body: std::ops::Range<usize>,
}

impl Arrival {
    /// A message from `from` whose body is `body` of `payload`.
    pub fn new(from: NodeId, payload: Vec<u8>, body: std::ops::Range<usize>) -> Self {
        Arrival {
            from,
            payload,
            body,
        }
    }

    /// The message's postcard bytes.
    pub fn body(&self) -> &[u8] {
        &self.payload[self.body.clone()]
    }
}
