//! How a process starts: as the master (the process the user started) or as a
//! worker (re-executed by the master, with a control socket).

use std::fmt::Debug;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::balance::{Listening, LoadTable};
use crate::config::{Balance, Builder};
use crate::control::{ControlSocket, ToMaster, ToWorker};
use crate::listener::{self, Listeners};
use crate::mesh::{self, Inbound, PeerQueue, Remesh};
use crate::nodes::{Identity, Nodes};
use crate::supervisor::Supervisor;

mod environment;
mod logging;

use environment::{take_master_env, take_worker_env, MasterEnv};
use logging::init_tracing;

/// How long a new worker waits for its identity and listener from the master.
const GREETING_TIMEOUT: Duration = Duration::from_secs(10);

/// What `main`'s body may return: `()`, or `Result<(), E>` with `E: Debug`. An
/// `Err` is logged and makes the process exit with code 1.
///
/// ```
/// use multinode::MainResult;
/// assert_eq!(().exit_code(), 0);
/// assert_eq!(Err::<(), _>("boom").exit_code(), 1);
/// ```
#[diagnostic::on_unimplemented(
    message = "`main` must return `()` or `Result<(), E>` where `E: Debug`",
    label = "this return type"
)]
pub trait MainResult {
    /// The process exit code for this value; reports an error on the way.
    fn exit_code(self) -> i32;
}

impl MainResult for () {
    fn exit_code(self) -> i32 {
        0
    }
}

impl<E: Debug> MainResult for Result<(), E> {
    fn exit_code(self) -> i32 {
        match self {
            Ok(()) => 0,
            Err(error) => {
                let reason = format!("main returned an error: {error:?}");
                tracing::error!("{reason}");
                report_failure(&reason);
                1
            }
        }
    }
}

/// A worker's control socket, for reports that cannot wait for the runtime (a
/// panic). Never dropped, so its descriptor stays this socket's until exit.
static CONTROL: std::sync::OnceLock<Arc<ControlSocket>> = std::sync::OnceLock::new();

/// Tells the master why this worker is about to fail, so that it can name the
/// reason if the worker never manages to start. Nothing in the master.
fn report_failure(reason: &str) {
    if let Some(control) = CONTROL.get() {
        // Within a control packet, whatever the reason's length.
        let reason: String = reason.chars().take(2000).collect();
        control.send_now(&ToMaster::Failed { reason });
    }
}

/// The entry point behind [`Builder::run`]: never returns.
pub(crate) fn run<F, Fut>(builder: Builder, body: F) -> !
where
    F: FnOnce(Nodes) -> Fut,
    Fut: Future,
    Fut::Output: MainResult,
{
    let started = Instant::now();
    init_tracing(builder.logging);
    crate::limits::raise_nofile();
    let code = match take_worker_env() {
        Ok(None) => {
            // Before anything is taken from the environment: the master, PID 1's
            // child, takes it.
            crate::init::serve_as_init_if_pid_1();
            take_master_env().and_then(|taken| run_master(&builder, body, started, taken))
        }
        Ok(Some((slot, control))) => run_worker(&builder, slot, control, body),
        Err(error) => Err(error),
    };
    std::process::exit(code.unwrap_or_else(|error| {
        eprintln!("multinode: {error}");
        error.exit_code()
    }))
}

/// Why a process could not start its body: one line, and its exit code.
#[derive(Debug)]
enum StartError {
    /// Bad configuration or environment: exit code 2.
    Config(String),
    /// The system refused something (the port is taken, say): exit code 1.
    System(String),
}

impl StartError {
    fn exit_code(&self) -> i32 {
        match self {
            StartError::Config(_) => 2,
            StartError::System(_) => 1,
        }
    }

    fn system(what: &str, error: impl std::fmt::Display) -> Self {
        StartError::System(format!("{what}: {error}"))
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(line) | StartError::System(line) => f.write_str(line),
        }
    }
}

