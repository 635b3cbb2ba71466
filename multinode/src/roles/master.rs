//! The master: the process the user started. It resolves the settings, binds
//! the port, starts the supervisor's thread, and runs node 0's body.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::environment::MasterEnv;
use super::main_result::MainResult;
use super::start_error::StartError;
use crate::balance::Listening;
use crate::config::Builder;
use crate::control::identity::Identity;
use crate::control::incarnation::Incarnation;
use crate::listener::Listeners;
use crate::mesh::peer;
use crate::nodes::Nodes;
use crate::readiness;
use crate::shm::segment::Segment;
use crate::supervisor::Supervisor;

pub(super) fn run_master<F, Fut>(
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
        .resolve(|var| match var {
            crate::config::ENV_CLUSTER => taken.cluster.clone(),
            _ => std::env::var_os(var).map(|v| v.to_string_lossy().into_owned()),
        })
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
    // The certificate loads, or nothing starts; the ticket keys.
    #[cfg(feature = "tls")]
    let https = config
        .tls
        .as_ref()
        .map(crate::supervisor::https::Https::start)
        .transpose()
        .map_err(StartError::Config)?;
    #[cfg(feature = "tls")]
    let master_tls = https.as_ref().map(|https| https.master());
    let listeners = Listeners::open(taken.passed, &config)
        .map_err(|e| StartError::system(&format!("cannot listen on {}", config.addr), e))?;
    let fitting = listeners.fitting(config.balance);
    if fitting != config.balance {
        let wanted = config.balance;
        tracing::warn!("the sockets passed to this master serve {fitting:?}, not {wanted:?}");
        config.balance = fitting;
    }
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
    let shm =
        Segment::create().map_err(|e| StartError::system("cannot create the shared memory", e))?;
    shm.table().set_serving_end(config.serving_slots().end);
    shm.table().set_nodes(config.nodes);
    let shm = Arc::new(shm);
    // With reuse_port, the supervisor hands the master's node connections from
    // a node that is not accepting.
    let (handed_tx, handed) = tokio::sync::mpsc::unbounded_channel();
    let handed = config.balance.per_slot().then_some(handed);
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
    let scheme = match config.tls {
        Some(_) => "https",
        None => "http",
    };
    tracing::info!(
        pid = std::process::id(),
        nodes = config.nodes,
        balance = ?config.balance,
        "listening on {scheme}://{}",
        listeners.addr
    );
    // The master's node is not watched: no heartbeat.
    let members = config.worker_slots().collect();
    let identity = Identity::new(&config, Incarnation::MASTER, members, Duration::ZERO);
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = oneshot::channel();
    let (body_done_tx, body_done_rx) = oneshot::channel();
    let (mesh_tx, mesh_rx) = tokio::sync::mpsc::unbounded_channel();
    let (remesh_tx, remesh_rx) = tokio::sync::mpsc::unbounded_channel();
    let supervisor = Supervisor::new(
        config,
        listeners,
        shm.clone(),
        shutdown.clone(),
        mesh_tx,
        handed_tx,
        started,
    )
    .with_systemd(taken.systemd, taken.old_master)
    .with_admin(admin);
    #[cfg(feature = "tls")]
    let supervisor = supervisor.with_https(https);
    let supervisor = std::thread::Builder::new()
        .name("multinode-supervisor".into())
        .spawn(move || supervisor.run(ready_rx, body_done_rx, remesh_rx))
        .map_err(|e| StartError::system("cannot start the supervisor thread", e))?;
    let span = tracing::info_span!("node", id = 0, generation = 1, pid = std::process::id());
    // Entered on this thread, not at every poll (as in a worker).
    let entered = span.enter();
    let code = runtime.block_on(async move {
        let peers = peer::start(identity.incarnation(), mesh_rx, remesh_tx);
        let nodes = Nodes::new(identity, master_listener, shm, shutdown, peers);
        #[cfg(feature = "tls")]
        let nodes = nodes.with_tls(master_tls);
        // A node is ready once its body runs, listener or not, and
        // nothing it started holds it back (a map's snapshot).
        let readiness = nodes.readiness();
        readiness::run(body(nodes), readiness, ready_tx)
            .await
            .exit_code()
    });
    drop(entered);
    let _ = body_done_tx.send(code);
    let supervised = supervisor.join().unwrap_or(1);
    #[cfg(feature = "cluster")]
    if _joined.as_ref().is_some_and(|joined| joined.conflicted()) {
        return Ok(2); // its name was taken: a start's error, found late
    }
    Ok(if code != 0 { code } else { supervised })
}
