//! The route to the nodes of other machines (the `cluster` feature): Redis
//! pub/sub. Each node publishes, from one connection and one bounded queue (so
//! that its messages keep their order; what waits in the queue goes out in one
//! pipeline), to `multinode:to:MACHINE` of each other machine for a broadcast
//! (so that no machine is sent its own) and to `multinode:to:MACHINE:ID` for
//! one node; it subscribes to its machine's and its own on a second
//! connection. A message is its sender's machine and id and the message's
//! postcard bytes (the frame's body), postcard-encoded. Pub/sub delivers at most
//! once: what a node misses while its connection is down is not replayed.
//!
//! Each node also keeps a key of its own, `multinode:node:MACHINE:ID`, that
//! lives `cluster::TTL` unless renewed, and reads every second which machines
//! (their claims, see `cluster.rs`) and nodes are in the cluster: a send to a
//! machine that left fails with `Gone`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::RedisWrite;
use tokio::sync::mpsc;
use tracing::{info, Instrument};

use super::envelope::Envelope;
use super::node_id::NodeId;
use super::outage::Outage;
use super::send_error::SendError;
use super::subscription::Subscription;
use crate::config::Cluster;

/// How often the machines in the cluster are read.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// The most messages published in one round trip.
const BATCH: usize = 256;

/// One message to publish: its `PUBLISH` command, built by the sender (one
/// buffer holds the channel and the envelope, encoded in place).
type Publish = redis::Cmd;

/// The sending side, shared by the `Sender`s.
pub(super) struct Remote {
    machine: String,
    me: u32,
    queue: mpsc::Sender<Publish>,
    /// Whether the publishing connection is up: sends fail fast while it is not.
    up: Arc<AtomicBool>,
    machines: Arc<RwLock<Machines>>,
    /// The other machines, for those who wait for a change.
    others: tokio::sync::watch::Receiver<Vec<String>>,
}

#[derive(Default)]
struct Machines {
    live: BTreeSet<String>,
    /// The channels of the other live machines, for broadcasts.
    channels: Arc<[String]>,
    /// The nodes of the other live machines.
    nodes: Vec<NodeId>,
    /// Every machine seen in the cluster since this node started.
    seen: BTreeSet<String>,
}

/// Starts the bridge for node `me` of `cluster.machine`: the route out (at
/// most `queue` messages waiting), and the subscription to what the other
/// machines publish for it.
pub(super) fn start(
    cluster: &Cluster,
    me: usize,
    queue: usize,
    leave: tokio_util::sync::CancellationToken,
) -> Result<(Remote, Subscription), String> {
    crate::cluster::install_crypto();
    let client = redis::Client::open(cluster.url.as_str())
        .map_err(|e| format!("cluster: {:?}", e.kind()))?;
    let (publish_tx, publish_rx) = mpsc::channel(queue);
    let up = Arc::new(AtomicBool::new(false));
    let machines = Arc::new(RwLock::new(Machines::default()));
    let (others_tx, others) = tokio::sync::watch::channel(Vec::new());
    let span = tracing::Span::current();
    tokio::spawn(publish(client.clone(), publish_rx, up.clone()).instrument(span.clone()));
    let machine = cluster.machine.clone();
    // The subscription's pushes come to a callback, in RESP3 only.
    let mut resp3 = client.get_connection_info().clone();
    resp3.redis.protocol = redis::ProtocolVersion::RESP3;
    let resp3 = redis::Client::open(resp3).map_err(|e| format!("cluster: {:?}", e.kind()))?;
    let subscription = Subscription::start(resp3, machine.clone(), me, leave);
    let me_at = (cluster.machine.clone(), me);
    let watch = watch_machines(client, machines.clone(), me_at, others_tx);
    tokio::spawn(watch.instrument(span));
    let remote = Remote {
        machine,
        me: me as u32,
        queue: publish_tx,
        up,
        machines,
        others,
    };
    Ok((remote, subscription))
}

impl Remote {
    /// Whether `machine` is this node's own.
    pub fn is_own(&self, machine: &str) -> bool {
        machine == self.machine
    }

    /// The command that publishes `body` (a message's postcard bytes) from
    /// this node on `channel`.
    fn publish(&self, channel: &str, body: &[u8]) -> Publish {
        let envelope = Envelope {
            machine: &self.machine,
            node: self.me,
            body,
        };
        publish_command(channel, &envelope)
    }

