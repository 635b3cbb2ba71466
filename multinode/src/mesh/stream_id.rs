//! Which stream to a node a message or an end belongs to.

/// One stream to a node: the incarnation it reaches, and the master's number for
/// that stream. A pair meshed again without a restart (its stream was closed for
/// a bad frame) gets a higher number, so that the old stream's end, seen late,
/// never takes the new stream with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct StreamId {
    pub generation: u64,
    pub number: u64,
}