fn run_master<F, Fut>(
    builder: &Builder,
    body: F,
    started: Instant,
    taken: MasterEnv,
) -> Result<i32, StartError>
where
    F: FnOnce(Nodes) -> Fut,
    Fut: Future,
    Fut::Output: MainResult,
{
    let mut config = builder
        .resolve(|var| std::env::var_os(var).map(|v| v.to_string_lossy().into_owned()))
        .map_err(|error| StartError::Config(error.to_string()))?;
    #[cfg(feature = "cluster")]
    let _joined = match &config.cluster {
        Some(cluster) => {
            // After an upgrade, the old master (this one's parent) holds the name.
            let predecessor = taken
                .old_master
                .as_ref()
                .map(|_| nix::unistd::getppid().as_raw() as u32);
            Some(crate::cluster::join(cluster, predecessor).map_err(StartError::Config)?)
        }
        None => None,
    };
    let listeners = Listeners::open(taken.passed, &mut config)
        .map_err(|e| StartError::system(&format!("cannot listen on {}", config.addr), e))?;
    // After an upgrade, the old master's admin socket, if on the same address.
    let inherited_admin = taken.admin.filter(|l| l.local_addr().ok() == config.admin);
    let admin = match (config.admin, inherited_admin) {
        (Some(_), Some(listener)) => Some(listener),
        (Some(addr), None) => Some(std::net::TcpListener::bind(addr).map_err(|e| {
            StartError::system(&format!("cannot listen on the admin address {addr}"), e)
        })?),
        (None, _) => None,
    };
    if let Some(addr) = admin.as_ref().and_then(|l| l.local_addr().ok()) {
        tracing::info!("admin on http://{addr} (GET /metrics, GET /)");
    }
    let runtime = builder
        .runtime()
        .map_err(|e| StartError::system("cannot start the tokio runtime", e))?;
    let table =
        LoadTable::create().map_err(|e| StartError::system("cannot create the load table", e))?;
    table.set_serving_end(config.serving_slots().end);
    let table = Arc::new(table);
    // With reuse_port, the supervisor hands the master's node connections from
    // a node that is not accepting.
    let (handed_tx, handed) = tokio::sync::mpsc::unbounded_channel();
    let handed = (config.balance == Balance::ReusePort).then_some(handed);
    let master_listener = match config.master_listen {
        true => Some(Listening {
            socket: listeners
                .for_slot(0)
                .and_then(|listener| listener.try_clone())
                .map_err(|e| StartError::system("cannot share the listener", e))?,
            handed,
        }),
        false => None,
    };
    tracing::info!(
        pid = std::process::id(),
        nodes = config.nodes,
        balance = ?config.balance,
        "listening on http://{}",
        listeners.addr
    );
    let identity = Identity {
        id: 0,
        generation: 1,
        count: config.nodes,
        shutdown_timeout: config.shutdown_timeout,
        balance: config.balance,
        serving_slots: config.serving_slots(),
        heartbeat: Duration::ZERO, // the master's node is not watched
        members: config.worker_slots().collect(),
        max_connections: config.max_connections,
        cluster: config.cluster.clone(),
    };
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = oneshot::channel();
    let (body_done_tx, body_done_rx) = oneshot::channel();
    let (mesh_tx, mesh_rx) = tokio::sync::mpsc::unbounded_channel();
    let (remesh_tx, remesh_rx) = tokio::sync::mpsc::unbounded_channel();
    let supervisor = Supervisor::new(
        config,
        listeners,
        table.clone(),
        shutdown.clone(),
        mesh_tx,
        handed_tx,
        started,
    )
    .with_systemd(taken.systemd, taken.old_master)
    .with_admin(admin);
    let supervisor = std::thread::Builder::new()
        .name("multinode-supervisor".into())
        .spawn(move || supervisor.run(ready_rx, body_done_rx, remesh_rx))
        .map_err(|e| StartError::system("cannot start the supervisor thread", e))?;
    let span = tracing::info_span!("node", id = 0, generation = 1, pid = std::process::id());
    let code = runtime.block_on(
        async move {
            let peers = start_mesh(&identity, mesh_rx, remesh_tx);
            let nodes = Nodes::new(identity, master_listener, table, shutdown, peers);
            // A node is ready once its body runs, listener or not.
            let _ = ready_tx.send(());
            body(nodes).await.exit_code()
        }
        .instrument(span),
    );
    let _ = body_done_tx.send(code);
    let supervised = supervisor.join().unwrap_or(1);
    Ok(if code != 0 { code } else { supervised })
}

