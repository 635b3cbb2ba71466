//! The machines of one program meet through Redis (the `cluster` feature). Each
//! master claims its machine's name there, a key that lives `TTL` unless renewed,
//! and renews it every `BEAT` from a thread of its own: a machine whose master
//! died is gone from Redis within `TTL`. Two masters cannot hold one name. The
//! live machines are also a sorted set scored by when each claim lapses, which
//! the nodes read in O(machines) (`mesh/bridge.rs`).

pub(crate) mod endpoint;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Cluster;
pub(crate) use endpoint::{connection_config, Endpoint};

/// How long a machine's claim lives without its master.
pub(crate) const TTL: Duration = Duration::from_secs(5);
/// How often the master renews it.
const BEAT: Duration = Duration::from_secs(1);
/// How long the first claim may wait for Redis before the master starts anyway.
const FIRST_CLAIM: Duration = Duration::from_secs(2);

/// Takes or renews the claim (KEYS[1]) if it is free, ours, or held by the
/// master this one succeeds (an upgrade): its claim's value starts with
/// ARGV[3], `PID:`. The machine (ARGV[4]) is then live in the sorted set
/// KEYS[2] until the claim lapses, by Redis's clock (the machines' may differ).
const CLAIM: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1]
   or (ARGV[3] ~= '' and string.sub(holder, 1, string.len(ARGV[3])) == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[4])
  return 1
end
return 0";

/// Gives the name back, if it is still ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Where this master's claim stands.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Claim {
    /// Not made yet: Redis did not answer at start.
    Pending,
    /// Ours, renewed every `BEAT`.
    Held,
    /// Ours, until Redis went out of reach.
    Unreachable,
    /// Taken by another master: after an upgrade, the new one.
    Lost,
}

/// This machine's claim on its name.
pub(crate) struct Membership {
    endpoint: Endpoint,
    cluster: Cluster,
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
    /// Set when a late claim found the name taken: the master exits 2.
    conflict: Arc<AtomicBool>,
}

impl Joined {
    /// Whether this master stopped because its name was taken (exit code 2).
    pub(crate) fn conflicted(&self) -> bool {
        self.conflict.load(Ordering::Relaxed)
    }
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
    let cluster = cluster.clone();
    let stop = CancellationToken::new();
    let (claimed_tx, claimed) = std::sync::mpsc::channel();
    let keep_until = stop.clone();
    let conflict = Arc::new(AtomicBool::new(false));
    let conflicted = conflict.clone();
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
                    Ok((membership, claim)) => {
                        let _ = claimed_tx.send(Ok(()));
                        membership.keep(claim, keep_until, conflicted).await;
                    }
                    Err(error) => drop(claimed_tx.send(Err(error))),
                }
            })
        })
        .map_err(|e| format!("cannot start the cluster thread: {e}"))?;
    let joined = Joined {
        stop,
        thread: Some(thread),
        conflict,
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
    async fn claim(cluster: &Cluster, predecessor: Option<u32>) -> Result<(Self, Claim), String> {
        let endpoint = Endpoint::open(cluster, redis::ProtocolVersion::RESP2)?;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let membership = Membership {
            endpoint,
            cluster: cluster.clone(),
            key: cluster.claim_key(&cluster.machine),
            token: format!("{}:{started}", std::process::id()),
            predecessor,
        };
        match tokio::time::timeout(FIRST_CLAIM, membership.take()).await {
            Ok(Ok(true)) => {
                let (machine, namespace) = (&cluster.machine, &cluster.namespace);
                info!(%machine, %namespace, "joined the cluster");
                Ok((membership, Claim::Held))
            }
            Ok(Ok(false)) => Err(taken(&cluster.machine)),
            Ok(Err(error)) => {
                warn!(
                    "cannot reach the cluster's Redis ({:?}): starting alone, joining once it answers",
                    error.kind()
                );
                Ok((membership, Claim::Pending))
            }
            Err(_) => {
                warn!("the cluster's Redis does not answer: starting alone, joining once it does");
                Ok((membership, Claim::Pending))
            }
        }
    }

    /// Takes or renews the claim: whether the name is ours now (it was free,
    /// ours, or the predecessor's).
    async fn renew(
        &self,
        connection: &mut redis::aio::MultiplexedConnection,
        predecessor: Option<u32>,
    ) -> redis::RedisResult<bool> {
        let predecessor = predecessor.map(|pid| format!("{pid}:"));
        let taken: i64 = redis::Script::new(CLAIM)
            .key(&self.key)
            .key(self.cluster.machines_key())
            .arg(&self.token)
            .arg(TTL.as_millis() as u64)
            .arg(predecessor.unwrap_or_default())
            .arg(&self.cluster.machine)
            .invoke_async(connection)
            .await?;
        Ok(taken == 1)
    }

    /// The first claim, on a connection of its own.
    async fn take(&self) -> redis::RedisResult<bool> {
        let mut connection = self.endpoint.connect(&connection_config()).await?;
        self.renew(&mut connection, self.predecessor).await
    }

    /// Renews the claim every `BEAT` until `stop`, reconnecting after an outage
    /// (one line when it starts, one when it ends); then gives the name back.
    /// A claim made late that finds the name taken sets `conflict` and stops
    /// this master as SIGTERM does.
    async fn keep(self, mut claim: Claim, stop: CancellationToken, conflict: Arc<AtomicBool>) {
        let config = connection_config();
        let mut connection = None;
        let mut every = tokio::time::interval(BEAT);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => {}
            }
            if connection.is_none() {
                connection = self.endpoint.connect(&config).await.ok();
            }
            let renewed = match connection.as_mut() {
                // Only a first claim takes the name from the old master.
                Some(live) => match self
                    .renew(live, self.predecessor.filter(|_| claim == Claim::Pending))
                    .await
                {
                    Ok(ours) => Some(ours),
                    Err(_) => {
                        connection = None;
                        None
                    }
                },
                None => None,
            };
            let (next, event) = step(claim, renewed);
            claim = next;
            let machine = &self.cluster.machine;
            match event {
                Event::None => {}
                Event::Joined => info!(%machine, "the cluster's Redis answers: joined the cluster"),
                Event::Back => info!(%machine, "the cluster's Redis is back: joined again"),
                Event::Unreachable => {
                    warn!("lost the cluster's Redis: this machine works alone until it is back")
                }
                Event::Lost => warn!(
                    %machine,
                    "another master holds this machine's name (after an upgrade: the new one)"
                ),
                Event::Conflict => {
                    error!("{}: stopping this master (exit code 2)", taken(machine));
                    conflict.store(true, Ordering::Relaxed);
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::this(),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                    break;
                }
            }
        }
        if let (Some(mut live), Claim::Held | Claim::Unreachable) = (connection, claim) {
            let release = redis::Script::new(RELEASE);
            let mut invocation = release.key(&self.key);
            invocation.key(self.cluster.machines_key());
            invocation.arg(&self.token).arg(&self.cluster.machine);
            let released = invocation.invoke_async::<i64>(&mut live);
            let _ = tokio::time::timeout(Duration::from_secs(1), released).await;
        }
    }
}

