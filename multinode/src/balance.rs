//! Load-aware accepting: the accept loop that consults the [`Segment`]. With
//! [`Balance::LeastConn`] a node that has more open connections than the least
//! busy live node lets arriving connections go to the others, looking again at
//! the next arrival (or after [`MAX_DEFER`], should the others be stuck), in the
//! spirit of Puma's `wait_for_less_busy_worker` but without sleeping: the shared
//! queue then fills the least busy processes first.
//!
//! With [`Balance::ReusePort`] each node has its own queue: it stamps the table
//! every [`PULSE`] while it has room, and also accepts the connections the
//! master took from the queue of a node that did not (`supervisor::rescue`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{accept4, SockFlag};
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::config::Balance;
use crate::control::incarnation::Incarnation;
use crate::shm::load_table::now_ms;
use crate::shm::segment::Segment;

/// How long a busier node leaves pending connections to the less busy ones
/// before it takes one itself.
const MAX_DEFER: Duration = Duration::from_millis(5);

/// How long a less busy node must have been silent (its accept loop not run)
/// when an arrival waited MAX_DEFER for it, to count as not accepting: far
/// longer than a busy 2-core machine keeps a runnable process waiting, so that
/// a slow node is not excluded (and a burst of connections left to the first
/// node that woke), while a stopped one is within this time.
const SILENT: Duration = Duration::from_millis(50);

/// How often a `ReusePort` node with room stamps the table, waiting or not,
/// so that only a node that does not run (or is full) looks silent to the
/// master's watch over its queue.
pub(crate) const PULSE: Duration = Duration::from_millis(10);

/// Connections the master accepted for this node from another node's queue
/// (`reuse_port`, that node not accepting).
pub(crate) type Handed = tokio::sync::mpsc::UnboundedReceiver<std::net::TcpStream>;

/// What a node accepts from: its listening socket and, with `ReusePort`, the
/// connections the master hands it.
#[derive(Debug)]
pub(crate) struct Listening {
    pub socket: std::net::TcpListener,
    pub handed: Option<Handed>,
}

