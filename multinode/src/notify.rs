//! systemd's notifications (`Type=notify`): the master tells the service
//! manager when every node is ready, when a reload starts and ends, when it
//! stops, and feeds its watchdog. The messages are sd-notify's; the socket is
//! taken from the environment at start and the variables cleared, so that no
//! worker, and no child process of a body, can speak for the service.

use std::ffi::OsString;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::supervisor::notice::Notice;

/// The variables of the protocol, cleared at start.
const VARIABLES: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// The service manager, as the master's environment named it.
#[derive(Debug, Default)]
pub(crate) struct Systemd {
    socket: Option<OsString>,
    watchdog: Option<Duration>,
}

impl Systemd {
    /// Reads and clears the variables. Must run while the process has one
    /// thread (it changes the environment).
    pub(crate) fn take() -> Self {
        let systemd = Systemd {
            socket: std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty()),
            watchdog: sd_notify::watchdog_enabled(),
        };
        for variable in VARIABLES {
            std::env::remove_var(variable);
        }
        systemd
    }

    /// The variables for a new master (an upgrade), which speaks for the
    /// service once it is its main process.
    pub(crate) fn env(&self) -> Vec<(&'static str, OsString)> {
        let socket = self.socket.clone().map(|s| ("NOTIFY_SOCKET", s));
        let watchdog = self
            .watchdog
            .map(|t| ("WATCHDOG_USEC", t.as_micros().to_string().into()));
        socket.into_iter().chain(watchdog).collect()
    }

    /// How often the supervision loop must feed the watchdog: half its
    /// timeout, as `sd_watchdog_enabled(3)` advises.
    pub(crate) fn watchdog_every(&self) -> Option<Duration> {
        self.socket.as_ref().and(self.watchdog).map(|t| t / 2)
    }

    /// `WATCHDOG=1`: the supervision loop runs.
    pub(crate) fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// Tells where the server stands, with a line a person reads in
    /// `systemctl status`.
    pub(crate) fn notice(&self, notice: &Notice) {
        if self.socket.is_none() {
            return;
        }
        match notice {
            Notice::Ready { nodes, generation } => {
                let status = format!("{nodes} nodes serving, generation {generation}");
                self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
            }
            Notice::Reloading { nodes } => {
                let status = format!("reloading: replacing {nodes} nodes one at a time");
                // systemd >= 253 wants the time with RELOADING=1.
                let now = NotifyState::monotonic_usec_now();
                let mut states = vec![NotifyState::Reloading, NotifyState::Status(&status)];
                states.extend(now.ok());
                self.send(&states);
            }
            Notice::ReloadStopped { slot } => {
                let status = format!(
                    "reload stopped: node {slot}'s replacement failed; the old processes serve on"
                );
                self.send(&[NotifyState::Ready, NotifyState::Status(&status)]);
            }
            Notice::Upgraded { pid } => {
                let status = format!("upgraded: the new master is pid {pid}");
                self.send(&[NotifyState::MainPid(*pid), NotifyState::Status(&status)]);
            }
            Notice::Stopping { nodes } => {
                let status = format!("stopping {nodes} nodes");
                self.send(&[NotifyState::Stopping, NotifyState::Status(&status)]);
            }
        }
    }

    /// One datagram, to the socket the environment named (a path, or an
    /// abstract name after `@`); a failure is logged, never fatal.
    fn send(&self, states: &[NotifyState]) {
        let Some(socket) = &self.socket else { return };
        let message: String = states.iter().map(|s| format!("{s}\n")).collect();
        if let Err(error) = send_to(socket, message.as_bytes()) {
            tracing::warn!("cannot notify systemd on {socket:?}: {error}");
        }
    }
}

fn send_to(socket: &OsString, message: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let datagram = UnixDatagram::unbound()?;
    let path = socket.as_bytes();
    match path.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            datagram.send_to_addr(message, &address)?;
        }
        None => {
            datagram.send_to(message, std::path::Path::new(socket))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_one_datagram_a_person_can_read() {
        let dir =
            std::env::temp_dir().join(format!("multinode-notify-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("socket");
        let listener = UnixDatagram::bind(&path).unwrap();
        let systemd = Systemd {
            socket: Some(path.clone().into()),
            watchdog: Some(Duration::from_secs(4)),
        };
        systemd.notice(&Notice::Ready {
            nodes: 4,
            generation: 3,
        });
        let mut buffer = [0u8; 512];
        let n = listener.recv(&mut buffer).unwrap();
        assert_eq!(
            &buffer[..n],
            b"READY=1\nSTATUS=4 nodes serving, generation 3\n"
        );
        assert_eq!(systemd.watchdog_every(), Some(Duration::from_secs(2)));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
