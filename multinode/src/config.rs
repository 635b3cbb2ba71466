//! Configuration: the [`Builder`] whose methods are the attribute's keys, and the
//! environment variables that override it at run time.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::Nodes;

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

/// How the listening port reaches the serving processes.
///
/// Kept selectable so that the benchmark can measure each mode side by side.
///
/// ```
/// let builder = multinode::Builder::new().balance(multinode::Balance::Shared);
/// # let _ = builder;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Balance {
    /// One `SO_REUSEPORT` listener per slot, opened by the master and kept open for
    /// the whole run: the kernel spreads new connections over the slots by hash, and a
    /// restarting slot's queue waits for its replacement. The choice for a listener
    /// taken with [`Nodes::take_listener`](crate::Nodes::take_listener) (axum).
    ReusePort,
    /// One listening socket shared by every process (Node's `cluster` and the seed's
    /// way): whichever process wakes first accepts.
    Shared,
    /// One shared listening socket, and a node that has more open connections than
    /// the least busy node that is accepting leaves a pending connection to it:
    /// the least busy process accepts first. A node that leaves an arrival waiting
    /// 5 ms without running its accept loop (stopped, or its runtime blocked) is
    /// not accepting, and is not waited for until it runs again; a draining node
    /// is not waited for at all. Needs [`http::serve`](crate::http::serve); a
    /// listener taken with [`Nodes::take_listener`](crate::Nodes::take_listener)
    /// accepts as `Shared`. The default: the fairest, measured side by side with
    /// the others.
    #[default]
    LeastConn,
}

impl Balance {
    /// The mode named as in the attribute and `MULTINODE_BALANCE`.
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "least_conn" => Some(Balance::LeastConn),
            "reuse_port" => Some(Balance::ReusePort),
            "shared" => Some(Balance::Shared),
            _ => None,
        }
    }
}

/// Environment variables that override the code's settings at run time.
pub(crate) const ENV_PORT: &str = "MULTINODE_PORT";
pub(crate) const ENV_HOST: &str = "MULTINODE_HOST";
pub(crate) const ENV_NODES: &str = "MULTINODE_NODES";
pub(crate) const ENV_BALANCE: &str = "MULTINODE_BALANCE";
pub(crate) const ENV_MAX_CONNECTIONS: &str = "MULTINODE_MAX_CONNECTIONS";

/// The longest `shutdown_timeout` or `watchdog_timeout`: a week.
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The shortest watchdog timeout: heartbeats come every quarter of it, and no
/// more often than every 10 ms.
const MIN_WATCHDOG: Duration = Duration::from_millis(100);

/// The most processes one master will supervise.
pub(crate) const MAX_NODES: usize = 1024;

