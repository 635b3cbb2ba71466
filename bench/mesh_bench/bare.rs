//! The bare socketpair loops the message layer is measured against.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::Bench;

/// The same frames over a bare socketpair: one thread writes, one reads, each on
/// its own current_thread runtime; the time from the first write to the last read.
pub fn bare_socketpair(frame: Bytes, count: usize) -> Duration {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        runtime().block_on(async move {
            let stream = tokio::net::UnixStream::from_std(a).unwrap();
            let mut sink = FramedWrite::new(stream, LengthDelimitedCodec::new());
            for _ in 0..count {
                sink.feed(frame.clone()).await.unwrap();
            }
            SinkExt::<Bytes>::flush(&mut sink).await.unwrap();
        })
    });
    let reader = std::thread::spawn(move || {
        runtime().block_on(async move {
            let stream = tokio::net::UnixStream::from_std(b).unwrap();
            let mut frames = FramedRead::new(stream, LengthDelimitedCodec::new());
            for _ in 0..count {
                frames.next().await.unwrap().unwrap();
            }
        })
    });
    writer.join().unwrap();
    reader.join().unwrap();
    started.elapsed()
}

/// The bare socketpair as a program without the mesh would send these
/// messages, with the same codec: each encoded with postcard straight into the
/// write buffer behind its length, and decoded on receipt.
/// (Written out like `bare_socketpair`: through one helper taking the two
/// loops as closures, both floors cost 40 instructions a message more.)
pub fn bare_postcard(message: Bench, count: usize) -> Duration {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        runtime().block_on(async move {
            let stream = tokio::net::UnixStream::from_std(a).unwrap();
            let mut sink = FramedWrite::new(stream, Postcard);
            for _ in 0..count {
                sink.feed(&message).await.unwrap();
            }
            SinkExt::<&Bench>::flush(&mut sink).await.unwrap();
        })
    });
    let reader = std::thread::spawn(move || {
        runtime().block_on(async move {
            let stream = tokio::net::UnixStream::from_std(b).unwrap();
            let mut frames = FramedRead::new(stream, LengthDelimitedCodec::new());
            for _ in 0..count {
                let frame = frames.next().await.unwrap().unwrap();
                let message: Bench = postcard::from_bytes(&frame).unwrap();
                std::hint::black_box(message);
            }
        })
    });
    writer.join().unwrap();
    reader.join().unwrap();
    started.elapsed()
}

/// The length-delimited codec's frames, each message encoded with postcard in
/// place (`to_slice` into the buffer's room, then the length before it).
struct Postcard;

impl tokio_util::codec::Encoder<&Bench> for Postcard {
    type Error = std::io::Error;

    fn encode(&mut self, message: &Bench, dst: &mut bytes::BytesMut) -> std::io::Result<()> {
        use bytes::BufMut;
        let start = dst.len();
        dst.put_u32(0);
        dst.resize(start + 4 + 128, 0);
        let len = postcard::to_slice(message, &mut dst[start + 4..])
            .map_err(std::io::Error::other)?
            .len();
        dst.truncate(start + 4 + len);
        dst[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }
}
