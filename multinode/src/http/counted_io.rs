//! A connection's socket as hyper gets it: counted in the load table and in the
//! node's drain for as long as it is open, also once an upgrade (a WebSocket, say)
//! has handed it to the user's code.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::sending::Sending;
use crate::balance::Tally;

/// The socket, with what keeps it counted: its line in the load table, and a
/// token of the node's connection tracker, which a stop waits for.
pub(super) struct CountedIo {
    stream: TcpStream,
    /// What the writes tell of the client's reading.
    sending: Arc<Sending>,
    _tally: Arc<Tally>,
    _token: TaskTrackerToken,
}

impl CountedIo {
    pub fn new(
        stream: TcpStream,
        sending: Arc<Sending>,
        tally: Arc<Tally>,
        token: TaskTrackerToken,
    ) -> Self {
        CountedIo {
            stream,
            sending,
            _tally: tally,
            _token: token,
        }
    }

    #[inline]
    fn wrote(&self, written: &Poll<io::Result<usize>>) {
        match written {
            Poll::Ready(Ok(n)) => self.sending.wrote(Some(*n)),
            Poll::Pending => self.sending.wrote(None),
            Poll::Ready(Err(_)) => {}
        }
    }
}

impl AsyncRead for CountedIo {
    #[inline]
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedIo {
    #[inline]
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.wrote(&written);
        written
    }

    #[inline]
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.wrote(&written);
        written
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    #[inline]
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
