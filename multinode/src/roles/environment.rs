//! What a process takes from its environment at start, while it has one
//! thread: a worker its control socket, a master the sockets and lines others
//! handed it (systemd, an old master). Each variable is removed once read, so
//! that no child process of a body inherits it.

use std::os::fd::OwnedFd;

use super::start_error::StartError;
use crate::control::{self, ENV_CONTROL_FD, ENV_WORKER};
use crate::listener::Passed;

/// Reads and removes the private worker variables. `Ok(None)`: this is the master.
pub(super) fn take_worker_env() -> Result<Option<(usize, OwnedFd)>, StartError> {
    take_worker_variables().map_err(StartError::Config)
}

fn take_worker_variables() -> Result<Option<(usize, OwnedFd)>, String> {
    let worker = std::env::var_os(ENV_WORKER);
    let control = std::env::var_os(ENV_CONTROL_FD);
    // Still single-threaded here: nothing else reads the environment concurrently.
    std::env::remove_var(ENV_WORKER);
    std::env::remove_var(ENV_CONTROL_FD);
    let (worker, control) = match (worker, control) {
        (None, None) => return Ok(None),
        (worker, control) => (worker.unwrap_or_default(), control.unwrap_or_default()),
    };
    let not_started_by_master = "this process has the variables of a multinode worker, \
        but was not started by a multinode master";
    let slot = worker
        .to_str()
        .and_then(|s| s.parse::<usize>().ok())
        .ok_or_else(|| {
            format!("{ENV_WORKER}={worker:?}: not a node id; {not_started_by_master}")
        })?;
    let fd = control
        .to_str()
        .and_then(|s| s.parse::<i32>().ok())
        .ok_or_else(|| {
            format!(
                "{ENV_CONTROL_FD}={control:?}: not a descriptor number; {not_started_by_master}"
            )
        })?;
    let control = control::inherit(fd)
        .map_err(|e| format!("{ENV_CONTROL_FD}={fd}: {e}; {not_started_by_master}"))?;
    die_with_the_master(&control)?;
    Ok(Some((slot, control)))
}

/// Arms SIGKILL for when the master (the thread that started this process)
/// exits, then checks that it has not already: the master is the process at the
/// other end of the control socket, which it made.
fn die_with_the_master(control: &OwnedFd) -> Result<(), String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let master = getsockopt(control, PeerCredentials)
        .map_err(|e| format!("{ENV_CONTROL_FD}: cannot read its peer: {e}"))?
        .pid();
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| format!("cannot arm the death signal: {e}"))?;
    if nix::unistd::getppid().as_raw() != master {
        return Err(format!(
            "the master (pid {master}) exited before this worker started"
        ));
    }
    Ok(())
}

/// What the master's environment hands it, read and cleared while the process
/// has one thread: sockets (from systemd or an old master), systemd's socket,
/// and the line to the old master after an upgrade.
pub(super) struct MasterEnv {
    pub passed: Passed,
    /// The admin listener an old master handed over.
    pub admin: Option<std::net::TcpListener>,
    pub systemd: crate::notify::Systemd,
    pub old_master: Option<crate::upgrade::OldMaster>,
    /// `MULTINODE_CLUSTER`, which may hold a password: taken out of the
    /// environment, so that no child process of a body inherits it.
    pub cluster: Option<String>,
}

pub(super) fn take_master_env() -> Result<MasterEnv, StartError> {
    let inherited = crate::upgrade::take().map_err(StartError::Config)?;
    let activated = crate::activation::take().map_err(StartError::Config)?;
    let systemd = crate::notify::Systemd::take();
    let cluster = std::env::var_os(crate::config::ENV_CLUSTER);
    std::env::remove_var(crate::config::ENV_CLUSTER);
    let cluster = cluster.map(|url| url.to_string_lossy().into_owned());
    Ok(match (inherited, activated) {
        (Some(inherited), _) => MasterEnv {
            passed: Passed::Inherited(inherited.sockets),
            admin: inherited.admin,
            systemd,
            old_master: Some(inherited.old_master),
            cluster,
        },
        (None, Some(socket)) => MasterEnv {
            passed: Passed::Activated(socket),
            admin: None,
            systemd,
            old_master: None,
            cluster,
        },
        (None, None) => MasterEnv {
            passed: Passed::Nothing,
            admin: None,
            systemd,
            old_master: None,
            cluster,
        },
    })
}