/// A node's accept loop: its listener, its line in the table, and the mode.
pub(crate) struct Acceptor {
    listener: AsyncFd<std::net::TcpListener>,
    shm: Arc<Segment>,
    slot: usize,
    generation: u64,
    /// The first serving slot, when accepting defers to less busy nodes.
    least_conn: Option<usize>,
    /// Set when a deferral cleared the listener's readiness while connections
    /// may still be queued; until the queue is found empty, look at it before
    /// waiting for the next arrival.
    deferred: AtomicBool,
    /// The most connections this process holds at once.
    limit: usize,
    open: Arc<Open>,
    /// With `ReusePort`: connections handed over by the master.
    handed: Option<tokio::sync::Mutex<Handed>>,
    /// With `ReusePort`: the task that stamps the table while this node has
    /// room, so that an idle node counts as accepting.
    pulse: Option<tokio::task::AbortHandle>,
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
        shm: Arc<Segment>,
        Incarnation { slot, generation }: Incarnation,
        balance: Balance,
        slots: std::ops::Range<usize>,
        limit: usize,
        handed: Option<Handed>,
    ) -> io::Result<Self> {
        // SAFETY: the listener owns its descriptor for as long as the AsyncFd lives.
        let listener = unsafe { AsyncFd::register(listener) }?;
        let open = Arc::<Open>::default();
        let pulse = balance.per_slot().then(|| {
            let (shm, open, slot) = (shm.clone(), open.clone(), slot);
            let limit = limit.max(1);
            let pulse = async move {
                let mut every = tokio::time::interval(PULSE);
                loop {
                    every.tick().await;
                    if open.count.load(Relaxed) < limit {
                        shm.table().stamp(slot, now_ms());
                    }
                }
            };
            tokio::spawn(pulse).abort_handle()
        });
        Ok(Acceptor {
            listener,
            shm,
            slot,
            generation,
            least_conn: (balance == Balance::LeastConn).then_some(slots.start),
            deferred: AtomicBool::new(false),
            limit: limit.max(1),
            open,
            handed: handed.map(tokio::sync::Mutex::new),
            pulse,
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
        // Since when an arrival this node saw was left to less busy nodes.
        let mut deferring: Option<Instant> = None;
        loop {
            self.room().await;
            self.shm.table().stamp(self.slot, now_ms());
            if !self.my_turn() {
                // Busier than another node: let arrivals go to the others, and
                // look again at the next one. If they leave arrivals waiting
                // MAX_DEFER, those that did not run meanwhile are not accepting:
                // they drop out of the candidates, and this node takes one.
                if self.deferred.load(Relaxed) {
                    // Connections may be queued already: the wait starts now.
                    deferring.get_or_insert_with(Instant::now);
                }
                let ready = match deferring {
                    Some(since) => {
                        let left = MAX_DEFER.saturating_sub(since.elapsed());
                        tokio::time::timeout(left, self.listener.readable()).await
                    }
                    None => Ok(self.listener.readable().await),
                };
                match ready {
                    Ok(ready) => {
                        ready?.clear_ready();
                        self.deferred.store(true, Relaxed);
                        deferring.get_or_insert_with(Instant::now);
                    }
                    Err(_elapsed) => {
                        deferring = None;
                        match self.try_accept()? {
                            Some(stream) => {
                                self.suspect_less_busy();
                                return self.counted(stream);
                            }
                            None => self.deferred.store(false, Relaxed), // the queue is empty
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
            let mut ready = match &self.handed {
                None => self.listener.readable().await?,
                Some(handed) => {
                    let mut handed = handed.lock().await;
                    tokio::select! {
                        ready = self.listener.readable() => ready?,
                        Some(stream) = handed.recv() => return self.counted(stream),
                    }
                }
            };
            if let Ok(accepted) =
                ready.try_io(|_| self.try_accept()?.ok_or(io::ErrorKind::WouldBlock.into()))
            {
                return self.counted(accepted?);
            }
        }
    }

    /// An arrival waited MAX_DEFER for the less busy nodes: those silent for
    /// SILENT are not accepting.
    fn suspect_less_busy(&self) {
        if let Some(first) = self.least_conn {
            let silent = SILENT.as_millis() as u64;
            self.shm
                .table()
                .suspect_less_busy(self.slot, first, now_ms(), silent);
        }
    }

    /// Whether this node may accept now: always, but in `LeastConn` mode only when
    /// it is among the least busy live nodes.
    fn my_turn(&self) -> bool {
        match &self.least_conn {
            Some(first) => self.shm.table().least_busy(self.slot, *first),
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
        self.shm.table().opened(self.slot, self.generation);
        self.open.count.fetch_add(1, Relaxed);
        let tally = Tally {
            shm: self.shm.clone(),
            slot: self.slot,
            generation: self.generation,
            open: self.open.clone(),
        };
        Ok((TcpStream::from_std(stream)?, tally))
    }
}

impl Drop for Acceptor {
    /// The node leaves its accept loop (it drains): the others stop leaving
    /// arrivals to it at once.
    fn drop(&mut self) {
        if let Some(pulse) = &self.pulse {
            pulse.abort();
        }
        self.shm.table().withdraw(self.slot, now_ms());
    }
}

/// One open connection in the table: counts its requests, and closes it in the
/// table when dropped.
pub(crate) struct Tally {
    shm: Arc<Segment>,
    slot: usize,
    generation: u64,
    open: Arc<Open>,
}

impl Tally {
    #[inline]
    pub(crate) fn request(&self) {
        self.shm.table().request(self.slot);
    }
}

#[cfg(test)]
impl Tally {
    /// The first line of a table of its own.
    pub(crate) fn for_tests() -> Self {
        let shm = Arc::new(Segment::create().expect("a load table"));
        Tally {
            shm,
            slot: 0,
            generation: 1,
            open: Arc::default(),
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.shm.table().closed(self.slot, self.generation);
        self.open.count.fetch_sub(1, Relaxed);
        self.open.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_node_at_its_limit_accepts_once_a_connection_closes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shm = Arc::new(Segment::create().unwrap());
        let acceptor = Acceptor::new(
            listener,
            shm,
            Incarnation::MASTER,
            Balance::Shared,
            0..1,
            1,
            None,
        )
        .unwrap();
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
