//! The master's supervision: starts a worker process per slot, restarts the ones
//! that exit, replaces them one at a time on SIGHUP, and stops every node on
//! SIGTERM/SIGINT.
//!
//! It runs on its own thread with its own runtime, so that a busy master body never
//! delays it, and that thread lives as long as the master: `PR_SET_PDEATHSIG`
//! watches the thread that forked, not the process.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::balance::LoadTable;
use crate::bootstrap::{ENV_CONTROL_FD, ENV_WORKER};
use crate::config::Config;
use crate::control::{self, ControlSocket, Message};
use crate::listener::Listeners;
use crate::mesh::Inbound;

/// How long a worker must have run for its exit not to count as a crash loop.
const STABLE_UPTIME: Duration = Duration::from_secs(2);
/// The first and the largest delay before restarting a crash-looping worker.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// What stragglers get beyond `shutdown_timeout` before they are killed.
const KILL_GRACE: Duration = Duration::from_secs(1);
/// How long a replacement may take to report ready during a rolling restart.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Supervisor {
    config: Config,
    listeners: Listeners,
    table: Arc<LoadTable>,
    /// Fires the master node's own shutdown future.
    master_shutdown: CancellationToken,
    /// The master node's side of the mesh: its ends of the mesh streams.
    master_mesh: mpsc::UnboundedSender<Inbound>,
    started: Instant,
    exe: PathBuf,
    slots: BTreeMap<usize, Slot>,
    events: mpsc::UnboundedSender<Event>,
    /// Set once everything is stopping: when it must be over.
    deadline: Option<tokio::time::Instant>,
    exit_code: i32,
    master_ready: bool,
    all_ready_logged: bool,
    /// Slots still to replace in the rolling restart under way (next last).
    reload_queue: Vec<usize>,
    /// The slot being replaced now.
    reloading: Option<usize>,
}

#[derive(Default)]
struct Slot {
    generation: u64,
    worker: Option<Worker>,
    /// The incarnation being replaced in a rolling restart: serving until its
    /// replacement is ready, then draining.
    retiring: Option<Worker>,
    /// Consecutive quick exits: the backoff exponent.
    crashes: u32,
    /// Consecutive exits before reporting ready.
    boot_failures: u32,
    /// The last reason a worker of this slot gave for failing.
    last_error: Option<String>,
    /// Being removed (SIGTTOU): not restarted once it exits.
    removing: bool,
}

/// A live incarnation of a slot. Its process is owned by its task, which alone
/// waits for and signals it, so no pid is ever signalled after it was reaped.
struct Worker {
    generation: u64,
    pid: u32,
    started: Instant,
    ready: bool,
    commands: mpsc::UnboundedSender<Order>,
    /// When its runtime last said it is not stuck (or when it started).
    last_heartbeat: Instant,
    /// Killed by the watchdog already.
    killed: bool,
}

/// What the supervisor orders a worker's task to do.
enum Order {
    /// Send a message, with the descriptor it names, if any.
    Send(Message, Option<OwnedFd>),
    Kill,
}

/// What a worker's task tells the supervisor.
enum Event {
    Message {
        slot: usize,
        generation: u64,
        message: Message,
    },
    Exited {
        slot: usize,
        generation: u64,
        status: io::Result<ExitStatus>,
    },
    Respawn {
        slot: usize,
    },
    ReadyTimeout {
        slot: usize,
        generation: u64,
    },
}

impl Supervisor {
    pub(crate) fn new(
        config: Config,
        listeners: Listeners,
        table: Arc<LoadTable>,
        master_shutdown: CancellationToken,
        master_mesh: mpsc::UnboundedSender<Inbound>,
        started: Instant,
    ) -> Self {
        // Resolved once: after a rebuild, /proc/self/exe names the deleted file,
        // while this path names the new binary, which replacements then run.
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let (events, _) = mpsc::unbounded_channel();
        Supervisor {
            config,
            listeners,
            table,
            master_shutdown,
            master_mesh,
            started,
            exe,
            slots: BTreeMap::new(),
            events,
            deadline: None,
            exit_code: 0,
            master_ready: false,
            all_ready_logged: false,
            reload_queue: Vec::new(),
            reloading: None,
        }
    }

