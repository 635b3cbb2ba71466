//! The route to the nodes of other machines (the `cluster` feature): Redis
//! pub/sub. Each node publishes, from one connection and one bounded queue (so
//! that its messages keep their order; what waits in the queue goes out in one
//! pipeline), to `multinode:all` for a broadcast and to
//! `multinode:to:MACHINE:ID` for one node; it subscribes to both on a second
//! connection. A message is its sender's machine and id and the message's
//! postcard bytes (the frame's body), postcard-encoded. Pub/sub delivers at most
//! once: what a node misses while its connection is down is not replayed.
//!
//! Each node also reads which machines are in the cluster (their claims, see
//! `cluster.rs`) every second: a send to a machine that left fails with `Gone`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn, Instrument};

use super::messages::SendError;
use super::NodeId;
use crate::config::Cluster;

const ALL: &str = "multinode:all";
/// How often the machines in the cluster are read.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// The most messages published in one round trip.
const BATCH: usize = 256;
/// The longest wait between two tries to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A message between machines, as published.
#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    machine: &'a str,
    node: u32,
    body: &'a [u8],
}

/// One message to publish.
struct Publish {
    channel: String,
    payload: Vec<u8>,
}

/// A message from another machine.
pub(super) struct Arrival {
    pub from: NodeId,
    pub body: Bytes,
}

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
    /// Every machine seen in the cluster since this node started.
    seen: BTreeSet<String>,
}

/// Starts the bridge for node `me` of `cluster.machine`: the route out, and the
/// arrivals from the other machines (at most `queue` of each waiting).
pub(super) fn start(
    cluster: &Cluster,
    me: usize,
    queue: usize,
) -> Result<(Remote, mpsc::Receiver<Arrival>), String> {
    crate::cluster::install_crypto();
    let client = redis::Client::open(cluster.url.as_str())
        .map_err(|e| format!("cluster: {:?}", e.kind()))?;
    let (publish_tx, publish_rx) = mpsc::channel(queue);
    let (arrive_tx, arrivals) = mpsc::channel(queue);
    let up = Arc::new(AtomicBool::new(false));
    let machines = Arc::new(RwLock::new(Machines::default()));
    let (others_tx, others) = tokio::sync::watch::channel(Vec::new());
    let span = tracing::Span::current();
    tokio::spawn(publish(client.clone(), publish_rx, up.clone()).instrument(span.clone()));
    let own = format!("multinode:to:{}:{me}", cluster.machine);
    let machine = cluster.machine.clone();
    let subscriber = subscribe(client.clone(), machine.clone(), own, arrive_tx);
    tokio::spawn(subscriber.instrument(span.clone()));
    let watch = watch_machines(client, machines.clone(), cluster.machine.clone(), others_tx);
    tokio::spawn(watch.instrument(span));
    let remote = Remote {
        machine,
        me: me as u32,
        queue: publish_tx,
        up,
        machines,
        others,
    };
    Ok((remote, arrivals))
}

impl Remote {
    /// Whether `machine` is this node's own.
    pub fn is_own(&self, machine: &str) -> bool {
        machine == self.machine
    }

    /// The payload of `body` (a message's postcard bytes) from this node.
    fn envelope(&self, body: &[u8]) -> Vec<u8> {
        let envelope = Envelope {
            machine: &self.machine,
            node: self.me,
            body,
        };
        postcard::to_allocvec(&envelope).unwrap_or_default()
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
        let channel = self.channel(to)?;
        let payload = self.envelope(body);
        self.queue
            .send(Publish { channel, payload })
            .await
            .map_err(|_| SendError::Disconnected(to.clone()))
    }

    /// [`send`](Self::send) without waiting.
    pub fn try_send(&self, to: &NodeId, body: &[u8]) -> Result<(), SendError> {
        let channel = self.channel(to)?;
        let payload = self.envelope(body);
        self.queue
            .try_send(Publish { channel, payload })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => SendError::Full(to.clone()),
                mpsc::error::TrySendError::Closed(_) => SendError::Disconnected(to.clone()),
            })
    }

    /// Queues `body` for every node of the other machines; nothing while Redis
    /// is out of reach.
    pub async fn broadcast(&self, body: &[u8]) {
        if self.up.load(Ordering::Relaxed) {
            let payload = self.envelope(body);
            let channel = ALL.to_owned();
            let _ = self.queue.send(Publish { channel, payload }).await;
        }
    }

    /// The other machines in the cluster, now and as they change.
    pub fn machines(&self) -> tokio::sync::watch::Receiver<Vec<String>> {
        self.others.clone()
    }
}

