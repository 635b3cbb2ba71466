//! A worker's process as the master holds it: started with `posix_spawn`, and
//! waited for through its pidfd (or SIGCHLD where there is none).
//!
//! `posix_spawn` (a `vfork`), not `fork`: the master starts its workers one after
//! the other, and with `fork` each start copied the master's page tables, which
//! grow with the number of workers. No code of ours runs in the child before its
//! exec: the descriptor it keeps and its signal mask are attributes of the spawn,
//! and the worker arms its death signal itself (`roles::environment`).

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use nix::libc;
use nix::spawn::{posix_spawn, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;

/// The master's environment, read once, as its arguments are: every worker,
/// the first and one restarted later alike, starts with it, and no start
/// reads and copies it again.
pub(crate) struct Environment(Vec<CString>);

impl Environment {
    pub fn of_this_process() -> Environment {
        let entries = std::env::vars_os()
            .map(|(key, value)| [key.as_bytes(), b"=", value.as_bytes()].concat())
            // An entry holds no NUL: the kernel cuts them at the first.
            .filter_map(|bytes| CString::new(bytes).ok());
        Environment(entries.collect())
    }
}

/// What a child is started with beyond the master's own environment.
pub(crate) struct Spawn<'a> {
    pub exe: &'a Path,
    pub args: &'a [OsString],
    pub base: &'a Environment,
    /// Variables added to (or replacing those of) `base`.
    pub env: &'a [(&'a str, String)],
    /// The one descriptor (close-on-exec in the master) the child inherits, at
    /// the same number.
    pub keep: RawFd,
    /// Blocked from the start of the child's program until it unblocks them.
    pub blocked: SigSet,
}

/// A started child that nobody else reaps: its pid stays its own until [`wait`]
/// returns, so signalling it by pid is safe until then.
///
/// [`wait`]: Child::wait
pub(crate) struct Child {
    pid: Pid,
    exit: Exit,
}

/// What tells that a child may have exited.
enum Exit {
    /// Its pidfd, readable once it has.
    Pidfd(AsyncFd<OwnedFd>),
    /// Every SIGCHLD, where there is no pidfd: Linux before 5.3, a seccomp
    /// filter that forbids it, valgrind.
    Sigchld(tokio::signal::unix::Signal),
}

impl Child {
    pub fn spawn(spawn: Spawn<'_>) -> io::Result<Child> {
        let mut actions = PosixSpawnFileActions::init()?;
        let null = std::fs::File::open("/dev/null")?;
        actions.add_dup2(null.as_raw_fd(), 0)?;
        // dup2 onto itself clears close-on-exec (POSIX 2024; glibc, musl).
        actions.add_dup2(spawn.keep, spawn.keep)?;
        let mut attr = PosixSpawnAttr::init()?;
        attr.set_sigmask(&spawn.blocked)?;
        // The master ignores SIGPIPE (Rust's runtime does); std gives children the
        // default back, and so do we.
        let mut default = SigSet::empty();
        default.add(Signal::SIGPIPE);
        attr.set_sigdefault(&default)?;
        attr.set_flags(
            PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
        )?;
        let args = std::iter::once(spawn.exe.as_os_str())
            .chain(spawn.args.iter().map(OsString::as_os_str))
            .map(c_string)
            .collect::<io::Result<Vec<_>>>()?;
        let added = added(spawn.env)?;
        let pid = posix_spawn(
            spawn.exe,
            &actions,
            &attr,
            &args,
            &environment(spawn.base, spawn.env, &added),
        )?;
        drop(null);
        match pidfd(pid).or_else(|_| sigchld().map(Exit::Sigchld)) {
            Ok(exit) => Ok(Child { pid, exit }),
            Err(error) => {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(pid, None);
                Err(error)
            }
        }
    }

    pub fn id(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Sends SIGKILL (it may have exited, not yet reaped: then nothing happens).
    pub fn kill(&self) -> io::Result<()> {
        Ok(nix::sys::signal::kill(self.pid, Signal::SIGKILL)?)
    }

    /// Waits until it exits, and reaps it. Cancel-safe: it reaps only between
    /// two awaits.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let pid = self.pid;
        loop {
            match &mut self.exit {
                Exit::Pidfd(pidfd) => {
                    let mut ready = pidfd.readable().await?;
                    match reap(pid)? {
                        Some(status) => return Ok(status),
                        None => ready.clear_ready(),
                    }
                }
                Exit::Sigchld(signal) => {
                    // Before each wait: it may have exited before the first.
                    if let Some(status) = reap(pid)? {
                        return Ok(status);
                    }
                    // Never `None`: tokio's signal senders live in a static.
                    signal.recv().await;
                }
            }
        }
    }
}

fn pidfd(pid: Pid) -> io::Result<Exit> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor pidfd_open just returned, owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
    // SAFETY: an `OwnedFd` stays open, and is the same descriptor, for as long
    // as the `AsyncFd` owns it.
    Ok(Exit::Pidfd(unsafe { AsyncFd::register(pidfd) }?))
}

fn sigchld() -> io::Result<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::child())
}

