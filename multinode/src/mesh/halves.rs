//! A mesh stream's two halves as the message layer drives them: the read half,
//! read by the receiver and registered with the runtime for readability only,
//! and the write half, shared by the node's writer task and the senders that
//! write to it directly when the writer is idle, and registered for
//! writability only while a write waits for room.
//!
//! A tokio `UnixStream` is registered for both, once: then every frame the other
//! node reads from this node's stream makes room in it, and the kernel wakes this
//! node for that room (`EPOLLOUT`), whether it has anything to write or not. A
//! request and its answer are then four wake-ups instead of two, each a context
//! switch taking a core from the nodes still waiting for one. Here a node is
//! woken only for what it reads, and for room only when it waits for room.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, BytesMut};
use nix::sys::socket::{self, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::UnixStream;

/// Splits a mesh stream into the halves the message layer reads and writes;
/// the socket closes once both are dropped.
pub(crate) fn split(stream: UnixStream) -> io::Result<(ReadHalf, WriteHalf)> {
    let fd = OwnedFd::from(stream.into_std()?); // out of the runtime, non-blocking
    let write = WriteHalf {
        fd: Arc::new(fd.try_clone()?),
    };
    // SAFETY: an `OwnedFd` stays open, and is the same descriptor, for as long
    // as the `AsyncFd` owns it.
    let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
    let read = ReadHalf { fd };
    Ok((read, write))
}

/// The read half of a mesh stream.
#[derive(Debug)]
pub(crate) struct ReadHalf {
    fd: AsyncFd<OwnedFd>,
}

impl ReadHalf {
    /// Reads what the stream has into `buffer`'s spare capacity: the bytes
    /// read, 0 at the end of the stream.
    pub(crate) fn poll_read_buf(
        &self,
        cx: &mut Context<'_>,
        buffer: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut ready = ready!(self.fd.poll_read_ready(cx))?;
            let spare = buffer.spare_capacity_mut();
            let room = spare.len();
            let read = ready.try_io(|fd| loop {
                match socket2::SockRef::from(fd.get_ref()).recv(&mut *spare) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    read => return read,
                }
            });
            match read {
                Ok(Ok(n)) => {
                    // SAFETY: recv initialised the first `n` bytes of the spare capacity.
                    unsafe { buffer.advance_mut(n) };
                    if n > 0 && n < room {
                        // A stream socket's read stops short only once it has
                        // taken all there was: no need to find that out with
                        // another read (tokio's own streams do the same).
                        ready.clear_ready();
                    }
                    return Poll::Ready(Ok(n));
                }
                Ok(Err(error)) => return Poll::Ready(Err(error)),
                Err(_would_block) => {} // readiness cleared: wait for more
            }
        }
    }

    /// Shuts the stream down in both directions: the other node sees its end.
    pub(crate) fn shut_down(&self) {
        let _ = socket::shutdown(self.fd.as_raw_fd(), socket::Shutdown::Both);
    }
}

/// The write half of a mesh stream; cheap to clone (its clones write to the
/// same stream).
#[derive(Debug, Clone)]
pub(crate) struct WriteHalf {
    fd: Arc<OwnedFd>,
}

impl WriteHalf {
    /// Writes what the socket takes of `bytes` now, without waiting:
    /// `WouldBlock` when it takes nothing.
    pub(crate) fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        loop {
            match socket::send(self.fd.as_raw_fd(), bytes, flags) {
                Err(nix::errno::Errno::EINTR) => continue,
                sent => return sent.map_err(io::Error::from),
            }
        }
    }

    /// Writes all of `bytes`, waiting for room when the socket is full.
    pub(crate) async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.room().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Waits until the socket has room: registered for it only meanwhile.
    /// Registering reports room made since the write that found none.
    async fn room(&self) -> io::Result<()> {
        // SAFETY: `Shared` holds the descriptor open, the same one, for as long
        // as the `AsyncFd` owns it.
        let shared = Shared(self.fd.clone());
        let registered = unsafe { AsyncFd::register_with_interest(shared, Interest::WRITABLE) }?;
        let _ = registered.writable().await?;
        Ok(())
    }
}

/// A descriptor registered by one holder of it among others.
struct Shared(Arc<OwnedFd>);

impl AsRawFd for Shared {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
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
        let (read, write) = split(near).unwrap();
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
        assert!(write.try_write(b"x").is_err(), "the other end is gone");
    }

    /// The events the runtimes' epolls wait for on `fd`'s socket through `fd`,
    /// from /proc/self/fdinfo (a runtime's epoll may be open twice: one entry
    /// per registration).
    fn registered(fd: RawFd) -> Vec<u32> {
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino();
        // One entry per line, so that an epoll open twice counts once.
        let mut entries = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let link = std::fs::read_link(entry.path()).unwrap_or_default();
            if link.to_str() != Some("anon_inode:[eventpoll]") {
                continue;
            }
            let info = entry.file_name().into_string().unwrap();
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{info}"));
            // tfd:        7 events: 80002001 data: ... pos:0 ino:1f2 sdev:8
            for line in info.unwrap_or_default().lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                let field = |key: &str| words.iter().position(|w| *w == key).map(|i| words[i + 1]);
                let ino = words.iter().find_map(|w| w.strip_prefix("ino:"));
                let ino = ino.and_then(|i| u64::from_str_radix(i, 16).ok());
                if field("tfd:") == Some(&fd.to_string()) && ino == Some(inode) {
                    let events = u32::from_str_radix(field("events:").unwrap(), 16).unwrap();
                    entries.insert(line.to_string(), events);
                }
            }
        }
        entries.into_values().collect()
    }

    #[tokio::test]
    async fn only_reads_and_a_wait_for_room_are_registered() {
        const IN: u32 = 0x1; // EPOLLIN
        const OUT: u32 = 0x4; // EPOLLOUT

        // What a tokio UnixStream asks for: room too, all the time.
        let (tokio_stream, _other) = UnixStream::pair().unwrap();
        let events = registered(tokio_stream.as_raw_fd());
        assert!(matches!(events[..], [e] if e & OUT != 0), "{events:x?}");

        let (near, far) = UnixStream::pair().unwrap();
        let (read, write) = split(near).unwrap();
        let events = registered(read.fd.as_raw_fd());
        assert!(
            matches!(events[..], [e] if e & IN != 0 && e & OUT == 0),
            "{events:x?}"
        );
        let write_fd = write.fd.as_raw_fd();
        assert!(
            registered(write_fd).is_empty(),
            "the write half waits for nothing"
        );
        // Fill the socket: the writer waits for room, and only then asks for it.
        let big = vec![1u8; 4 * 1024 * 1024];
        let writing = tokio::spawn({
            let write = write.clone();
            async move { write.write_all(&big).await }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while registered(write_fd).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "never waited for room"
            );
            tokio::task::yield_now().await;
        }
        assert!(matches!(registered(write_fd)[..], [e] if e & OUT != 0 && e & IN == 0));
        let mut far = far;
        let reading = tokio::spawn(async move {
            let mut sink = vec![0u8; 4 * 1024 * 1024];
            far.read_exact(&mut sink).await
        });
        writing.await.unwrap().unwrap();
        reading.await.unwrap().unwrap();
        assert!(
            registered(write_fd).is_empty(),
            "registered only while it waited"
        );
    }

    #[tokio::test]
    async fn a_shut_down_stream_ends_for_the_other_node() {
        let (near, mut far) = UnixStream::pair().unwrap();
        let (read, _write) = split(near).unwrap();
        read.shut_down();
        let mut byte = [0u8; 1];
        assert_eq!(far.read(&mut byte).await.unwrap(), 0);
    }
}