/// The line for a machine name another master holds.
fn taken(machine: &str) -> String {
    format!(
        "machine name {machine:?} is held by another master in this cluster \
         (set MULTINODE_MACHINE to another name)"
    )
}

/// What a renewal's outcome says, once.
#[derive(Debug, PartialEq)]
enum Event {
    None,
    /// The late first claim succeeded.
    Joined,
    /// Renewed after an outage.
    Back,
    Unreachable,
    /// Taken from this master, which held it.
    Lost,
    /// A late first claim found the name taken.
    Conflict,
}

/// The claim after a renewal that said `renewed` (whether the name is ours;
/// `None`: Redis did not answer). A master that never held its name and
/// finds it taken shares it with nobody: that is the error of a start, found
/// late. One that held it and lost it was, as a rule, succeeded by an upgrade.
fn step(claim: Claim, renewed: Option<bool>) -> (Claim, Event) {
    match (claim, renewed) {
        (Claim::Pending, Some(true)) => (Claim::Held, Event::Joined),
        (Claim::Pending, Some(false)) => (Claim::Pending, Event::Conflict),
        (Claim::Pending, None) => (Claim::Pending, Event::None),
        (Claim::Held, Some(true)) => (Claim::Held, Event::None),
        (Claim::Unreachable, Some(true)) | (Claim::Lost, Some(true)) => (Claim::Held, Event::Back),
        (Claim::Held, None) => (Claim::Unreachable, Event::Unreachable),
        (Claim::Unreachable, None) | (Claim::Lost, None) => (claim, Event::None),
        (Claim::Held, Some(false)) | (Claim::Unreachable, Some(false)) => {
            (Claim::Lost, Event::Lost)
        }
        (Claim::Lost, Some(false)) => (Claim::Lost, Event::None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_claim_that_finds_the_name_taken_is_a_conflict_and_only_then() {
        assert_eq!(step(Claim::Pending, None), (Claim::Pending, Event::None));
        assert_eq!(step(Claim::Pending, Some(false)).1, Event::Conflict);
        assert_eq!(
            step(Claim::Pending, Some(true)),
            (Claim::Held, Event::Joined)
        );
        assert_eq!(step(Claim::Held, Some(false)), (Claim::Lost, Event::Lost));
        assert_eq!(step(Claim::Lost, Some(false)), (Claim::Lost, Event::None));
        assert_eq!(
            step(Claim::Held, None),
            (Claim::Unreachable, Event::Unreachable)
        );
        assert_eq!(step(Claim::Unreachable, None).1, Event::None);
        assert_eq!(
            step(Claim::Unreachable, Some(true)),
            (Claim::Held, Event::Back)
        );
    }
}
