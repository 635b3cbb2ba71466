//! A worker: a process the master started by re-executing the binary. It takes
//! who it is, its listener and the shared memory from the master's greeting,
//! follows the master over its control socket, and runs its node's body.

use std::future::Future;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::main_result::{report_failure, MainResult, CONTROL};
use super::start_error::StartError;
use crate::balance::Listening;
use crate::config::Builder;
use crate::control::identity::Identity;
use crate::control::{ControlSocket, ToMaster, ToWorker};
use crate::listener;
use crate::mesh::peer::{self, Inbound, MeshRequest};
use crate::nodes::Nodes;
use crate::readiness;
use crate::shm::segment::Segment;

/// How long a new worker waits for its identity and listener from the master.
const GREETING_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn run_worker<F, Fut>(
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
    // Entered on the thread around `block_on` rather than instrumenting its
    // future: the same lines carry it, without entering and leaving it at every
    // poll, and so do the tasks a current-thread runtime runs there.
    let entered = span.enter();
    let code = runtime
        .block_on(async move {
            let control = Arc::new(ControlSocket::new(control)?);
            let _ = CONTROL.set(control.clone());
            let default_hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                report_failure(&info.to_string());
                default_hook(info)
            }));
            let (identity, listener, shm) =
                match tokio::time::timeout(GREETING_TIMEOUT, greeting(&control, slot)).await {
                    Ok(greeted) => greeted?,
                    Err(_) => {
                        return Err(
                            format!("no greeting from the master in {GREETING_TIMEOUT:?}").into(),
                        )
                    }
                };
            tracing::Span::current().record("generation", identity.generation);
            // The certificate as it is now: a reload's replacements read the new one.
            #[cfg(feature = "tls")]
            let tls = identity
                .tls
                .as_ref()
                .map(|files| crate::tls::Tls::start(files, identity.ticket_keys.as_ref()))
                .transpose()?;
            let shutdown = CancellationToken::new();
            let (ready_tx, ready_rx) = oneshot::channel();
            let (mesh_tx, mesh_rx) = tokio::sync::mpsc::unbounded_channel();
            let (remesh_tx, remesh_rx) = tokio::sync::mpsc::unbounded_channel();
            let peers = peer::start(identity.incarnation(), mesh_rx, remesh_tx);
            let (handed_tx, handed) = tokio::sync::mpsc::unbounded_channel();
            let listener = listener.map(|socket| Listening {
                socket,
                handed: identity.balance.per_slot().then_some(handed),
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
                    #[cfg(feature = "tls")]
                    tls: tls.clone(),
                },
                heartbeat,
            );
            tokio::spawn(follow.in_current_span());
            tokio::spawn(relay_remesh(control.clone(), remesh_rx).in_current_span());
            tokio::spawn(on_signals(shutdown.clone(), control).in_current_span());
            let nodes = Nodes::new(identity, listener, shm, shutdown, peers);
            #[cfg(feature = "tls")]
            let nodes = nodes.with_tls(tls);
            // A node is ready once its body runs, listener or not, and
            // nothing it started holds it back (a map's snapshot).
            let readiness = nodes.readiness();
            let code = readiness::run(body(nodes), readiness, ready_tx).await;
            Ok::<_, Box<dyn std::error::Error>>(code.exit_code())
        })
        .unwrap_or_else(|error| {
            tracing::error!("cannot start: {error}");
            report_failure(&format!("cannot start: {error}"));
            1
        });
    drop(entered);
    Ok(code)
}

/// A worker's first messages: who it is, its listener, and the load table.
async fn greeting(
    control: &ControlSocket,
    slot: usize,
) -> std::io::Result<(Identity, Option<std::net::TcpListener>, Arc<Segment>)> {
    let unexpected = |what: &str| std::io::Error::other(format!("expected {what} from the master"));
    let identity = match control.recv().await? {
        Some((ToWorker::Hello(identity), None)) if identity.id == slot => *identity,
        _ => return Err(unexpected(&format!("a greeting for node {slot}"))),
    };
    let listener = match control.recv().await? {
        Some((ToWorker::Listener, Some(fd))) => listener::socket::adopt(fd)?,
        _ => return Err(unexpected("the listener")),
    };
    let shm = match control.recv().await? {
        Some((ToWorker::Segment, Some(fd))) => Segment::open(fd)?,
        _ => return Err(unexpected("the load table")),
    };
    Ok((identity, Some(listener), Arc::new(shm)))
}

/// Where a worker's control socket delivers what the master sends it.
struct Routes {
    /// Mesh streams, to the mesh.
    mesh: tokio::sync::mpsc::UnboundedSender<Inbound>,
    /// Connections taken from a node that was not accepting, to the accept loop.
    handed: tokio::sync::mpsc::UnboundedSender<std::net::TcpStream>,
    /// The ticket keys of each rotation, to HTTPS.
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::Tls>,
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
            #[cfg(feature = "tls")]
            Ok(Some((ToWorker::TicketKeys(keys), _))) => {
                if let Some(tls) = &routes.tls {
                    tls.set_keys(&keys);
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

/// Passes this node's requests for streams on to the master.
async fn relay_remesh(
    control: Arc<ControlSocket>,
    mut requests: tokio::sync::mpsc::UnboundedReceiver<MeshRequest>,
) {
    while let Some(request) = requests.recv().await {
        let said = match request {
            MeshRequest::Join => ToMaster::JoinMesh,
            MeshRequest::Again { id, generation } => ToMaster::Remesh { id, generation },
        };
        let _ = control.send(&said, None).await;
    }
}

/// A worker's own signals: SIGTERM, SIGINT and SIGQUIT drain this worker, and
/// the master, told so, starts its replacement at once and kills it if it
/// outlives its drain deadline (as gunicorn does). The master's signals do
/// nothing here (`signals::leave_to_the_master`).
async fn on_signals(shutdown: CancellationToken, control: Arc<ControlSocket>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return;
    };
    loop {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = quit.recv() => "SIGQUIT",
        };
        tracing::info!("{name}: draining this node");
        if !shutdown.is_cancelled() {
            let _ = control.send(&ToMaster::Draining, None).await;
        }
        shutdown.cancel();
    }
}
