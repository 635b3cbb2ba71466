//! Listening sockets: made for a slot or shared, labelled with the slot they
//! serve when they pass to another process, and checked when they arrive.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;

use socket2::{Domain, Protocol, Socket, Type};

/// A listening socket as handed over: `None` is the one socket of every node.
pub(crate) type Labelled<T> = (Option<usize>, T);

pub(crate) fn reuse_port_listener(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = socket(addr, true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

pub(crate) fn socket(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    // socket2 creates sockets close-on-exec: a worker gets its listener only as an
    // SCM_RIGHTS message, never by inheritance.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Takes a descriptor received from the master as this node's listener, after
/// checking that it is a listening TCP socket. It arrived close-on-exec
/// (`MSG_CMSG_CLOEXEC`); that is checked too.
pub(crate) fn adopt(fd: OwnedFd) -> io::Result<TcpListener> {
    let socket = Socket::from(fd);
    let is_tcp = socket.r#type()? == Type::STREAM
        && matches!(socket.domain()?, d if d == Domain::IPV4 || d == Domain::IPV6);
    if !is_tcp || !socket.is_listener()? {
        return Err(io::Error::other(
            "the descriptor received as listener is not a listening TCP socket",
        ));
    }
    socket.set_cloexec(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
