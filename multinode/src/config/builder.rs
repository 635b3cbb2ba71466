//! The [`Builder`] whose methods are the attribute's keys, its choices, and the
//! environment variables that override it at run time.

use std::time::Duration;

use super::balance::Balance;

/// Which tokio runtime each process builds for its body.
///
/// The processes are the parallelism, so the default is one `current_thread`
/// runtime per process. `MultiThread` needs this crate's `multi-thread` feature
/// (`multinode = { version = "0.1", features = ["multi-thread"] }`); without it,
/// a program that asks for it stops with an error before any process starts.
///
/// ```
/// let builder = multinode::Builder::new().flavor(multinode::Flavor::MultiThread);
/// # let _ = builder;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Flavor {
    /// `tokio::runtime::Builder::new_current_thread()`: one thread per process.
    #[default]
    CurrentThread,
    /// `tokio::runtime::Builder::new_multi_thread()`, with `worker_threads` threads.
    MultiThread,
}

/// Environment variables that override the code's settings at run time.
pub(crate) const ENV_PORT: &str = "MULTINODE_PORT";
pub(crate) const ENV_HOST: &str = "MULTINODE_HOST";
pub(crate) const ENV_NODES: &str = "MULTINODE_NODES";
pub(crate) const ENV_BALANCE: &str = "MULTINODE_BALANCE";
pub(crate) const ENV_MAX_CONNECTIONS: &str = "MULTINODE_MAX_CONNECTIONS";
pub(crate) const ENV_ADMIN: &str = "MULTINODE_ADMIN";
pub(crate) const ENV_UPGRADE_TIMEOUT: &str = "MULTINODE_UPGRADE_TIMEOUT";
pub(crate) const ENV_READY_NODES: &str = "MULTINODE_READY_NODES";

/// Why `flavor = "multi_thread"` is refused when this crate is built without
/// its `multi-thread` feature.
#[cfg(not(feature = "multi-thread"))]
pub(super) const MULTI_THREAD_NEEDS: &str = "needs multinode's `multi-thread` feature";

/// Settings for a multinode program: what `#[multinode::main(...)]` expands to.
///
/// Every attribute key is a method of the same name. `MULTINODE_PORT`,
/// `MULTINODE_HOST`, `MULTINODE_NODES`, `MULTINODE_BALANCE` and
/// `MULTINODE_MAX_CONNECTIONS` override `port`, `host`, `nodes`, `balance` and
/// `max_connections` when the program starts; a bad value stops it with exit
/// code 2 before any process starts.
///
/// ```no_run
/// use std::time::Duration;
///
/// multinode::Builder::new()
///     .port(8080)
///     .nodes(4)
///     .shutdown_timeout(Duration::from_secs(10))
///     .run(|nodes: multinode::Nodes| async move {
///         println!("node {} of {}", nodes.id(), nodes.count());
///     })
/// ```
#[derive(Clone, Debug)]
pub struct Builder {
    pub(crate) port: u16,
    pub(crate) host: String,
    pub(crate) nodes: Option<usize>,
    pub(crate) master_listen: bool,
    pub(crate) restart: bool,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) flavor: Flavor,
    pub(crate) worker_threads: Option<usize>,
    pub(crate) backlog: u32,
    pub(crate) balance: Balance,
    pub(crate) watchdog_timeout: Duration,
    pub(crate) upgrade_timeout: Duration,
    pub(crate) boot_failures: u32,
    pub(crate) max_connections: Option<usize>,
    pub(crate) cluster: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) ready_nodes: usize,
    pub(crate) tls_cert: Option<String>,
    pub(crate) tls_key: Option<String>,
    pub(crate) admin: Option<String>,
    pub(crate) logging: Logging,
    pub(crate) recycling: RecyclingKeys,
}

/// What the recycling keys said, before the environment (`recycling.rs`).
#[derive(Clone, Debug, Default)]
pub(crate) struct RecyclingKeys {
    pub(super) max_requests: Option<u64>,
    pub(super) jitter: u64,
    pub(super) max_memory: Option<u64>,
    pub(super) window: Option<Duration>,
    pub(super) hard: Option<u64>,
}

