//! The master's supervision: the loop that feeds events (worker messages and
//! exits, signals, timers) to the state machine and carries out its actions.
//!
//! It runs on its own thread with its own runtime, so that a busy master body never
//! delays it, and that thread lives as long as the master: `PR_SET_PDEATHSIG`
//! watches the thread that started a worker, not the process.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::control::identity::Identity;
use crate::control::incarnation::Incarnation;
use crate::control::ToWorker;
use crate::listener::Listeners;
use crate::mesh::peer::{Inbound, MeshRequest};
use crate::shm::segment::Segment;

mod actions;
mod child;
#[cfg(feature = "tls")]
pub(crate) mod https;
mod journal;
mod machine;
mod meshing;
#[cfg(test)]
mod model_test;
pub(crate) mod notice;
mod process;
mod recycler;
mod recycles;
mod recycling;
mod rescue;
mod rescuing;
pub(crate) mod signals;
mod slot;
mod slots;
mod status;

use machine::{Command, Input, Machine, Settings};
use process::{Event, Reserve, Worker};
use rescue::Rescue;
use signals::{Received, Signals};
use slot::{Generation, Slot};

pub(crate) struct Supervisor {
    config: Config,
    listeners: Listeners,
    shm: Arc<Segment>,
    /// Fires the master node's own shutdown future.
    master_shutdown: CancellationToken,
    /// The master node's side of the mesh: its ends of the mesh streams.
    master_mesh: mpsc::UnboundedSender<Inbound>,
    /// The master node's accept loop, for connections handed over to it.
    master_handed: mpsc::UnboundedSender<std::net::TcpStream>,
    /// With `ReusePort`: the watch over each node's own queue.
    rescue: Option<Rescue>,
    exe: PathBuf,
    args: Vec<OsString>,
    /// The workers': the master's, read before its body runs.
    environment: child::Environment,
    machine: Machine,
    workers: BTreeMap<Incarnation, Worker>,
    events: mpsc::UnboundedSender<Event>,
    reserve: Reserve,
    /// The number of the last mesh stream made.
    links: u64,
    /// The live incarnations that joined the mesh (their body took it).
    joined: std::collections::BTreeSet<Incarnation>,
    /// When each pair of nodes was last meshed again, to pace a pair whose
    /// stream keeps breaking.
    remeshed: BTreeMap<(Slot, Slot), Instant>,
    /// The service manager, told where the server stands.
    systemd: crate::notify::Systemd,
    /// After an upgrade, until this tree is ready: the old master, to tell.
    old_master: Option<crate::upgrade::OldMaster>,
    /// During an upgrade: the new master.
    /// The new masters upgrades started, by attempt, for as long as this runs:
    /// one that answers late can still be killed.
    new_masters: BTreeMap<u32, crate::upgrade::NewMaster>,
    upgrades: mpsc::UnboundedSender<crate::upgrade::Report>,
    /// Recent lifecycle events, for the status page.
    journal: crate::admin::Journal,
    /// The admin listener, served once the supervisor runs.
    admin: Option<std::net::TcpListener>,
    /// Its descriptor, for a new master (an upgrade).
    admin_fd: Option<std::os::fd::RawFd>,
    /// HTTPS's ticket keys and certificate check, with `tls`.
    #[cfg(feature = "tls")]
    https: Option<https::Https>,
    /// With `max_requests` or `max_memory`: who judges the workers.
    recycler: Option<recycler::Recycler>,
}

