//! What the master announces of the whole server (to systemd, and the log).

/// Where the server stands, for the service manager.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Notice {
    /// Every node serves: at start, and when a rolling restart is done.
    /// `generation` counts the rolling restarts done, from 1.
    Ready { nodes: usize, generation: u32 },
    /// A rolling restart starts.
    Reloading { nodes: usize },
    /// A rolling restart stopped: `slot`'s replacement failed, and the old
    /// processes serve on.
    ReloadStopped { slot: usize },
    /// Everything stops.
    Stopping { nodes: usize },
    /// A new master, `pid`, serves in this one's place.
    Upgraded { pid: u32 },
}
