//! [`Nodes`]: what the body of `main` gets in every process.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::balance::{Acceptor, Listening};
use crate::control::identity::Identity;
use crate::load::Load;
use crate::map;
use crate::mesh;
use crate::mesh::peer::{PeerQueue, Peers};
use crate::readiness::Readiness;
use crate::shm::segment::Segment;

/// Who this process is among the nodes, its listener, and when it must stop.
///
/// The body of `#[multinode::main]` runs in every process with its own `Nodes`.
///
/// ```no_run
/// #[multinode::main(port = 8080, nodes = 4)]
/// async fn main(mut nodes: multinode::Nodes) {
///     if nodes.is_master() {
///         println!("master: node {} of {}", nodes.id(), nodes.count());
///     }
///     let listener = nodes.take_listener().expect("every node serves by default");
///     let shutdown = nodes.shutdown();
///     tokio::select! {
///         _ = async { loop { let _ = listener.accept().await; } } => {}
///         _ = shutdown => {}
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Nodes {
    identity: Identity,
    listener: Option<Listening>,
    shutdown: CancellationToken,
    shm: Arc<Segment>,
    /// This node's mesh streams, until taken raw or by the message layer.
    peers: Option<Arc<PeerQueue>>,
    /// What holds this node back from reporting ready.
    readiness: Readiness,
    /// HTTPS, when the program has a certificate.
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::Tls>,
}

