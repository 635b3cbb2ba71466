//! One node's outgoing queue, and the writer task that empties it onto the stream
//! of that node's newest live incarnation.
//!
//! Senders encode each frame (tokio-util's length-delimited codec) straight into
//! one buffer; the writer takes everything queued in one piece and writes it with
//! as few system calls as the socket allows. The queue is bounded in frames:
//! past the bound, `send` waits for the writer (back-pressure) and `try_send`
//! fails.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, Notify};
use tokio_util::codec::{Encoder, LengthDelimitedCodec};

/// A change in the streams to one node's incarnations, for its writer.
pub(crate) enum Stream {
    /// Incarnation `generation` was meshed: the write half of its stream.
    Up(u64, OwnedWriteHalf),
    /// Incarnation `generation`'s stream ended (its reader saw EOF or closed it).
    Down(u64),
}

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    Full,
    Gone,
}

/// The largest buffer kept for the next turn.
const KEEP_CAPACITY: usize = 1024 * 1024;

pub(crate) struct Outbox {
    state: Mutex<State>,
    capacity: usize,
    /// Wakes the writer: frames were queued, or the node is gone.
    queued: Notify,
    /// Wakes the senders waiting for room.
    room: Notify,
}

struct State {
    codec: LengthDelimitedCodec,
    buffer: BytesMut,
    frames: usize,
    gone: bool,
}

impl Outbox {
    pub(crate) fn new(codec: LengthDelimitedCodec, capacity: usize) -> Self {
        Outbox {
            state: Mutex::new(State {
                codec,
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

    /// Queues `frame`, waiting while the queue is full.
    pub(crate) async fn send(&self, frame: Bytes) -> Result<(), Refused> {
        loop {
            let room = self.room.notified();
            match self.try_send(frame.clone()) {
                Err(Refused::Full) => room.await,
                done => return done,
            }
        }
    }

    /// Queues `frame` if there is room.
    pub(crate) fn try_send(&self, frame: Bytes) -> Result<(), Refused> {
        let mut state = self.state();
        if state.gone {
            return Err(Refused::Gone);
        }
        if state.frames >= self.capacity {
            return Err(Refused::Full);
        }
        let State { codec, buffer, .. } = &mut *state;
        // The sender checked the size against the same limit: this cannot fail.
        codec
            .encode(frame, buffer)
            .expect("a frame within the limit");
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
    /// memory stays allocated and warm. False when nothing is queued.
    fn take(&self, chunk: &mut BytesMut) -> bool {
        chunk.clear();
        if chunk.capacity() > KEEP_CAPACITY {
            *chunk = BytesMut::new(); // once large messages are through, give it back
        }
        let mut state = self.state();
        if state.frames == 0 {
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

/// Node `id`'s writer: writes what is queued to the stream of its newest live
/// incarnation. When that stream fails (the process died), the piece that failed
/// is written again, whole, to the next newest live incarnation or to the next one
/// meshed: frames are not lost to a restart, and framing stays intact.
pub(crate) async fn write_to(
    id: usize,
    outbox: Arc<Outbox>,
    mut streams: mpsc::UnboundedReceiver<Stream>,
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
                tracing::warn!(
                    peer = id,
                    generation = *newest.key(),
                    "mesh: cannot write to node {id} ({error}); what it did not get waits for its next incarnation"
                );
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
        let outbox = Outbox::new(LengthDelimitedCodec::new(), 2);
        outbox.try_send(Bytes::from_static(b"a")).unwrap();
        outbox.send(Bytes::from_static(b"bc")).await.unwrap();
        assert_eq!(
            outbox.try_send(Bytes::from_static(b"d")),
            Err(Refused::Full)
        );
        let mut chunk = BytesMut::new();
        assert!(outbox.take(&mut chunk));
        assert_eq!(&chunk[..], b"\0\0\0\x01a\0\0\0\x02bc");
        assert!(!outbox.take(&mut chunk));
        outbox.try_send(Bytes::from_static(b"d")).unwrap();
        outbox.close();
        assert_eq!(
            outbox.send(Bytes::from_static(b"e")).await,
            Err(Refused::Gone)
        );
    }
}