/// Why `flavor = "multi_thread"` is refused when this crate is built without
/// its `multi-thread` feature.
#[cfg(not(feature = "multi-thread"))]
const MULTI_THREAD_NEEDS: &str = "needs multinode's `multi-thread` feature";

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
    pub(crate) boot_failures: u32,
    pub(crate) max_connections: Option<usize>,
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
            boot_failures: 5,
            max_connections: None,
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

    /// How many processes serve (default: the number of CPUs). Overridden by
    /// `MULTINODE_NODES`.
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
    /// they are cut (default 30 s).
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

    /// Starts the program: in the process the user started, binds the port and
    /// starts the workers, then runs `body` in every process with its [`Nodes`].
    /// Never returns: the process exits with 0, or non-zero on an error (2 for bad
    /// configuration, 1 for an `Err` returned by `body` or a failed start).
    ///
    /// ```no_run
    /// multinode::Builder::new().nodes(2).run(|nodes: multinode::Nodes| async move {
    ///     nodes.shutdown().await;
    /// })
    /// ```
    pub fn run<F, Fut>(self, body: F) -> !
    where
        F: FnOnce(Nodes) -> Fut,
        Fut: std::future::Future,
        Fut::Output: crate::MainResult,
    {
        crate::bootstrap::run(self, body)
    }

    /// Validates the settings and applies the environment overrides.
    pub(crate) fn resolve(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let port = match env(ENV_PORT) {
            Some(value) => value.trim().parse::<u16>().map_err(|_| {
                ConfigError::env(ENV_PORT, &value, "expected a port number, 0 to 65535")
            })?,
            None => self.port,
        };
        let nodes = match env(ENV_NODES) {
            Some(value) => match value.trim().parse::<usize>() {
                Ok(n) if (1..=MAX_NODES).contains(&n) => n,
                _ => {
                    return Err(ConfigError::env(
                        ENV_NODES,
                        &value,
                        &format!("expected a whole number of processes, 1 to {MAX_NODES}"),
                    ))
                }
            },
            None => match self.nodes {
                Some(n) if !(1..=MAX_NODES).contains(&n) => {
                    return Err(ConfigError::key(
                        "nodes",
                        &format!("{n}: expected 1 to {MAX_NODES} processes"),
                    ))
                }
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
        };
        let (host, host_source) = match env(ENV_HOST) {
            Some(value) => (value, Some(ENV_HOST)),
            None => (self.host.clone(), None),
        };
        let addr = resolve_host(host.trim(), port).ok_or_else(|| match host_source {
            Some(var) => {
                ConfigError::env(var, &host, "not an IP address or a host name that resolves")
            }
            None => ConfigError::key(
                "host",
                &format!("{host:?}: not an IP address or a host name that resolves"),
            ),
        })?;
        let balance = match env(ENV_BALANCE) {
            Some(value) => Balance::from_name(value.trim()).ok_or_else(|| {
                ConfigError::env(
                    ENV_BALANCE,
                    &value,
                    "expected least_conn, reuse_port or shared",
                )
            })?,
            None => self.balance,
        };
        if self.worker_threads == Some(0) {
            return Err(ConfigError::key("worker_threads", "0: expected at least 1"));
        }
        #[cfg(not(feature = "multi-thread"))]
        if self.flavor == Flavor::MultiThread {
            let why = format!("\"multi_thread\": {MULTI_THREAD_NEEDS}");
            return Err(ConfigError::key("flavor", &why));
        }
        if self.worker_threads.is_some() && self.flavor == Flavor::CurrentThread {
            return Err(ConfigError::key(
                "worker_threads",
                "only goes with flavor = \"multi_thread\"",
            ));
        }
        if self.backlog == 0 {
            return Err(ConfigError::key("backlog", "0: expected at least 1"));
        }
        if self.boot_failures == 0 {
            return Err(ConfigError::key("boot_failures", "0: expected at least 1"));
        }
        if self.shutdown_timeout > MAX_DURATION {
            let why = format!("{:?}: expected at most a week", self.shutdown_timeout);
            return Err(ConfigError::key("shutdown_timeout", &why));
        }
        let watchdog = self.watchdog_timeout;
        if !watchdog.is_zero() && !(MIN_WATCHDOG..=MAX_DURATION).contains(&watchdog) {
            let why = format!("{watchdog:?}: expected 0 (off), or 100 ms to a week");
            return Err(ConfigError::key("watchdog_timeout", &why));
        }
        let max_connections = match env(ENV_MAX_CONNECTIONS) {
            Some(value) => match value.trim().parse::<usize>() {
                Ok(n) if n >= 1 => Some(n),
                _ => {
                    return Err(ConfigError::env(
                        ENV_MAX_CONNECTIONS,
                        &value,
                        "expected a whole number of connections, at least 1",
                    ))
                }
            },
            None if self.max_connections == Some(0) => {
                return Err(ConfigError::key(
                    "max_connections",
                    "0: expected at least 1",
                ))
            }
            None => self.max_connections,
        };
        Ok(Config {
            addr,
            nodes,
            master_listen: self.master_listen,
            restart: self.restart,
            shutdown_timeout: self.shutdown_timeout,
            backlog: self.backlog,
            balance,
            watchdog_timeout: self.watchdog_timeout,
            boot_failures: self.boot_failures,
            max_connections,
        })
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

fn resolve_host(host: &str, port: u16) -> Option<SocketAddr> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    if host.is_empty() {
        return None;
    }
    (host, port).to_socket_addrs().ok()?.next()
}

/// Settings after validation and environment overrides: what the master runs with.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub addr: SocketAddr,
    pub nodes: usize,
    pub master_listen: bool,
    pub restart: bool,
    pub shutdown_timeout: Duration,
    pub backlog: u32,
    pub balance: Balance,
    pub watchdog_timeout: Duration,
    pub boot_failures: u32,
    pub max_connections: Option<usize>,
}

impl Config {
    /// The slots that serve: `0..N` when the master serves, `1..=N` otherwise.
    pub fn serving_slots(&self) -> std::ops::Range<usize> {
        let first = usize::from(!self.master_listen);
        first..first + self.nodes
    }

    /// The slots that are worker processes (the master is slot 0).
    pub fn worker_slots(&self) -> std::ops::Range<usize> {
        1..self.serving_slots().end
    }
}