impl Nodes {
    pub(crate) fn new(
        identity: Identity,
        listener: Option<Listening>,
        shm: Arc<Segment>,
        shutdown: CancellationToken,
        peers: Arc<PeerQueue>,
    ) -> Self {
        Nodes {
            identity,
            listener,
            shutdown,
            shm,
            peers: Some(peers),
            readiness: Readiness::new(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// What the role waits on before it reports this node ready.
    pub(crate) fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// This node speaks HTTPS with `tls`.
    #[cfg(feature = "tls")]
    pub(crate) fn with_tls(mut self, tls: Option<crate::tls::Tls>) -> Self {
        self.tls = tls;
        self
    }

    /// What `http::serve` speaks TLS with, if anything.
    #[cfg(feature = "tls")]
    pub(crate) fn tls(&self) -> Option<&crate::tls::Tls> {
        self.tls.as_ref()
    }

    /// Whether this is the process the user started (node 0), which also supervises
    /// the others. Code that must run once, such as a console or a periodic job,
    /// goes here.
    ///
    /// ```no_run
    /// # async fn f(nodes: multinode::Nodes) {
    /// if nodes.is_master() {
    ///     println!("only in the master");
    /// }
    /// # }
    /// ```
    pub fn is_master(&self) -> bool {
        self.identity.id == 0
    }

    /// This node's id: its slot, kept by every replacement of the process. `0` is
    /// the master; workers are `1..count()` (or `1..=count()` with
    /// `master_listen = false`).
    ///
    /// ```no_run
    /// # async fn f(nodes: multinode::Nodes) {
    /// println!("hello from node {}", nodes.id());
    /// # }
    /// ```
    pub fn id(&self) -> usize {
        self.identity.id
    }

    /// How many nodes serve, as the server stands now: `nodes` at start, one
    /// more after each SIGTTIN and one fewer after each SIGTTOU, in every node.
    ///
    /// ```no_run
    /// # async fn f(nodes: multinode::Nodes) {
    /// println!("one of {} nodes", nodes.count());
    /// # }
    /// ```
    pub fn count(&self) -> usize {
        self.shm.table().nodes()
    }

    /// Which incarnation of its slot this process is: 1 for the first, one more for
    /// each replacement.
    ///
    /// ```no_run
    /// # async fn f(nodes: multinode::Nodes) {
    /// if nodes.generation() > 1 {
    ///     println!("node {} was restarted", nodes.id());
    /// }
    /// # }
    /// ```
    pub fn generation(&self) -> u64 {
        self.identity.generation
    }

    /// How long this node may take to finish in-flight requests once
    /// [`shutdown`](Self::shutdown) fires (`shutdown_timeout`).
    ///
    /// ```no_run
    /// # async fn f(nodes: multinode::Nodes) {
    /// println!("drains within {:?}", nodes.shutdown_timeout());
    /// # }
    /// ```
    pub fn shutdown_timeout(&self) -> Duration {
        self.identity.shutdown_timeout
    }

    /// Takes this node's listening socket: the shared port, ready to `accept`.
    /// `None` when it was taken already, and in the master with
    /// `master_listen = false`.
    ///
    /// It is a plain `tokio::net::TcpListener`, so `axum::serve` takes it directly.
    /// What `http::serve` adds is then left out: the load table's counts and
    /// balancing, the connection limits, and, with
    /// `reuse_port`, the master's hand-over of connections queued at a node that
    /// stopped accepting.
    ///
    /// ```no_run
    /// #[multinode::main]
    /// async fn main(mut nodes: multinode::Nodes) {
    ///     let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
    ///     let listener = nodes.take_listener().expect("this node serves");
    ///     axum::serve(listener, app)
    ///         .with_graceful_shutdown(nodes.shutdown())
    ///         .await
    ///         .unwrap();
    /// }
    /// ```
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the body of `main` is inside one).
    pub fn take_listener(&mut self) -> Option<TcpListener> {
        let listener = self.listener.take()?.socket;
        Some(TcpListener::from_std(listener).expect("take_listener needs a tokio runtime"))
    }

    /// The listener with this node's line in the load table, for `http::serve`.
    pub(crate) fn take_acceptor(&mut self) -> Option<std::io::Result<Acceptor>> {
        let listener = self.listener.take()?;
        let identity = &self.identity;
        let limit = identity
            .max_connections
            .unwrap_or_else(|| crate::limits::default_max_connections(identity.count));
        Some(Acceptor::new(
            listener.socket,
            self.shm.clone(),
            identity.incarnation(),
            identity.balance,
            identity.serving_slots.clone(),
            limit,
            listener.handed,
        ))
    }

    /// A future that resolves when this node must stop: SIGTERM or SIGINT to the
    /// master, the master's body returning, or this worker being replaced. Stop
    /// accepting then, finish what is in flight within
    /// [`shutdown_timeout`](Self::shutdown_timeout), and return from the body.
    ///
    /// ```no_run
    /// # async fn f(nodes: multinode::Nodes) {
    /// nodes.shutdown().await;
    /// println!("node {} stopping", nodes.id());
    /// # }
    /// ```
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        // Cheap to poll again and again, as a `select!` in a loop does.
        crate::woken::Woken::new(self.shutdown.clone().cancelled_owned())
    }

    /// The token behind [`shutdown`](Self::shutdown), for `http::serve`'s tasks.
    pub(crate) fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Whether [`shutdown`](Self::shutdown) has fired.
    ///
    /// ```no_run
    /// # async fn f(nodes: multinode::Nodes) {
    /// while !nodes.is_shutting_down() {
    ///     tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    /// }
    /// # }
    /// ```
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Takes the raw mesh streams: a receiver that yields a [`Peer`](crate::Peer)
    /// for every other live node, and one more each time a node is (re)started.
    /// `None` when the peers, or the messages, were taken already. The streams
    /// are made from this call on (as for the messages and a map): a node whose
    /// body never takes the mesh holds only those of the nodes that did.
    ///
    /// ```no_run
    /// #[multinode::main(nodes = 3)]
    /// async fn main(mut nodes: multinode::Nodes) {
    ///     let mut peers = nodes.take_peers().expect("taken once");
    ///     while let Some(peer) = peers.recv().await {
    ///         println!("node {} (generation {}) is up", peer.id(), peer.generation());
    ///     }
    /// }
    /// ```
    pub fn take_peers(&mut self) -> Option<Peers> {
        self.take_mesh().map(Peers::new)
    }

    /// The mesh's streams, once: the master is asked for a stream to every
    /// node now (a node whose body never takes the mesh has none of its own).
    fn take_mesh(&mut self) -> Option<Arc<PeerQueue>> {
        let queue = self.peers.take()?;
        queue.join();
        Some(queue)
    }

    /// Takes the message layer over the mesh, with the default
    /// [`Options`](crate::mesh::Options): a [`Sender`](crate::mesh::Sender) to send
    /// to one node or broadcast to all, and a [`Receiver`](crate::mesh::Receiver)
    /// of `(from, message)`. Messages are serde values (postcard-encoded,
    /// length-delimited frames). `None` when the peers, or the messages, were taken
    /// already.
    ///
    /// ```no_run
    /// #[derive(serde::Serialize, serde::Deserialize, Debug)]
    /// enum Cache { Invalidate(String) }
    ///
    /// #[multinode::main(nodes = 4)]
    /// async fn main(mut nodes: multinode::Nodes) {
    ///     let (tx, mut rx) = nodes.take_messages::<Cache>().expect("taken once");
    ///     tx.broadcast(&Cache::Invalidate("user:42".into())).await.unwrap();
    ///     while let Some((from, message)) = rx.recv().await {
    ///         println!("node {from}: {message:?}");
    ///     }
    /// }
    /// ```
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the body of `main` is inside one).
    pub fn take_messages<M>(&mut self) -> Option<(mesh::Sender<M>, mesh::Receiver<M>)>
    where
        M: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        self.take_messages_with(mesh::Options::default())
    }

    /// A view of the shared load table: the connections open now on each serving
    /// node. It can move to another task (into a request handler, say), and
    /// reading it costs no message.
    ///
    /// ```no_run
    /// # async fn f(nodes: multinode::Nodes) {
    /// let load = nodes.load();
    /// for (id, open) in load.open_connections() {
    ///     println!("node {id}: {open} connections");
    /// }
    /// # }
    /// ```
    pub fn load(&self) -> Load {
        Load::new(self.shm.clone(), self.identity.serving_slots.start)
    }

    /// This node's counter `name` (a Prometheus name, at most 48 bytes; up to
    /// 16 metrics a node), in shared memory: the admin listener's `/metrics`
    /// and [`metrics`](Self::metrics) report it per node and summed, with no
    /// message at scrape time. A restarted node gets its counter back where it
    /// was.
    ///
    /// ```no_run
    /// # fn f(nodes: &multinode::Nodes) -> Result<(), multinode::metrics::MetricError> {
    /// let orders = nodes.counter("orders_total")?;
    /// orders.inc();
    /// # Ok(()) }
    /// ```
    pub fn counter(
        &self,
        name: &str,
    ) -> Result<crate::metrics::Counter, crate::metrics::MetricError> {
        crate::metrics::counter(&self.shm, self.identity.id, name)
    }

    /// This node's gauge `name`, as [`counter`](Self::counter) is for counters.
    ///
    /// ```no_run
    /// # fn f(nodes: &multinode::Nodes) -> Result<(), multinode::metrics::MetricError> {
    /// let sessions = nodes.gauge("sessions")?;
    /// sessions.add(1);
    /// # Ok(()) }
    /// ```
    pub fn gauge(&self, name: &str) -> Result<crate::metrics::Gauge, crate::metrics::MetricError> {
        crate::metrics::gauge(&self.shm, self.identity.id, name)
    }

    /// The whole server's metrics in the Prometheus text format, as the admin
    /// listener serves them at `/metrics`: for a route of the program's own.
    /// Read from shared memory, asking no other process.
    ///
    /// ```no_run
    /// # fn f(nodes: &multinode::Nodes) {
    /// let text = nodes.metrics();
    /// assert!(text.contains("multinode_node_requests_total"));
    /// # }
    /// ```
    pub fn metrics(&self) -> String {
        crate::metrics::text(&self.shm)
    }

    /// [`take_messages`](Self::take_messages) with other [`Options`](crate::mesh::Options).
    ///
    /// ```no_run
    /// #[multinode::main(nodes = 2)]
    /// async fn main(mut nodes: multinode::Nodes) {
    ///     let options = multinode::mesh::Options::new().max_frame_len(64 * 1024);
    ///     let (tx, _rx) = nodes.take_messages_with::<Vec<u8>>(options).expect("taken once");
    ///     let _ = tx.broadcast(&vec![1, 2, 3]).await;
    /// }
    /// ```
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the body of `main` is inside one).
    pub fn take_messages_with<M>(
        &mut self,
        options: mesh::Options,
    ) -> Option<(mesh::Sender<M>, mesh::Receiver<M>)>
    where
        M: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        let queue = self.take_mesh()?;
        let ids = std::iter::once(0).chain(self.identity.members.iter().copied());
        let cluster = self.identity.cluster.as_ref();
        Some(mesh::start_messages(
            self.identity.id,
            ids,
            queue,
            options,
            (cluster, Some(self.shm.clone())),
            self.shutdown.clone(),
        ))
    }

    /// Takes the message layer for a [`Map`](crate::map::Map): a map every node
    /// holds in memory, read here, written everywhere. Resolves once this
    /// node's copy holds a snapshot from the others (or they are all starting
    /// too); until then the node does not report ready, so a rolling reload
    /// waits for it. `None` when the peers, or the messages, were taken already:
    /// a program uses one of [`take_peers`](Self::take_peers),
    /// [`take_messages`](Self::take_messages) and `take_map`.
    ///
    /// ```no_run
    /// #[multinode::main(nodes = 4)]
    /// async fn main(mut nodes: multinode::Nodes) {
    ///     let options = multinode::map::Options::new().ttl(std::time::Duration::from_secs(1800));
    ///     let sessions = nodes
    ///         .take_map::<String, String>(options)
    ///         .await
    ///         .expect("taken once");
    ///     println!("{} sessions already", sessions.len());
    /// }
    /// ```
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the body of `main` is inside one).
    pub fn take_map<K: map::Key, V: map::Value>(
        &mut self,
        options: map::Options,
    ) -> impl Future<Output = Option<map::Map<K, V>>> + Send + 'static {
        // Held from the call: a node whose body awaits this is not ready early.
        let hold = self.readiness.hold();
        let me = self.identity.id;
        let map = self
            .take_messages_with::<map::Wire<K, V>>(options.mesh_options())
            .map(|layer| map::start(me, layer, options));
        async move {
            let map = map?;
            map.synced().await;
            drop(hold);
            Some(map)
        }
    }
}
