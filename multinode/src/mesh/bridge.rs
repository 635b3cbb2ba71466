//! The route to the nodes of other machines (the `cluster` feature): Redis
//! pub/sub. Each node publishes, from one connection and one bounded queue (so
//! that its messages keep their order; what waits in the queue goes out in one
//! pipeline), to `multinode:NAMESPACE:to:MACHINE` of each other machine for a
//! broadcast (so that no machine is sent its own) and to
//! `multinode:NAMESPACE:to:MACHINE:ID` for one node; it subscribes to its
//! machine's and its own on a second connection. A message is its sender's
//! machine and id, the fingerprint of its type, and the message's postcard
//! bytes (the frame's body), postcard-encoded. Pub/sub delivers at most once:
//! what a node misses while its connection is down is not replayed.
//!
//! Each node also renews itself every second in the namespace's sorted set of
//! live nodes, and reads that set and the one of live machines (their claims,
//! see `cluster/mod.rs`): never a scan of the keyspace. A send to a machine
//! that left fails with `Gone`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::RedisWrite;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, Instrument};

use super::envelope::Envelope;
use super::machines::Machines;
use super::node_id::NodeId;
use super::outage::Outage;
use super::send_error::SendError;
use super::subscription::Subscription;
use super::trust::Trust;
use crate::cluster::Endpoint;
use crate::config::Cluster;

/// How often the machines in the cluster are read.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How soon after a reading a message from an unknown machine may cause another.
const LOOK_AGAIN: Duration = Duration::from_millis(200);
/// The most messages published in one round trip.
const BATCH: usize = 256;

/// Renews this node (ARGV[1], `MACHINE:ID`) in the sorted set of live nodes
/// (KEYS[1]) until ARGV[2] ms from now, drops the lapsed nodes and machines
/// (KEYS[2]), and returns the live machines and nodes: O(machines + nodes),
/// whatever else the Redis holds. The clock is Redis's, one for every machine.
const LOOK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return {redis.call('ZRANGE', KEYS[2], 0, -1), redis.call('ZRANGE', KEYS[1], 0, -1)}";

/// One message to publish: its `PUBLISH` command, built by the sender (one
/// buffer holds the channel and the envelope, encoded in place).
type Publish = redis::Cmd;

/// The sending side, shared by the `Sender`s.
pub(super) struct Remote {
    cluster: Cluster,
    me: u32,
    /// The fingerprint of the message type, in every envelope.
    kind: u32,
    queue: mpsc::Sender<Publish>,
    /// Whether the publishing connection is up: sends fail fast while it is not.
    up: Arc<AtomicBool>,
    machines: Arc<RwLock<Machines>>,
    /// The other machines, for those who wait for a change.
    others: tokio::sync::watch::Receiver<Vec<String>>,
}

