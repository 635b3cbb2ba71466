//! Load-aware accepting: a table in shared memory that every node updates as it
//! opens and closes connections, and the accept loop that consults it.
//!
//! The master creates the table (an anonymous `memfd`, one cache line per slot)
//! and sends it to each worker as a labelled descriptor. Every mode keeps the
//! per-node totals there, which the master reports when it stops. With
//! [`Balance::LeastConn`] a node that has more open connections than the least
//! busy live node lets arriving connections go to the others, looking again at
//! the next arrival (or after [`MAX_DEFER`], should the others be stuck), in the
//! spirit of Puma's `wait_for_less_busy_worker` but without sleeping: the shared
//! queue then fills the least busy processes first.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::socket::{accept4, SockFlag};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::config::Balance;

/// Slots the table has room for: every node a master can run, so that scaling up
/// never needs a new table.
pub(crate) const TABLE_SLOTS: usize = crate::config::MAX_NODES + 1;

/// How long a busier node leaves pending connections to the less busy ones
/// before it takes one itself.
const MAX_DEFER: Duration = Duration::from_millis(20);

/// How many more connections in all than an equally busy node a node may have
/// accepted and still accept now: this many, or a sixteenth of the other's total
/// if that is more (a tie-break that seldom fires under sustained load).
const TIE_SPREAD: u64 = 8;

/// One slot's line in the table.
#[repr(C, align(64))]
struct Entry {
    /// Connections open now.
    active: AtomicU32,
    /// 1 while an incarnation of the slot is serving (set by the master).
    live: AtomicU32,
    /// Connections accepted since the start, over every incarnation.
    connections: AtomicU64,
    /// Requests served since the start, over every incarnation.
    requests: AtomicU64,
}

/// The shared table, mapped in this process.
pub(crate) struct LoadTable {
    entries: NonNull<Entry>,
    fd: OwnedFd,
}

// SAFETY: the mapping is only ever accessed through atomics, and lives as long as
// the `LoadTable`.
unsafe impl Send for LoadTable {}
unsafe impl Sync for LoadTable {}

/// The table's size never changes, nor its seals.
const SEALS: SealFlag = SealFlag::F_SEAL_SHRINK
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_SEAL);

/// The slots' lines, then one more: the end of the serving slots, which SIGTTIN
/// moves (kept in that line's `active`).
const TABLE_BYTES: usize = (TABLE_SLOTS + 1) * std::mem::size_of::<Entry>();

impl LoadTable {
    /// A new, zeroed table (the master's).
    pub(crate) fn create() -> io::Result<Self> {
        use nix::sys::memfd::MFdFlags;
        let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
        let fd = nix::sys::memfd::memfd_create(c"multinode-load", flags)?;
        nix::unistd::ftruncate(&fd, TABLE_BYTES as i64)?;
        // Sealed, so that no worker can shrink it under the others' mappings
        // (a SIGBUS in every process that reads it).
        fcntl(&fd, FcntlArg::F_ADD_SEALS(SEALS))?;
        Self::map(fd)
    }

    /// Maps the table received from the master, after checking its size and seals.
    pub(crate) fn open(fd: OwnedFd) -> io::Result<Self> {
        let seals = SealFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GET_SEALS)?);
        if !seals.contains(SEALS) {
            return Err(io::Error::other("the load table received is not sealed"));
        }
        let size = nix::sys::stat::fstat(&fd)?.st_size;
        if usize::try_from(size).ok() != Some(TABLE_BYTES) {
            return Err(io::Error::other(format!(
                "the load table received is {size} bytes, not {TABLE_BYTES}"
            )));
        }
        Self::map(fd)
    }

    fn map(fd: OwnedFd) -> io::Result<Self> {
        let length = NonZeroUsize::new(TABLE_BYTES).expect("the table is not empty");
        // SAFETY: a fresh shared mapping of a file of exactly this size, accessed
        // only through atomics; unmapped on drop.
        let ptr = unsafe {
            mmap(
                None,
                length,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )?
        };
        Ok(LoadTable {
            entries: ptr.cast(),
            fd,
        })
    }

    /// The descriptor, to send to a worker.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn entry(&self, slot: usize) -> &Entry {
        assert!(slot < TABLE_SLOTS, "slot {slot} is beyond the table");
        self.line(slot)
    }

    fn line(&self, index: usize) -> &Entry {
        assert!(index <= TABLE_SLOTS);
        // SAFETY: in bounds (checked), and the mapping outlives `&self`.
        unsafe { &*self.entries.as_ptr().add(index) }
    }

    /// Where the serving slots end (the master sets it at start and on SIGTTIN).
    pub(crate) fn set_serving_end(&self, end: usize) {
        self.line(TABLE_SLOTS).active.store(end as u32, Relaxed);
    }

    /// Moves the end of the serving slots up to `end`, if it is below (SIGTTIN).
    pub(crate) fn extend_serving_end(&self, end: usize) {
        self.line(TABLE_SLOTS).active.fetch_max(end as u32, Relaxed);
    }

    fn serving_end(&self) -> usize {
        self.line(TABLE_SLOTS).active.load(Relaxed) as usize
    }

    /// Marks a slot serving or not (the master, on ready and on exit).
    pub(crate) fn set_live(&self, slot: usize, live: bool) {
        let entry = self.entry(slot);
        entry.live.store(u32::from(live), Relaxed);
        if !live {
            // Its connections died with it.
            entry.active.store(0, Relaxed);
        }
    }

    /// Whether `slot` is among the least busy live nodes of `slots`: no live node
    /// has fewer open connections, and none as busy has accepted far fewer in all
    /// (see [`TIE_SPREAD`]). The tie-break matters when connections are
    /// short: counts are all 0 and, without it, the process that wakes first would
    /// win every race.
    fn least_busy(&self, slot: usize, first: usize) -> bool {
        let slots = first..self.serving_end().min(TABLE_SLOTS);
        let me = self.entry(slot);
        let (mine, my_total) = (me.active.load(Relaxed), me.connections.load(Relaxed));
        slots
            .map(|other| self.entry(other))
            .filter(|entry| entry.live.load(Relaxed) == 1)
            .all(|entry| {
                let active = entry.active.load(Relaxed);
                let total = entry.connections.load(Relaxed);
                active > mine
                    || (active == mine && total + (total / 16).max(TIE_SPREAD) >= my_total)
            })
    }

    /// (connections, requests) served by `slot` since the start.
    pub(crate) fn totals(&self, slot: usize) -> (u64, u64) {
        let entry = self.entry(slot);
        (
            entry.connections.load(Relaxed),
            entry.requests.load(Relaxed),
        )
    }
}