impl Supervisor {
    pub(crate) fn new(
        config: Config,
        listeners: Listeners,
        shm: Arc<Segment>,
        master_shutdown: CancellationToken,
        master_mesh: mpsc::UnboundedSender<Inbound>,
        master_handed: mpsc::UnboundedSender<std::net::TcpStream>,
        started: Instant,
    ) -> Self {
        // Resolved once: after a rebuild, /proc/self/exe names the deleted file,
        // while this path names the new binary, which replacements then run.
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
        let settings = Settings {
            workers: config.worker_slots(),
            master_serves: config.master_listen,
            restart: config.restart,
            boot_failures: config.boot_failures,
            shutdown_timeout: config.shutdown_timeout,
            watchdog: (!config.watchdog_timeout.is_zero()).then_some(config.watchdog_timeout),
            max_slot: crate::config::ranges::MAX_NODES,
            nodes: config.nodes,
            started,
            upgrade_timeout: config.upgrade_timeout,
        };
        let (events, _) = mpsc::unbounded_channel();
        let recycling = config.recycling.clone();
        Supervisor {
            recycler: recycling
                .is_on()
                .then(|| recycler::Recycler::new(recycling)),
            reserve: Reserve::new(reserve_size(config.nodes)),
            config,
            listeners,
            shm,
            master_shutdown,
            master_mesh,
            master_handed,
            rescue: None,
            exe,
            args: std::env::args_os().skip(1).collect(),
            environment: child::Environment::of_this_process(),
            machine: Machine::new(settings),
            workers: BTreeMap::new(),
            events,
            links: 0,
            joined: std::collections::BTreeSet::new(),
            remeshed: BTreeMap::new(),
            systemd: crate::notify::Systemd::default(),
            old_master: None,
            new_masters: BTreeMap::new(),
            upgrades: mpsc::unbounded_channel().0,
            journal: crate::admin::Journal::default(),
            admin: None,
            admin_fd: None,
            #[cfg(feature = "tls")]
            https: None,
        }
    }

    /// Hands `https`'s keys to every worker, and rotates them.
    #[cfg(feature = "tls")]
    pub(crate) fn with_https(mut self, https: Option<https::Https>) -> Self {
        self.https = https;
        self
    }

    /// Serves `listener` as the admin listener (metrics, status page).
    pub(crate) fn with_admin(mut self, listener: Option<std::net::TcpListener>) -> Self {
        use std::os::fd::AsRawFd;
        // The serving task keeps the socket open as long as this process runs.
        self.admin_fd = listener.as_ref().map(|l| l.as_raw_fd());
        self.admin = listener;
        self
    }

    /// Tells `systemd` where the server stands, and feeds its watchdog; tells
    /// `old_master` (after an upgrade) once every node is ready.
    pub(crate) fn with_systemd(
        mut self,
        systemd: crate::notify::Systemd,
        old_master: Option<crate::upgrade::OldMaster>,
    ) -> Self {
        self.systemd = systemd;
        self.old_master = old_master;
        self
    }

