//! The master's signals, as the supervisor reads them.

use std::io;

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::machine::Command;

/// A signal to the master, by meaning.
pub(crate) enum Received {
    Command(Command),
    /// SIGTTIN: one more node (its listener must be opened first).
    AddNode,
}

/// The signals the master handles, installed once.
pub(crate) struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    more: Signal,
    fewer: Signal,
    upgrade: Signal,
}

impl Signals {
    pub fn install() -> io::Result<Self> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
            more: signal(SignalKind::from_raw(nix::libc::SIGTTIN))?,
            fewer: signal(SignalKind::from_raw(nix::libc::SIGTTOU))?,
            upgrade: signal(SignalKind::user_defined2())?,
        })
    }

    /// The next signal.
    pub async fn recv(&mut self) -> Received {
        tokio::select! {
            _ = self.interrupt.recv() => Received::Command(Command::Interrupt),
            _ = self.terminate.recv() => Received::Command(Command::Terminate),
            _ = self.hangup.recv() => Received::Command(Command::Reload),
            _ = self.more.recv() => Received::AddNode,
            _ = self.fewer.recv() => Received::Command(Command::RemoveNode),
            _ = self.upgrade.recv() => Received::Command(Command::Upgrade),
        }
    }
}
