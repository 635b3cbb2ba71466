//! One node's outgoing queue, and the writer task that empties it onto the stream
//! of that node's newest live incarnation.
//!
//! Senders write each frame straight into one buffer, under its lock (no
//! allocation and no reference count per message); the writer takes everything
//! queued in one piece and writes it with as few system calls as the socket
//! allows. The queue is bounded in frames: past the bound, `send_with` waits for
//! the writer (back-pressure) and `try_send_with` fails.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, Notify};

use super::{SendError, KEEP_CAPACITY};

/// A change in the streams to one node's incarnations, for its writer.
pub(crate) enum Stream {
    /// Incarnation `generation` was meshed: the write half of its stream.
    Up(u64, OwnedWriteHalf),
    /// Incarnation `generation`'s stream ended (its reader saw EOF or closed it).
    Down(u64),
}

pub(crate) struct Outbox {
    /// The node this queue goes to.
    id: usize,
    state: Mutex<State>,
    capacity: usize,
    /// Wakes the writer: frames were queued, or the node is gone.
    queued: Notify,
    /// Wakes the senders waiting for room.
    room: Notify,
}

struct State {
    buffer: BytesMut,
    frames: usize,
    gone: bool,
}

impl Outbox {
    pub(crate) fn new(id: usize, capacity: usize) -> Self {
        Outbox {
            id,
            state: Mutex::new(State {
                buffer: BytesMut::new(),
                frames: 0,
                gone: false,
            }),
            capacity,
            queued: Notify::new(),
            room: Notify::new(),
        }
    }

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
    /// node is gone. When `write` fails, what it appended is taken back.
    pub(crate) fn try_send_with(
        &self,
        write: impl FnOnce(&mut BytesMut) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        let mut state = self.state();
        if state.gone {
            return Err(SendError::Gone(self.id));
        }
        if state.frames >= self.capacity {
            return Err(SendError::Full(self.id));
        }
        let appended = Appended::new(&mut state.buffer);
        write(appended.buffer)?;
        appended.keep();
        state.frames += 1;
        let first = state.frames == 1;
        drop(state);
        if first {
            self.queued.notify_one();
        }
        Ok(())
    }

    /// The node will not come back: senders are refused, the writer ends.
    pub(crate) fn close(&self) {
        self.state().gone = true;
        self.room.notify_waiters();
        self.queued.notify_one();
    }