fn run_worker<F, Fut>(
    builder: &Builder,
    slot: usize,
    control: OwnedFd,
    body: F,
) -> Result<i32, StartError>
where
    F: FnOnce(Nodes) -> Fut,
    Fut: Future,
    Fut::Output: MainResult,
{
    let runtime = builder.runtime().map_err(|e| {
        StartError::system(&format!("node {slot}: cannot start the tokio runtime"), e)
    })?;
    // The generation comes with the master's greeting.
    let span = tracing::info_span!(
        "node",
        id = slot,
        generation = tracing::field::Empty,
        pid = std::process::id()
    );
    let code = runtime
        .block_on(
            async move {
                let control = Arc::new(ControlSocket::new(control)?);
                let _ = CONTROL.set(control.clone());
                let default_hook = std::panic::take_hook();
                std::panic::set_hook(Box::new(move |info| {
                    report_failure(&info.to_string());
                    default_hook(info)
                }));
                let (identity, listener, table) =
                    match tokio::time::timeout(GREETING_TIMEOUT, greeting(&control, slot)).await {
                        Ok(greeted) => greeted?,
                        Err(_) => {
                            return Err(format!(
                                "no greeting from the master in {GREETING_TIMEOUT:?}"
                            )
                            .into())
                        }
                    };
                tracing::Span::current().record("generation", identity.generation);
                let shutdown = CancellationToken::new();
                let (ready_tx, ready_rx) = oneshot::channel();
                let (mesh_tx, mesh_rx) = tokio::sync::mpsc::unbounded_channel();
                let (remesh_tx, remesh_rx) = tokio::sync::mpsc::unbounded_channel();
                let peers = start_mesh(&identity, mesh_rx, remesh_tx);
                let (handed_tx, handed) = tokio::sync::mpsc::unbounded_channel();
                let listener = listener.map(|socket| Listening {
                    socket,
                    handed: (identity.balance == Balance::ReusePort).then_some(handed),
                });
                // Their lines carry the node's span too.
                let heartbeat = identity.heartbeat;
                let follow = follow_master(
                    control.clone(),
                    shutdown.clone(),
                    ready_rx,
                    Routes {
                        mesh: mesh_tx,
                        handed: handed_tx,
                    },
                    heartbeat,
                );
                tokio::spawn(follow.in_current_span());
                tokio::spawn(relay_remesh(control.clone(), remesh_rx).in_current_span());
                tokio::spawn(on_signals(shutdown.clone(), control).in_current_span());
                let nodes = Nodes::new(identity, listener, table, shutdown, peers);
                // A node is ready once its body runs, listener or not.
                let _ = ready_tx.send(());
                Ok::<_, Box<dyn std::error::Error>>(body(nodes).await.exit_code())
            }
            .instrument(span.clone()),
        )
        .unwrap_or_else(|error| {
            let _entered = span.enter();
            tracing::error!("cannot start: {error}");
            report_failure(&format!("cannot start: {error}"));
            1
        });
    Ok(code)
}

/// A worker's first messages: who it is, its listener, and the load table.
async fn greeting(
    control: &ControlSocket,
    slot: usize,
) -> std::io::Result<(Identity, Option<std::net::TcpListener>, Arc<LoadTable>)> {
    let unexpected = |what: &str| std::io::Error::other(format!("expected {what} from the master"));
    let identity = match control.recv().await? {
        Some((ToWorker::Hello(identity), None)) if identity.id == slot => identity,
        _ => return Err(unexpected(&format!("a greeting for node {slot}"))),
    };
    let listener = match control.recv().await? {
        Some((ToWorker::Listener, Some(fd))) => listener::adopt(fd)?,
        _ => return Err(unexpected("the listener")),
    };
    let table = match control.recv().await? {
        Some((ToWorker::LoadTable, Some(fd))) => LoadTable::open(fd)?,
        _ => return Err(unexpected("the load table")),
    };
    Ok((identity, Some(listener), Arc::new(table)))
}