/// Starts the bridge for node `me` of `cluster.machine`: the route out (at
/// most `queue` messages waiting), and the subscription to what the other
/// machines publish for it, which takes only what `trust` lets in. Both end
/// when `leave` fires (the node drains).
pub(super) fn start(
    cluster: &Cluster,
    (me, queue): (usize, usize),
    leave: CancellationToken,
    trust: Trust,
) -> Result<(Remote, Subscription), String> {
    let endpoint = Endpoint::open(cluster, redis::ProtocolVersion::RESP2)?;
    // The subscription's pushes come to a callback, in RESP3 only.
    let resp3 = Endpoint::open(cluster, redis::ProtocolVersion::RESP3)?;
    let (publish_tx, publish_rx) = mpsc::channel(queue);
    let up = Arc::new(AtomicBool::new(false));
    let machines = Arc::new(RwLock::new(Machines::default()));
    let (others_tx, others) = tokio::sync::watch::channel(Vec::new());
    let look_now = Arc::new(Notify::new());
    let span = tracing::Span::current();
    tokio::spawn(publish(endpoint.clone(), publish_rx, up.clone()).instrument(span.clone()));
    let kind = trust.kind;
    let subscription = Subscription::start(
        resp3,
        (cluster, me),
        leave.clone(),
        (machines.clone(), look_now.clone()),
        trust,
    );
    let watch = watch_machines(
        (endpoint, cluster.clone(), me),
        (machines.clone(), Box::new(subscription.readings())),
        others_tx,
        (look_now, leave),
    );
    tokio::spawn(watch.instrument(span));
    let remote = Remote {
        cluster: cluster.clone(),
        me: me as u32,
        kind,
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
        machine == self.cluster.machine
    }

    /// The command that publishes `body` (a message's postcard bytes) from
    /// this node on `channel`.
    fn publish(&self, channel: &str, body: &[u8]) -> Publish {
        let envelope = Envelope {
            machine: &self.cluster.machine,
            node: self.me,
            kind: self.kind,
            body,
        };
        publish_command(channel, &envelope)
    }

    /// Where a message to `to` goes: its channel, or why it cannot.
    fn channel(&self, to: &NodeId) -> Result<String, SendError> {
        if !self.up.load(Ordering::Relaxed) {
            return Err(SendError::Disconnected(to.clone()));
        }
        let machines = self.machines.read().unwrap_or_else(|e| e.into_inner());
        machines.route(&self.cluster.machine, to)?;
        let machine = to.machine().unwrap_or_default();
        Ok(self.cluster.node_channel(machine, to.id()))
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
    // Four varints of at most 5 bytes, the name, the body.
    let size = 20 + envelope.machine.len() + envelope.body.len();
    let mut cmd = redis::Cmd::with_capacity(3, "PUBLISH".len() + channel.len() + size);
    cmd.arg("PUBLISH").arg(channel);
    // Into a Vec, writing cannot fail.
    let _ = postcard::to_io(envelope, cmd.writer_for_next_arg());
    cmd
}

/// Publishes the queue in order, from one connection; a message that cannot be
/// published is dropped (at most once), and the connection made again with
/// backoff. One line when an outage starts, one when it ends.
async fn publish(endpoint: Endpoint, mut queue: mpsc::Receiver<Publish>, up: Arc<AtomicBool>) {
    let mut outage = Outage::new("publishing", "messages to other machines fail");
    let config = crate::cluster::connection_config();
    let mut connection = None;
    // One pipeline, cleared and filled again: its room stays.
    let mut pipeline = redis::Pipeline::with_capacity(BATCH);
    loop {
        if connection.is_none() {
            match endpoint.connect(&config).await {
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

/// Renews this node in the cluster and reads the live machines and nodes
/// every second (sooner when `look_now` is told, by a message from a machine
/// not known yet), then tells the subscription (`reading_done`); logs each
/// machine that joins or leaves, and tells those who watch (`others`: all but
/// this machine). Once `leave` fires, the node is
/// taken out of the cluster's nodes.
async fn watch_machines(
    (endpoint, cluster, node): (Endpoint, Cluster, usize),
    (machines, reading_done): (Arc<RwLock<Machines>>, Box<dyn Fn() + Send + Sync>),
    others: tokio::sync::watch::Sender<Vec<String>>,
    (look_now, leave): (Arc<Notify>, CancellationToken),
) {
    let me = cluster.machine.clone();
    let member = format!("{me}:{node}");
    let (nodes_key, machines_key) = (cluster.nodes_key(), cluster.machines_key());
    let look = redis::Script::new(LOOK);
    let ttl = crate::cluster::TTL.as_millis() as u64;
    let config = crate::cluster::connection_config();
    let mut connection = None;
    let mut every = tokio::time::interval(LOOK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = look_now.notified() => {}
            _ = leave.cancelled() => break,
        }
        if connection.is_none() {
            connection = endpoint.connect(&config).await.ok();
        }
        let Some(live) = connection.as_mut() else {
            continue;
        };
        let read: redis::RedisResult<(Vec<String>, Vec<String>)> = look
            .key(&nodes_key)
            .key(&machines_key)
            .arg(&member)
            .arg(ttl)
            .invoke_async(live)
            .await;
        let Ok((live, nodes)) = read else {
            connection = None;
            continue;
        };
        let change = {
            let mut machines = machines.write().unwrap_or_else(|e| e.into_inner());
            machines.update(&me, live, &nodes, |m| cluster.machine_channel(m))
        };
        reading_done();
        for joined in &change.joined {
            info!(machine = %joined, "cluster: machine {joined} joined");
        }
        for left in &change.left {
            info!(machine = %left, "cluster: machine {left} left");
        }
        others.send_if_modified(|was| {
            let changed = *was != change.others;
            *was = change.others;
            changed
        });
        // A burst of strangers asks for one reading, not one each.
        tokio::time::sleep(LOOK_AGAIN).await;
    }
    if let Some(mut live) = connection {
        let gone = redis::cmd("ZREM").arg(&nodes_key).arg(&member).to_owned();
        let _ = tokio::time::timeout(LOOK_AGAIN, gone.query_async::<()>(&mut live)).await;
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
            kind: u32::MAX,
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
