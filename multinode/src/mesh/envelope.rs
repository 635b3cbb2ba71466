//! A message between machines, as published to Redis.

use serde::{Deserialize, Serialize};

/// A message between machines, as published.
#[derive(Serialize, Deserialize)]
pub(super) struct Envelope<'a> {
    pub machine: &'a str,
    pub node: u32,
    /// The fingerprint of the message's type (`fingerprint.rs`).
    pub kind: u32,
    pub body: &'a [u8],
}
