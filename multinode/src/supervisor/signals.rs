//! The master's signals, as the supervisor reads them, and those a worker
//! leaves to the master.

use std::io;

use nix::sys::signal::{SigSet, Signal as Number};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::machine::Command;

/// The signals that are the master's alone: a worker that gets one too (`pkill
/// NAME`, `kill -SIG -PGID`, `systemctl kill`) does nothing with it. A worker
/// starts with them blocked (the master starts it so),
/// sets a handler that does nothing, then unblocks them: none can kill or stop
/// it at any point, and a child process a body starts gets the defaults back.
pub(crate) const MASTERS_ONLY: [Number; 6] = [
    Number::SIGHUP,
    Number::SIGUSR1,
    Number::SIGUSR2,
    Number::SIGTTIN,
    Number::SIGTTOU,
    Number::SIGWINCH,
];

/// [`MASTERS_ONLY`] as a set, for a signal mask.
pub(crate) fn masters_only() -> SigSet {
    let mut set = SigSet::empty();
    MASTERS_ONLY.iter().for_each(|signal| set.add(*signal));
    set
}

/// In a worker, before anything else runs: [`MASTERS_ONLY`] do nothing from now
/// on, and those that came meanwhile are taken.
pub(crate) fn leave_to_the_master() -> nix::Result<()> {
    use nix::sys::signal::{
        pthread_sigmask, sigaction, SaFlags, SigAction, SigHandler, SigmaskHow,
    };
    extern "C" fn nothing(_: nix::libc::c_int) {}
    let action = SigAction::new(
        SigHandler::Handler(nothing),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in MASTERS_ONLY {
        // SAFETY: the handler does nothing, so it is async-signal-safe; a
        // handler (unlike SIG_IGN) is reset to the default by exec, so a body's
        // child processes are not affected.
        unsafe { sigaction(signal, &action) }?;
    }
    pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&masters_only()), None)
}

/// A signal to the master, by meaning.
pub(crate) enum Received {
    Command(Command),
    /// SIGTTIN: one more node (its listener must be opened first).
    AddNode,
    /// SIGUSR1: a line saying where the server stands (the log goes to
    /// stderr: there is no file to reopen, as nginx and gunicorn do on it).
    Status,
}

/// The signals the master handles, installed once.
pub(crate) struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    more: Signal,
    fewer: Signal,
    upgrade: Signal,
    quit: Signal,
    status: Signal,
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
            quit: signal(SignalKind::quit())?,
            status: signal(SignalKind::user_defined1())?,
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
            // nginx's graceful stop.
            _ = self.quit.recv() => Received::Command(Command::Terminate),
            _ = self.status.recv() => Received::Status,
        }
    }
}
