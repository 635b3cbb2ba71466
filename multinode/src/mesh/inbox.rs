//! This node's incoming streams, one per incarnation of every other node, read
//! by the task that calls `Receiver::recv` itself: no reader task and no queue
//! between a stream and the receiver. Frames are cut and decoded in place in
//! each stream's read buffer, one when the receiver asks for one;
//! what the receiver has not asked for stays in the socket, whose buffer is the
//! back-pressure on the sender.
//!
//! The streams take turns: in its turn a stream gives the frames already read
//! from it and at most one more read's worth, so that a busy node does not
//! starve the others. New streams join at the end of a round.

use std::task::{Context, Poll};

use tokio::sync::mpsc;

use super::halves::ReadHalf;
use super::outbox::Stream;
use super::stream_id::StreamId;
use super::wire::Frames;

/// How much one read takes from a stream at most (frames may be longer). Small
/// enough that the frames are still in the L1 cache when they are decoded
/// (`bench/README.md`, "Mesh figures", has what it gave).
const READ_CHUNK: usize = 16 * 1024;

/// The stream from one incarnation of another node, as the inbox reads it.
pub(crate) struct Incoming {
    id: usize,
    link: StreamId,
    half: ReadHalf,
    /// What was read from it, cut into frames.
    frames: Frames,
    /// That node's writer, told when the stream is over.
    writer: mpsc::UnboundedSender<Stream>,
}

impl Incoming {
    /// The read half of stream `link` from node `id`, whose frames may have
    /// up to `max` bytes; `writer` writes to its other half.
    pub(crate) fn new(
        id: usize,
        link: StreamId,
        half: ReadHalf,
        max: usize,
        writer: mpsc::UnboundedSender<Stream>,
    ) -> Self {
        Incoming {
            id,
            link,
            half,
            frames: Frames::new(max),
            writer,
        }
    }

    /// Reads what the stream has, up to [`READ_CHUNK`] (more if a longer frame
    /// is being read).
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        self.half
            .poll_read_buf(cx, self.frames.for_reading(READ_CHUNK))
    }
}

/// What the inbox has for the receiver.
#[derive(Debug)]
pub(crate) enum Event<T> {
    /// A frame from node `from`, on stream `link`, as the receiver decoded it.
    Frame {
        from: usize,
        link: StreamId,
        body: T,
    },
    /// That stream was closed by the other end (EOF).
    Ended { id: usize, link: StreamId },
    /// That stream was closed for what was wrong with it.
    Failed {
        id: usize,
        link: StreamId,
        error: String,
    },
}

pub(crate) struct Inbox {
    /// New streams, as they pass their handshake.
    arrivals: mpsc::UnboundedReceiver<Incoming>,
    /// No more streams will come (the master is gone).
    ended: bool,
    streams: Vec<Incoming>,
    /// The stream whose turn it is, and whether it was read in this turn.
    turn: usize,
    read_in_turn: bool,
}

impl Inbox {
    pub(crate) fn new(arrivals: mpsc::UnboundedReceiver<Incoming>) -> Self {
        Inbox {
            arrivals,
            ended: false,
            streams: Vec::new(),
            turn: 0,
            read_in_turn: false,
        }
    }

    /// An inbox that has and will have no stream.
    pub(crate) fn closed() -> Self {
        Inbox::new(mpsc::unbounded_channel().1)
    }

    /// How many streams are being read.
    pub(crate) fn len(&self) -> usize {
        self.streams.len()
    }