    /// Where a message to `to` goes: its channel, or why it cannot.
    fn channel(&self, to: &NodeId) -> Result<String, SendError> {
        let machine = to.machine().unwrap_or_default();
        if !self.up.load(Ordering::Relaxed) {
            return Err(SendError::Disconnected(to.clone()));
        }
        let machines = self.machines.read().unwrap_or_else(|e| e.into_inner());
        if machines.live.contains(machine) && machine != self.machine {
            Ok(format!("multinode:to:{machine}:{}", to.id()))
        } else if machines.seen.contains(machine) {
            Err(SendError::Gone(to.clone()))
        } else {
            Err(SendError::UnknownNode(to.clone()))
        }
    }

    /// Queues `body` for node `to` of another machine, waiting while the queue
    /// is full.
    pub async fn send(&self, to: &NodeId, body: &[u8]) -> Result<(), SendError> {
        let publish = self.publish(&self.channel(to)?, body);
        self.queue
            .send(publish)
            .await
            .map_err(|_| SendError::Disconnected(to.clone()))
    }

    /// [`send`](Self::send) without waiting.
    pub fn try_send(&self, to: &NodeId, body: &[u8]) -> Result<(), SendError> {
        let publish = self.publish(&self.channel(to)?, body);
        self.queue.try_send(publish).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => SendError::Full(to.clone()),
            mpsc::error::TrySendError::Closed(_) => SendError::Disconnected(to.clone()),
        })
    }

    /// Queues `body` for every node of the other machines (those live when it
    /// is sent); nothing while Redis is out of reach.
    pub async fn broadcast(&self, body: &[u8]) {
        if !self.up.load(Ordering::Relaxed) {
            return;
        }
        let channels = {
            let machines = self.machines.read().unwrap_or_else(|e| e.into_inner());
            machines.channels.clone()
        };
        if channels.is_empty() {
            return;
        }
        let idle = self.queue.capacity() == self.queue.max_capacity();
        for channel in channels.iter() {
            let _ = self.queue.send(self.publish(channel, body)).await;
        }
        if idle {
            // The publisher was waiting: it writes to Redis before this node
            // goes on to its local peers (whose writes wake their processes,
            // which then compete with Redis for the CPU).
            tokio::task::yield_now().await;
        }
    }

    /// The other machines in the cluster, now and as they change.
    pub fn machines(&self) -> tokio::sync::watch::Receiver<Vec<String>> {
        self.others.clone()
    }

    /// The nodes of the other machines, as last read.
    pub fn nodes(&self) -> Vec<NodeId> {
        let machines = self.machines.read().unwrap_or_else(|e| e.into_inner());
        machines.nodes.clone()
    }
}

/// `PUBLISH channel envelope`, allocated once at its size, the envelope
/// encoded in place.
fn publish_command(channel: &str, envelope: &Envelope) -> Publish {
    // Three varints of at most 5 bytes, the name, the body.
    let size = 15 + envelope.machine.len() + envelope.body.len();
    let mut cmd = redis::Cmd::with_capacity(3, "PUBLISH".len() + channel.len() + size);
    cmd.arg("PUBLISH").arg(channel);
    // Into a Vec, writing cannot fail.
    let _ = postcard::to_io(envelope, cmd.writer_for_next_arg());
    cmd
}

/// Publishes the queue in order, from one connection; a message that cannot be
/// published is dropped (at most once), and the connection made again with
/// backoff. One line when an outage starts, one when it ends.
async fn publish(client: redis::Client, mut queue: mpsc::Receiver<Publish>, up: Arc<AtomicBool>) {
    let mut outage = Outage::new("publishing", "messages to other machines fail");
    let config = crate::cluster::connection_config();
    let mut connection = None;
    // One pipeline, cleared and filled again: its room stays.
    let mut pipeline = redis::Pipeline::with_capacity(BATCH);
    loop {
        if connection.is_none() {
            match client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(live) => {
                    connection = Some(live);
                    up.store(true, Ordering::Relaxed);
                    outage.ended();
                }
                Err(error) => {
                    up.store(false, Ordering::Relaxed);
                    outage.started(&format!("{:?}", error.kind()));
                    // What was queued before the outage is dropped.
                    while queue.try_recv().is_ok() {}
                    tokio::time::sleep(outage.backoff()).await;
                    continue;
                }
            }
        }
        let Some(first) = queue.recv().await else {
            return; // the message layer is gone
        };
        let Some(live) = connection.as_mut() else {
            continue;
        };
        // What waits goes in one pipeline: one round trip, in order. Its
        // replies (how many received each) are read and let go, errors
        // included.
        pipeline.clear();
        pipeline.add_command(first);
        while pipeline.len() < BATCH {
            let Ok(next) = queue.try_recv() else { break };
            pipeline.add_command(next);
        }
        let published = pipeline.exec_async(live).await;
        if let Err(error) = published {
            up.store(false, Ordering::Relaxed);
            outage.started(&format!("{:?}", error.kind()));
            connection = None;
        }
    }
}

