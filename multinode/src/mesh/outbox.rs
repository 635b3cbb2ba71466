//! One node's outgoing queue, and the writer task that empties it onto the stream
//! of that node's newest live incarnation.
//!
//! Senders write each frame straight into one buffer, under its lock (no
//! allocation and no reference count per message); the writer takes everything
//! queued in one piece and writes it with as few system calls as the socket
//! allows. The queue is bounded in frames: past the bound, `send_with` waits for
//! the writer (back-pressure) and `try_send_with` fails.
//!
//! The first frame after the writer went idle does not wait for it: its sender
//! writes it to the stream at once (what the socket does not take is queued
//! for the writer, which finishes the frame). The writer's turn comes only once
//! the sending task yields, so this takes a hop off a lone message's way (a
//! broadcast reaches its receivers before its sender's next await), while the
//! rest of a burst still goes out in the writer's few large writes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::sync::{mpsc, Notify};

use super::halves::WriteHalf;
use super::send_error::SendError;
use super::signal::Signal;
use super::stream_id::StreamId;
use super::wire::KEEP_CAPACITY;

/// A change in the streams to one node's incarnations, for its writer.
pub(crate) enum Stream {
    /// A stream to the node was meshed: its write half.
    Up(StreamId, WriteHalf),
    /// That stream ended (its reader saw EOF or closed it).
    Down(StreamId),
}

pub(crate) struct Outbox {
    /// The node this queue goes to.
    id: usize,
    state: Mutex<State>,
    capacity: usize,
    /// Wakes the writer: frames were queued, a sender wrote directly, or the
    /// node is gone.
    queued: Signal,
    /// Wakes the senders waiting for room.
    room: Notify,
    /// Told when a frame is queued where none was: the count of what waits is
    /// sampled only while something does (`messages::count_queued`).
    backlog: Arc<Notify>,
    /// A sender wrote directly and left the writer's wake (to give the stream
    /// again) to [`wake_writer`](Self::wake_writer).
    wake_pending: AtomicBool,
}

struct State {
    buffer: BytesMut,
    frames: usize,
    gone: bool,
    /// While the writer is idle (nothing queued, nothing being written), the
    /// stream of the node's newest live incarnation, for the next sender to
    /// write to directly; that sender takes it, and the writer gives it again
    /// when it next finds the queue empty.
    direct: Option<(StreamId, WriteHalf)>,
    /// How many bytes of the queue's first frame a sender wrote directly, and
    /// to which incarnation.
    written: Option<(StreamId, usize)>,
}

/// What the writer found in the queue.
#[derive(Debug, PartialEq)]
enum Taken {
    /// Nothing: the writer is idle.
    Nothing,
    /// Frames, the first `.1` bytes of which are on stream `.0` already if
    /// `Some`.
    Frames(Option<(StreamId, usize)>),
}

impl Outbox {
    pub(crate) fn new(id: usize, capacity: usize, backlog: Arc<Notify>) -> Self {
        Outbox {
            id,
            state: Mutex::new(State {
                buffer: BytesMut::new(),
                frames: 0,
                gone: false,
                direct: None,
                written: None,
            }),
            capacity,
            queued: Signal::default(),
            room: Notify::new(),
            backlog,
            wake_pending: AtomicBool::new(false),
        }
    }

    #[inline]
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues the frame that `write` appends, waiting while the queue is full.
    pub(crate) async fn send_with(
        &self,
        mut write: impl FnMut(&mut BytesMut) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        loop {
            match self.try_send_with(&mut write) {
                Err(SendError::Full(_)) => {}
                done => return done,
            }
            // Registered before the second try: room made after it wakes us.
            let room = self.room.notified();
            match self.try_send_with(&mut write) {
                Err(SendError::Full(_)) => room.await,
                done => return done,
            }
        }
    }

    /// Queues the frame that `write` appends to the queue's buffer, if there is
    /// room: [`SendError::Full`] when there is not, [`SendError::Gone`] once the
    /// node is gone. When `write` fails, what it appended is taken back. When
    /// the writer is idle, the frame is written to the stream at once, and
    /// only what the socket does not take is queued.
    pub(crate) fn try_send_with(
        &self,
        write: impl FnOnce(&mut BytesMut) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        let sent = self.try_send_quietly(write);
        self.wake_writer();
        sent
    }

    /// [`try_send_with`](Self::try_send_with), except that a frame written
    /// directly leaves the writer's wake to [`wake_writer`](Self::wake_writer):
    /// a broadcast makes its direct writes back to back, and wakes the writers
    /// after the last.
    pub(crate) fn try_send_quietly(
        &self,
        write: impl FnOnce(&mut BytesMut) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        let mut state = self.state();
        if state.gone {
            return Err(SendError::Gone(self.id.into()));
        }
        if state.frames >= self.capacity {
            return Err(SendError::Full(self.id.into()));
        }
        let State {
            buffer,
            frames,
            direct,
            written,
            ..
        } = &mut *state;
        let appended = Appended::new(buffer);
        write(appended.buffer)?;
        if let Some((generation, stream)) = direct.take() {
            // The writer is idle, so this frame is all the buffer holds.
            match stream.try_write(appended.buffer) {
                Ok(all) if all == appended.buffer.len() => {
                    drop(appended); // on its way: nothing to queue
                    drop(state);
                    // The writer gives `direct` again once woken.
                    self.wake_pending.store(true, Ordering::Release);
                    return Ok(());
                }
                Ok(part) => *written = Some((generation, part)),
                Err(_) => {} // full, or broken: the writer finds out which
            }
        }
        appended.keep();
        *frames += 1;
        let first = *frames == 1;
        drop(state);
        if first {
            self.queued.raise();
            self.backlog.notify_one();
        }
        Ok(())
    }