    /// Supervises until every node has stopped; returns the master's exit code.
    pub(crate) fn run(
        self,
        master_ready: oneshot::Receiver<()>,
        body_done: oneshot::Receiver<i32>,
    ) -> i32 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match runtime {
            Ok(runtime) => runtime.block_on(self.supervise(master_ready, body_done)),
            Err(error) => {
                error!("cannot start the supervisor's runtime: {error}");
                1
            }
        }
    }

    async fn supervise(
        mut self,
        mut master_ready: oneshot::Receiver<()>,
        mut body_done: oneshot::Receiver<i32>,
    ) -> i32 {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        self.events = events_tx;
        let (Ok(mut sigint), Ok(mut sigterm), Ok(mut sighup), Ok(mut sigttin), Ok(mut sigttou)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
            signal(SignalKind::from_raw(nix::libc::SIGTTIN)),
            signal(SignalKind::from_raw(nix::libc::SIGTTOU)),
        ) else {
            error!("cannot install signal handlers");
            return 1;
        };
        if !self.config.master_listen {
            self.master_ready = true; // the master does not serve: nothing to wait for
        }
        for slot in self.config.worker_slots() {
            self.slots.insert(slot, Slot::default());
            if !self.start(slot) {
                self.after_exit(slot, false, Duration::ZERO, "could not start".into());
            }
        }
        let mut master_ready_pending = self.config.master_listen;
        let mut body_finished = false;
        let mut watchdog = heartbeat(self.config.timeout).map(tokio::time::interval);
        loop {
            let deadline = self.deadline;
            tokio::select! {
                _ = sigint.recv() => {
                    if self.deadline.is_some() {
                        warn!("second SIGINT: stopping at once");
                        self.kill_all_and_exit(130).await;
                    }
                    self.stop("SIGINT");
                }
                _ = sigterm.recv() => self.stop("SIGTERM"),
                _ = sighup.recv() => self.reload(),
                _ = sigttin.recv() => self.add_node(),
                _ = sigttou.recv() => self.remove_node(),
                _ = tick(&mut watchdog) => self.watchdog(),
                Some(event) = events.recv() => self.on_event(event),
                ready = &mut master_ready, if master_ready_pending => {
                    master_ready_pending = false;
                    if ready.is_ok() {
                        self.master_ready = true;
                        self.table.set_live(0, true);
                        info!(node = 0, generation = 1, pid = std::process::id(), "node ready");
                        self.log_all_ready();
                    }
                }
                code = &mut body_done, if !body_finished => {
                    body_finished = true;
                    let reason = match code {
                        Ok(0) => "the master's body returned",
                        _ => "the master's body failed",
                    };
                    self.stop(reason);
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    let left: Vec<usize> = self.live_slots().collect();
                    error!(
                        "nodes {left:?} still running {:?} after the stop; killing them",
                        self.config.shutdown_timeout + KILL_GRACE,
                    );
                    self.kill_all_and_exit(1).await;
                }
            }
            if self.deadline.is_some() && body_finished && self.live_slots().next().is_none() {
                self.log_totals();
                info!("every node stopped");
                return self.exit_code;
            }
        }
    }

    /// Starts an incarnation of `slot`; false if its process could not start.
    fn start(&mut self, slot: usize) -> bool {
        let generation = self.slots.get(&slot).map_or(0, |s| s.generation) + 1;
        let started = self.spawn(slot, generation);
        let Some(state) = self.slots.get_mut(&slot) else {
            return false;
        };
        state.generation = generation;
        match started {
            Ok(worker) => {
                info!(node = slot, generation, pid = worker.pid, "node started");
                state.worker = Some(worker);
                state.last_error = None; // a reason belongs to the incarnation that gave it
                self.mesh(slot, generation);
                true
            }
            Err(error) => {
                error!(
                    node = slot,
                    generation, "cannot start a worker process: {error}"
                );
                false
            }
        }
    }

    /// SIGTTIN: one more node, in the slot after the highest.
    fn add_node(&mut self) {
        if self.deadline.is_some() {
            return;
        }
        let slot = self
            .slots
            .keys()
            .next_back()
            .map_or(self.config.serving_slots().end, |last| last + 1);
        if slot > crate::config::MAX_NODES {
            warn!(
                "SIGTTIN: already at the most nodes ({})",
                crate::config::MAX_NODES
            );
            return;
        }
        if let Err(error) = self.listeners.push_slot() {
            error!(
                node = slot,
                "SIGTTIN: cannot listen for a new node: {error}"
            );
            return;
        }
        self.table.set_serving_end(slot + 1);
        info!(node = slot, "SIGTTIN: adding a node");
        self.slots.insert(slot, Slot::default());
        if !self.start(slot) {
            self.after_exit(slot, false, Duration::ZERO, "could not start".into());
        }
    }

    /// SIGTTOU: the highest node drains and is not restarted; at least one node
    /// keeps serving.
    fn remove_node(&mut self) {
        if self.deadline.is_some() {
            return;
        }
        let serving = self.slots.values().filter(|s| !s.removing).count()
            + usize::from(self.config.master_listen);
        let highest = self.slots.iter().rev().find(|(_, s)| !s.removing);
        let Some((&slot, state)) = highest.filter(|_| serving > 1) else {
            warn!("SIGTTOU: one node left; not removing it");
            return;
        };
        info!(node = slot, "SIGTTOU: removing the node");
        for worker in state.worker.iter().chain(state.retiring.iter()) {
            let _ = worker.commands.send(Order::Send(Message::Shutdown, None));
        }
        let alive = state.worker.is_some() || state.retiring.is_some();
        self.slots.get_mut(&slot).expect("just found").removing = true;
        if !alive {
            self.forget(slot); // it was waiting to restart
        }
    }

    /// A removed node's last process is gone: its slot goes, and every node is told.
    fn forget(&mut self, slot: usize) {
        self.slots.remove(&slot);
        self.table.set_live(slot, false);
        if self
            .slots
            .keys()
            .next_back()
            .is_none_or(|last| *last < slot)
        {
            self.listeners.pop_slot();
        }
        self.announce_gone(slot);
        info!(node = slot, "node removed");
    }

    /// Kills the workers whose runtime sent no heartbeat for `timeout`.
    fn watchdog(&mut self) {
        if self.deadline.is_some() {
            return;
        }
        let timeout = self.config.timeout;
        for (slot, state) in self.slots.iter_mut() {
            for worker in state.worker.iter_mut().chain(state.retiring.iter_mut()) {
                let silent = worker.last_heartbeat.elapsed();
                if silent > timeout && !worker.killed {
                    warn!(
                        node = *slot,
                        generation = worker.generation,
                        pid = worker.pid,
                        "no heartbeat for {silent:?} (timeout {timeout:?}): the node is stuck; killing it"
                    );
                    worker.killed = true;
                    let _ = worker.commands.send(Order::Kill);
                }
            }
        }
    }

    /// SIGHUP: replaces every worker, one at a time, from the executable's path (a
    /// rebuilt binary is picked up). The master's own node, if it serves, is not
    /// re-executed.
    fn reload(&mut self) {
        if self.deadline.is_some() {
            return;
        }
        if self.reloading.is_some() {
            warn!("SIGHUP: a rolling restart is already under way");
            return;
        }
        self.reload_queue = self.slots.keys().rev().copied().collect();
        info!(nodes = self.reload_queue.len(), "SIGHUP: rolling restart");
        self.next_reload();
    }

    /// Starts the replacement of the next slot of the rolling restart; its old
    /// incarnation keeps serving until the replacement is ready.
    fn next_reload(&mut self) {
        while let Some(slot) = self.reload_queue.pop() {
            let Some(state) = self.slots.get_mut(&slot) else {
                continue;
            };
            if state.worker.is_none() {
                continue; // restarting by itself, from the same path
            }
            state.retiring = state.worker.take();
            self.reloading = Some(slot);
            if !self.start(slot) {
                self.abort_reload(slot, "its process could not start");
                return;
            }
            let generation = self.slots[&slot].generation;
            let events = self.events.clone();
            tokio::spawn(async move {
                tokio::time::sleep(READY_TIMEOUT).await;
                let _ = events.send(Event::ReadyTimeout { slot, generation });
            });
            return;
        }
        if self.reloading.take().is_some() {
            info!("rolling restart done");
        }
    }

    /// A replacement failed before it was ready: the old incarnation, which never
    /// stopped serving, stays; the rolling restart stops here.
    fn abort_reload(&mut self, slot: usize, why: &str) {
        error!(node = slot, "the replacement failed: {why}; the old incarnation keeps serving; rolling restart stopped");
        if let Some(state) = self.slots.get_mut(&slot) {
            if let Some(old) = state.retiring.take() {
                state.generation = state.generation.max(old.generation);
                state.worker = Some(old);
            }
        }
        self.table.set_live(slot, true);
        self.reload_queue.clear();
        self.reloading = None;
    }

    /// Meshes incarnation `generation` of `slot` with every other live node: one
    /// Unix stream socketpair per pair, each end sent to its node labelled with the
    /// other's id and generation. The master's node (0) is a peer like any other.
    fn mesh(&self, slot: usize, generation: u64) {
        let Some(newcomer) = self.slots.get(&slot).and_then(|s| s.worker.as_ref()) else {
            return;
        };
        let master = (0, 1, None);
        let others = self
            .slots
            .iter()
            .filter(|(other, _)| **other != slot)
            .flat_map(|(other, s)| {
                s.worker
                    .iter()
                    .chain(s.retiring.iter())
                    .map(|w| (*other, w.generation, Some(w)))
            });
        for (other, other_generation, worker) in std::iter::once(master).chain(others) {
            let (mine, theirs) = match std::os::unix::net::UnixStream::pair() {
                Ok(pair) => pair,
                Err(error) => {
                    error!(node = slot, "cannot mesh with node {other}: {error}");
                    continue;
                }
            };
            let label = Message::Peer {
                id: other,
                generation: other_generation,
            };
            let _ = newcomer
                .commands
                .send(Order::Send(label, Some(mine.into())));
            let (id, fd) = (slot, OwnedFd::from(theirs));
            // A send fails only when that node is exiting: its end just closes.
            match worker {
                Some(worker) => {
                    let label = Message::Peer { id, generation };
                    let _ = worker.commands.send(Order::Send(label, Some(fd)));
                }
                None => {
                    let _ = self.master_mesh.send(Inbound::Peer { id, generation, fd });
                }
            }
        }
    }

    /// Tells every node that `slot` will not come back.
    fn announce_gone(&self, slot: usize) {
        let _ = self.master_mesh.send(Inbound::Gone { id: slot });
        for worker in self.workers() {
            let _ = worker
                .commands
                .send(Order::Send(Message::NodeGone { id: slot }, None));
        }
    }

    fn spawn(&self, slot: usize, generation: u64) -> io::Result<Worker> {
        let (ours, theirs) = control::pair()?;
        let theirs_raw = theirs.as_raw_fd();
        let master = nix::unistd::getpid();
        let mut command = Command::new(&self.exe);
        command
            .args(std::env::args_os().skip(1))
            .env(ENV_WORKER, slot.to_string())
            .env(ENV_CONTROL_FD, theirs_raw.to_string())
            .stdin(Stdio::null());
        // SAFETY: runs in the child between fork and exec, and calls only
        // async-signal-safe functions (fcntl, prctl, getppid), allocating nothing.
        unsafe {
            command.pre_exec(move || {
                use nix::fcntl::{fcntl, FcntlArg, FdFlag};
                let fd = std::os::fd::BorrowedFd::borrow_raw(theirs_raw);
                fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
                #[cfg(target_os = "linux")]
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                if nix::unistd::getppid() != master {
                    // The master died before the death signal was armed.
                    return Err(io::Error::from_raw_os_error(nix::libc::ESRCH));
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        drop(theirs);
        let pid = child.id().unwrap_or_default();
        let control = ControlSocket::new(ours)?;
        let listener: OwnedFd = self.listeners.for_slot(slot).try_clone()?.into();
        let table = self.table.fd().try_clone_to_owned()?;
        let hello = Message::Hello {
            id: slot,
            generation,
            count: self.config.nodes,
            shutdown_timeout_ms: self.config.shutdown_timeout.as_millis() as u64,
            balance: self.config.balance,
            serving_slots: self.config.serving_slots(),
            heartbeat_ms: heartbeat(self.config.timeout).map_or(0, |d| d.as_millis() as u64),
        };
        let (commands, commands_rx) = mpsc::unbounded_channel();
        tokio::spawn(watch_worker(
            child,
            control,
            [
                (hello, None),
                (Message::Listener, Some(listener)),
                (Message::LoadTable, Some(table)),
            ],
            (slot, generation),
            commands_rx,
            self.events.clone(),
        ));
        Ok(Worker {
            generation,
            pid,
            started: Instant::now(),
            ready: false,
            commands,
            last_heartbeat: Instant::now(),
            killed: false,
        })
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Message {
                slot,
                generation,
                message: Message::Ready,
            } => {
                let Some(worker) = self.current(slot, generation) else {
                    return;
                };
                worker.ready = true;
                info!(node = slot, generation, pid = worker.pid, "node ready");
                self.table.set_live(slot, true);
                self.log_all_ready();
                if let Some(old) = self.slots.get(&slot).and_then(|s| s.retiring.as_ref()) {
                    info!(
                        node = slot,
                        generation = old.generation,
                        pid = old.pid,
                        "draining the old incarnation"
                    );
                    let _ = old.commands.send(Order::Send(Message::Shutdown, None));
                } else if self.reloading == Some(slot) {
                    self.next_reload(); // the old one is gone already
                }
            }
            Event::Message {
                slot,
                generation,
                message: Message::Heartbeat,
            } => {
                if let Some(worker) = self.incarnation(slot, generation) {
                    worker.last_heartbeat = Instant::now();
                }
            }
            Event::Message {
                slot,
                generation,
                message: Message::Failed { reason },
            } => {
                // Only the current incarnation's: it is the one whose boot is counted.
                if self.current(slot, generation).is_some() {
                    if let Some(state) = self.slots.get_mut(&slot) {
                        state.last_error = Some(reason);
                    }
                }
            }
            Event::Message { slot, message, .. } => {
                warn!(node = slot, "unexpected control message {message:?}");
            }
            Event::Exited {
                slot,
                generation,
                status,
            } => {
                let failed = status.as_ref().map_or(true, |s| !s.success());
                let status = match status {
                    Ok(status) => status.to_string(),
                    Err(error) => format!("unknown status ({error})"),
                };
                let Some(state) = self.slots.get_mut(&slot) else {
                    return;
                };
                if let Some(old) = state.retiring.take_if(|w| w.generation == generation) {
                    info!(node = slot, generation, pid = old.pid, %status, "old incarnation exited");
                    if state.removing && state.worker.is_none() {
                        self.forget(slot);
                        return;
                    }
                    let replaced = state.worker.as_ref().is_some_and(|w| w.ready);
                    if self.reloading == Some(slot) && replaced && self.deadline.is_none() {
                        self.next_reload();
                    }
                    return;
                }
                let Some(worker) = state.worker.take_if(|w| w.generation == generation) else {
                    return;
                };
                if self.deadline.is_some() {
                    info!(node = slot, generation, pid = worker.pid, %status, "node stopped");
                    if failed {
                        self.exit_code = 1; // it did not drain cleanly
                    }
                    return;
                }
                if state.removing {
                    info!(node = slot, generation, pid = worker.pid, %status, "node stopped");
                    if state.retiring.is_none() {
                        self.forget(slot);
                    }
                    return;
                }
                if !worker.ready && self.reloading == Some(slot) {
                    self.abort_reload(slot, &format!("it exited before it was ready ({status})"));
                    return;
                }
                self.table.set_live(slot, false);
                warn!(node = slot, generation, pid = worker.pid, %status, "node exited");
                self.after_exit(slot, worker.ready, worker.started.elapsed(), status);
            }
            Event::Respawn { slot } => {
                if self.deadline.is_none() && !self.start(slot) {
                    self.after_exit(slot, false, Duration::ZERO, "could not start".into());
                }
            }
            Event::ReadyTimeout { slot, generation } => {
                if let Some(worker) = self.current(slot, generation).filter(|w| !w.ready) {
                    warn!(
                        node = slot,
                        generation, "not ready after {READY_TIMEOUT:?}; killing it"
                    );
                    let _ = worker.commands.send(Order::Kill);
                }
            }
        }
    }

    /// Decides what follows the end of a worker: a restart after a backoff, or,
    /// after too many failed boots in a row, the end of everything.
    fn after_exit(&mut self, slot: usize, was_ready: bool, uptime: Duration, status: String) {
        if !self.config.restart {
            info!(node = slot, "not restarted (restart = false)");
            self.announce_gone(slot);
            return;
        }
        let Some(state) = self.slots.get_mut(&slot) else {
            return;
        };
        state.boot_failures = if was_ready {
            0
        } else {
            state.boot_failures + 1
        };
        state.crashes = if uptime >= STABLE_UPTIME {
            0
        } else {
            state.crashes + 1
        };
        if state.boot_failures >= self.config.boot_failures {
            let last = match state.last_error.take() {
                Some(reason) => format!("{reason} ({status})"),
                None => status,
            };
            error!(
                node = slot,
                "failed to start {} times in a row; last error: {last}; stopping",
                self.config.boot_failures
            );
            self.exit_code = 1;
            self.stop("a node cannot start");
            return;
        }
        let delay = backoff(state.crashes);
        info!(
            node = slot,
            delay_ms = delay.as_millis() as u64,
            "restarting node"
        );
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::Respawn { slot });
        });
    }

    /// Starts a graceful stop of every node: each stops accepting, drains within
    /// `shutdown_timeout`, and exits.
    fn stop(&mut self, reason: &str) {
        if self.deadline.is_some() {
            return;
        }
        let nodes = self.live_slots().count() + usize::from(self.config.master_listen);
        info!("{reason}: stopping {nodes} nodes gracefully");
        self.deadline =
            Some(tokio::time::Instant::now() + self.config.shutdown_timeout + KILL_GRACE);
        self.master_shutdown.cancel();
        self.reload_queue.clear();
        for worker in self.workers() {
            let _ = worker.commands.send(Order::Send(Message::Shutdown, None));
        }
    }

    /// Kills every worker, waits (briefly) until they are reaped, and exits.
    async fn kill_all_and_exit(&mut self, code: i32) -> ! {
        for worker in self.workers() {
            let _ = worker.commands.send(Order::Kill);
        }
        // Each task reaps its process right after the kill; yield until they have.
        let deadline = Instant::now() + Duration::from_millis(500);
        while self.workers().any(|w| !w.commands.is_closed()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        std::process::exit(code)
    }

    /// Incarnation `generation` of `slot`, current or retiring.
    fn incarnation(&mut self, slot: usize, generation: u64) -> Option<&mut Worker> {
        let state = self.slots.get_mut(&slot)?;
        state
            .worker
            .iter_mut()
            .chain(state.retiring.iter_mut())
            .find(|w| w.generation == generation)
    }

    fn current(&mut self, slot: usize, generation: u64) -> Option<&mut Worker> {
        self.slots
            .get_mut(&slot)?
            .worker
            .as_mut()
            .filter(|w| w.generation == generation)
    }

    fn live_slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.slots
            .iter()
            .filter(|(_, s)| s.worker.is_some() || s.retiring.is_some())
            .map(|(slot, _)| *slot)
    }

    /// Every live worker process, the retiring ones included.
    fn workers(&self) -> impl Iterator<Item = &Worker> + '_ {
        self.slots
            .values()
            .flat_map(|s| s.worker.iter().chain(s.retiring.iter()))
    }

    /// What every serving slot did since the start, from the load table: what the
    /// benchmark reads, one line per node.
    fn log_totals(&self) {
        for slot in self.config.serving_slots() {
            let (connections, requests) = self.table.totals(slot);
            info!(node = slot, connections, requests, "node totals");
        }
    }

    fn log_all_ready(&mut self) {
        let workers_ready = self
            .slots
            .values()
            .all(|s| s.worker.as_ref().is_some_and(|w| w.ready));
        if !self.all_ready_logged && self.master_ready && workers_ready {
            self.all_ready_logged = true;
            info!(
                elapsed_ms = self.started.elapsed().as_secs_f64() * 1000.0,
                "all {} nodes ready", self.config.nodes
            );
        }
    }
}

