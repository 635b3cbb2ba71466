//! The Redis a process talks to: one server, or the primary that Redis
//! Sentinel names, asked again at each connection, so that a connection made
//! again after a failover goes to the new primary.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{ProtocolVersion, RedisConnectionInfo, RedisResult};

use crate::config::{Cluster, Sentinels, Target};

/// Where connections go; cheap to clone.
#[derive(Clone)]
pub(crate) enum Endpoint {
    Server(redis::Client),
    /// Behind a lock: the client keeps its connections to the sentinels.
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

impl Endpoint {
    /// The endpoint `cluster`'s URL names, speaking `protocol` (RESP3 for a
    /// subscription, whose messages come as pushes).
    pub fn open(cluster: &Cluster, protocol: ProtocolVersion) -> Result<Self, String> {
        install_crypto();
        let kind = |e: redis::RedisError| format!("cluster: {:?}", e.kind());
        match cluster.target() {
            Target::Server => {
                let mut info: redis::ConnectionInfo = cluster.url.as_str().parse().map_err(kind)?;
                info.redis.protocol = protocol;
                Ok(Endpoint::Server(redis::Client::open(info).map_err(kind)?))
            }
            Target::Sentinel(sentinels) => {
                let client = sentinel_client(sentinels, protocol).map_err(kind)?;
                Ok(Endpoint::Sentinel(Arc::new(tokio::sync::Mutex::new(
                    client,
                ))))
            }
        }
    }

    /// A connection with `config`; through the sentinels, to the server they
    /// name the primary now (which is asked to confirm it).
    pub async fn connect(
        &self,
        config: &redis::AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        match self {
            Endpoint::Server(client) => {
                client
                    .get_multiplexed_async_connection_with_config(config)
                    .await
            }
            Endpoint::Sentinel(sentinels) => {
                let asked = async { sentinels.lock().await.async_get_client().await };
                let primary = tokio::time::timeout(PATIENCE, asked)
                    .await
                    .map_err(|_| timed_out())??;
                primary
                    .get_multiplexed_async_connection_with_config(config)
                    .await
            }
        }
    }
}

fn timed_out() -> redis::RedisError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "no sentinel answered").into()
}

fn sentinel_client(sentinels: Sentinels, protocol: ProtocolVersion) -> RedisResult<SentinelClient> {
    let addrs: Vec<redis::ConnectionInfo> = sentinels
        .addrs
        .into_iter()
        .map(|(host, port)| redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Tcp(host, port),
            redis: RedisConnectionInfo::default(),
        })
        .collect();
    let primary = SentinelNodeConnectionInfo {
        tls_mode: None,
        redis_connection_info: Some(RedisConnectionInfo {
            db: sentinels.db,
            username: sentinels.username,
            password: sentinels.password,
            protocol,
        }),
    };
    SentinelClient::build(
        addrs,
        sentinels.master,
        Some(primary),
        SentinelServerType::Master,
    )
}

/// How long connecting to Redis, and then each reply, may take before the
/// connection counts as lost: a Redis that hangs, or one a network drops
/// packets to, is an outage like a Redis that stopped.
const PATIENCE: Duration = Duration::from_secs(3);

/// The settings of every connection to Redis: bounded waits (`PATIENCE`),
/// and TCP keepalive probes (after 5 s idle, then every second, 3 unanswered:
/// lost), which find a dead peer on a connection that only reads, such as a
/// subscription.
pub(crate) fn connection_config() -> redis::AsyncConnectionConfig {
    use redis::io::tcp::{socket2::TcpKeepalive, TcpSettings};
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(5))
        .with_interval(Duration::from_secs(1))
        .with_retries(3);
    let tcp = TcpSettings::default()
        .set_keepalive(keepalive)
        .set_user_timeout(PATIENCE);
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(PATIENCE)
        .set_response_timeout(PATIENCE)
        .set_tcp_settings(tcp)
}

/// rustls's crypto for `rediss://` URLs, once per process (ring: the one this
/// build links).
pub(crate) fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