impl std::fmt::Debug for LoadTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadTable")
            .field("fd", &self.fd)
            .finish_non_exhaustive()
    }
}

impl Drop for LoadTable {
    fn drop(&mut self) {
        // SAFETY: mapped in `map` with this length, and no reference outlives self.
        unsafe {
            let _ = munmap(self.entries.cast(), TABLE_BYTES);
        }
    }
}

/// A node's accept loop: its listener, its line in the table, and the mode.
pub(crate) struct Acceptor {
    listener: AsyncFd<std::net::TcpListener>,
    table: Arc<LoadTable>,
    slot: usize,
    /// The first serving slot, when accepting defers to less busy nodes.
    least_conn: Option<usize>,
    /// Set when a deferral cleared the listener's readiness while connections
    /// may still be queued; until the queue is found empty, look at it before
    /// waiting for the next arrival.
    deferred: AtomicBool,
    /// The most connections this process holds at once.
    limit: usize,
    open: Arc<Open>,
}

/// This process's open connections, against its limit.
#[derive(Default)]
struct Open {
    count: AtomicUsize,
    /// Woken when a connection closes.
    room: Notify,
}

impl Acceptor {
    pub(crate) fn new(
        listener: std::net::TcpListener,
        table: Arc<LoadTable>,
        slot: usize,
        balance: Balance,
        slots: std::ops::Range<usize>,
        limit: usize,
    ) -> io::Result<Self> {
        // SAFETY: the listener owns its descriptor for as long as the AsyncFd lives.
        let listener = unsafe { AsyncFd::register(listener) }?;
        Ok(Acceptor {
            listener,
            table,
            slot,
            least_conn: (balance == Balance::LeastConn).then_some(slots.start),
            deferred: AtomicBool::new(false),
            limit: limit.max(1),
            open: Arc::default(),
        })
    }

    /// Waits while this process holds its limit of connections: arrivals wait in
    /// the queue (for another node, or for this one once a connection closes).
    async fn room(&self) {
        loop {
            let closed = self.open.room.notified();
            if self.open.count.load(Relaxed) < self.limit {
                return;
            }
            closed.await;
        }
    }

    /// Accepts the next connection, counted in the table until its [`Tally`] drops.
    pub(crate) async fn accept(&self) -> io::Result<(TcpStream, Tally)> {
        loop {
            self.room().await;
            if !self.my_turn() {
                // Busier than another node: let arrivals go to the others, and look
                // again at the next one; after MAX_DEFER take one anyway, in case
                // the less busy nodes are stuck.
                match tokio::time::timeout(MAX_DEFER, self.listener.readable()).await {
                    Ok(ready) => {
                        ready?.clear_ready();
                        self.deferred.store(true, Relaxed);
                    }
                    Err(_elapsed) => {
                        if let Some(stream) = self.try_accept()? {
                            return self.counted(stream);
                        }
                    }
                }
                continue;
            }
            // After a deferral, whatever is queued first: readiness was cleared
            // while connections may have waited. Then the next arrival.
            if self.deferred.load(Relaxed) {
                match self.try_accept()? {
                    Some(stream) => return self.counted(stream),
                    None => self.deferred.store(false, Relaxed), // the queue is empty
                }
            }
            let mut ready = self.listener.readable().await?;
            if let Ok(accepted) =
                ready.try_io(|_| self.try_accept()?.ok_or(io::ErrorKind::WouldBlock.into()))
            {
                return self.counted(accepted?);
            }
        }
    }