/// Starts this node's side of the mesh, fed with the streams the master labels;
/// it asks `remesh` for streams it had to close.
fn start_mesh(
    identity: &Identity,
    inbound: tokio::sync::mpsc::UnboundedReceiver<Inbound>,
    remesh: tokio::sync::mpsc::UnboundedSender<Remesh>,
) -> Arc<PeerQueue> {
    let queue = Arc::new(PeerQueue::new(remesh));
    let me = (identity.id, identity.generation);
    tokio::spawn(mesh::run(me, inbound, queue.clone()).in_current_span());
    queue
}

/// Where a worker's control socket delivers what the master sends it.
struct Routes {
    /// Mesh streams, to the mesh.
    mesh: tokio::sync::mpsc::UnboundedSender<Inbound>,
    /// Connections taken from a node that was not accepting, to the accept loop.
    handed: tokio::sync::mpsc::UnboundedSender<std::net::TcpStream>,
}

/// A worker's side of the control socket once its body runs: reports ready, obeys
/// the master, hands mesh streams to the mesh, and exits when the master is gone
/// (its end reads EOF).
async fn follow_master(
    control: Arc<ControlSocket>,
    shutdown: CancellationToken,
    ready: oneshot::Receiver<()>,
    routes: Routes,
    heartbeat: Duration,
) {
    if !heartbeat.is_zero() {
        let control = control.clone();
        let beat = async move {
            let mut every = tokio::time::interval(heartbeat);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let _ = control.send(&ToMaster::Heartbeat, None).await;
            }
        };
        tokio::spawn(beat.in_current_span());
    }
    let report_ready = {
        let control = control.clone();
        async move {
            if ready.await.is_ok() {
                if let Err(error) = control.send(&ToMaster::Ready, None).await {
                    tracing::warn!("cannot report ready: {error}");
                }
            }
        }
    };
    tokio::spawn(report_ready.in_current_span());
    loop {
        match control.recv().await {
            Ok(Some((ToWorker::Shutdown, _))) => shutdown.cancel(),
            Ok(Some((
                ToWorker::Peer {
                    id,
                    generation,
                    link,
                },
                Some(fd),
            ))) => {
                let _ = routes.mesh.send(Inbound::Peer {
                    id,
                    generation,
                    link,
                    fd,
                });
            }
            Ok(Some((ToWorker::NodeGone { id }, _))) => {
                let _ = routes.mesh.send(Inbound::Gone { id });
            }
            Ok(Some((ToWorker::Connection, Some(fd)))) => {
                let stream = std::net::TcpStream::from(fd);
                // Dropped (closed) if this node no longer accepts.
                if stream.set_nonblocking(true).is_ok() {
                    let _ = routes.handed.send(stream);
                }
            }
            Ok(Some((message, _))) => tracing::warn!("unexpected control message {message:?}"),
            Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
                tracing::warn!("{error}")
            }
            Ok(None) | Err(_) => {
                tracing::error!("the master is gone; exiting");
                std::process::exit(1);
            }
        }
    }
}

/// Passes the message layer's requests for new streams on to the master.
async fn relay_remesh(
    control: Arc<ControlSocket>,
    mut requests: tokio::sync::mpsc::UnboundedReceiver<Remesh>,
) {
    while let Some(Remesh { id, generation }) = requests.recv().await {
        let _ = control
            .send(&ToMaster::Remesh { id, generation }, None)
            .await;
    }
}

/// A worker's signals. SIGTERM drains this worker, and the master, told so,
/// starts its replacement at once and kills it if it outlives its drain deadline
/// (as gunicorn does). SIGINT is left to the master: Ctrl-C reaches the whole
/// process group, and the master tells every node to drain, so nothing stops twice.
async fn on_signals(shutdown: CancellationToken, control: Arc<ControlSocket>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: draining this node");
                if !shutdown.is_cancelled() {
                    let _ = control.send(&ToMaster::Draining, None).await;
                }
                shutdown.cancel();
            }
            _ = int.recv() => tracing::debug!("SIGINT: waiting for the master's word"),
        }
    }
}