/// Who installs the `tracing` subscriber that prints the log.
///
/// ```
/// fn json_logs() {
///     // e.g. tracing_subscriber::fmt().json().init();
/// }
/// let builder = multinode::Builder::new().logging(multinode::Logging::Own(json_logs));
/// # let _ = builder;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub enum Logging {
    /// multinode's: human lines on stderr, filtered by `RUST_LOG` (default
    /// `info`), unless a global subscriber is already set.
    #[default]
    Multinode,
    /// The program's: this function runs first in every process (the master
    /// and each worker) and installs it. multinode's events still carry the
    /// node's `id`, `generation` and `pid` (as fields of the `node` span).
    Own(fn()),
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            port: 8080,
            host: "127.0.0.1".to_owned(),
            nodes: None,
            master_listen: true,
            restart: true,
            shutdown_timeout: Duration::from_secs(30),
            flavor: Flavor::CurrentThread,
            worker_threads: None,
            backlog: 1024,
            balance: Balance::LeastConn,
            watchdog_timeout: Duration::from_secs(30),
            upgrade_timeout: Duration::from_secs(30),
            boot_failures: 5,
            max_connections: None,
            cluster: None,
            namespace: None,
            ready_nodes: 1,
            tls_cert: None,
            tls_key: None,
            admin: None,
            logging: Logging::Multinode,
            recycling: Default::default(),
        }
    }
}

impl Builder {
    /// The defaults: port 8080 on 127.0.0.1, one node per CPU, the master serving
    /// too, crashed workers restarted, 30 s to drain on shutdown.
    ///
    /// ```
    /// let builder = multinode::Builder::new();
    /// # let _ = builder;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The TCP port to listen on; `0` picks a free one (logged at start).
    /// Overridden by `MULTINODE_PORT`.
    ///
    /// ```
    /// let builder = multinode::Builder::new().port(3000);
    /// # let _ = builder;
    /// ```
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The address to listen on: an IP address or a host name (default
    /// `127.0.0.1`; use `0.0.0.0` to serve every interface). Overridden by
    /// `MULTINODE_HOST`.
    ///
    /// ```
    /// let builder = multinode::Builder::new().host("0.0.0.0");
    /// # let _ = builder;
    /// ```
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// How many processes serve (default: the number of CPUs; 1 to 1024).
    /// Overridden by `MULTINODE_NODES`.
    ///
    /// ```
    /// let builder = multinode::Builder::new().nodes(4);
    /// # let _ = builder;
    /// ```
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = Some(nodes);
        self
    }

    /// Whether the master serves too (default `true`: ids `0..N`). With `false` the
    /// master only supervises and runs the body without a listener; workers are ids
    /// `1..=N`.
    ///
    /// ```
    /// let builder = multinode::Builder::new().master_listen(false);
    /// # let _ = builder;
    /// ```
    pub fn master_listen(mut self, master_listen: bool) -> Self {
        self.master_listen = master_listen;
        self
    }

    /// Whether a worker that exits is started again in its slot (default `true`).
    ///
    /// ```
    /// let builder = multinode::Builder::new().restart(false);
    /// # let _ = builder;
    /// ```
    pub fn restart(mut self, restart: bool) -> Self {
        self.restart = restart;
        self
    }

    /// How long a stopping node may take to finish its in-flight requests before
    /// they are cut (default 30 s; at most a week).
    ///
    /// ```
    /// let builder = multinode::Builder::new().shutdown_timeout(std::time::Duration::from_secs(5));
    /// # let _ = builder;
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The tokio runtime each process builds (default [`Flavor::CurrentThread`]).
    ///
    /// ```
    /// let builder = multinode::Builder::new().flavor(multinode::Flavor::MultiThread);
    /// # let _ = builder;
    /// ```
    pub fn flavor(mut self, flavor: Flavor) -> Self {
        self.flavor = flavor;
        self
    }

