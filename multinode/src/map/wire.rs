//! What the copies of a map say to each other over the message layer.

use serde::{Deserialize, Serialize};

use super::entry::Entry;

/// One message between two copies of a map.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Wire<K, V> {
    /// Entries to merge. A write travels as one entry of kind `Write`; a
    /// snapshot as parts, the last of kind `Last`. One shape for both, so
    /// that an entry that fit as a write fits as a part.
    Entries {
        kind: Kind,
        entries: Vec<(K, Entry<V>)>,
    },
    /// A (re)started copy asks for a snapshot.
    Ask,
    /// The answer of a copy that has no snapshot to give yet: it is starting too.
    NotSynced,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    Write,
    Part,
    Last,
}
