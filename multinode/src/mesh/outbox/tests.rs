use super::*;

#[tokio::test]
async fn bounded_in_frames_and_refused_once_gone() {
    let outbox = Outbox::new(3, 2, Default::default());
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
    assert_eq!(
        outbox.try_send_with(put(b"d")),
        Err(SendError::Full(3.into()))
    );
    let mut chunk = BytesMut::new();
    assert!(matches!(outbox.take(&mut chunk, None), Taken::Frames(None)));
    assert_eq!(&chunk[..], b"abc", "a failed write left nothing");
    assert_eq!(outbox.take(&mut chunk, None), Taken::Nothing);
    outbox.try_send_with(put(b"d")).unwrap();
    outbox.close();
    assert_eq!(
        outbox.send_with(put(b"e")).await,
        Err(SendError::Gone(3.into()))
    );
}

#[test]
fn a_panicking_encoder_leaves_the_queue_intact() {
    let outbox = Outbox::new(1, 8, Default::default());
    outbox
        .try_send_with(|buffer| {
            buffer.extend_from_slice(b"whole");
            Ok(())
        })
        .unwrap();
    // Unwind safe: the queue's state is what the test looks at after.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        outbox.try_send_with(|buffer| {
            buffer.extend_from_slice(b"half a fr");
            panic!("a Serialize impl panics");
        })
    }));
    assert!(panicked.is_err());
    let mut chunk = BytesMut::new();
    assert!(matches!(outbox.take(&mut chunk, None), Taken::Frames(None)));
    assert_eq!(&chunk[..], b"whole");
}

#[test]
fn buffers_grown_by_a_burst_are_given_back_once_it_is_through() {
    let outbox = Outbox::new(1, 8, Default::default());
    let big = |buffer: &mut BytesMut| {
        buffer.extend_from_slice(&vec![1u8; 2 * KEEP_CAPACITY]);
        Ok(())
    };
    let mut chunk = BytesMut::new();
    for _ in 0..2 {
        outbox.try_send_with(big).unwrap();
        assert!(matches!(outbox.take(&mut chunk, None), Taken::Frames(None)));
        assert_eq!(chunk.len(), 2 * KEEP_CAPACITY);
    }
    // Both buffers grew, and are kept while frames keep coming.
    assert!(outbox.state().buffer.capacity() >= 2 * KEEP_CAPACITY);
    assert_eq!(
        outbox.take(&mut chunk, None),
        Taken::Nothing,
        "the burst is through"
    );
    assert!(chunk.capacity() <= KEEP_CAPACITY);
    assert!(outbox.state().buffer.capacity() <= KEEP_CAPACITY);
}

#[tokio::test]
async fn a_full_queue_makes_send_wait_for_the_writer() {
    let outbox = Arc::new(Outbox::new(1, 1, Default::default()));
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
    assert!(matches!(
        outbox.take(&mut BytesMut::new(), None),
        Taken::Frames(None)
    ));
    let sent = tokio::time::timeout(std::time::Duration::from_secs(5), waiting);
    assert_eq!(sent.await.expect("woken by take").unwrap(), Ok(()));
}

/// The first stream to incarnation `generation`.
pub(crate) fn link(generation: u64) -> StreamId {
    StreamId {
        generation,
        number: 0,
    }
}

/// An outbox to node 1 with its writer task, and a way to mesh incarnations:
/// the far end of each new stream.
fn with_writer() -> (
    Arc<Outbox>,
    impl Fn(u64) -> tokio::net::UnixStream,
    mpsc::UnboundedSender<Stream>,
) {
    let outbox = Arc::new(Outbox::new(1, 64, Default::default()));
    let (streams, streams_rx) = mpsc::unbounded_channel();
    let span = tracing::Span::none();
    tokio::spawn(write_to(1, outbox.clone(), streams_rx, span));
    let up = {
        let streams = streams.clone();
        move |generation| {
            let (near, far) = tokio::net::UnixStream::pair().unwrap();
            let (_read, write) = super::super::halves::split(near).unwrap();
            streams.send(Stream::Up(link(generation), write)).unwrap();
            far
        }
    };
    (outbox, up, streams)
}

fn bytes(data: &[u8]) -> impl FnOnce(&mut BytesMut) -> Result<(), SendError> + '_ {
    move |buffer| {
        buffer.extend_from_slice(data);
        Ok(())
    }
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await; // the writer runs, and is idle again
    }
}