    /// Threads of each process's runtime; only with [`Flavor::MultiThread`].
    ///
    /// ```
    /// let builder = multinode::Builder::new()
    ///     .flavor(multinode::Flavor::MultiThread)
    ///     .worker_threads(2);
    /// # let _ = builder;
    /// ```
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = Some(threads);
        self
    }

    /// The listen backlog of each listening socket (default 1024; the kernel caps
    /// it at `net.core.somaxconn`).
    ///
    /// ```
    /// let builder = multinode::Builder::new().backlog(4096);
    /// # let _ = builder;
    /// ```
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }

    /// How connections are spread over the processes (default
    /// [`Balance::LeastConn`]; with `axum`, use [`Balance::ReusePort`]).
    ///
    /// ```
    /// let builder = multinode::Builder::new().balance(multinode::Balance::Shared);
    /// # let _ = builder;
    /// ```
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// The watchdog (gunicorn's `timeout`): a worker whose runtime sends no
    /// heartbeat for this long, such as one stuck in a blocking loop, is killed and
    /// replaced (default 30 s; `Duration::ZERO` turns it off; otherwise 100 ms to a
    /// week). Time during which the master itself was stopped too (the whole
    /// process group stopped by Ctrl-Z, or a frozen cgroup) does not count. Heartbeats come from
    /// a task in the worker's runtime, so a `current_thread` runtime blocked by a
    /// handler misses them. It watches the workers, not the master's own node.
    ///
    /// ```
    /// let builder = multinode::Builder::new().watchdog_timeout(std::time::Duration::from_secs(10));
    /// # let _ = builder;
    /// ```
    pub fn watchdog_timeout(mut self, timeout: Duration) -> Self {
        self.watchdog_timeout = timeout;
        self
    }

    /// How long a new master started by SIGUSR2 has to report every node of
    /// its tree ready (default 30 s; 100 ms to a week). If it has not by then,
    /// it is stopped and this master's tree serves on. Overridden by
    /// `MULTINODE_UPGRADE_TIMEOUT` (seconds, such as `90` or `2.5`).
    ///
    /// ```
    /// let builder = multinode::Builder::new().upgrade_timeout(std::time::Duration::from_secs(120));
    /// # let _ = builder;
    /// ```
    pub fn upgrade_timeout(mut self, timeout: Duration) -> Self {
        self.upgrade_timeout = timeout;
        self
    }

    /// The most connections one node holds at once (nginx's `worker_connections`).
    /// At the limit a node stops accepting, and the others take the arrivals; when
    /// every node is full, connections wait in the kernel's backlog. The default is
    /// derived from the descriptor limit (which each process raises to its hard
    /// limit at start): that limit less 64 and 4 per node, kept for the mesh, the
    /// control socket and the supervisor, so that a node never runs out of
    /// descriptors by accepting. Overridden by `MULTINODE_MAX_CONNECTIONS`.
    ///
    /// ```
    /// let builder = multinode::Builder::new().max_connections(10_000);
    /// # let _ = builder;
    /// ```
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = Some(connections);
        self
    }

    /// The Redis server through which this program's machines meet
    /// (`redis://host:port/db`, `redis://:password@host`, `rediss://…` for TLS,
    /// `redis+unix:///path`, or `redis+sentinel://host:port,host:port/master`
    /// for the primary Redis Sentinel names); none by default. Needs multinode's `cluster`
    /// feature: without it, a `cluster` setting stops the program with exit
    /// code 2. Overridden by `MULTINODE_CLUSTER` (empty: no cluster);
    /// `MULTINODE_MACHINE` names this machine (default: the host name and the
    /// master's pid). Two masters that claim one name is an error at start.
    /// The password is never logged.
    ///
    /// ```
    /// let builder = multinode::Builder::new().cluster("redis://127.0.0.1:6379/0");
    /// # let _ = builder;
    /// ```
    pub fn cluster(mut self, url: impl Into<String>) -> Self {
        self.cluster = Some(url.into());
        self
    }

    /// This program's name in the cluster's Redis (default: the binary's file
    /// name): every key and channel multinode uses there carries it, so that
    /// two programs, or a staging and a production deploy, can share one
    /// Redis and never see each other's machines or messages. Overridden by
    /// `MULTINODE_NAMESPACE`; 1 to 64 letters, digits, `.`, `-` or `_`.
    ///
    /// ```
    /// let builder = multinode::Builder::new()
    ///     .cluster("redis://127.0.0.1:6379/0")
    ///     .namespace("shop-staging");
    /// # let _ = builder;
    /// ```
    pub fn namespace(mut self, name: impl Into<String>) -> Self {
        self.namespace = Some(name.into());
        self
    }

    /// HTTPS: the certificate chain (leaf first), a PEM file that every node
    /// reads as it starts, so that a reload (SIGHUP) or an upgrade (SIGUSR2)
    /// serves it as it is then; with [`tls_key`](Self::tls_key).
    /// `http::serve` then speaks TLS (rustls; ALPN `h2` and `http/1.1`) with
    /// every limit it has over TCP, and every node resumes the sessions of
    /// every other (the master makes the ticket keys, rotates them every 6
    /// hours, and hands them over the control sockets). Files that do not
    /// load stop the program at start (exit code 2) and refuse a reload. Needs
    /// multinode's `tls` feature. Overridden by `MULTINODE_TLS_CERT` (empty:
    /// none); `MULTINODE_TLS_TICKETS=node` gives each node its own ticket keys,
    /// `MULTINODE_TLS_ROTATE_SECS` sets how often they change.
    ///
    /// ```
    /// let builder = multinode::Builder::new()
    ///     .tls_cert("/etc/ssl/site.pem")
    ///     .tls_key("/etc/ssl/site.key");
    /// # let _ = builder;
    /// ```
    pub fn tls_cert(mut self, path: impl Into<String>) -> Self {
        self.tls_cert = Some(path.into());
        self
    }

    /// HTTPS: the certificate's private key, a PEM file (PKCS#8, PKCS#1 or
    /// SEC1); see [`tls_cert`](Self::tls_cert). Overridden by
    /// `MULTINODE_TLS_KEY` (empty: none).
    ///
    /// ```
    /// let builder = multinode::Builder::new()
    ///     .tls_cert("/etc/ssl/site.pem")
    ///     .tls_key("/etc/ssl/site.key");
    /// # let _ = builder;
    /// ```
    pub fn tls_key(mut self, path: impl Into<String>) -> Self {
        self.tls_key = Some(path.into());
        self
    }

    /// How many nodes must serve for the admin listener's `GET /readyz` to
    /// answer 200 (1 by default); it answers 503 from the moment a stop
    /// begins, whatever the count, so that a load balancer takes this machine
    /// out before the drain. Overridden by `MULTINODE_READY_NODES`.
    ///
    /// ```
    /// let builder = multinode::Builder::new().nodes(4).ready_nodes(3);
    /// # let _ = builder;
    /// ```
    pub fn ready_nodes(mut self, nodes: usize) -> Self {
        self.ready_nodes = nodes;
        self
    }

    /// The admin listener's address (`"127.0.0.1:9100"`), none by default:
    /// `GET /metrics` there gives the whole server's metrics in the Prometheus
    /// text format, and `GET /` a status page. A thread of the master's own
    /// serves it (8 connections at once at most, each text rendered at most
    /// every 100 ms), so it answers while every worker is busy or restarting,
    /// and a storm of scrapes never slows the supervision.
    /// Overridden by `MULTINODE_ADMIN` (empty: none).
    ///
    /// ```
    /// let builder = multinode::Builder::new().admin("127.0.0.1:9100");
    /// # let _ = builder;
    /// ```
    pub fn admin(mut self, addr: impl Into<String>) -> Self {
        self.admin = Some(addr.into());
        self
    }

    /// Who installs the log's `tracing` subscriber: multinode (the default), or
    /// the program, with a function run first in every process.
    ///
    /// ```
    /// fn my_logs() { /* install a subscriber: JSON, OpenTelemetry… */ }
    /// let builder = multinode::Builder::new().logging(multinode::Logging::Own(my_logs));
    /// # let _ = builder;
    /// ```
    pub fn logging(mut self, logging: Logging) -> Self {
        self.logging = logging;
        self
    }

    /// How many times in a row a worker may fail to start (exit before it is
    /// ready) before the master stops everything and exits non-zero, naming the
    /// worker's last error (default 5).
    ///
    /// ```
    /// let builder = multinode::Builder::new().boot_failures(3);
    /// # let _ = builder;
    /// ```
    pub fn boot_failures(mut self, failures: u32) -> Self {
        self.boot_failures = failures;
        self
    }

    /// Builds the tokio runtime one process runs its body on.
    pub(crate) fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = match self.flavor {
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            #[cfg(feature = "multi-thread")]
            Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
            // Refused by `resolve` before any process starts.
            #[cfg(not(feature = "multi-thread"))]
            Flavor::MultiThread => {
                return Err(std::io::Error::other(format!(
                    "flavor = \"multi_thread\" {MULTI_THREAD_NEEDS}"
                )))
            }
        };
        if let Some(threads) = self.worker_threads {
            builder.worker_threads(threads);
        }
        builder.enable_all().build()
    }
}