    /// Whether this node may accept now: always, but in `LeastConn` mode only when
    /// it is among the least busy live nodes.
    fn my_turn(&self) -> bool {
        match &self.least_conn {
            Some(first) => self.table.least_busy(self.slot, *first),
            None => true,
        }
    }

    /// One `accept4`, without waiting: `None` when nothing is queued.
    fn try_accept(&self) -> io::Result<Option<std::net::TcpStream>> {
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        match accept4(self.listener.get_ref().as_raw_fd(), flags) {
            // SAFETY: accept4 just returned this new descriptor.
            Ok(fd) => Ok(Some(unsafe { std::net::TcpStream::from_raw_fd(fd) })),
            Err(nix::errno::Errno::EAGAIN) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    fn counted(&self, stream: std::net::TcpStream) -> io::Result<(TcpStream, Tally)> {
        let entry = self.table.entry(self.slot);
        entry.active.fetch_add(1, Relaxed);
        entry.connections.fetch_add(1, Relaxed);
        self.open.count.fetch_add(1, Relaxed);
        let tally = Tally {
            table: self.table.clone(),
            slot: self.slot,
            open: self.open.clone(),
        };
        Ok((TcpStream::from_std(stream)?, tally))
    }
}

/// One open connection in the table: counts its requests, and closes it in the
/// table when dropped.
pub(crate) struct Tally {
    table: Arc<LoadTable>,
    slot: usize,
    open: Arc<Open>,
}

impl Tally {
    pub(crate) fn request(&self) {
        self.table.entry(self.slot).requests.fetch_add(1, Relaxed);
    }
}

#[cfg(test)]
impl Tally {
    /// The first line of a table of its own.
    pub(crate) fn for_tests() -> Self {
        let table = Arc::new(LoadTable::create().expect("a load table"));
        Tally {
            table,
            slot: 0,
            open: Arc::default(),
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let active = &self.table.entry(self.slot).active;
        // Never below zero: the master zeroes the line of a slot that died.
        let _ = active.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
        self.open.count.fetch_sub(1, Relaxed);
        self.open.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_shared_through_its_descriptor() {
        let table = LoadTable::create().unwrap();
        let other = LoadTable::open(table.fd().try_clone_to_owned().unwrap()).unwrap();
        table.set_serving_end(2);
        table.set_live(0, true);
        other.set_live(1, true);
        other.entry(1).active.store(3, Relaxed);
        table.entry(0).requests.fetch_add(5, Relaxed);
        assert_eq!(other.totals(0), (0, 5));
        assert!(table.least_busy(0, 0));
        assert!(!other.least_busy(1, 0));
        table.set_live(0, false); // a dead node does not count
        assert!(other.least_busy(1, 0));
        // Equally busy: the node far ahead in total connections waits its turn.
        table.set_live(0, true);
        other.entry(1).active.store(0, Relaxed);
        table.entry(1).connections.store(TIE_SPREAD + 1, Relaxed);
        assert!(!table.least_busy(1, 0));
        assert!(table.least_busy(0, 0));
        // A node added later (SIGTTIN) counts once the end moves past it.
        table.set_live(2, true);
        table.entry(0).connections.store(TIE_SPREAD + 1, Relaxed);
        assert!(table.least_busy(0, 0));
        table.set_serving_end(3);
        assert!(!table.least_busy(0, 0), "node 2 has accepted far fewer");
    }

    #[test]
    fn a_table_of_the_wrong_size_or_unsealed_is_refused() {
        let fd =
            nix::sys::memfd::memfd_create(c"x", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, 64).unwrap();
        assert!(LoadTable::open(fd).is_err());
        let fd =
            nix::sys::memfd::memfd_create(c"x", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, TABLE_BYTES as i64).unwrap();
        let err = LoadTable::open(fd).unwrap_err();
        assert!(err.to_string().contains("not sealed"), "{err}");
        // The master's table cannot be shrunk by whoever holds it.
        let table = LoadTable::create().unwrap();
        assert!(nix::unistd::ftruncate(table.fd(), 64).is_err());
    }

    #[tokio::test]
    async fn a_node_at_its_limit_accepts_once_a_connection_closes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let table = Arc::new(LoadTable::create().unwrap());
        let acceptor = Acceptor::new(listener, table, 0, Balance::Shared, 0..1, 1).unwrap();
        let _a = std::net::TcpStream::connect(addr).unwrap();
        let _b = std::net::TcpStream::connect(addr).unwrap();
        let (first, tally) = acceptor.accept().await.unwrap();
        let second = tokio::time::timeout(Duration::from_millis(100), acceptor.accept()).await;
        assert!(second.is_err(), "no second connection while at the limit");
        drop((first, tally));
        let second = tokio::time::timeout(Duration::from_secs(5), acceptor.accept()).await;
        assert!(second.is_ok(), "the queued one once the first closed");
    }
}
