//! What a message from another machine must be to be taken: Redis is shared
//! and not trusted.

/// What a message from another machine must be to be taken.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) struct Trust {
    /// The fingerprint of this node's message type, and its name for the log.
    pub kind: u32,
    pub type_name: &'static str,
    /// The longest message body (`Options::max_frame_len`).
    pub max_len: usize,
    pub tally: super::tally::Tally,
}