/// Publishes the queue in order, from one connection; a message that cannot be
/// published is dropped (at most once), and the connection made again with
/// backoff. One line when an outage starts, one when it ends.
async fn publish(client: redis::Client, mut queue: mpsc::Receiver<Publish>, up: Arc<AtomicBool>) {
    let mut outage = Outage::new("publishing");
    let mut connection = None;
    loop {
        if connection.is_none() {
            match client.get_multiplexed_async_connection().await {
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
        // What waits goes in one pipeline: one round trip, in order.
        let mut pipeline = redis::pipe();
        let mut next = Some(first);
        let mut batch = 0;
        while let Some(Publish { channel, payload }) = next {
            pipeline.cmd("PUBLISH").arg(channel).arg(payload).ignore();
            batch += 1;
            next = (batch < BATCH).then(|| queue.try_recv().ok()).flatten();
        }
        let published: redis::RedisResult<()> = pipeline.query_async(live).await;
        if let Err(error) = published {
            up.store(false, Ordering::Relaxed);
            outage.started(&format!("{:?}", error.kind()));
            connection = None;
        }
    }
}

/// Delivers what the other machines publish for this node, until the message
/// layer is gone; subscribes again after a lost connection.
async fn subscribe(
    client: redis::Client,
    machine: String,
    own: String,
    arrivals: mpsc::Sender<Arrival>,
) {
    let mut outage = Outage::new("subscription");
    let mut garbage = crate::throttle::Throttle::default();
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&[ALL, own.as_str()]).await?;
            redis::RedisResult::Ok(pubsub)
        };
        let mut pubsub = match subscribed.await {
            Ok(pubsub) => pubsub,
            Err(error) => {
                outage.started(&format!("{:?}", error.kind()));
                tokio::time::sleep(outage.backoff()).await;
                continue;
            }
        };
        outage.ended();
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let payload = message.get_payload_bytes();
            let Ok(envelope) = postcard::from_bytes::<Envelope>(payload) else {
                if let Some(held) = garbage.admit(std::time::Instant::now()) {
                    let channel = message.get_channel_name();
                    warn!(
                        held_back = held,
                        "cluster: dropped a message that is not one on {channel}"
                    );
                }
                continue;
            };
            if envelope.machine == machine {
                continue; // this machine's own broadcast: its nodes had it directly
            }
            let arrival = Arrival {
                from: NodeId::remote(envelope.machine, envelope.node as usize),
                body: Bytes::copy_from_slice(envelope.body),
            };
            if arrivals.send(arrival).await.is_err() {
                return; // the receiver is gone
            }
        }
        outage.started("connection lost");
    }
}

/// Reads the machines' claims every second; logs each machine that joins or
/// leaves, and tells those who watch (`others`: all but `me`).
async fn watch_machines(
    client: redis::Client,
    machines: Arc<RwLock<Machines>>,
    me: String,
    others: tokio::sync::watch::Sender<Vec<String>>,
) {
    let mut connection = None;
    let mut every = tokio::time::interval(LOOK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if connection.is_none() {
            connection = client.get_multiplexed_async_connection().await.ok();
        }
        let Some(live) = connection.as_mut() else {
            continue;
        };
        match claims(live).await {
            Ok(keys) => {
                let live: BTreeSet<String> = keys
                    .iter()
                    .filter_map(|k| k.strip_prefix("multinode:machine:"))
                    .map(str::to_owned)
                    .collect();
                let mut machines = machines.write().unwrap_or_else(|e| e.into_inner());
                for joined in live.difference(&machines.live).filter(|m| **m != me) {
                    info!(machine = %joined, "cluster: machine {joined} joined");
                }
                for left in machines.live.difference(&live).filter(|m| **m != me) {
                    info!(machine = %left, "cluster: machine {left} left");
                }
                machines.seen.extend(live.iter().cloned());
                let now: Vec<String> = live.iter().filter(|m| **m != me).cloned().collect();
                others.send_if_modified(|was| {
                    let changed = *was != now;
                    *was = now;
                    changed
                });
                machines.live = live;
            }
            Err(_) => connection = None,
        }
    }
}

/// The machines' claim keys, by `SCAN` (never `KEYS`, which would block a
/// Redis that holds many keys).
async fn claims(live: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<Vec<String>> {
    let (mut cursor, mut keys) = (0u64, Vec::new());
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("multinode:machine:*")
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

/// An outage of one connection: logged once when it starts and once when it
/// ends; the backoff between tries doubles up to `MAX_BACKOFF`.
struct Outage {
    what: &'static str,
    down: bool,
    backoff: Duration,
}

impl Outage {
    fn new(what: &'static str) -> Self {
        Outage {
            what,
            down: false,
            backoff: Duration::from_millis(100),
        }
    }

    fn started(&mut self, why: &str) {
        if !self.down {
            warn!("cluster: lost the {} connection to Redis ({why}): messages to other machines fail until it is back", self.what);
            self.down = true;
        }
    }

    fn ended(&mut self) {
        if self.down {
            info!("cluster: the {} connection to Redis is back", self.what);
        }
        self.down = false;
        self.backoff = Duration::from_millis(100);
    }

    fn backoff(&mut self) -> Duration {
        let now = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        now
    }
}