#[tokio::test]
async fn the_first_frame_of_a_burst_is_written_at_once_the_rest_by_the_writer() {
    use std::io::Read;
    let (outbox, up, _streams) = with_writer();
    // Read without the runtime: what is in the socket, when it is asked.
    let mut far = up(1).into_std().unwrap();
    settle().await;
    let mut got = [0u8; 16];
    for round in 0..2 {
        outbox.try_send_with(bytes(b"one")).unwrap();
        // No await since: the sender wrote it itself.
        assert_eq!(far.read(&mut got).unwrap(), 3, "round {round}");
        outbox.try_send_with(bytes(b"two")).unwrap();
        outbox.try_send_with(bytes(b"three")).unwrap();
        let queued = far.read(&mut got);
        assert!(queued.is_err(), "the rest waits for the writer: {queued:?}");
        settle().await;
        assert_eq!(far.read(&mut got).unwrap(), 8);
        assert_eq!(&got[..8], b"twothree");
    }
}

#[tokio::test]
async fn a_quiet_direct_write_gets_the_stream_back_only_once_its_writer_is_woken() {
    use std::io::Read;
    let (outbox, up, _streams) = with_writer();
    let mut far = up(1).into_std().unwrap();
    settle().await;
    let mut got = [0u8; 16];
    outbox.try_send_quietly(bytes(b"one")).unwrap();
    assert_eq!(far.read(&mut got).unwrap(), 3, "written at once");
    settle().await;
    assert!(outbox.state().direct.is_none(), "the writer was not woken");
    outbox.wake_writer();
    settle().await;
    assert!(outbox.state().direct.is_some(), "the writer gave it again");
    outbox.try_send_quietly(bytes(b"two")).unwrap();
    assert_eq!(far.read(&mut got).unwrap(), 3, "the next is direct too");
}

/// Reads `len` bytes from `far`, or fails after 10 s.
async fn read(far: &mut tokio::net::UnixStream, len: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut got = vec![0u8; len];
    let reading = far.read_exact(&mut got);
    tokio::time::timeout(std::time::Duration::from_secs(10), reading)
        .await
        .expect("all of it came")
        .unwrap();
    got
}

#[tokio::test]
async fn a_frame_the_socket_takes_part_of_is_finished_by_the_writer() {
    let (outbox, up, _streams) = with_writer();
    let mut far = up(1);
    settle().await;
    // More than a socket holds: the sender writes what it takes.
    let big: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| i as u8).collect();
    outbox.try_send_with(bytes(&big)).unwrap();
    let written = outbox.state().written;
    assert!(
        matches!(written, Some((l, part)) if l == link(1) && part > 0 && part < big.len()),
        "{written:?}"
    );
    outbox.try_send_with(bytes(b"after")).unwrap();
    assert_eq!(read(&mut far, big.len()).await, big);
    assert_eq!(read(&mut far, 5).await, b"after");
}

#[tokio::test]
async fn the_old_streams_end_seen_late_leaves_the_new_stream_of_the_same_incarnation() {
    let (outbox, _up, streams) = with_writer();
    let (near, _old_far) = tokio::net::UnixStream::pair().unwrap();
    let (_read, old) = super::super::halves::split(near).unwrap();
    streams.send(Stream::Up(link(1), old)).unwrap();
    let (near, mut new_far) = tokio::net::UnixStream::pair().unwrap();
    let (_read, new) = super::super::halves::split(near).unwrap();
    let again = StreamId {
        generation: 1,
        number: 1,
    };
    streams.send(Stream::Up(again, new)).unwrap();
    streams.send(Stream::Down(link(1))).unwrap(); // the old one's end, late
    settle().await;
    outbox.try_send_with(bytes(b"still here")).unwrap();
    assert_eq!(read(&mut new_far, 10).await, b"still here");
}

#[tokio::test]
async fn a_frame_begun_on_a_dead_incarnation_goes_whole_to_the_next() {
    let (outbox, up, streams) = with_writer();
    let first = up(1);
    settle().await;
    let big: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    outbox.try_send_with(bytes(&big)).unwrap();
    assert!(matches!(outbox.state().written, Some((l, _)) if l == link(1)));
    drop(first); // incarnation 1 dies with part of the frame
    let _ = streams.send(Stream::Down(link(1)));
    let mut second = up(2);
    assert_eq!(
        read(&mut second, big.len()).await,
        big,
        "whole, from its start"
    );
    settle().await;
    outbox.try_send_with(bytes(b"next")).unwrap();
    assert_eq!(read(&mut second, 4).await, b"next");
}
