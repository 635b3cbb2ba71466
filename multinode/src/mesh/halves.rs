//! A mesh stream's two halves as the message layer drives them: the read half,
//! read by the receiver, and a write half shared by the node's writer task and
//! the senders that write to it directly when the writer is idle.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use nix::sys::socket;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// Splits a mesh stream into the halves the message layer reads and writes;
/// the socket closes once both are dropped.
pub(crate) fn split(stream: UnixStream) -> (ReadHalf, WriteHalf) {
    let (read, write) = stream.into_split();
    (ReadHalf(read), WriteHalf(Arc::new(write)))
}

/// The read half of a mesh stream.
#[derive(Debug)]
pub(crate) struct ReadHalf(OwnedReadHalf);

impl ReadHalf {
    /// Reads what the stream has into `buffer`'s spare capacity: the bytes
    /// read, 0 at the end of the stream.
    pub(crate) fn poll_read_buf(
        &mut self,
        cx: &mut Context<'_>,
        buffer: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        tokio_util::io::poll_read_buf(Pin::new(&mut self.0), cx, buffer)
    }

    /// Shuts the stream down in both directions: the other node sees its end.
    pub(crate) fn shut_down(&self) {
        let fd = self.0.as_ref().as_raw_fd();
        let _ = socket::shutdown(fd, socket::Shutdown::Both);
    }
}

/// The write half of a mesh stream; cheap to clone (its clones write to the
/// same stream).
#[derive(Debug, Clone)]
pub(crate) struct WriteHalf(Arc<OwnedWriteHalf>);

impl WriteHalf {
    /// Writes what the socket takes of `bytes` now, without waiting:
    /// `WouldBlock` when it takes nothing (or is not known to have room).
    pub(crate) fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        self.0.try_write(bytes)
    }

    /// Writes all of `bytes`, waiting for room when the socket is full.
    pub(crate) async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            self.0.writable().await?;
            match self.0.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {} // readiness cleared
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn both_halves_carry_bytes_and_a_full_socket_waits_for_room() {
        let (near, mut far) = UnixStream::pair().unwrap();
        let (mut read, write) = split(near);
        // More than the socket holds: write_all waits for the reader.
        let big = vec![7u8; 4 * 1024 * 1024];
        let writing = tokio::spawn({
            let (write, big) = (write.clone(), big.clone());
            async move { write.write_all(&big).await }
        });
        let mut got = vec![0u8; big.len()];
        let read_all = far.read_exact(&mut got);
        tokio::time::timeout(Duration::from_secs(10), read_all)
            .await
            .expect("the writer was woken for room")
            .unwrap();
        assert_eq!(got, big);
        writing.await.unwrap().unwrap();
        // The other way, and the end.
        far.write_all(b"hello").await.unwrap();
        drop(far);
        let mut buffer = BytesMut::with_capacity(64);
        let mut text = Vec::new();
        loop {
            buffer.clear();
            match poll_fn(|cx| read.poll_read_buf(cx, &mut buffer))
                .await
                .unwrap()
            {
                0 => break,
                _ => text.extend_from_slice(&buffer),
            }
        }
        assert_eq!(text, b"hello");
        assert!(
            write.write_all(b"x").await.is_err(),
            "the other end is gone"
        );
    }

    #[tokio::test]
    async fn a_shut_down_stream_ends_for_the_other_node() {
        let (near, mut far) = UnixStream::pair().unwrap();
        let (read, _write) = split(near);
        read.shut_down();
        let mut byte = [0u8; 1];
        assert_eq!(far.read(&mut byte).await.unwrap(), 0);
    }
}
