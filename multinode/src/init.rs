//! As PID 1 (a container started without `--init`), the program would inherit
//! every orphan of the container and leave them zombies, and the kernel would
//! drop the signals it has no handler for. So PID 1 starts the master as its
//! child (fork, then exec of the same binary) and stays a minimal init, as tini or `docker --init`:
//! it forwards the operator's signals to the master, reaps every child, and
//! exits as the master did. The master's own children (its workers, and those
//! of its body) stay the master's to wait for.
//!
//! After an upgrade the new master is the one to follow: the old master writes
//! its pid on a pipe (`announce`) at the hand-over, and PID 1, woken by SIGIO,
//! follows it at once: a stop that comes while the old tree drains reaches the
//! new master. The new master inherits the pipe's writing end for the next
//! upgrade.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, ForkResult, Pid};

/// The variable that names the pipe's writing end in a new master.
const ENV_INIT_FD: &str = "MULTINODE_INIT_FD";

/// The master's end of the pipe to PID 1, when PID 1 is multinode's init.
static TO_INIT: OnceLock<OwnedFd> = OnceLock::new();

/// Tells PID 1 (if it is multinode's init) that `pid` is the master now.
pub(crate) fn announce(pid: u32) {
    if let Some(Ok(fd)) = TO_INIT.get().map(OwnedFd::try_clone) {
        let _ = std::fs::File::from(fd).write_all(format!("{pid}\n").as_bytes());
    }
}

/// The pipe's writing end and the variable naming it, for a new master.
pub(crate) fn for_new_master() -> Option<(RawFd, (&'static str, std::ffi::OsString))> {
    let fd = TO_INIT.get()?.as_raw_fd();
    Some((fd, (ENV_INIT_FD, fd.to_string().into())))
}

/// Takes the pipe an old master handed down, if any. Must run while the
/// process has one thread.
pub(crate) fn take_inherited() {
    let fd = std::env::var(ENV_INIT_FD)
        .ok()
        .and_then(|fd| fd.parse::<RawFd>().ok());
    std::env::remove_var(ENV_INIT_FD);
    if let Some(fd) = fd.filter(|fd| *fd > 2) {
        // SAFETY: the old master passed descriptor `fd`, named only here.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = nix::fcntl::fcntl(
            &owned,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        let _ = TO_INIT.set(owned);
    }
}

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

/// Returns at once unless this process is PID 1; as PID 1, never returns: the
/// master is a child that executes the binary again, and PID 1 stays its init.
pub(crate) fn serve_as_init_if_pid_1() {
    if getpid() != Pid::from_raw(1) {
        return;
    }
    let mut waited = SigSet::empty();
    waited.add(Signal::SIGCHLD);
    waited.add(Signal::SIGIO);
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
    let Ok((from_master, to_init)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
        return;
    };
    // SAFETY: the process has one thread here (nothing has started one yet), and
    // the child only executes the binary again.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(from_master);
            let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
            for signal in waited.iter() {
                // SAFETY: restoring the default disposition.
                let _ = unsafe { sigaction(signal, &default) };
            }
            let _ = previous.thread_set_mask();
            // The master starts from `exec`, as every multinode process does
            // (no fork without exec), with the pipe's end named for it.
            let _ = nix::fcntl::fcntl(
                &to_init,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            );
            std::env::set_var(ENV_INIT_FD, to_init.as_raw_fd().to_string());
            let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
            use std::os::unix::process::CommandExt;
            let error = std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .exec();
            eprintln!("multinode: PID 1 cannot start the master: {error}");
            std::process::exit(1);
        }
        Ok(ForkResult::Parent { child }) => {
            drop(to_init);
            // Non-blocking, and SIGIO to this process when a pid is written.
            use nix::fcntl::{fcntl, FcntlArg, OFlag};
            let _ = fcntl(
                &from_master,
                FcntlArg::F_SETFL(OFlag::O_NONBLOCK | OFlag::O_ASYNC),
            );
            // SAFETY: F_SETOWN on a descriptor this process owns; plain ioctl-like call.
            let _ = unsafe {
                nix::libc::fcntl(
                    from_master.as_raw_fd(),
                    nix::libc::F_SETOWN,
                    getpid().as_raw(),
                )
            };
            std::process::exit(init(child, &waited, from_master.into()))
        }
        Err(error) => {
            tracing::warn!("PID 1: cannot fork the master ({error}); orphans will not be reaped");
            let _ = previous.thread_set_mask();
        }
    }
}

/// PID 1's loop: forwards signals to `master`, reaps every child, follows a
/// new master as soon as it is announced, and returns the master's exit code
/// once it is gone (and no new master took its place).
fn init(mut master: Pid, waited: &SigSet, mut announced: std::fs::File) -> i32 {
    loop {
        match waited.wait() {
            Ok(Signal::SIGIO) => {
                if let Some(next) = successor(&mut announced, master) {
                    master = next;
                }
            }
            Ok(Signal::SIGCHLD) => {
                // An announcement whose SIGIO has not been taken yet comes first.
                if let Some(next) = successor(&mut announced, master) {
                    master = next;
                }
                let (mine, last) = reap(master);
                // The master exited; or, followed before its parent (the old
                // master) exited, it was that parent's to reap, and is gone.
                let gone = mine.is_some() || kill(master, None).is_err();
                if !gone {
                    continue;
                }
                match successor(&mut announced, master) {
                    Some(next) => master = next,
                    None => return mine.or(last).unwrap_or(0),
                }
            }
            Ok(signal) => {
                let _ = kill(master, signal);
            }
            Err(_) => {}
        }
    }
}

/// The last master announced on the pipe, if it is another live process.
fn successor(announced: &mut std::fs::File, master: Pid) -> Option<Pid> {
    let mut news = Vec::new();
    let _ = announced.read_to_end(&mut news); // what is there: WouldBlock after
    let news = String::from_utf8_lossy(&news);
    let next = Pid::from_raw(news.lines().rev().find_map(|l| l.parse::<i32>().ok())?);
    (next != master && kill(next, None).is_ok()).then_some(next)
}

/// Reaps every child that exited: the master's exit code if it was one, and
/// the last exit code seen.
fn reap(master: Pid) -> (Option<i32>, Option<i32>) {
    let (mut mine, mut last) = (None, None);
    loop {
        let (pid, code) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, status)) => (pid, status),
            Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, 128 + signal as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return (mine, last),
            Ok(_) => continue,
        };
        last = Some(code);
        if pid == master {
            mine = Some(code);
        }
    }
}