/// The delay before restarting a worker after `crashes` quick exits in a row.
fn backoff(crashes: u32) -> Duration {
    match crashes {
        0 => Duration::ZERO,
        n => BACKOFF_FIRST
            .saturating_mul(1 << (n - 1).min(16))
            .min(BACKOFF_MAX),
    }
}

/// How often workers send heartbeats for a watchdog `timeout`; `None`: no watchdog.
fn heartbeat(timeout: Duration) -> Option<Duration> {
    (!timeout.is_zero()).then(|| (timeout / 4).max(Duration::from_millis(10)))
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One worker incarnation's task: greets it, relays its messages and the
/// supervisor's commands, and reaps it.
async fn watch_worker(
    mut child: Child,
    control: ControlSocket,
    greeting: [(Message, Option<OwnedFd>); 3],
    (slot, generation): (usize, u64),
    mut commands: mpsc::UnboundedReceiver<Order>,
    events: mpsc::UnboundedSender<Event>,
) {
    let greeted = async {
        for (message, fd) in &greeting {
            control
                .send(message, fd.as_ref().map(|fd| fd.as_fd()))
                .await?;
        }
        io::Result::Ok(())
    };
    if let Err(error) = greeted.await {
        warn!(
            node = slot,
            generation, "cannot greet the new worker: {error}"
        );
    }
    drop(greeting); // our copies of the descriptors
    let mut reading = true;
    let status = loop {
        tokio::select! {
            biased;
            received = control.recv(), if reading => match received {
                Ok(Some((message, _))) => {
                    let _ = events.send(Event::Message { slot, generation, message });
                }
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
            Some(command) = commands.recv() => match command {
                Order::Send(message, fd) => {
                    if let Err(error) = control.send(&message, fd.as_ref().map(|fd| fd.as_fd())).await {
                        warn!(node = slot, generation, "cannot send {message:?}: {error}");
                    }
                }
                Order::Kill => {
                    let _ = child.start_kill();
                }
            },
        }
    };
    // What it said just before exiting (why it failed) is still queued before EOF.
    while reading {
        let last = tokio::time::timeout(Duration::from_millis(100), control.recv()).await;
        match last {
            Ok(Ok(Some((message, _)))) => {
                let _ = events.send(Event::Message {
                    slot,
                    generation,
                    message,
                });
            }
            Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionReset => {}
            _ => reading = false,
        }
    }
    let _ = events.send(Event::Exited {
        slot,
        generation,
        status,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }
}