/// Its exit status, once it has exited (then it is reaped).
fn reap(pid: Pid) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    // SAFETY: waitpid writes the status into a local; WNOHANG never blocks.
    match unsafe { libc::waitpid(pid.as_raw(), &mut status, libc::WNOHANG) } {
        0 => Ok(None),
        -1 => Err(io::Error::last_os_error()),
        _ => Ok(Some(ExitStatus::from_raw(status))),
    }
}

/// The entries `env` adds, as the child gets them.
fn added(env: &[(&str, String)]) -> io::Result<Vec<CString>> {
    env.iter()
        .map(|(key, value)| CString::new(format!("{key}={value}")).map_err(io::Error::other))
        .collect()
}

/// `base` without the variables `env` names, then `added` (`env`'s entries).
fn environment<'a>(
    base: &'a Environment,
    env: &[(&str, String)],
    added: &'a [CString],
) -> Vec<&'a CStr> {
    let replaced = |entry: &CStr| {
        let entry = entry.to_bytes();
        env.iter().any(|(key, _)| {
            entry.len() > key.len() && entry.starts_with(key.as_bytes()) && entry[key.len()] == b'='
        })
    };
    base.0
        .iter()
        .map(CString::as_c_str)
        .filter(|entry| !replaced(entry))
        .chain(added.iter().map(CString::as_c_str))
        .collect()
}

fn c_string(text: &OsStr) -> io::Result<CString> {
    CString::new(text.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{text:?} holds a NUL byte"),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    fn sh(script: &str) -> Vec<OsString> {
        vec!["-c".into(), script.into()]
    }

    #[tokio::test]
    async fn a_child_keeps_one_descriptor_starts_with_the_mask_and_reads_null() {
        let (keep, other) = UnixStream::pair().unwrap(); // both close-on-exec
        let out = std::env::temp_dir().join(format!("multinode-child-{}", std::process::id()));
        // cp, not sh: a shell may set its own mask.
        let script = format!(
            "test -e /proc/self/fd/$KEEP || exit 3; \
             test -e /proc/self/fd/{other} && exit 4; \
             read line && exit 5; \
             exec cp /proc/self/status {out}",
            other = other.as_raw_fd(),
            out = out.display(),
        );
        let mut blocked = SigSet::empty();
        blocked.add(Signal::SIGUSR1);
        let mut child = Child::spawn(Spawn {
            exe: Path::new("/bin/sh"),
            args: &sh(&script),
            base: &Environment::of_this_process(),
            env: &[("KEEP", keep.as_raw_fd().to_string())],
            keep: keep.as_raw_fd(),
            blocked,
        })
        .unwrap();
        assert!(child.wait().await.unwrap().success());
        let status = std::fs::read_to_string(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        // SIGUSR1 is 10: bit 9.
        assert!(status.contains("SigBlk:\t0000000000000200"), "{status}");
    }

    #[tokio::test]
    async fn kill_ends_a_child_and_wait_says_by_what() {
        let (keep, _) = UnixStream::pair().unwrap();
        let mut child = Child::spawn(Spawn {
            exe: Path::new("/bin/sleep"),
            args: &["10".into()],
            base: &Environment::of_this_process(),
            env: &[],
            keep: keep.as_raw_fd(),
            blocked: SigSet::empty(),
        })
        .unwrap();
        child.kill().unwrap();
        assert_eq!(child.wait().await.unwrap().signal(), Some(9));
    }

    #[tokio::test]
    async fn without_a_pidfd_sigchld_tells_of_the_exit() {
        let (keep, _) = UnixStream::pair().unwrap();
        let spawn = |script: &str| {
            let mut child = Child::spawn(Spawn {
                exe: Path::new("/bin/sh"),
                args: &sh(script),
                base: &Environment::of_this_process(),
                env: &[],
                keep: keep.as_raw_fd(),
                blocked: SigSet::empty(),
            })
            .unwrap();
            child.exit = Exit::Sigchld(sigchld().unwrap());
            child
        };
        let mut quick = spawn("exit 3");
        let mut slow = spawn("sleep 10");
        assert_eq!(quick.wait().await.unwrap().code(), Some(3));
        slow.kill().unwrap();
        assert_eq!(slow.wait().await.unwrap().signal(), Some(9));
    }

    #[test]
    fn an_added_variable_replaces_the_one_of_that_name_only() {
        let base = Environment(
            ["A=1", "AB=2", "B=3", "A"]
                .map(|entry| CString::new(entry).unwrap())
                .to_vec(),
        );
        let env = [("A", "new".to_string())];
        let added = added(&env).unwrap();
        let entries: Vec<_> = environment(&base, &env, &added)
            .iter()
            .map(|entry| entry.to_str().unwrap())
            .collect();
        assert_eq!(entries, ["AB=2", "B=3", "A", "A=new"]);
    }

    #[test]
    fn a_program_that_does_not_exist_is_an_error_naming_nothing_started() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let (keep, _) = UnixStream::pair().unwrap();
        let error = Child::spawn(Spawn {
            exe: Path::new("/nonexistent/multinode"),
            args: &[],
            base: &Environment::of_this_process(),
            env: &[],
            keep: keep.as_raw_fd(),
            blocked: SigSet::empty(),
        })
        .err()
        .unwrap();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }
}
