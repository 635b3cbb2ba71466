//! [`Balance`]: how the listening port's connections reach the serving
//! processes, and its names in the attribute and `MULTINODE_BALANCE`.

/// How the listening port reaches the serving processes.
///
/// Kept selectable so that the benchmark can measure each mode side by side.
///
/// ```
/// let builder = multinode::Builder::new().balance(multinode::Balance::Shared);
/// # let _ = builder;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Balance {
    /// One `SO_REUSEPORT` listener per slot, opened by the master and kept open for
    /// the whole run: the kernel spreads new connections over the slots by hash, and a
    /// restarting slot's queue waits for its replacement. The choice for a listener
    /// taken with [`Nodes::take_listener`](crate::Nodes::take_listener) (axum).
    ReusePort,
    /// One listening socket shared by every process (Node's `cluster` and the seed's
    /// way): whichever process wakes first accepts.
    Shared,
    /// One shared listening socket, and a node that has more open connections than
    /// the least busy node that is accepting leaves a pending connection to it:
    /// the least busy process accepts first. A node that leaves an arrival waiting
    /// 5 ms without running its accept loop (stopped, or its runtime blocked) is
    /// not accepting, and is not waited for until it runs again; a draining node
    /// is not waited for at all. Needs [`http::serve`](crate::http::serve); a
    /// listener taken with [`Nodes::take_listener`](crate::Nodes::take_listener)
    /// accepts as `Shared`. The default: the fairest, measured side by side with
    /// the others.
    #[default]
    LeastConn,
    /// One `SO_REUSEPORT` listener per slot, as `ReusePort`, and the same client
    /// address always reaches the same slot (nginx's `ip_hash`), chosen in the
    /// kernel by a hash of the address: a session kept in one node's memory
    /// finds its client again. Keyed by slot, so a reload or an upgrade keeps
    /// the mapping; while a node is stopped or restarting, its clients go to
    /// the others, and come back once it serves. Clients behind one NAT share
    /// an address, and so a node.
    Sticky,
}

impl Balance {
    /// Whether each slot has a listening socket of its own (`SO_REUSEPORT`).
    pub(crate) fn per_slot(self) -> bool {
        matches!(self, Balance::ReusePort | Balance::Sticky)
    }

    /// The mode named as in the attribute and `MULTINODE_BALANCE`.
    pub(super) fn from_name(name: &str) -> Option<Self> {
        match name {
            "least_conn" => Some(Balance::LeastConn),
            "reuse_port" => Some(Balance::ReusePort),
            "shared" => Some(Balance::Shared),
            "sticky" => Some(Balance::Sticky),
            _ => None,
        }
    }
}
