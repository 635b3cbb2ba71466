//! What the other machines publish for one node (the `cluster` feature): a
//! RESP3 connection (Redis 6 or later) whose pushes go to the node's bounded
//! [`Backlog`], read by its `Receiver`. A task of its own keeps the
//! subscription up (made again after a lost connection, with backoff), whether
//! or not the node receives. Redis is not trusted: a message is taken only
//! from a live machine of the namespace, of this node's message type, and
//! within `max_frame_len`; the others are dropped, counted and logged.

use std::sync::{Arc, RwLock};
use std::task::{ready, Context, Poll};

use redis::{PushInfo, PushKind, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

pub(crate) use super::arrival::Arrival;
use super::backlog::{self, Backlog, Filler};
use super::envelope::Envelope;
use super::machines::Machines;
use super::node_id::NodeId;
use super::outage::Outage;
use super::strangers::{Strangers, Verdict};
use super::tally::Refusal;
use super::trust::Trust;
use crate::cluster::Endpoint;
use crate::config::Cluster;
use crate::throttle::Throttle;

/// One node's subscription to its machine's channel and its own.
pub(crate) struct Subscription {
    /// What came and was not taken yet, across connections.
    backlog: Backlog,
    /// Connects, subscribes, and does both again when the connection is lost.
    keeper: JoinHandle<()>,
    /// This node's machine: its own broadcasts are not for it.
    machine: String,
    namespace: String,
    trust: Trust,
    /// The live machines (senders are checked against them), and how to ask
    /// for a new reading when a sender is not among them.
    machines: Arc<RwLock<Machines>>,
    look_now: Arc<Notify>,
    /// Messages from machines not in the last reading, until the next ones.
    strangers: Strangers,
    /// Where the readings are told to come (in order with the messages).
    filler: Arc<Filler>,
    garbage: Throttle,
    dropped: Throttle,
    /// One throttle for each kind of refusal.
    refused: [Throttle; 3],
    /// Messages dropped and not logged yet.
    unsaid: u64,
    /// The last sender's machine, not allocated again for each of its messages.
    last: Arc<str>,
    span: tracing::Span,
}

impl Subscription {
    /// Subscribes (in the background) to `channels` for node `me` of
    /// `machine`, through `client` (which speaks RESP3), until `leave` fires:
    /// a node that drains (its tree handed over to an upgrade's, say) takes no
    /// more messages from other machines, so that none arrives twice.
    pub fn start(
        endpoint: Endpoint,
        (cluster, me): (&Cluster, usize),
        leave: tokio_util::sync::CancellationToken,
        (machines, look_now): (Arc<RwLock<Machines>>, Arc<Notify>),
        trust: Trust,
    ) -> Self {
        let machine = cluster.machine.clone();
        let channels = [
            cluster.machine_channel(&machine),
            cluster.node_channel(&machine, me),
        ];
        let (filler, backlog) = backlog::new(backlog::LIMIT);
        let filler = Arc::new(filler);
        let span = tracing::Span::current();
        let kept_filler = filler.clone();
        let kept = async move {
            tokio::select! {
                () = keep(endpoint, channels, kept_filler) => {}
                () = leave.cancelled() => {
                    info!("cluster: this node drains; it takes no more messages from other machines");
                }
            }
        };
        let keeper = tokio::spawn(kept.instrument(span.clone()));
        Subscription {
            backlog,
            keeper,
            machine,
            namespace: cluster.namespace.clone(),
            trust,
            machines,
            look_now,
            strangers: Strangers::default(),
            filler,
            garbage: Throttle::default(),
            dropped: Throttle::default(),
            refused: Default::default(),
            unsaid: 0,
            last: Arc::from(""),
            span,
        }
    }

    /// Tells the subscription that a reading of the cluster is done: it comes
    /// after the messages that came before, and decides the strangers'.
    pub fn readings(&self) -> impl Fn() + Send + Sync + 'static {
        let filler = self.filler.clone();
        move || filler.mark()
    }

    /// The next message from another machine; never the end (once the keeper
    /// left, nothing more comes).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arrival>> {
        let machines = self.machines.clone();
        let is_live = |m: &str| {
            machines
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .is_live(m)
        };
        loop {
            match self.strangers.next(is_live) {
                Some(Verdict::Deliver(arrival)) => return Poll::Ready(Some(arrival)),
                Some(Verdict::Drop(arrival)) => {
                    self.refuse(Refusal::Stranger, &arrival.from, arrival.body().len());
                    continue;
                }
                None => {}
            }
            let Some(push) = ready!(self.backlog.poll_next(cx)) else {
                return Poll::Pending;
            };
            self.unsaid += self.backlog.take_dropped();
            if self.unsaid > 0 {
                self.say_dropped();
            }
            if backlog::is_mark(&push) {
                self.strangers.reading_done();
                continue;
            }
            let Some(arrival) = self.arrival(push) else {
                continue;
            };
            let machine = arrival.from.machine().unwrap_or_default();
            if !self.strangers.holds(machine) && is_live(machine) {
                return Poll::Ready(Some(arrival));
            }
            // Not in the last reading: held until the next, asked for now.
            self.look_now.notify_one();
            if let Err(arrival) = self.strangers.hold(arrival) {
                self.refuse(Refusal::Stranger, &arrival.from, arrival.body().len());
            }
        }
    }

    /// Says (at most once a second) how many messages were dropped.
    fn say_dropped(&mut self) {
        if self.dropped.admit(std::time::Instant::now()).is_some() {
            let count = std::mem::take(&mut self.unsaid);
            self.span.in_scope(|| {
                warn!(
                    "cluster: dropped {count} messages from other machines: this node took them more slowly than they came ({} MiB waited)",
                    backlog::LIMIT >> 20
                )
            });
        }
    }

    /// `push` (a message: its channel, its payload) as a message from another
    /// machine; `None` for garbage (logged at most once a second) and for this
    /// machine's own.
    fn arrival(&mut self, push: PushInfo) -> Option<Arrival> {
        let mut data = push.data.into_iter().map(|value| match value {
            Value::BulkString(bytes) => bytes,
            _ => Vec::new(),
        });
        let (channel, payload) = (
            data.next().unwrap_or_default(),
            data.next().unwrap_or_default(),
        );
        let Ok(envelope) = postcard::from_bytes::<Envelope>(&payload) else {
            if let Some(held) = self.garbage.admit(std::time::Instant::now()) {
                let channel = String::from_utf8_lossy(&channel);
                self.span.in_scope(|| {
                    warn!(
                        held_back = held,
                        "cluster: dropped a message that is not one on {channel}"
                    )
                });
            }
            return None;
        };
        if envelope.machine == self.machine {
            return None; // not from another machine: someone else's
        }
        if *self.last != *envelope.machine {
            self.last = Arc::from(envelope.machine);
        }
        let from = NodeId::of_machine(self.last.clone(), envelope.node as usize);
        let refusal = if envelope.kind != self.trust.kind {
            Some(Refusal::OtherType)
        } else if envelope.body.len() > self.trust.max_len {
            Some(Refusal::Oversized)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.refuse(refusal, &from, envelope.body.len());
            return None;
        }
        let start = envelope.body.as_ptr() as usize - payload.as_ptr() as usize;
        let body = start..start + envelope.body.len();
        Some(Arrival::new(from, payload, body))
    }
}