    /// The next frame, given to `decode` where it was read, or the end of a
    /// stream; `None` once no stream is left and no more will come. Cancel
    /// safe: nothing is taken from a stream but what is returned.
    #[inline]
    pub(crate) fn poll_next<T>(
        &mut self,
        cx: &mut Context<'_>,
        decode: &mut impl FnMut(&[u8]) -> T,
    ) -> Poll<Option<Event<T>>> {
        // Streams in a row that had nothing, since the last read or the last
        // new stream: once every stream is among them, there is nothing to read.
        let mut idle = 0;
        loop {
            if self.turn >= self.streams.len() {
                // A round is over: new streams join.
                self.turn = 0;
                if self.take_arrivals(cx) {
                    idle = 0;
                }
            }
            let Some(stream) = self.streams.get_mut(self.turn) else {
                return if self.ended {
                    Poll::Ready(None)
                } else {
                    Poll::Pending // take_arrivals registered the waker
                };
            };
            let (from, link) = (stream.id, stream.link);
            match stream.frames.next() {
                Ok(Some(body)) => {
                    return Poll::Ready(Some(Event::Frame {
                        from,
                        link,
                        body: decode(body),
                    }));
                }
                Ok(None) => {}
                Err(error) => {
                    let error = format!("a bad frame ({error})");
                    return Poll::Ready(Some(self.remove_turn(Some(error))));
                }
            }
            if !self.read_in_turn {
                match stream.poll_read(cx) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Some(self.remove_turn(None))),
                    Poll::Ready(Ok(_)) => {
                        self.read_in_turn = true;
                        idle = 0;
                        continue;
                    }
                    Poll::Ready(Err(error)) => {
                        let error = format!("a read error ({error})");
                        return Poll::Ready(Some(self.remove_turn(Some(error))));
                    }
                    Poll::Pending => idle += 1,
                }
            }
            // This stream's turn is over.
            self.turn += 1;
            self.read_in_turn = false;
            if idle >= self.streams.len() {
                // Nothing anywhere: wait for a stream, or for a new one.
                if !self.take_arrivals(cx) {
                    return Poll::Pending;
                }
                idle = 0;
            }
        }
    }

    /// Adds the streams that arrived, if any (true); registers the waker for
    /// the next one.
    fn take_arrivals(&mut self, cx: &mut Context<'_>) -> bool {
        let before = self.streams.len();
        while !self.ended {
            match self.arrivals.poll_recv(cx) {
                Poll::Ready(Some(stream)) => self.streams.push(stream),
                Poll::Ready(None) => self.ended = true,
                Poll::Pending => break,
            }
        }
        self.streams.len() > before
    }

    /// Drops the stream whose turn it is, and says why.
    fn remove_turn<T>(&mut self, error: Option<String>) -> Event<T> {
        let (id, link) = self.remove(self.turn, error.is_some());
        match error {
            Some(error) => Event::Failed { id, link, error },
            None => Event::Ended { id, link },
        }
    }

    /// Closes stream `link` from node `id` (a message on it did not decode),
    /// unless it is over already.
    pub(crate) fn close(&mut self, id: usize, link: StreamId) {
        let at = self
            .streams
            .iter()
            .position(|s| (s.id, s.link) == (id, link));
        if let Some(at) = at {
            self.remove(at, true);
        }
    }

    /// Drops stream `at`, shut down first if `shut`, and tells its writer.
    fn remove(&mut self, at: usize, shut: bool) -> (usize, StreamId) {
        let stream = self.streams.remove(at);
        if shut {
            stream.half.shut_down();
        }
        let _ = stream.writer.send(Stream::Down(stream.link));
        if at < self.turn {
            self.turn -= 1;
        } else if at == self.turn {
            self.read_in_turn = false;
        }
        (stream.id, stream.link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::outbox::tests::link;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixStream;

    /// An inbox, and a way to give it streams: the far end of each, and the
    /// writer's end of its channel.
    fn inbox() -> (
        Inbox,
        impl Fn(usize) -> (UnixStream, mpsc::UnboundedReceiver<Stream>),
    ) {
        let (arrive, arrivals) = mpsc::unbounded_channel();
        let add = move |id| {
            let (near, far) = UnixStream::pair().unwrap();
            let (writer, writer_rx) = mpsc::unbounded_channel();
            let (read, _write) = super::super::halves::split(near).unwrap();
            arrive
                .send(Incoming::new(id, link(1), read, 16, writer))
                .unwrap();
            (far, writer_rx)
        };
        (Inbox::new(arrivals), add)
    }

    async fn next(inbox: &mut Inbox) -> Option<Event<Vec<u8>>> {
        poll_fn(|cx| inbox.poll_next(cx, &mut |body| body.to_vec())).await
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        frame
    }

    #[tokio::test]
    async fn streams_take_turns_a_read_each() {
        let (mut inbox, add) = inbox();
        let (one, _w1) = add(1);
        let (mut two, _w2) = add(2);
        // Node 1 has sent all its socket holds (several reads' worth) before
        // node 2 sends one frame.
        let chunk: Vec<u8> = (0..1000).flat_map(|_| frame(b"1")).collect();
        let mut sent = 0;
        let rest = loop {
            sent += 1000;
            match one.try_write(&chunk) {
                Ok(all) if all == chunk.len() => continue,
                Ok(part) => break chunk[part..].to_vec(),
                Err(_) => break chunk.clone(),
            }
        };
        assert!(sent * 5 > 2 * READ_CHUNK, "{sent} frames fit");
        let mut one = one;
        tokio::spawn(async move { one.write_all(&rest).await });
        two.write_all(&frame(b"2")).await.unwrap();
        let mut order = Vec::new();
        for _ in 0..=sent {
            match next(&mut inbox).await {
                Some(Event::Frame { from, body, .. }) => {
                    assert_eq!(&body[..], from.to_string().as_bytes());
                    order.push(from);
                }
                other => panic!("{other:?}"),
            }
        }
        let before_two = order.iter().position(|from| *from == 2).unwrap();
        assert!(
            before_two <= READ_CHUNK / 5,
            "node 2 waited for {before_two} of node 1's {sent} frames"
        );
        assert_eq!(order.iter().filter(|from| **from == 1).count(), sent);
    }

    #[tokio::test]
    async fn a_stream_that_joins_mid_round_is_read() {
        let (mut inbox, add) = inbox();
        let (mut one, _w1) = add(1);
        let (_two, _w2) = add(2);
        one.write_all(&frame(b"1")).await.unwrap();
        assert!(matches!(
            next(&mut inbox).await,
            Some(Event::Frame { from: 1, .. })
        ));
        // Node 3 joins while node 1's turn ends and node 2 has nothing: the
        // round that takes it in must also wait for it before waiting.
        let (mut three, _w3) = add(3);
        let receiving = tokio::spawn(async move { next(&mut inbox).await });
        for _ in 0..10 {
            tokio::task::yield_now().await; // the receiver is waiting
        }
        three.write_all(&frame(b"3")).await.unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), receiving);
        assert!(
            matches!(got.await, Ok(Ok(Some(Event::Frame { from: 3, .. })))),
            "node 3's frame is read"
        );
    }

    #[tokio::test]
    async fn a_bad_frame_or_an_end_drops_that_stream_and_tells_its_writer() {
        let (mut inbox, add) = inbox();
        let (mut one, mut w1) = add(1);
        let (mut two, mut w2) = add(2);
        one.write_all(&u32::MAX.to_be_bytes()).await.unwrap(); // over 16 bytes
        match next(&mut inbox).await {
            Some(Event::Failed { id: 1, error, .. }) => assert!(error.contains("frame"), "{error}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(w1.recv().await, Some(Stream::Down(l)) if l == link(1)));
        let mut byte = [0u8; 1];
        let read = tokio::io::AsyncReadExt::read(&mut one, &mut byte).await;
        assert!(matches!(read, Ok(0) | Err(_)), "node 1's stream is shut");
        two.write_all(&frame(b"ok")).await.unwrap();
        drop(two);
        assert!(matches!(
            next(&mut inbox).await,
            Some(Event::Frame { from: 2, .. })
        ));
        assert!(matches!(
            next(&mut inbox).await,
            Some(Event::Ended { id: 2, .. })
        ));
        assert!(matches!(w2.recv().await, Some(Stream::Down(l)) if l == link(1)));
        assert_eq!(inbox.len(), 0);
        let (_three, _w3) = add(3);
        assert_eq!(inbox.len(), 0, "joins when the inbox is next read");
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), next(&mut inbox));
        assert!(waiting.await.is_err(), "nothing to read yet");
        assert_eq!(inbox.len(), 1);
        drop((_three, add));
        assert!(matches!(
            next(&mut inbox).await,
            Some(Event::Ended { id: 3, .. })
        ));
        assert!(
            next(&mut inbox).await.is_none(),
            "no stream left, none to come"
        );
    }
}
