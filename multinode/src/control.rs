//! The control protocol between the master and each worker.
//!
//! One anonymous `AF_UNIX` `SOCK_SEQPACKET` socketpair per worker: nothing on the
//! filesystem, message boundaries kept by the kernel, and EOF when the other end
//! dies. Every message is one packet: a JSON-encoded [`Packet`] plus, for the
//! variants that name one, exactly one `SCM_RIGHTS` descriptor sent in the same
//! `sendmsg`. A descriptor therefore always arrives with the message that labels it
//! and can never be mistaken for another.
//!
//! The two directions are two types, [`ToWorker`] and [`ToMaster`]: neither side
//! can receive what only it sends.
//!
//! `nix` does the `sendmsg`/`recvmsg` rather than `sendfd` (which the crate does
//! not use), because receiving must pass `MSG_CMSG_CLOEXEC` (no window in which a
//! concurrent `exec` in user code inherits the descriptor) and must see
//! `MSG_TRUNC`/`MSG_CTRUNC`; `sendfd` 0.4 does neither, and sending is one
//! `sendmsg` of the same shape.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    getsockopt, recvmsg, sendmsg, socketpair, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

use identity::Identity;

pub(crate) mod descriptor;
pub(crate) mod identity;
pub(crate) mod incarnation;
pub(crate) mod tickets;

/// Private variables that mark a process as worker `k` and name its inherited
/// control socket. Removed from the environment before user code runs.
pub(crate) const ENV_WORKER: &str = "MULTINODE_WORKER";
pub(crate) const ENV_CONTROL_FD: &str = "MULTINODE_CONTROL_FD";

/// The largest control message, in bytes. Messages are small; a larger packet is a
/// protocol error.
const MAX_MESSAGE: usize = 16 * 1024;

/// A message of the protocol, in either direction.
pub(crate) trait Packet: Serialize + DeserializeOwned + std::fmt::Debug {
    /// Whether this message travels with a descriptor: the label and the descriptor
    /// are one packet.
    fn carries_fd(&self) -> bool;
}

/// What the master tells a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ToWorker {
    /// First: who this incarnation is.
    Hello(Box<Identity>),
    /// Carries the listening socket of the worker's slot.
    Listener,
    /// Carries the shared load table (a sealed memfd).
    Segment,
    /// Stop accepting, finish in-flight work, exit.
    Shutdown,
    /// Carries one end of a mesh stream whose other end went to incarnation
    /// `generation` of node `id`; `link` numbers the master's streams.
    Peer {
        id: usize,
        generation: u64,
        link: u64,
    },
    /// Node `id` is gone for good (not restarted, or scaled down).
    NodeGone { id: usize },
    /// Carries a connection the master accepted from a node that was not
    /// accepting (`reuse_port`): serve it.
    Connection,
    /// The session-ticket keys after a rotation.
    TicketKeys(tickets::TicketKeys),
}

impl Packet for ToWorker {
    fn carries_fd(&self) -> bool {
        matches!(
            self,
            ToWorker::Listener | ToWorker::Segment | ToWorker::Peer { .. } | ToWorker::Connection
        )
    }
}

/// What a worker tells the master.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ToMaster {
    /// The body runs.
    Ready,
    /// From a task of its runtime: the runtime is not stuck.
    Heartbeat,
    /// It drains on its own (it got SIGTERM): it will exit soon.
    Draining,
    /// Why it is about to exit with an error (its body's error, a panic, or a
    /// failed start).
    Failed { reason: String },
    /// Its stream to incarnation `generation` of node `id` was closed for a bad
    /// frame: a new one, please.
    Remesh { id: usize, generation: u64 },
    /// Its body took the mesh: a stream to every node, please.
    JoinMesh,
}

impl Packet for ToMaster {
    fn carries_fd(&self) -> bool {
        false
    }
}

/// One end of a control socketpair, registered with the tokio reactor.
#[derive(Debug)]
pub(crate) struct ControlSocket {
    fd: AsyncFd<OwnedFd>,
}

/// Makes a control socketpair: both ends close-on-exec and non-blocking. The
/// spawner clears close-on-exec on the worker's end in the child only.
pub(crate) fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?)
}

