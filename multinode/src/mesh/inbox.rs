//! This node's incoming messages, from every other node, until the body takes
//! them: bounded, filled a batch at a time by the readers (one per stream) and
//! emptied a batch at a time by the receiver.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

pub(crate) struct Inbox<M> {
    state: Mutex<State<M>>,
    capacity: usize,
    /// Wakes the receiver.
    arrived: Notify,
    /// Wakes the readers waiting for room.
    room: Notify,
}

struct State<M> {
    queue: VecDeque<(usize, M)>,
    /// No more messages will come (the master is gone).
    closed: bool,
    /// The receiver was dropped: readers stop.
    unread: bool,
}

/// The receiver was dropped.
#[derive(Debug)]
pub(crate) struct ReceiverGone;

impl<M> Inbox<M> {
    pub(crate) fn new(capacity: usize) -> Self {
        Inbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                closed: false,
                unread: false,
            }),
            capacity,
            arrived: Notify::new(),
            room: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State<M>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves `batch` in, waiting while the inbox is full (it holds at most its
    /// capacity plus one batch).
    pub(crate) async fn push(&self, batch: &mut Vec<(usize, M)>) -> Result<(), ReceiverGone> {
        loop {
            let room = self.room.notified();
            {
                let mut state = self.state();
                if state.unread {
                    return Err(ReceiverGone);
                }
                if state.queue.len() < self.capacity {
                    state.queue.extend(batch.drain(..));
                    drop(state);
                    self.arrived.notify_one();
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Swaps everything queued into `into` (which is empty); false when nothing
    /// was queued and no more will come.
    pub(crate) async fn take_all(&self, into: &mut VecDeque<(usize, M)>) -> bool {
        loop {
            let arrived = self.arrived.notified();
            {
                let mut state = self.state();
                if !state.queue.is_empty() {
                    std::mem::swap(&mut state.queue, into);
                    drop(state);
                    self.room.notify_waiters();
                    return true;
                }
                if state.closed {
                    return false;
                }
            }
            arrived.await;
        }
    }

    /// No more messages will come.
    pub(crate) fn close(&self) {
        self.state().closed = true;
        self.arrived.notify_one();
    }

    /// The receiver is gone: readers stop.
    pub(crate) fn unread(&self) {
        self.state().unread = true;
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn batches_in_batches_out_bounded() {
        let inbox = Inbox::new(2);
        inbox.push(&mut vec![(1, 'a'), (1, 'b')]).await.unwrap();
        let mut more = vec![(2, 'c')];
        let full =
            tokio::time::timeout(std::time::Duration::from_millis(50), inbox.push(&mut more));
        assert!(full.await.is_err(), "a full inbox makes readers wait");
        let mut out = VecDeque::new();
        assert!(inbox.take_all(&mut out).await);
        assert_eq!(out, [(1, 'a'), (1, 'b')]);
        inbox.close();
        let mut out = VecDeque::new();
        assert!(!inbox.take_all(&mut out).await);
        inbox.unread();
        assert!(inbox.push(&mut vec![(2, 'c')]).await.is_err());
    }
}
