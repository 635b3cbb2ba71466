//! Descriptor limits: each process raises its own to the hard limit at start (as
//! Go's runtime and nginx's `worker_rlimit_nofile` do), and a node's default
//! connection limit stays below it.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors a node keeps beyond its connections: its mesh streams (one per
/// node), its control socket, what its body opens, and in the master the
/// supervisor's (a control socket and a reserve per worker).
fn kept(nodes: usize) -> u64 {
    64 + 4 * nodes as u64
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; a failure leaves it as it is.
pub(crate) fn raise_nofile() {
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// `max_connections` when it is not set: the descriptor limit less what a node of
/// `nodes` keeps, and at least 16.
pub(crate) fn default_max_connections(nodes: usize) -> usize {
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    let room = soft.saturating_sub(kept(nodes)).max(16);
    usize::try_from(room).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_leaves_room_below_the_descriptor_limit() {
        raise_nofile();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(soft, hard, "raised to the hard limit");
        let limit = default_max_connections(4) as u64;
        assert!(limit < soft && limit >= 16, "{limit} of {soft}");
        assert_eq!(
            soft - limit.max(soft.saturating_sub(80)),
            80.min(soft - limit)
        );
    }
}
