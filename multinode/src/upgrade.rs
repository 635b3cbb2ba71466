//! The whole-binary upgrade (SIGUSR2), as nginx does it: the master starts a
//! new master from the executable's path, which inherits every listening
//! socket (their descriptors named in `MULTINODE_LISTENERS`) and a socket back
//! to the old master (`MULTINODE_UPGRADE_FD`). Once every node of the new tree
//! is ready, the new master says so on that socket, and the old master drains
//! its own tree and exits. The port never closes: both trees hold the same
//! sockets meanwhile.
//!
//! The new master is not tied to the old one (no parent-death signal, no
//! shared pipe it needs): when the old master exits, the kernel reparents it to
//! the old master's subreaper or PID 1 (systemd, or multinode's own init in a
//! container), and systemd is told its pid (`MAINPID=`).

use std::ffi::OsString;
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use crate::control::descriptor::{claim, Expected};
use crate::listener::socket::Labelled;

/// The inherited listening sockets: `shared:FD`, or `SLOT:FD,…` with one
/// socket per node (`reuse_port`), in the order of their `SO_REUSEPORT` group.
const ENV_LISTENERS: &str = "MULTINODE_LISTENERS";
/// The new master's end of its socket to the old one.
const ENV_UPGRADE_FD: &str = "MULTINODE_UPGRADE_FD";
/// The admin listener, if the old master had one.
const ENV_ADMIN_FD: &str = "MULTINODE_ADMIN_FD";
/// What the new master writes once every node is ready.
const READY: &[u8] = b"ready\n";

/// What a new master got from the old one.
pub(crate) struct Inherited {
    pub sockets: Vec<Labelled<TcpListener>>,
    pub admin: Option<TcpListener>,
    pub old_master: OldMaster,
}

/// The new master's line to the old one.
pub(crate) struct OldMaster(UnixStream);

impl OldMaster {
    /// Every node of this tree is ready: the old master may drain its own.
    pub(crate) fn ready(mut self) {
        if let Err(error) = self.0.write_all(READY) {
            tracing::warn!("upgrade: cannot tell the old master this one is ready: {error}");
        }
    }
}

/// Takes what the old master handed over, if this master was started by an
/// upgrade, and clears the variables. Must run while the process has one thread.
pub(crate) fn take() -> Result<Option<Inherited>, String> {
    crate::init::take_inherited();
    let listeners = std::env::var(ENV_LISTENERS);
    let back = std::env::var(ENV_UPGRADE_FD);
    let admin = std::env::var(ENV_ADMIN_FD);
    for variable in [ENV_LISTENERS, ENV_UPGRADE_FD, ENV_ADMIN_FD] {
        std::env::remove_var(variable);
    }
    let (Ok(listeners), Ok(back)) = (listeners, back) else {
        return Ok(None);
    };
    let not_ours =
        |what: &str| format!("{what}; this process was not started by a multinode upgrade");
    let back_fd: RawFd = back
        .parse()
        .map_err(|_| not_ours(&format!("{ENV_UPGRADE_FD}={back:?}: not a descriptor")))?;
    // Every descriptor is checked before any is owned: a wrong one is never closed.
    let mut claimed = Vec::new();
    let mut sockets = Vec::new();
    for label in listeners.split(',') {
        let (slot, fd) = parse_label(label)
            .ok_or_else(|| not_ours(&format!("{ENV_LISTENERS}={listeners:?}: malformed")))?;
        let owned = claim(fd, &mut claimed, Expected::TcpListener)
            .map_err(|e| not_ours(&format!("{ENV_LISTENERS}={listeners:?}: {e}")))?;
        let socket = crate::listener::socket::adopt(owned)
            .map_err(|e| not_ours(&format!("{ENV_LISTENERS}: descriptor {fd}: {e}")))?;
        sockets.push((slot, socket));
    }
    let admin = match admin.ok() {
        Some(value) => {
            let fd = value
                .parse::<RawFd>()
                .map_err(|_| not_ours(&format!("{ENV_ADMIN_FD}={value:?}: not a descriptor")))?;
            let owned = claim(fd, &mut claimed, Expected::TcpListener)
                .map_err(|e| not_ours(&format!("{ENV_ADMIN_FD}={fd}: {e}")))?;
            let socket = crate::listener::socket::adopt(owned)
                .map_err(|e| not_ours(&format!("{ENV_ADMIN_FD}={fd}: {e}")))?;
            Some(socket)
        }
        None => None,
    };
    let owned = claim(back_fd, &mut claimed, Expected::UnixStream)
        .map_err(|e| not_ours(&format!("{ENV_UPGRADE_FD}={back_fd}: {e}")))?;
    let stream = UnixStream::from(owned);
    stream
        .set_nonblocking(false)
        .map_err(|e| not_ours(&format!("{ENV_UPGRADE_FD}={back_fd}: {e}")))?;
    Ok(Some(Inherited {
        sockets,
        admin,
        old_master: OldMaster(stream),
    }))
}