    /// Supervises until every node has stopped; returns the master's exit code.
    pub(crate) fn run(
        self,
        master_ready: oneshot::Receiver<()>,
        body_done: oneshot::Receiver<i32>,
        remesh: mpsc::UnboundedReceiver<MeshRequest>,
    ) -> i32 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match runtime {
            Ok(runtime) => {
                // Every event of the supervision names the master's pid.
                let span = tracing::info_span!("master", pid = std::process::id());
                let supervised = self.supervise(master_ready, body_done, remesh);
                runtime.block_on(tracing::Instrument::instrument(supervised, span))
            }
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
        mut master_remesh: mpsc::UnboundedReceiver<MeshRequest>,
    ) -> i32 {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        self.events = events_tx;
        let (upgrades_tx, mut upgrades) = mpsc::unbounded_channel();
        self.upgrades = upgrades_tx;
        let mut signals = match Signals::install() {
            Ok(signals) => signals,
            Err(error) => {
                error!("cannot install signal handlers: {error}");
                return 1;
            }
        };
        if let Some(listener) = self.admin.take() {
            let (shm, journal) = (self.shm.clone(), self.journal.clone());
            crate::admin::spawn(listener, shm, journal);
        }
        let mut rescued = self.watch_queues();
        // Fed from this loop, so that a hung loop starves it.
        let mut watchdog = self.systemd.watchdog_every().map(tokio::time::interval);
        // The loop turns at least this often, for `/livez`.
        let mut turning = Some(tokio::time::interval(Duration::from_secs(1)));
        #[cfg(feature = "tls")]
        let mut rotation = self.https.as_ref().map(|https| {
            let every = https.rotate_every();
            tokio::time::interval_at(tokio::time::Instant::now() + every, every)
        });
        #[cfg(not(feature = "tls"))]
        let mut rotation: Option<tokio::time::Interval> = None;
        let (mut ready_pending, mut body_pending) = (true, true);
        // Then written again only when a slot changes (`publish_status`).
        self.shm.table().set_nodes(self.machine.nodes());
        let mut inputs = VecDeque::from([Input::Start]);
        loop {
            while let Some(input) = inputs.pop_front() {
                for action in self.machine.handle(input, Instant::now()) {
                    if let Some(code) = self.apply(action, &mut inputs).await {
                        return code;
                    }
                }
            }
            self.publish_status();
            let deadline = self.machine.next_deadline();
            let input = tokio::select! {
                received = signals.recv() => match received {
                    Received::Command(command) => self.admit(command).map(Input::Signal),
                    Received::AddNode => self.open_slot().map(|slot| Input::AddNode { slot }),
                    Received::Status => {
                        let (nodes, doing) = (self.machine.nodes(), self.machine.doing());
                        info!(nodes, "SIGUSR1: {doing}; the log goes to stderr, nothing to reopen");
                        None
                    }
                },
                Some(event) = events.recv() => self.on_event(event),
                Some(report) = upgrades.recv() => Some(match report {
                    crate::upgrade::Report::Ready { attempt, pid } => Input::UpgradeReady { attempt, pid },
                    crate::upgrade::Report::Failed { attempt, why } => Input::UpgradeFailed { attempt, why },
                }),
                Some(report) = rescued.recv() => {
                    self.on_rescue(report);
                    None
                }
                Some(request) = master_remesh.recv() => {
                    match request {
                        MeshRequest::Join => self.join(Incarnation::MASTER),
                        MeshRequest::Again { id, generation } => {
                            self.remesh(Incarnation::MASTER, Incarnation::new(id, generation))
                        }
                    }
                    None
                }
                ready = &mut master_ready, if ready_pending => {
                    ready_pending = false;
                    ready.ok().map(|()| {
                        if self.config.master_listen {
                            self.shm.table().set_live(0, true);
                        }
                        Input::MasterReady
                    })
                }
                code = &mut body_done, if body_pending => {
                    body_pending = false;
                    Some(Input::BodyDone { code: code.unwrap_or(1) })
                }
                _ = tick(&mut watchdog) => {
                    self.systemd.watchdog();
                    None
                }
                _ = tick(&mut turning) => {
                    inputs.extend(self.recycling_inputs());
                    None
                }
                _ = tick(&mut rotation) => {
                    self.rotate_tickets();
                    None
                }
                _ = sleep_until(deadline) => Some(Input::Tick),
            };
            inputs.extend(input);
        }
    }

    /// `command`, unless it is a reload that would start nodes on a
    /// certificate that does not load: then the nodes serve on.
    fn admit(&mut self, command: Command) -> Option<Command> {
        #[cfg(feature = "tls")]
        if let (Command::Reload, Some(https)) = (command, &self.https) {
            if let Err(why) = https.reload() {
                error!("SIGHUP: not reloading, the nodes serve on: {why}");
                return None;
            }
        }
        Some(command)
    }

    /// New session-ticket keys, for every node (the master's has them).
    fn rotate_tickets(&mut self) {
        #[cfg(feature = "tls")]
        if let Some(https) = &mut self.https {
            match https.rotate() {
                Ok(Some(keys)) => {
                    for worker in self.workers.values() {
                        worker.send(ToWorker::TicketKeys(keys.clone()), None);
                    }
                }
                Ok(None) => {}
                Err(why) => warn!("TLS: the ticket keys were not rotated: {why}"),
            }
        }
    }

    /// Starts a new master with every listening socket (SIGUSR2).
    fn start_upgrade(&mut self, attempt: u32) -> Result<(), String> {
        let sockets = self.listeners.handed_over();
        let mut env = self.systemd.env();
        // As many nodes as serve now (SIGTTIN and SIGTTOU included), so that
        // every socket handed over has its acceptor.
        let nodes = self.machine.nodes().to_string();
        env.push((crate::config::ENV_NODES, nodes.into()));
        // The cluster, which no longer is in this master's environment: empty
        // for none (a `cluster` key turned off stays off).
        let url = self.config.cluster.as_ref().map(|c| c.url.as_str());
        env.push((crate::config::ENV_CLUSTER, url.unwrap_or("").into()));
        // The same machine in the cluster, its default name included (the old
        // master's host and pid): the new master takes over its claim.
        if let Some(cluster) = &self.config.cluster {
            env.push((crate::config::ENV_MACHINE, cluster.machine.clone().into()));
        }
        let started = crate::upgrade::start(
            (&self.exe, &self.args),
            (&sockets, self.admin_fd),
            env,
            (attempt, self.upgrades.clone()),
        );
        let new = started.map_err(|e| format!("cannot start {}: {e}", self.exe.display()))?;
        info!(
            pid = new.pid,
            "upgrade: the new master started; waiting for its nodes"
        );
        self.new_masters.insert(attempt, new);
        Ok(())
    }

