//! The machines of one program meet through Redis (the `cluster` feature). Each
//! master claims its machine's name there, a key that lives `TTL` unless renewed,
//! and renews it every `BEAT` from the supervision thread: a machine whose master
//! died is gone from Redis within `TTL`. Two masters cannot hold one name.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Cluster;

/// How long a machine's claim lives without its master.
pub(crate) const TTL: Duration = Duration::from_secs(5);
/// How often the master renews it.
const BEAT: Duration = Duration::from_secs(1);
/// How long the first claim may wait for Redis before the master starts anyway.
const FIRST_CLAIM: Duration = Duration::from_secs(2);

/// Renews the claim if it is still ours (a restarted Redis lost it: take it again).
const RENEW: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

/// Takes the name if it is free, ours, or held by the master this one
/// succeeds (an upgrade): its claim's value starts with `PID:`.
const TAKE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1]
   or (ARGV[3] ~= '' and string.sub(holder, 1, string.len(ARGV[3])) == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";

/// Gives the name back, if it is still ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// This machine's claim on its name.
pub(crate) struct Membership {
    client: redis::Client,
    machine: String,
    key: String,
    /// What the key holds while it is ours: unique to this master.
    token: String,
    /// After an upgrade: the old master's pid, whose claim this one takes.
    predecessor: Option<u32>,
}

/// The claim, kept on a thread of its own (so that a busy master body never
/// delays it) until dropped, which gives the name back.
pub(crate) struct Joined {
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Joins the cluster: claims this machine's name, then keeps it. An error
/// (the name is held by another master) is one line for the user. A master
/// started by an upgrade takes the name from `predecessor`, the old master.
pub(crate) fn join(cluster: &Cluster, predecessor: Option<u32>) -> Result<Joined, String> {
    install_crypto();
    let cluster = cluster.clone();
    let stop = CancellationToken::new();
    let (claimed_tx, claimed) = std::sync::mpsc::channel();
    let keep_until = stop.clone();
    let span = tracing::Span::current();
    let thread = std::thread::Builder::new()
        .name("multinode-cluster".into())
        .spawn(move || {
            let _entered = span.enter();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            let runtime = match runtime {
                Ok(runtime) => runtime,
                Err(error) => return drop(claimed_tx.send(Err(error.to_string()))),
            };
            runtime.block_on(async move {
                match Membership::claim(&cluster, predecessor).await {
                    Ok(membership) => {
                        let _ = claimed_tx.send(Ok(()));
                        membership.keep(keep_until).await;
                    }
                    Err(error) => drop(claimed_tx.send(Err(error))),
                }
            })
        })
        .map_err(|e| format!("cannot start the cluster thread: {e}"))?;
    let joined = Joined {
        stop,
        thread: Some(thread),
    };
    match claimed.recv() {
        Ok(Ok(())) => Ok(joined),
        Ok(Err(error)) => Err(error),
        Err(_) => Err("the cluster thread ended before its claim".into()),
    }
}

impl Membership {
    /// Claims this machine's name. Another live master holding it is an error;
    /// Redis out of reach is not: the master starts, and claims once it can.
    async fn claim(cluster: &Cluster, predecessor: Option<u32>) -> Result<Self, String> {
        let client = redis::Client::open(cluster.url.as_str())
            .map_err(|e| format!("cannot use the cluster's Redis URL: {:?}", e.kind()))?;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let membership = Membership {
            client,
            machine: cluster.machine.clone(),
            key: format!("multinode:machine:{}", cluster.machine),
            token: format!("{}:{started}", std::process::id()),
            predecessor,
        };
        match tokio::time::timeout(FIRST_CLAIM, membership.take()).await {
            Ok(Ok(true)) => {
                info!(machine = %membership.machine, "joined the cluster");
                Ok(membership)
            }
            Ok(Ok(false)) => Err(format!(
                "machine name {:?} is held by another master in this cluster \
                 (set MULTINODE_MACHINE to another name)",
                membership.machine
            )),
            Ok(Err(error)) => {
                warn!(
                    "cannot reach the cluster's Redis ({:?}): starting alone, joining once it answers",
                    error.kind()
                );
                Ok(membership)
            }
            Err(_) => {
                warn!("the cluster's Redis does not answer: starting alone, joining once it does");
                Ok(membership)
            }
        }
    }

    /// Whether the name is ours now: it was free, or the predecessor's.
    async fn take(&self) -> redis::RedisResult<bool> {
        let config = connection_config();
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let predecessor = self.predecessor.map(|pid| format!("{pid}:"));
        let taken: i64 = redis::Script::new(TAKE)
            .key(&self.key)
            .arg(&self.token)
            .arg(TTL.as_millis() as u64)
            .arg(predecessor.unwrap_or_default())
            .invoke_async(&mut connection)
            .await?;
        Ok(taken == 1)
    }

    /// Renews the claim every `BEAT` until `stop`, reconnecting after an outage
    /// (one line when it starts, one when it ends); then gives the name back.
    async fn keep(self, stop: CancellationToken) {
        let renew = redis::Script::new(RENEW);
        let config = connection_config();
        let mut connection = None;
        let mut outage = false;
        let mut every = tokio::time::interval(BEAT);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => {}
            }
            if connection.is_none() {
                connection = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .ok();
            }
            let Some(live) = connection.as_mut() else {
                if !outage {
                    warn!("lost the cluster's Redis: this machine works alone until it is back");
                    outage = true;
                }
                continue;
            };
            let renewed: redis::RedisResult<i64> = renew
                .key(&self.key)
                .arg(&self.token)
                .arg(TTL.as_millis() as u64)
                .invoke_async(live)
                .await;
            match renewed {
                Ok(1) if outage => {
                    info!(machine = %self.machine, "the cluster's Redis is back: joined again");
                    outage = false;
                }
                Ok(1) => {}
                Ok(_) => {
                    if !outage {
                        warn!(machine = %self.machine, "another master holds this machine's name (after an upgrade: the new one)");
                        outage = true;
                    }
                }
                Err(_) => connection = None,
            }
        }
        if let Some(mut live) = connection {
            let release = redis::Script::new(RELEASE);
            let mut invocation = release.key(&self.key);
            invocation.arg(&self.token);
            let released = invocation.invoke_async::<i64>(&mut live);
            let _ = tokio::time::timeout(Duration::from_secs(1), released).await;
        }
    }
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