/// A bad setting, named by its key or its environment variable.
#[derive(Debug)]
pub(crate) struct ConfigError(String);

impl ConfigError {
    fn env(var: &str, value: &str, why: &str) -> Self {
        ConfigError(format!("{var}={value:?}: {why}"))
    }
    fn key(key: &str, why: &str) -> Self {
        ConfigError(format!("`{key}` = {why}"))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(builder: Builder, vars: &[(&str, &str)]) -> Result<Config, String> {
        builder
            .resolve(|name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn environment_overrides_the_code() {
        let config = resolve(
            Builder::new().port(1).nodes(2),
            &[
                (ENV_PORT, "9000"),
                (ENV_NODES, "3"),
                (ENV_HOST, "::1"),
                (ENV_BALANCE, "shared"),
            ],
        )
        .unwrap();
        assert_eq!(config.balance, Balance::Shared);
        assert_eq!(config.addr, "[::1]:9000".parse().unwrap());
        assert_eq!(config.nodes, 3);
    }

    #[test]
    fn bad_values_name_the_variable_or_key() {
        let err = resolve(Builder::new(), &[(ENV_PORT, "70000")]).unwrap_err();
        assert!(err.starts_with("MULTINODE_PORT=\"70000\""), "{err}");
        let err = resolve(Builder::new(), &[(ENV_NODES, "0")]).unwrap_err();
        assert!(err.starts_with("MULTINODE_NODES=\"0\""), "{err}");
        let err = resolve(Builder::new(), &[(ENV_HOST, "no such host.invalid")]).unwrap_err();
        assert!(err.starts_with("MULTINODE_HOST="), "{err}");
        let err = resolve(Builder::new(), &[(ENV_BALANCE, "random")]).unwrap_err();
        assert!(err.starts_with("MULTINODE_BALANCE=\"random\""), "{err}");
        let err = resolve(Builder::new().nodes(0), &[]).unwrap_err();
        assert!(err.starts_with("`nodes`"), "{err}");
        let err = resolve(Builder::new().worker_threads(2), &[]).unwrap_err();
        assert!(err.starts_with("`worker_threads`"), "{err}");
        let err = resolve(Builder::new().shutdown_timeout(Duration::MAX), &[]).unwrap_err();
        assert!(err.starts_with("`shutdown_timeout`"), "{err}");
        for bad in [Duration::MAX, Duration::from_millis(5)] {
            let err = resolve(Builder::new().watchdog_timeout(bad), &[]).unwrap_err();
            assert!(err.starts_with("`watchdog_timeout`"), "{err}");
        }
        resolve(Builder::new().watchdog_timeout(Duration::ZERO), &[]).unwrap();
        let err = resolve(Builder::new(), &[(ENV_MAX_CONNECTIONS, "0")]).unwrap_err();
        assert!(err.starts_with("MULTINODE_MAX_CONNECTIONS=\"0\""), "{err}");
    }

    #[test]
    #[cfg(not(feature = "multi-thread"))]
    fn multi_thread_without_the_feature_is_refused_before_anything_starts() {
        let builder = Builder::new().flavor(Flavor::MultiThread);
        let err = resolve(builder.clone(), &[]).unwrap_err();
        assert_eq!(
            err,
            "`flavor` = \"multi_thread\": needs multinode's `multi-thread` feature"
        );
        assert!(builder.runtime().is_err());
    }

    #[test]
    #[cfg(feature = "multi-thread")]
    fn multi_thread_builds_a_runtime_with_its_worker_threads() {
        let builder = Builder::new().flavor(Flavor::MultiThread).worker_threads(2);
        resolve(builder.clone(), &[]).unwrap();
        let runtime = builder.runtime().unwrap();
        assert_eq!(runtime.metrics().num_workers(), 2);
        let on = runtime.block_on(async {
            tokio::spawn(async { std::thread::current().id() })
                .await
                .unwrap()
        });
        assert_ne!(on, std::thread::current().id(), "a worker thread ran it");
    }

    #[test]
    fn slots_follow_master_listen() {
        let config = resolve(Builder::new().nodes(3), &[]).unwrap();
        assert_eq!(
            (config.serving_slots(), config.worker_slots()),
            (0..3, 1..3)
        );
        let config = resolve(Builder::new().nodes(3).master_listen(false), &[]).unwrap();
        assert_eq!(
            (config.serving_slots(), config.worker_slots()),
            (1..4, 1..4)
        );
    }
}
