//! Socket activation: a listening socket passed by systemd (a `.socket`
//! unit) or `systemd-socket-activate`, as `LISTEN_FDS`/`LISTEN_PID` name it,
//! served instead of binding. With a socket unit the port stays open while the
//! service restarts: connections wait in the socket's queue meanwhile.

use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd};

/// The variables of socket activation, removed before anything else runs so
/// that no child process of the body inherits them.
const VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Takes the socket passed to this process, if any, and clears the variables.
/// Must run while the process has one thread (it changes the environment).
/// An error is one line naming `LISTEN_FDS`.
pub(crate) fn take() -> Result<Option<TcpListener>, String> {
    let passed = sd_notify::listen_fds();
    let count = std::env::var("LISTEN_FDS").unwrap_or_default();
    for variable in VARIABLES {
        std::env::remove_var(variable);
    }
    let mut fds = passed.map_err(|e| format!("LISTEN_FDS={count:?}: {e}"))?;
    let fd = match (fds.next(), fds.len()) {
        (None, _) => return Ok(None),
        (Some(fd), 0) => fd,
        (Some(_), more) => {
            return Err(format!(
                "LISTEN_FDS={}: multinode serves one socket; pass one (one ListenStream= in the socket unit)",
                more + 1
            ))
        }
    };
    // SAFETY: systemd's protocol hands this process descriptor `fd` (3) to own;
    // nothing else in this process took it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    crate::listener::socket::adopt(owned).map(Some).map_err(|_| {
        format!("LISTEN_FDS=1: descriptor {fd} passed by the service manager is not a listening TCP socket")
    })
}
