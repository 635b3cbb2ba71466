//! This node's incoming frames, from every other node, until the body takes
//! them: bounded in frames, filled a batch at a time by the readers (one per
//! stream) and emptied a batch at a time by the receiver, which decodes each
//! message only when the body asks for it.
//!
//! A batch holds its frames' bodies back to back in one buffer. Batches are
//! swapped, not copied, between the readers, the inbox and the receiver, so
//! their buffers stay allocated and warm; and since a message is decoded just
//! before the body takes it, what decoding allocates is freed before the next
//! one is decoded (the allocator's fastest case).

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::sync::Notify;

use super::KEEP_CAPACITY;

/// One frame's origin and length; its body is in its batch's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) from: usize,
    pub(crate) generation: u64,
    pub(crate) len: usize,
}

/// Frames in arrival order, their bodies back to back.
#[derive(Default)]
pub(crate) struct Batch {
    bodies: BytesMut,
    frames: VecDeque<Frame>,
    /// Where the next frame's body starts in `bodies`.
    at: usize,
}

impl Batch {
    /// Adds a frame from incarnation `generation` of node `from`.
    pub(crate) fn push(&mut self, from: usize, generation: u64, body: &[u8]) {
        self.bodies.extend_from_slice(body);
        self.frames.push_back(Frame {
            from,
            generation,
            len: body.len(),
        });
    }

    /// The next frame and its body.
    pub(crate) fn pop(&mut self) -> Option<(Frame, &[u8])> {
        let frame = self.frames.pop_front()?;
        let body = &self.bodies[self.at..self.at + frame.len];
        self.at += frame.len;
        Some((frame, body))
    }

    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn clear(&mut self) {
        self.frames.clear();
        self.bodies.clear();
        self.at = 0;
        if self.bodies.capacity() > KEEP_CAPACITY {
            self.bodies = BytesMut::new(); // once large messages are through, give it back
        }
    }

    /// Moves `other`'s frames after this batch's, leaving `other` empty.
    fn append(&mut self, other: &mut Batch) {
        self.bodies.extend_from_slice(&other.bodies[other.at..]);
        self.frames.append(&mut other.frames);
        other.clear();
    }
}

pub(crate) struct Inbox {
    state: Mutex<State>,
    capacity: usize,
    /// Wakes the receiver.
    arrived: Notify,
    /// Wakes the readers waiting for room.
    room: Notify,
}

struct State {
    queued: Batch,
    /// The stream of each incarnation being read, by (node, generation), so
    /// that the receiver can close one whose message does not decode.
    streams: BTreeMap<(usize, u64), RawFd>,
    /// No more messages will come (the master is gone).
    closed: bool,
    /// The receiver was dropped: readers stop.
    unread: bool,
}

/// The receiver was dropped.
#[derive(Debug)]
pub(crate) struct ReceiverGone;

impl Inbox {
    pub(crate) fn new(capacity: usize) -> Self {
        Inbox {
            state: Mutex::new(State {
                queued: Batch::default(),
                streams: BTreeMap::new(),
                closed: false,
                unread: false,
            }),
            capacity,
            arrived: Notify::new(),
            room: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves `batch` in, leaving it empty, waiting while the inbox is full (it
    /// holds at most its capacity plus one batch).
    pub(crate) async fn push(&self, batch: &mut Batch) -> Result<(), ReceiverGone> {
        loop {
            let room = self.room.notified();
            {
                let mut state = self.state();
                if state.unread {
                    return Err(ReceiverGone);
                }
                if state.queued.len() < self.capacity {
                    if state.queued.is_empty() {
                        std::mem::swap(&mut state.queued, batch);
                        batch.clear();
                    } else {
                        state.queued.append(batch);
                    }
                    drop(state);
                    self.arrived.notify_one();
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Swaps everything queued into `into` (whose frames were all taken); false
    /// when nothing was queued and no more will come.
    pub(crate) async fn take_all(&self, into: &mut Batch) -> bool {
        into.clear();
        loop {
            let arrived = self.arrived.notified();
            {
                let mut state = self.state();
                if !state.queued.is_empty() {
                    std::mem::swap(&mut state.queued, into);
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

    /// A reader reads incarnation `generation` of node `from` on `fd`, until
    /// [`Inbox::unregister`].
    pub(crate) fn register(&self, from: usize, generation: u64, fd: RawFd) {
        self.state().streams.insert((from, generation), fd);
    }

    /// The reader of that stream is done with it.
    pub(crate) fn unregister(&self, from: usize, generation: u64) {
        self.state().streams.remove(&(from, generation));
    }

    /// Shuts the stream from incarnation `generation` of node `from` down in
    /// both directions (its reader then sees its end), unless it is over already.
    pub(crate) fn shut_down(&self, from: usize, generation: u64) {
        let state = self.state();
        if let Some(fd) = state.streams.get(&(from, generation)) {
            // Registered, so its reader holds it open: `fd` is that stream.
            let _ = nix::sys::socket::shutdown(*fd, nix::sys::socket::Shutdown::Both);
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

    fn batch(frames: &[(usize, &str)]) -> Batch {
        let mut batch = Batch::default();
        for (from, body) in frames {
            batch.push(*from, 1, body.as_bytes());
        }
        batch
    }

    fn drain(batch: &mut Batch) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        while let Some((frame, body)) = batch.pop() {
            out.push((frame.from, String::from_utf8(body.to_vec()).unwrap()));
        }
        out
    }

    #[tokio::test]
    async fn batches_in_batches_out_bounded() {
        let inbox = Inbox::new(2);
        let mut first = batch(&[(1, "a"), (1, "bc")]);
        inbox.push(&mut first).await.unwrap();
        assert!(first.is_empty(), "moved in");
        let mut more = batch(&[(2, "d")]);
        let full =
            tokio::time::timeout(std::time::Duration::from_millis(50), inbox.push(&mut more));
        assert!(full.await.is_err(), "a full inbox makes readers wait");
        let mut out = Batch::default();
        assert!(inbox.take_all(&mut out).await);
        assert_eq!(drain(&mut out), [(1, "a".into()), (1, "bc".into())]);
        inbox.close();
        assert!(!inbox.take_all(&mut out).await);
        inbox.unread();
        assert!(inbox.push(&mut batch(&[(2, "e")])).await.is_err());
    }

    #[tokio::test]
    async fn a_batch_pushed_onto_queued_frames_keeps_the_order() {
        let inbox = Inbox::new(10);
        let mut out = Batch::default();
        inbox.push(&mut batch(&[(1, "a"), (2, "b")])).await.unwrap();
        inbox.push(&mut batch(&[(3, "cd")])).await.unwrap();
        assert!(inbox.take_all(&mut out).await);
        assert_eq!(
            out.pop().map(|(f, b)| (f.from, b.to_vec())),
            Some((1, b"a".to_vec()))
        );
        // Half taken; the rest stays in order after the next take.
        assert_eq!(
            drain(&mut out),
            [(2, "b".into()), (3, "cd".into())],
            "in order"
        );
        inbox.push(&mut batch(&[(1, "e")])).await.unwrap();
        assert!(inbox.take_all(&mut out).await);
        assert_eq!(drain(&mut out), [(1, "e".into())]);
    }
}