impl ControlSocket {
    /// Wraps an end of a control socketpair, registered with the current runtime.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Self> {
        // SAFETY: an `OwnedFd` stays open, and is the same descriptor, for as long as
        // the `AsyncFd` owns it.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(ControlSocket { fd })
    }

    /// Sends one message, with its descriptor when the message names one.
    pub(crate) async fn send<M: Packet>(
        &self,
        message: &M,
        fd: Option<BorrowedFd<'_>>,
    ) -> io::Result<()> {
        assert_eq!(
            message.carries_fd(),
            fd.is_some(),
            "{message:?} must travel with exactly the descriptor it names"
        );
        let bytes = serde_json::to_vec(message)?;
        let raw: Vec<RawFd> = fd.iter().map(|fd| fd.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
        loop {
            let mut guard = self.fd.writable().await?;
            let sent = guard.try_io(|fd| {
                sendmsg::<()>(
                    fd.as_raw_fd(),
                    &[IoSlice::new(&bytes)],
                    cmsgs,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                )
                .map_err(io::Error::from)
            });
            match sent {
                Ok(result) => return result.map(drop),
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends a message that names no descriptor at once, without the runtime: for
    /// a panic hook. Best effort: a full socket drops it.
    pub(crate) fn send_now<M: Packet>(&self, message: &M) {
        debug_assert!(!message.carries_fd());
        if let Ok(bytes) = serde_json::to_vec(message) {
            let fd = self.fd.get_ref().as_raw_fd();
            let _ = nix::sys::socket::send(fd, &bytes, MsgFlags::MSG_NOSIGNAL);
        }
    }

    /// Receives the next message and the descriptor it carries. `Ok(None)` is EOF:
    /// the other process is gone.
    pub(crate) async fn recv<M: Packet>(&self) -> io::Result<Option<(M, Option<OwnedFd>)>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let (len, fds) = loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| receive(fd.as_raw_fd(), &mut buf)) {
                Ok(result) => break result?,
                Err(_would_block) => continue,
            }
        };
        if len == 0 && fds.is_empty() {
            return Ok(None);
        }
        let message: M = serde_json::from_slice(&buf[..len]).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad control message: {e}"),
            )
        })?;
        let mut fds = fds.into_iter();
        let fd = fds.next();
        if message.carries_fd() != fd.is_some() || fds.next().is_some() {
            // The descriptors are dropped, and so closed, here.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("control message {message:?} arrived with the wrong descriptors"),
            ));
        }
        Ok(Some((message, fd)))
    }

    /// The raw descriptor, for tests of the protocol.
    #[cfg(test)]
    fn raw(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }
}

/// Takes ownership of the control socket a worker inherited as descriptor `raw`,
/// after checking that it is one: a process started with the worker variables by
/// anything but a master may name any descriptor, even its own stderr.
pub(crate) fn inherit(raw: RawFd) -> io::Result<OwnedFd> {
    if raw < 0 {
        return Err(io::Error::other("not a descriptor number"));
    }
    // SAFETY: not -1 (checked); only borrowed for the checks.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    let kind = getsockopt(&fd, sockopt::SockType).map_err(|e| match e {
        nix::errno::Errno::EBADF => io::Error::other("no such open descriptor"),
        e => io::Error::other(format!("not a socket ({e})")),
    })?;
    if kind != SockType::SeqPacket {
        return Err(io::Error::other(format!(
            "a {kind:?} socket, not the SeqPacket control socket"
        )));
    }
    // SAFETY: the checks passed, and by protocol this descriptor is ours alone.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    let flags = OFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GETFL)?);
    fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(fd)
}

/// One `recvmsg`: the bytes and every descriptor that came with them, owned so
/// that any surplus is closed.
fn receive(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    // Room for more descriptors than any message carries, so that a wrong count is
    // seen (and those descriptors closed) rather than truncated away.
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().into_iter().flatten() {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel just installed these descriptors for us.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control message truncated (too large, or too many descriptors)",
        ));
    }
    Ok((msg.bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn sockets() -> (ControlSocket, ControlSocket) {
        let (a, b) = pair().unwrap();
        (
            ControlSocket::new(a).unwrap(),
            ControlSocket::new(b).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_descriptor_arrives_with_its_message() {
        let (a, b) = sockets();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        a.send(&ToWorker::Shutdown, None).await.unwrap();
        a.send(&ToWorker::Listener, Some(listener.as_fd()))
            .await
            .unwrap();
        let (message, fd) = b.recv::<ToWorker>().await.unwrap().unwrap();
        assert_eq!(message, ToWorker::Shutdown);
        assert!(fd.is_none());
        let (message, fd) = b.recv::<ToWorker>().await.unwrap().unwrap();
        assert_eq!(message, ToWorker::Listener);
        let fd = fd.expect("the listener's descriptor");
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(
            nix::fcntl::FdFlag::from_bits_retain(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
        );
        drop(a);
        assert!(
            b.recv::<ToWorker>().await.unwrap().is_none(),
            "EOF once the other end is gone"
        );
    }

    #[tokio::test]
    async fn garbage_and_unlabelled_descriptors_are_errors() {
        let (a, b) = sockets();
        nix::sys::socket::send(a.raw(), b"not json", MsgFlags::empty()).unwrap();
        assert_eq!(
            b.recv::<ToMaster>().await.unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // A descriptor on a message that names none is refused (and closed).
        let file = std::fs::File::open("/dev/null").unwrap();
        let raw = [file.as_raw_fd()];
        let bytes = serde_json::to_vec(&ToMaster::Ready).unwrap();
        sendmsg::<()>(
            a.raw(),
            &[IoSlice::new(&bytes)],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        assert_eq!(
            b.recv::<ToMaster>().await.unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // The stream goes on after a bad message.
        a.send(&ToMaster::Ready, None).await.unwrap();
        assert_eq!(
            b.recv::<ToMaster>().await.unwrap().unwrap().0,
            ToMaster::Ready
        );
    }

    #[test]
    fn only_control_sockets_are_inherited() {
        let (stream, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = inherit(stream.as_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not the SeqPacket"), "{err}");
        let file = std::fs::File::open("/dev/null").unwrap();
        let err = inherit(file.as_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        let err = inherit(-1).unwrap_err();
        assert!(err.to_string().contains("not a descriptor number"), "{err}");
        let err = inherit(9999).unwrap_err();
        assert!(err.to_string().contains("no such open descriptor"), "{err}");
        let (ours, theirs) = pair().unwrap();
        let raw = std::os::fd::IntoRawFd::into_raw_fd(theirs);
        inherit(raw).unwrap();
        drop(ours);
    }
}