fn parse_label(label: &str) -> Option<Labelled<RawFd>> {
    let (slot, fd) = label.split_once(':')?;
    let slot = match slot {
        "shared" => None,
        slot => Some(slot.parse().ok()?),
    };
    Some((slot, fd.parse().ok()?))
}

/// How a new master's start went, as the old master learns it; `attempt`
/// names the upgrade that started it.
pub(crate) enum Report {
    Ready { attempt: u32, pid: u32 },
    Failed { attempt: u32, why: String },
}

/// What the old master may tell a new master to do.
#[derive(Debug)]
enum Order {
    /// Drain its tree and exit (SIGTERM): a stop came during the upgrade.
    Stop,
    /// Die now, with its tree (its workers die with it): too late, or failed.
    Kill,
}

/// The old master's handle on a new master, for as long as it runs.
pub(crate) struct NewMaster {
    pub pid: u32,
    orders: mpsc::UnboundedSender<Order>,
}

impl NewMaster {
    /// It was not ready in time, failed, or answered too late: killed.
    pub(crate) fn kill(&self) {
        let _ = self.orders.send(Order::Kill);
    }

    /// A stop came while it started: it drains its own tree and exits.
    pub(crate) fn stop(&self) {
        let _ = self.orders.send(Order::Stop);
    }
}

/// Starts a new master from `exe` with `sockets` and `env`, and the task that
/// reports whether it became ready.
pub(crate) fn start(
    (exe, args): (&Path, &[OsString]),
    (sockets, admin): (&[Labelled<RawFd>], Option<RawFd>),
    mut env: Vec<(&'static str, OsString)>,
    (attempt, reports): (u32, mpsc::UnboundedSender<Report>),
) -> io::Result<NewMaster> {
    let (ours, theirs) = UnixStream::pair()?;
    let label = |(slot, fd): &Labelled<RawFd>| match slot {
        Some(slot) => format!("{slot}:{fd}"),
        None => format!("shared:{fd}"),
    };
    let labels: Vec<String> = sockets.iter().map(label).collect();
    let mut inherited: Vec<RawFd> = sockets.iter().map(|(_, fd)| *fd).collect();
    inherited.push(theirs.as_raw_fd());
    if let Some(admin) = admin {
        inherited.push(admin);
        env.push((ENV_ADMIN_FD, admin.to_string().into()));
    }
    // As PID 1's child: the pipe to multinode's init, for the next upgrade.
    let to_init = crate::init::for_new_master();
    inherited.extend(to_init.as_ref().map(|(fd, _)| *fd));
    let mut command = tokio::process::Command::new(exe);
    command
        .args(args)
        .envs(env)
        .envs(to_init.map(|(_, variable)| variable))
        .env(ENV_LISTENERS, labels.join(","))
        .env(ENV_UPGRADE_FD, theirs.as_raw_fd().to_string())
        .stdin(Stdio::null());
    // SAFETY: runs in the child between fork and exec, and calls only fcntl,
    // which is async-signal-safe, on descriptors this process holds open.
    unsafe {
        command.pre_exec(move || {
            use nix::fcntl::{fcntl, FcntlArg, FdFlag};
            for fd in &inherited {
                let fd = std::os::fd::BorrowedFd::borrow_raw(*fd);
                fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    drop(theirs);
    let pid = child.id().unwrap_or_default();
    ours.set_nonblocking(true)?;
    let ours = tokio::net::UnixStream::from_std(ours)?;
    let (orders, received) = mpsc::unbounded_channel();
    tokio::spawn(watch(child, ours, received, (attempt, reports)));
    Ok(NewMaster { pid, orders })
}

/// Reports the new master's word (or its failure), and carries out the old
/// master's orders until it exits: an order that comes after its word is
/// obeyed too, so that none is lost.
async fn watch(
    mut child: tokio::process::Child,
    ours: tokio::net::UnixStream,
    mut orders: mpsc::UnboundedReceiver<Order>,
    (attempt, reports): (u32, mpsc::UnboundedSender<Report>),
) {
    let pid = child.id().unwrap_or_default();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(ours);
    // Whether it said something (reported), or closed its socket (its exit
    // will be).
    let (mut said, mut closed) = (false, false);
    let failed = |why: String| Report::Failed { attempt, why };
    loop {
        tokio::select! {
            read = reader.read_line(&mut line), if !said && !closed => match read {
                Ok(0) | Err(_) => closed = true,
                Ok(_) => {
                    said = true;
                    let report = match line.as_bytes() == READY {
                        true => Report::Ready { attempt, pid },
                        false => {
                            let word = line.trim_end();
                            failed(format!("the new master (pid {pid}) said {word:?}, not ready"))
                        }
                    };
                    let _ = reports.send(report);
                }
            },
            status = child.wait() => {
                if !said {
                    let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                    let why = format!("the new master (pid {pid}) exited ({status}) before it was ready");
                    let _ = reports.send(failed(why));
                }
                return;
            }
            Some(order) = orders.recv() => match order {
                // Its process group would take the old tree too: the master
                // alone, whose workers die with it.
                Order::Kill => drop(child.start_kill()),
                Order::Stop => {
                    let pid = nix::unistd::Pid::from_raw(pid as i32);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                }
            },
        }
    }
}
