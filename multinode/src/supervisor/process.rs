//! A worker process: started by re-executing the binary, greeted over its control
//! socket, and watched by a task of its own that relays its messages and reaps it.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::warn;

use super::child::{Child, Environment, Spawn};
use super::slot::{Generation, Slot};
use crate::control::incarnation::Incarnation;
use crate::control::{self, ControlSocket, ToMaster, ToWorker, ENV_CONTROL_FD, ENV_WORKER};

/// A live worker process, as its task knows it: orders go through the task, which
/// alone waits for and signals the process, so no pid is signalled after it was
/// reaped.
pub(crate) struct Worker {
    pub pid: u32,
    /// Its slot's requests when it was started: recycling counts from there.
    pub requests_before: u64,
    orders: mpsc::UnboundedSender<Order>,
}

impl Worker {
    /// Sends `message` (with the descriptor it names, if any); a worker that is
    /// exiting just drops it.
    pub fn send(&self, message: ToWorker, fd: Option<OwnedFd>) {
        let _ = self.orders.send(Order::Send(message, fd));
    }

    pub fn kill(&self) {
        let _ = self.orders.send(Order::Kill);
    }

    /// Whether its task has reaped it.
    pub fn is_reaped(&self) -> bool {
        self.orders.is_closed()
    }
}

enum Order {
    Send(ToWorker, Option<OwnedFd>),
    Kill,
}

/// What a worker's task reports.
pub(crate) struct Event {
    pub slot: Slot,
    pub generation: Generation,
    pub report: Report,
}

pub(crate) enum Report {
    Said(ToMaster),
    Exited(io::Result<ExitStatus>),
}

/// Whether a failure to start a process is a lack of resources, which passes.
pub(crate) fn is_lack_of_resources(error: &io::Error) -> bool {
    use nix::libc::{EAGAIN, EMFILE, ENFILE, ENOMEM};
    matches!(
        error.raw_os_error(),
        Some(EMFILE | ENFILE | EAGAIN | ENOMEM)
    )
}

/// Descriptors held back so that a worker can always be started and meshed, even
/// when the master's own node has used up the rest: released just before a start,
/// taken again after it.
pub(crate) struct Reserve {
    files: Vec<File>,
    size: usize,
}

impl Reserve {
    pub fn new(size: usize) -> Self {
        let mut reserve = Reserve {
            files: Vec::with_capacity(size),
            size,
        };
        reserve.refill();
        reserve
    }

    pub fn release(&mut self) {
        self.files.clear();
    }

    pub fn refill(&mut self) {
        while self.files.len() < self.size {
            match File::open("/dev/null") {
                Ok(file) => self.files.push(file),
                Err(_) => break, // taken again after the next start
            }
        }
    }
}

/// Starts incarnation `generation` of worker `slot` from `exe`, and the task that
/// greets it with `greeting` and watches it.
pub(crate) fn spawn(
    (exe, args, base): (&PathBuf, &[OsString], &Environment),
    Incarnation { slot, generation }: Incarnation,
    greeting: Vec<(ToWorker, Option<OwnedFd>)>,
    events: mpsc::UnboundedSender<Event>,
) -> io::Result<Worker> {
    let (ours, theirs) = control::pair()?;
    let child = Child::spawn(Spawn {
        exe,
        args,
        base,
        env: &[
            (ENV_WORKER, slot.to_string()),
            (ENV_CONTROL_FD, theirs.as_raw_fd().to_string()),
        ],
        keep: theirs.as_raw_fd(),
        // Until the worker has made them harmless (signals::leave_to_the_master).
        blocked: super::signals::masters_only(),
    })?;
    drop(theirs);
    let pid = child.id();
    let control = ControlSocket::new(ours)?;
    let (orders, orders_rx) = mpsc::unbounded_channel();
    tokio::spawn(watch(
        child,
        control,
        greeting,
        Incarnation::new(slot, generation),
        orders_rx,
        events,
    ));
    Ok(Worker {
        pid,
        requests_before: 0,
        orders,
    })
}

/// One incarnation's task: greets it, relays its messages and the supervisor's
/// orders, and reaps it.
async fn watch(
    mut child: Child,
    control: ControlSocket,
    greeting: Vec<(ToWorker, Option<OwnedFd>)>,
    Incarnation { slot, generation }: Incarnation,
    mut orders: mpsc::UnboundedReceiver<Order>,
    events: mpsc::UnboundedSender<Event>,
) {
    let report = |report| {
        let _ = events.send(Event {
            slot,
            generation,
            report,
        });
    };
    for (message, fd) in greeting {
        if let Err(error) = control
            .send(&message, fd.as_ref().map(|fd| fd.as_fd()))
            .await
        {
            warn!(
                node = slot,
                generation, "cannot greet the new worker: {error}"
            );
            break;
        }
    } // our copies of the descriptors close here
    let mut reading = true;
    let status = loop {
        tokio::select! {
            biased;
            received = control.recv::<ToMaster>(), if reading => match received {
                Ok(Some((message, _))) => report(Report::Said(message)),
                Ok(None) => reading = false, // the worker is exiting
                // A worker that exits with messages it never read resets the
                // socket: the reset is reported once, before what it sent last.
                Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {}
                Err(error) => {
                    warn!(node = slot, generation, "{error}");
                    reading = error.kind() == io::ErrorKind::InvalidData;
                }
            },
            status = child.wait() => break status,
            Some(order) = orders.recv() => match order {
                Order::Send(message, fd) => {
                    if let Err(error) = control.send(&message, fd.as_ref().map(|fd| fd.as_fd())).await {
                        warn!(node = slot, generation, "cannot send {message:?}: {error}");
                    }
                }
                Order::Kill => {
                    let _ = child.kill();
                }
            },
        }
    };
    // What it said just before exiting (why it failed) is still queued before EOF.
    while reading {
        let last = tokio::time::timeout(Duration::from_millis(100), control.recv::<ToMaster>());
        match last.await {
            Ok(Ok(Some((message, _)))) => report(Report::Said(message)),
            Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionReset => {}
            _ => reading = false,
        }
    }
    orders.close();
    report(Report::Exited(status));
}
