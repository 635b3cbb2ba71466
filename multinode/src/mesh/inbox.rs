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
//!
//! Each stream, and the arrivals, is polled with a waker of its own, which
//! raises its flag before it wakes the receiver: a wake-up polls what was
//! woken, not every stream again (at N nodes, N - 1 of them).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use tokio::sync::mpsc;

use super::halves::ReadHalf;
use super::outbox::Stream;
use super::stream_id::StreamId;
use super::wire::Frames;

/// How much one read takes from a stream at most (frames may be longer). Small
/// enough that the frames are still in the L1 cache when they are decoded
/// (`bench/README.md`, "Mesh figures", has what it gave).
const READ_CHUNK: usize = 16 * 1024;

/// The receiving task, as the streams' wakers see it.
#[derive(Default)]
struct Task {
    waker: AtomicWaker,
    /// Some flag was raised since the receiver last decided to wait.
    any: AtomicBool,
}

/// What wakes the receiver for one stream, or for the arrivals: the flag says
/// that it was woken since it was last polled.
struct Flag {
    woken: AtomicBool,
    task: Arc<Task>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.any.store(true, Ordering::Release);
        self.task.waker.wake();
    }
}

/// A flag, raised (so that what it is for is polled first), and its waker.
struct Flagged {
    flag: Arc<Flag>,
    waker: Waker,
}

impl Flagged {
    fn new(task: &Arc<Task>) -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: task.clone(),
        });
        Flagged {
            waker: Waker::from(flag.clone()),
            flag,
        }
    }

    /// Whether it was woken since the last call; then it is polled now.
    fn take(&self) -> bool {
        self.flag.woken.swap(false, Ordering::AcqRel)
    }
}

/// The stream from one incarnation of another node, as the inbox reads it.
pub(crate) struct Incoming {
    id: usize,
    link: StreamId,
    half: ReadHalf,
    /// What was read from it, cut into frames.
    frames: Frames,
    /// That node's writer, told when the stream is over.
    writer: mpsc::UnboundedSender<Stream>,
    /// Its waker, once it is in the inbox.
    flagged: Option<Flagged>,
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
            flagged: None,
        }
    }

    /// Reads what the stream has, up to [`READ_CHUNK`] (more if a longer frame
    /// is being read), if it was woken since it last had nothing.
    fn poll_read(&mut self) -> Poll<std::io::Result<usize>> {
        let flagged = self.flagged.as_ref().expect("in the inbox");
        if !flagged.take() {
            return Poll::Pending;
        }
        let mut cx = Context::from_waker(&flagged.waker);
        let read = self
            .half
            .poll_read_buf(&mut cx, self.frames.for_reading(READ_CHUNK));
        if read.is_ready() {
            // It may have more: polled again in its next turn.
            flagged.flag.woken.store(true, Ordering::Relaxed);
        }
        read
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
    /// The task that reads, woken by the streams' and the arrivals' wakers.
    task: Arc<Task>,
    /// New streams, as they pass their handshake.
    arrivals: mpsc::UnboundedReceiver<Incoming>,
    arrivals_flag: Flagged,
    /// No more streams will come (the master is gone).
    ended: bool,
    streams: Vec<Incoming>,
    /// The stream whose turn it is, and whether it was read in this turn.
    turn: usize,
    read_in_turn: bool,
}

impl Inbox {
    pub(crate) fn new(arrivals: mpsc::UnboundedReceiver<Incoming>) -> Self {
        let task = Arc::new(Task::default());
        Inbox {
            arrivals_flag: Flagged::new(&task),
            task,
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
        let mut looked_again = false;
        // What woke the task is seen by the look at every stream below, which
        // comes before any wait: only a flag raised from here on is news to
        // `wait`, which would otherwise look at every stream a second time.
        self.task.any.swap(false, Ordering::AcqRel);
        loop {
            if self.turn >= self.streams.len() {
                // A round is over: new streams join.
                self.turn = 0;
                if self.take_arrivals() {
                    idle = 0;
                }
            }
            let Some(stream) = self.streams.get_mut(self.turn) else {
                if self.ended {
                    return Poll::Ready(None);
                }
                match self.wait(cx, &mut looked_again) {
                    true => return Poll::Pending, // the arrivals' waker wakes this task
                    false => continue,
                }
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
                match stream.poll_read() {
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
                if !self.take_arrivals() && self.wait(cx, &mut looked_again) {
                    return Poll::Pending;
                }
                idle = 0;
            }
        }
    }

    /// Whether to wait: nothing was woken since every flag was last looked
    /// at; else the streams are looked at again, once a call, and then the
    /// task yields: a waker called while the task polls (tokio defers those
    /// of a spent task budget today) cannot keep it looping. A wake from then
    /// on wakes this task.
    fn wait(&self, cx: &mut Context<'_>, looked_again: &mut bool) -> bool {
        // Registered before `any` is read: a flag raised before that is seen
        // here, and one raised after wakes the task it names.
        self.task.waker.register(cx.waker());
        if !self.task.any.swap(false, Ordering::AcqRel) {
            return true;
        }
        if std::mem::replace(looked_again, true) {
            cx.waker().wake_by_ref();
            return true;
        }
        false
    }

    /// Adds the streams that arrived, if any (true); the arrivals' waker
    /// wakes this task for the next one.
    fn take_arrivals(&mut self) -> bool {
        if !self.arrivals_flag.take() {
            return false;
        }
        let before = self.streams.len();
        let mut cx = Context::from_waker(&self.arrivals_flag.waker);
        while !self.ended {
            match self.arrivals.poll_recv(&mut cx) {
                Poll::Ready(Some(mut stream)) => {
                    stream.flagged = Some(Flagged::new(&self.task));
                    self.streams.push(stream);
                }
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

    /// Each wake-up reads the streams that were woken: frames sent one at a
    /// time to streams in a scattered order, each while the inbox waits, all
    /// arrive.
    #[tokio::test]
    async fn frames_to_any_of_many_streams_each_wake_the_inbox() {
        let (mut inbox, add) = inbox();
        let mut streams: Vec<_> = (1..=32).map(&add).collect();
        let order = (0..200).map(|k| (k * 7 + k / 32) % 32);
        for (sent, at) in order.enumerate() {
            let receiving = next(&mut inbox);
            tokio::pin!(receiving);
            if sent > 0 {
                // The inbox waits before the frame is sent.
                let waited = futures_util::poll!(receiving.as_mut());
                assert!(waited.is_pending(), "frame {sent}: nothing to read yet");
            }
            streams[at].0.write_all(&frame(b"x")).await.unwrap();
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), receiving);
            match got.await {
                Ok(Some(Event::Frame { from, .. })) => assert_eq!(from, at + 1),
                other => panic!("frame {sent} to node {}: {other:?}", at + 1),
            }
        }
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
