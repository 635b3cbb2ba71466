//! As PID 1 (a container started without `--init`), the program would inherit
//! every orphan of the container and leave them zombies, and the kernel would
//! drop the signals it has no handler for. So PID 1 forks: the child goes on
//! as the master, and PID 1 stays a minimal init, as tini or `docker --init`:
//! it forwards the operator's signals to the master, reaps every child, and
//! exits as the master did. The master's own children (its workers, and those
//! of its body) stay the master's to wait for.

use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, ForkResult, Pid};

/// What PID 1 passes on to the master.
const FORWARDED: [Signal; 8] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

extern "C" fn noop(_: nix::libc::c_int) {}

/// Returns at once unless this process is PID 1; as PID 1, returns in the
/// forked master, and never in PID 1 itself.
pub(crate) fn serve_as_init_if_pid_1() {
    if getpid() != Pid::from_raw(1) {
        return;
    }
    let mut waited = SigSet::empty();
    waited.add(Signal::SIGCHLD);
    FORWARDED.iter().for_each(|s| waited.add(*s));
    // A handler, so that the kernel does not drop them at PID 1, and blocked,
    // so that they wait for `sigwait`; the master gets its own mask back.
    let handler = SigAction::new(
        SigHandler::Handler(noop),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    let Ok(previous) = waited.thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK) else {
        return;
    };
    for signal in waited.iter() {
        // SAFETY: `noop` is async-signal-safe: it does nothing.
        let _ = unsafe { sigaction(signal, &handler) };
    }
    // SAFETY: the process has one thread here (nothing has started one yet), so
    // the child may go on as the master.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
            for signal in waited.iter() {
                // SAFETY: restoring the default disposition.
                let _ = unsafe { sigaction(signal, &default) };
            }
            let _ = previous.thread_set_mask();
        }
        Ok(ForkResult::Parent { child }) => std::process::exit(init(child, &waited)),
        Err(error) => {
            tracing::warn!("PID 1: cannot fork the master ({error}); orphans will not be reaped");
            let _ = previous.thread_set_mask();
        }
    }
}

/// PID 1's loop: forwards signals to `master`, reaps every child, and returns
/// the master's exit code once it is gone.
fn init(master: Pid, waited: &SigSet) -> i32 {
    loop {
        match waited.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(code) = reap(master) {
                    return code;
                }
            }
            Ok(signal) => {
                let _ = kill(master, signal);
            }
            Err(_) => {}
        }
    }
}

/// Reaps every child that exited; the master's exit code if it was one.
fn reap(master: Pid) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, status)) if pid == master => code = Some(status),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == master => {
                code = Some(128 + signal as i32)
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return code,
            Ok(_) => {}
        }
    }
}