    /// Swaps everything queued into `chunk`, whose old content was written and
    /// whose room the senders get next: two buffers take turns, so that their
    /// memory stays allocated and warm while frames keep coming. False when
    /// nothing is queued: then a burst is over, and buffers grown past
    /// [`KEEP_CAPACITY`] are given back.
    fn take(&self, chunk: &mut BytesMut) -> bool {
        chunk.clear();
        let mut state = self.state();
        if state.frames == 0 {
            if state.buffer.capacity() > KEEP_CAPACITY {
                state.buffer = BytesMut::new(); // empty: nothing is queued
            }
            drop(state);
            if chunk.capacity() > KEEP_CAPACITY {
                *chunk = BytesMut::new();
            }
            return false;
        }
        state.frames = 0;
        std::mem::swap(&mut state.buffer, chunk);
        drop(state);
        self.room.notify_waiters();
        true
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
/// meshed: frames are not lost to a restart, and framing stays intact. Its lines
/// are logged in `span` (the node's).
pub(crate) async fn write_to(
    id: usize,
    outbox: Arc<Outbox>,
    mut streams: mpsc::UnboundedReceiver<Stream>,
    span: tracing::Span,
) {
    let mut live: BTreeMap<u64, OwnedWriteHalf> = BTreeMap::new();
    let mut chunk = BytesMut::new();
    let mut unsent = false;
    loop {
        if !unsent && !live.is_empty() {
            unsent = outbox.take(&mut chunk);
        }
        let (true, Some(mut newest)) = (unsent, live.last_entry()) else {
            // Nothing to write, or no one to write to: wait for either.
            tokio::select! {
                biased;
                stream = streams.recv() => match stream {
                    Some(Stream::Up(generation, half)) => {
                        live.insert(generation, half);
                    }
                    Some(Stream::Down(generation)) => {
                        live.remove(&generation);
                    }
                    None => return,
                },
                _ = outbox.queued.notified(), if !unsent => {
                    if outbox.is_gone() {
                        return;
                    }
                }
            }
            continue;
        };
        match newest.get_mut().write_all(&chunk).await {
            Ok(()) => unsent = false,
            Err(error) => {
                span.in_scope(|| tracing::warn!(
                    peer = id,
                    generation = *newest.key(),
                    "mesh: cannot write to node {id} ({error}); what it did not get waits for its next incarnation"
                ));
                newest.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_in_frames_and_refused_once_gone() {
        let outbox = Outbox::new(3, 2);
        let put = |bytes: &'static [u8]| {
            move |buffer: &mut BytesMut| {
                buffer.extend_from_slice(bytes);
                Ok(())
            }
        };
        outbox.try_send_with(put(b"a")).unwrap();
        let failed = outbox.try_send_with(|buffer| {
            buffer.extend_from_slice(b"half a frame");
            Err(SendError::Encode("no".into()))
        });
        assert_eq!(failed, Err(SendError::Encode("no".into())));
        outbox.send_with(put(b"bc")).await.unwrap();
        assert_eq!(outbox.try_send_with(put(b"d")), Err(SendError::Full(3)));
        let mut chunk = BytesMut::new();
        assert!(outbox.take(&mut chunk));
        assert_eq!(&chunk[..], b"abc", "a failed write left nothing");
        assert!(!outbox.take(&mut chunk));
        outbox.try_send_with(put(b"d")).unwrap();
        outbox.close();
        assert_eq!(outbox.send_with(put(b"e")).await, Err(SendError::Gone(3)));
    }

    #[test]
    fn a_panicking_encoder_leaves_the_queue_intact() {
        let outbox = Outbox::new(1, 8);
        outbox
            .try_send_with(|buffer| {
                buffer.extend_from_slice(b"whole");
                Ok(())
            })
            .unwrap();
        let panicked = std::panic::catch_unwind(|| {
            outbox.try_send_with(|buffer| {
                buffer.extend_from_slice(b"half a fr");
                panic!("a Serialize impl panics");
            })
        });
        assert!(panicked.is_err());
        let mut chunk = BytesMut::new();
        assert!(outbox.take(&mut chunk));
        assert_eq!(&chunk[..], b"whole");
    }

    #[test]
    fn buffers_grown_by_a_burst_are_given_back_once_it_is_through() {
        let outbox = Outbox::new(1, 8);
        let big = |buffer: &mut BytesMut| {
            buffer.extend_from_slice(&vec![1u8; 2 * KEEP_CAPACITY]);
            Ok(())
        };
        let mut chunk = BytesMut::new();
        for _ in 0..2 {
            outbox.try_send_with(big).unwrap();
            assert!(outbox.take(&mut chunk));
            assert_eq!(chunk.len(), 2 * KEEP_CAPACITY);
        }
        // Both buffers grew, and are kept while frames keep coming.
        assert!(outbox.state().buffer.capacity() >= 2 * KEEP_CAPACITY);
        assert!(!outbox.take(&mut chunk), "the burst is through");
        assert!(chunk.capacity() <= KEEP_CAPACITY);
        assert!(outbox.state().buffer.capacity() <= KEEP_CAPACITY);
    }

    #[tokio::test]
    async fn a_full_queue_makes_send_wait_for_the_writer() {
        let outbox = Arc::new(Outbox::new(1, 1));
        let put = |buffer: &mut BytesMut| {
            buffer.extend_from_slice(b"x");
            Ok(())
        };
        outbox.try_send_with(put).unwrap();
        let waiting = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.send_with(put).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no room: send waits");
        assert!(outbox.take(&mut BytesMut::new()));
        let sent = tokio::time::timeout(std::time::Duration::from_secs(5), waiting);
        assert_eq!(sent.await.expect("woken by take").unwrap(), Ok(()));
    }
}