/// Renews this node's key and reads the machines' claims and the nodes' keys
/// every second; logs each machine that joins or leaves, and tells those who
/// watch (`others`: all but this machine).
async fn watch_machines(
    client: redis::Client,
    machines: Arc<RwLock<Machines>>,
    (me, node): (String, usize),
    others: tokio::sync::watch::Sender<Vec<String>>,
) {
    let own_key = format!("multinode:node:{me}:{node}");
    let ttl = crate::cluster::TTL.as_millis() as u64;
    let config = crate::cluster::connection_config();
    let mut connection = None;
    let mut every = tokio::time::interval(LOOK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if connection.is_none() {
            connection = client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .ok();
        }
        let Some(live) = connection.as_mut() else {
            continue;
        };
        let mut renew = redis::cmd("SET");
        renew.arg(&own_key).arg(1).arg("PX").arg(ttl);
        let renewed: redis::RedisResult<()> = renew.query_async(live).await;
        let claims = keys(live, "multinode:machine:*").await;
        let node_keys = keys(live, "multinode:node:*").await;
        match (renewed, claims, node_keys) {
            (Ok(()), Ok(claims), Ok(node_keys)) => {
                let live: BTreeSet<String> = claims
                    .iter()
                    .filter_map(|k| k.strip_prefix("multinode:machine:"))
                    .map(str::to_owned)
                    .collect();
                let mut nodes: Vec<NodeId> = node_keys
                    .iter()
                    .filter_map(|k| node_of(k))
                    .filter(|n| n.machine().is_some_and(|m| m != me && live.contains(m)))
                    .collect();
                nodes.sort();
                let mut machines = machines.write().unwrap_or_else(|e| e.into_inner());
                for joined in live.difference(&machines.live).filter(|m| **m != me) {
                    info!(machine = %joined, "cluster: machine {joined} joined");
                }
                for left in machines.live.difference(&live).filter(|m| **m != me) {
                    info!(machine = %left, "cluster: machine {left} left");
                }
                machines.seen.extend(live.iter().cloned());
                let now: Vec<String> = live.iter().filter(|m| **m != me).cloned().collect();
                machines.channels = now.iter().map(|m| format!("multinode:to:{m}")).collect();
                others.send_if_modified(|was| {
                    let changed = *was != now;
                    *was = now;
                    changed
                });
                machines.live = live;
                machines.nodes = nodes;
            }
            _ => connection = None,
        }
    }
}

/// The node a key `multinode:node:MACHINE:ID` stands for.
fn node_of(key: &str) -> Option<NodeId> {
    let (machine, id) = key.strip_prefix("multinode:node:")?.rsplit_once(':')?;
    Some(NodeId::remote(machine, id.parse().ok()?))
}

/// The keys that match `pattern`, by `SCAN` (never `KEYS`, which would block a
/// Redis that holds many keys).
async fn keys(
    live: &mut redis::aio::MultiplexedConnection,
    pattern: &str,
) -> redis::RedisResult<Vec<String>> {
    let (mut cursor, mut keys) = (0u64, Vec::new());
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(live)
            .await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            return Ok(keys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_command_is_the_envelope_as_postcard_encodes_it() {
        let body = vec![9u8; 300]; // its length takes a 2-byte varint
        let envelope = Envelope {
            machine: "a-long-machine-name",
            node: 70_000,
            body: &body,
        };
        let expected = redis::cmd("PUBLISH")
            .arg("multinode:to:b")
            .arg(postcard::to_allocvec(&envelope).unwrap())
            .get_packed_command();
        let command = publish_command("multinode:to:b", &envelope);
        assert_eq!(command.get_packed_command(), expected);
        let args: Vec<_> = command.args_iter().collect();
        let redis::Arg::Simple(payload) = args[2] else {
            panic!("a plain argument")
        };
        let decoded: Envelope = postcard::from_bytes(payload).unwrap();
        assert_eq!(
            (decoded.machine, decoded.node),
            ("a-long-machine-name", 70_000)
        );
        assert_eq!(decoded.body, &body[..]);
    }
}
