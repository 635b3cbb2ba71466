//! Whether a connection's responses make progress (nginx's `send_timeout`): a
//! client that stops reading, or an HTTP/2 client whose flow-control window
//! stays closed, holds what the server owes it. Counted without a clock on the
//! way of a request: the writes and the response bodies' polls bump a counter,
//! and a watcher looks at it four times per timeout.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// A connection's sending side, shared by its socket, its response bodies and
/// the task that drives it.
#[derive(Debug, Default)]
pub(super) struct Sending {
    /// Bumped at every write that took bytes and every poll of a response body.
    progress: AtomicU64,
    /// Response bodies whose next step is the transport's: one that has not
    /// been polled since its head was made, or whose last poll gave a frame.
    owed: AtomicUsize,
    /// The last write found the socket full.
    blocked: AtomicBool,
}

impl Sending {
    /// A write gave `taken` (`None`: the socket is full).
    #[inline]
    pub fn wrote(&self, taken: Option<usize>) {
        match taken {
            Some(n) if n > 0 => {
                self.progress.fetch_add(1, Relaxed);
                self.blocked.store(false, Relaxed);
            }
            Some(_) => {}
            None => self.blocked.store(true, Relaxed),
        }
    }

    /// A response body moves: polled (`owed` says whether the transport now
    /// holds a frame of it to send, or waits for the body).
    #[inline]
    pub fn polled(&self, was_owed: bool, owed: bool) {
        self.progress.fetch_add(1, Relaxed);
        self.owe(was_owed, owed);
    }

    /// A response body's turn passes from or to the transport.
    #[inline]
    pub fn owe(&self, was_owed: bool, owed: bool) {
        match (was_owed, owed) {
            (false, true) => drop(self.owed.fetch_add(1, Relaxed)),
            (true, false) => drop(self.owed.fetch_sub(1, Relaxed)),
            _ => {}
        }
    }

    /// The progress counter, to compare with a later look.
    pub fn progress(&self) -> u64 {
        self.progress.load(Relaxed)
    }

    /// Whether the client owes the connection a read (what it is owed waits).
    pub fn owing(&self) -> bool {
        self.owed.load(Relaxed) > 0 || self.blocked.load(Relaxed)
    }
}

/// Resolves once the connection has owed its client something and made no
/// progress for at least `timeout` (four checks in a row, a quarter apart).
pub(super) async fn stalled(sending: &Sending, timeout: Duration) {
    const CHECKS: u32 = 4;
    let mut quiet = 0;
    let mut seen = sending.progress.load(Relaxed);
    while quiet < CHECKS {
        tokio::time::sleep(timeout / CHECKS).await;
        let now = sending.progress.load(Relaxed);
        quiet = if now != seen || !sending.owing() {
            0
        } else {
            quiet + 1
        };
        seen = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn only_what_is_owed_without_progress_stalls() {
        let sending = Sending::default();
        let timeout = Duration::from_secs(60);
        // Nothing owed: never stalled, however long.
        let idle = tokio::time::timeout(timeout * 3, stalled(&sending, timeout)).await;
        assert!(idle.is_err());
        // A body the transport does not take for a whole timeout: stalled.
        sending.owe(false, true);
        let owed = tokio::time::timeout(timeout * 2, stalled(&sending, timeout)).await;
        assert!(owed.is_ok());
        // Polled and waiting for the application: not the client's fault.
        sending.polled(true, false);
        sending.wrote(None);
        let blocked = tokio::time::timeout(timeout * 2, stalled(&sending, timeout)).await;
        assert!(blocked.is_ok(), "a full socket for a whole timeout stalls");
        sending.wrote(Some(10));
        let moving = tokio::time::timeout(timeout * 3, stalled(&sending, timeout)).await;
        assert!(moving.is_err());
    }
}