impl Subscription {
    /// Counts a refused message and says why, at most once a second for each
    /// kind of refusal.
    fn refuse(&mut self, refusal: Refusal, from: &NodeId, len: usize) {
        self.trust.tally.refused(refusal);
        let Some(held) = self.refused[refusal as usize].admit(std::time::Instant::now()) else {
            return;
        };
        let (machine, node) = (from.machine().unwrap_or_default(), from.id());
        let (namespace, ours, max) = (&self.namespace, self.trust.type_name, self.trust.max_len);
        self.span.in_scope(|| match refusal {
            Refusal::Stranger => warn!(
                held_back = held,
                "cluster: dropped a message from {machine:?}, not a live machine of namespace {namespace:?}"
            ),
            Refusal::OtherType => warn!(
                held_back = held,
                "cluster: dropped a message from node {machine}/{node}: its message type is not this node's `{ours}` (a deploy with another message type?)"
            ),
            Refusal::Oversized => warn!(
                held_back = held,
                "cluster: dropped a message of {len} bytes from node {machine}/{node}: over max_frame_len ({max})"
            ),
        });
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Keeps a node's subscription to `channels` up: connects, subscribes, and once
/// the connection is lost does both again, with backoff while Redis does not
/// answer. One line when an outage starts, one when it ends. What comes goes
/// to `filler`: messages only.
async fn keep(endpoint: Endpoint, channels: [String; 2], filler: Arc<Filler>) {
    let mut outage = Outage::new("subscription", "messages from other machines do not arrive");
    loop {
        let lost = Arc::new(Notify::new());
        let pushes = (filler.clone(), lost.clone());
        let config = crate::cluster::connection_config().set_push_sender(move |push: PushInfo| {
            match push.kind {
                PushKind::Message => pushes.0.push(push),
                PushKind::Disconnection => {
                    pushes.1.notify_one();
                    Ok(())
                }
                _ => Ok(()), // the replies to SUBSCRIBE
            }
        });
        let subscribed = async {
            let mut connection = endpoint.connect(&config).await?;
            connection.subscribe(&channels).await?;
            redis::RedisResult::Ok(connection)
        };
        match subscribed.await {
            Ok(connection) => {
                outage.ended();
                lost.notified().await; // a permit if it was lost already
                drop(connection);
                outage.started("connection lost");
            }
            Err(error) => outage.started(&format!("{:?}", error.kind())),
        }
        tokio::time::sleep(outage.backoff()).await;
    }
}
