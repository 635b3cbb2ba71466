//! Validation: a [`Builder`] and the environment become a [`Config`], or a
//! [`ConfigError`] naming the key or the variable.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::balance::Balance;
use super::builder::*;
use super::cluster;
use super::error::ConfigError;
use super::ranges::{self, millis};

impl Builder {
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
                Ok(n) if ranges::nodes(n) => n,
                _ => {
                    return Err(ConfigError::env(
                        ENV_NODES,
                        &value,
                        &format!("expected a whole number of processes, {}", ranges::NODES),
                    ))
                }
            },
            None => match self.nodes {
                Some(n) if !ranges::nodes(n) => {
                    return Err(ConfigError::key(
                        "nodes",
                        &format!("{n}: expected {}", ranges::NODES),
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
                    "expected least_conn, reuse_port, shared or sticky",
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
        if !ranges::shutdown_timeout(millis(self.shutdown_timeout)) {
            let expected = ranges::SHUTDOWN_TIMEOUT;
            let why = format!("{:?}: expected {expected}", self.shutdown_timeout);
            return Err(ConfigError::key("shutdown_timeout", &why));
        }
        let watchdog = self.watchdog_timeout;
        if !ranges::watchdog_timeout(millis(watchdog)) {
            let why = format!("{watchdog:?}: expected {}", ranges::WATCHDOG_TIMEOUT);
            return Err(ConfigError::key("watchdog_timeout", &why));
        }
        let upgrade_timeout = match env(ENV_UPGRADE_TIMEOUT) {
            Some(value) => ranges::seconds(&value)
                .filter(|d| ranges::upgrade_timeout(millis(*d)))
                .ok_or_else(|| {
                    let why = format!("expected seconds, {}", ranges::UPGRADE_TIMEOUT);
                    ConfigError::env(ENV_UPGRADE_TIMEOUT, &value, &why)
                })?,
            None if !ranges::upgrade_timeout(millis(self.upgrade_timeout)) => {
                let why = format!(
                    "{:?}: expected {}",
                    self.upgrade_timeout,
                    ranges::UPGRADE_TIMEOUT
                );
                return Err(ConfigError::key("upgrade_timeout", &why));
            }
            None => self.upgrade_timeout,
        };
        let ready_nodes = match env(ENV_READY_NODES) {
            Some(value) => match value.trim().parse::<usize>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    let why = "expected a whole number of nodes, at least 1";
                    return Err(ConfigError::env(ENV_READY_NODES, &value, why));
                }
            },
            None if self.ready_nodes == 0 => {
                return Err(ConfigError::key("ready_nodes", "0: expected at least 1"))
            }
            None => self.ready_nodes,
        };
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
        let recycling = super::recycling::resolve(&self.recycling, &env)?;
        let tls = super::tls::resolve((self.tls_cert.as_deref(), self.tls_key.as_deref()), &env)?;
        let cluster = cluster::resolve((self.cluster.as_deref(), self.namespace.as_deref()), &env)?;
        let admin = match env(ENV_ADMIN) {
            Some(value) if value.trim().is_empty() => None,
            Some(value) => Some(admin_addr(&value).ok_or_else(|| {
                ConfigError::env(
                    ENV_ADMIN,
                    &value,
                    "expected an address such as 127.0.0.1:9100",
                )
            })?),
            None => match self.admin.as_deref() {
                Some(value) => Some(admin_addr(value).ok_or_else(|| {
                    ConfigError::key(
                        "admin",
                        &format!("{value:?}: expected an address such as \"127.0.0.1:9100\""),
                    )
                })?),
                None => None,
            },
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
            upgrade_timeout,
            boot_failures: self.boot_failures,
            max_connections,
            ready_nodes,
            cluster,
            tls,
            admin,
            recycling,
        })
    }
}

/// `host:port`, the host a name or an address.
fn admin_addr(value: &str) -> Option<SocketAddr> {
    let (host, port) = value.trim().rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    resolve_host(host, port.parse().ok()?)
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
    /// How long a new master (SIGUSR2) has to be ready.
    pub upgrade_timeout: Duration,
    pub boot_failures: u32,
    pub max_connections: Option<usize>,
    /// How many nodes must serve for `/readyz` to answer 200.
    pub ready_nodes: usize,
    /// When a worker is replaced for what it has become.
    pub recycling: super::recycling::Recycling,
    /// The machines' meeting point, with the `cluster` feature.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub cluster: Option<cluster::Cluster>,
    /// HTTPS's certificate and key, with the `tls` feature.
    pub tls: Option<super::tls::TlsFiles>,
    /// The admin listener's address, if any.
    pub admin: Option<SocketAddr>,
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
        for bad in ["0", "-1", "soon", "1e30"] {
            let err = resolve(Builder::new(), &[(ENV_UPGRADE_TIMEOUT, bad)]).unwrap_err();
            assert!(err.starts_with("MULTINODE_UPGRADE_TIMEOUT="), "{err}");
        }
        let config = resolve(Builder::new(), &[(ENV_UPGRADE_TIMEOUT, "2.5")]).unwrap();
        assert_eq!(config.upgrade_timeout, Duration::from_millis(2500));
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
