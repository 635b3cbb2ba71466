//! Descriptors a process inherits, named by a variable (an upgrade's sockets,
//! a worker's control socket): checked while only borrowed, so that a wrong
//! number (stderr, say) is refused with a line and never closed.

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, SockRef, Type};

/// What an inherited descriptor must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expected {
    /// A listening TCP socket (IPv4 or IPv6).
    TcpListener,
    /// A connected Unix stream socket.
    UnixStream,
}

/// Takes descriptor `raw` as this process's own, once it is checked: not 0,
/// 1 or 2, not `claimed` already, open, and a socket of the `expected` kind.
/// It is then close-on-exec and added to `claimed`. The error says why, for a
/// line that names the variable.
pub(crate) fn claim(
    raw: RawFd,
    claimed: &mut Vec<RawFd>,
    expected: Expected,
) -> Result<OwnedFd, String> {
    if (0..=2).contains(&raw) {
        return Err(format!(
            "descriptor {raw} is standard input, output or error"
        ));
    }
    if raw < 0 {
        return Err(format!("{raw} is not a descriptor"));
    }
    if claimed.contains(&raw) {
        return Err(format!("descriptor {raw} is named twice"));
    }
    // SAFETY: only borrowed for the checks; `fcntl` first tells whether it is open.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD)
        .map_err(|_| format!("descriptor {raw} is not open"))?;
    let socket = SockRef::from(&fd);
    let kind = socket
        .r#type()
        .map_err(|_| format!("descriptor {raw} is not a socket"))?;
    let domain = socket
        .domain()
        .map_err(|_| format!("descriptor {raw} is not a socket"))?;
    let fits = match expected {
        Expected::TcpListener => {
            kind == Type::STREAM
                && (domain == Domain::IPV4 || domain == Domain::IPV6)
                && socket.is_listener().unwrap_or(false)
        }
        Expected::UnixStream => kind == Type::STREAM && domain == Domain::UNIX,
    };
    if !fits {
        let what = match expected {
            Expected::TcpListener => "a listening TCP socket",
            Expected::UnixStream => "a Unix stream socket",
        };
        return Err(format!("descriptor {raw} is not {what}"));
    }
    socket
        .set_cloexec(true)
        .map_err(|e| format!("descriptor {raw}: {e}"))?;
    claimed.push(raw);
    // SAFETY: checked above; by protocol the variable gives it to this
    // process alone, and it is claimed once (`claimed`).
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, IntoRawFd};

    use super::*;

    #[test]
    fn only_an_open_socket_of_the_right_kind_is_claimed_and_once() {
        let mut claimed = Vec::new();
        for std in 0..=2 {
            let err = claim(std, &mut claimed, Expected::TcpListener).unwrap_err();
            assert!(err.contains("standard"), "{err}");
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .into_raw_fd();
        let fd = claim(listener, &mut claimed, Expected::TcpListener).unwrap();
        let err = claim(listener, &mut claimed, Expected::TcpListener).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        let file = std::fs::File::open("/dev/null").unwrap();
        let err = claim(file.as_raw_fd(), &mut claimed, Expected::TcpListener).unwrap_err();
        assert!(err.contains("not a socket"), "{err}");
        let (unix, _other) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = claim(unix.as_raw_fd(), &mut claimed, Expected::TcpListener).unwrap_err();
        assert!(err.contains("not a listening TCP socket"), "{err}");
        let err = claim(100_000, &mut claimed, Expected::UnixStream).unwrap_err();
        assert!(err.contains("not open"), "{err}");
        drop(fd);
    }
}