    /// Wakes the writer if a sender wrote directly since it was last woken.
    pub(crate) fn wake_writer(&self) {
        if self.wake_pending.load(Ordering::Acquire)
            && self.wake_pending.swap(false, Ordering::AcqRel)
        {
            self.queued.raise();
        }
    }

    /// How many frames wait in the queue.
    pub(crate) fn frames(&self) -> usize {
        self.state().frames
    }

    /// The node will not come back: senders are refused, the writer ends.
    pub(crate) fn close(&self) {
        let mut state = self.state();
        state.gone = true;
        state.direct = None;
        drop(state);
        self.room.notify_waiters();
        self.queued.raise();
    }

    /// Swaps everything queued into `chunk`, whose old content was written and
    /// whose room the senders get next: two buffers take turns, so that their
    /// memory stays allocated and warm while frames keep coming. When nothing
    /// is queued, a burst is over: buffers grown past [`KEEP_CAPACITY`] are
    /// given back, and the next sender may write to `newest` directly.
    fn take(&self, chunk: &mut BytesMut, newest: Option<(StreamId, &WriteHalf)>) -> Taken {
        chunk.clear();
        let mut state = self.state();
        if state.frames == 0 {
            if state.buffer.capacity() > KEEP_CAPACITY {
                state.buffer = BytesMut::new(); // empty: nothing is queued
            }
            state.direct = newest.map(|(generation, stream)| (generation, stream.clone()));
            drop(state);
            if chunk.capacity() > KEEP_CAPACITY {
                *chunk = BytesMut::new();
            }
            return Taken::Nothing;
        }
        state.frames = 0;
        state.direct = None;
        std::mem::swap(&mut state.buffer, chunk);
        let written = state.written.take();
        drop(state);
        self.room.notify_waiters();
        Taken::Frames(written)
    }

    /// That stream is over: no sender writes to it.
    fn forget(&self, link: StreamId) {
        let mut state = self.state();
        if state.direct.as_ref().is_some_and(|(l, _)| *l == link) {
            state.direct = None;
        }
    }

    fn is_gone(&self) -> bool {
        self.state().gone
    }
}

/// What a sender appends to the queue's buffer: taken back unless kept, also
/// when the message's `Serialize` panics, so that framing stays intact.
struct Appended<'a> {
    buffer: &'a mut BytesMut,
    start: usize,
    kept: bool,
}

impl<'a> Appended<'a> {
    fn new(buffer: &'a mut BytesMut) -> Self {
        let start = buffer.len();
        Appended {
            buffer,
            start,
            kept: false,
        }
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Appended<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.buffer.truncate(self.start);
        }
    }
}

/// Node `id`'s writer: writes what is queued to the stream of its newest live
/// incarnation. When that stream fails (the process died), the piece that failed
/// is written again, whole, to the next newest live incarnation or to the next one
/// meshed: frames are not lost to a restart, and framing stays intact. (A frame
/// a sender began directly is finished on the same stream, or written whole to
/// another.) Its lines are logged in `span` (the node's).
pub(crate) async fn write_to(
    id: usize,
    outbox: Arc<Outbox>,
    mut streams: mpsc::UnboundedReceiver<Stream>,
    span: tracing::Span,
) {
    let mut live: BTreeMap<StreamId, WriteHalf> = BTreeMap::new();
    let mut chunk = BytesMut::new();
    let mut unsent = false;
    // Of the chunk's first frame: bytes a sender wrote directly, and where.
    let mut written = None;
    loop {
        if !unsent && !live.is_empty() {
            let newest = live.last_key_value().map(|(g, stream)| (*g, stream));
            if let Taken::Frames(direct) = outbox.take(&mut chunk, newest) {
                (unsent, written) = (true, direct);
            }
        }
        let (true, Some(newest)) = (unsent, live.last_entry()) else {
            // Nothing to write, or no one to write to: wait for either.
            tokio::select! {
                biased;
                stream = streams.recv() => match stream {
                    Some(Stream::Up(link, half)) => {
                        live.insert(link, half);
                    }
                    Some(Stream::Down(link)) => {
                        outbox.forget(link);
                        live.remove(&link);
                    }
                    None => return,
                },
                () = outbox.queued.wait(), if !unsent => {
                    if outbox.is_gone() {
                        return;
                    }
                }
            }
            continue;
        };
        let from = match written {
            Some((link, bytes)) if link == *newest.key() => bytes,
            _ => 0, // whole, to a stream that has none of it
        };
        match newest.get().write_all(&chunk[from..]).await {
            Ok(()) => (unsent, written) = (false, None),
            Err(error) => {
                span.in_scope(|| tracing::warn!(
                    peer = id,
                    generation = newest.key().generation,
                    "mesh: cannot write to node {id} ({error}); what it did not get waits for its next incarnation"
                ));
                outbox.forget(*newest.key());
                newest.remove();
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