    /// SIGTTIN: opens the listener of the slot to add; `None` if there is none.
    fn open_slot(&mut self) -> Option<Slot> {
        let Some(slot) = self.machine.slot_to_add() else {
            warn!(
                "SIGTTIN: no node can be added now (at most {})",
                crate::config::ranges::MAX_NODES
            );
            return None;
        };
        if let Err(error) = self.listeners.open_slot(slot) {
            error!(
                node = slot,
                "SIGTTIN: cannot listen for a new node: {error}"
            );
            return None;
        }
        self.watch_queue(slot);
        self.shm.table().extend_serving_end(slot + 1);
        Some(slot)
    }

    /// Starts incarnation `generation` of `slot`. The descriptors held in
    /// reserve are let go only when the start lacks some: closing and opening
    /// them around every start cost 2 × 256 system calls a start with 256
    /// nodes.
    fn spawn(
        &mut self,
        slot: Slot,
        generation: Generation,
        members: Vec<Slot>,
    ) -> std::io::Result<Worker> {
        let requests_before = self.shm.table().totals(slot).1;
        let started = match self.start_process(slot, generation, members.clone()) {
            Err(error) if process::is_lack_of_resources(&error) => {
                self.reserve.release();
                let worker = self.start_process(slot, generation, members);
                self.reserve.refill();
                worker
            }
            started => started,
        };
        started.map(|mut worker| {
            worker.requests_before = requests_before;
            worker
        })
    }

    fn start_process(
        &mut self,
        slot: Slot,
        generation: Generation,
        members: Vec<Slot>,
    ) -> std::io::Result<Worker> {
        let listener: OwnedFd = self.listeners.for_slot(slot)?.try_clone()?.into();
        let shm = self.shm.fd().try_clone_to_owned()?;
        let heartbeat = self.machine.heartbeat_every().unwrap_or(Duration::ZERO);
        #[cfg_attr(not(feature = "tls"), allow(unused_mut))]
        let mut identity = Identity::new(
            &self.config,
            Incarnation::new(slot, generation),
            members,
            heartbeat,
        );
        #[cfg(feature = "tls")]
        if let Some(https) = &self.https {
            https.greet(&mut identity);
        }
        let greeting = vec![
            (ToWorker::Hello(Box::new(identity)), None),
            (ToWorker::Listener, Some(listener)),
            (ToWorker::Segment, Some(shm)),
        ];
        process::spawn(
            (&self.exe, &self.args, &self.environment),
            Incarnation::new(slot, generation),
            greeting,
            self.events.clone(),
        )
    }

    /// Kills every worker, waits (briefly) until they are reaped, and exits.
    async fn kill_all_and_exit(&mut self, code: i32) -> ! {
        for worker in self.workers.values() {
            worker.kill();
        }
        // Each task reaps its process right after the kill; yield until they have.
        let deadline = Instant::now() + Duration::from_millis(500);
        while self.workers.values().any(|w| !w.is_reaped()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        std::process::exit(code)
    }

    /// What every serving slot did since the start, from the load table: what the
    /// benchmark reads, one line per node.
    fn log_totals(&self) {
        for slot in self.config.serving_slots() {
            let (connections, requests) = self.shm.table().totals(slot);
            info!(node = slot, connections, requests, "node totals");
        }
    }
}

/// Descriptors the supervisor holds back for `nodes` nodes: a start takes a
/// control socketpair, a listener, the table and a socketpair per peer.
fn reserve_size(nodes: usize) -> usize {
    (16 + 2 * nodes).min(256)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// The next tick of `interval`, if there is one; never otherwise.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => drop(interval.tick().await),
        None => std::future::pending().await,
    }
}
