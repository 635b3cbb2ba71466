//! What the other machines publish for one node (the `cluster` feature): a
//! RESP3 connection (Redis 6 or later) whose pushes go to the node's bounded
//! [`Backlog`], read by its `Receiver`. A task of its own keeps the
//! subscription up (made again after a lost connection, with backoff), whether
//! or not the node receives.

use std::sync::Arc;
use std::task::{ready, Context, Poll};

use redis::{PushInfo, PushKind, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

use super::backlog::{self, Backlog, Filler};
use super::envelope::Envelope;
use super::node_id::NodeId;
use super::outage::Outage;

/// A message from another machine: its payload as Redis delivered it (not
/// copied), and where its body lies in it.
pub(crate) struct Arrival {
    pub from: NodeId,
    payload: Vec<u8>,
    body: std::ops::Range<usize>,
}

impl Arrival {
    /// The message's postcard bytes.
    pub fn body(&self) -> &[u8] {
        &self.payload[self.body.clone()]
    }
}

/// One node's subscription to its machine's channel and its own.
pub(crate) struct Subscription {
    /// What came and was not taken yet, across connections.
    backlog: Backlog,
    /// Connects, subscribes, and does both again when the connection is lost.
    keeper: JoinHandle<()>,
    /// This node's machine: its own broadcasts are not for it.
    machine: String,
    garbage: crate::throttle::Throttle,
    dropped: crate::throttle::Throttle,
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
        client: redis::Client,
        machine: String,
        me: usize,
        leave: tokio_util::sync::CancellationToken,
    ) -> Self {
        let channels = [
            format!("multinode:to:{machine}"),
            format!("multinode:to:{machine}:{me}"),
        ];
        let (filler, backlog) = backlog::new(backlog::LIMIT);
        let span = tracing::Span::current();
        let kept = async move {
            tokio::select! {
                () = keep(client, channels, Arc::new(filler)) => {}
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
            garbage: crate::throttle::Throttle::default(),
            dropped: crate::throttle::Throttle::default(),
            unsaid: 0,
            last: Arc::from(""),
            span,
        }
    }

    /// The next message from another machine; never the end (once the keeper
    /// left, nothing more comes).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arrival>> {
        while let Some(push) = ready!(self.backlog.poll_next(cx)) {
            self.unsaid += self.backlog.take_dropped();
            if self.unsaid > 0 {
                self.say_dropped();
            }
            if let Some(arrival) = self.arrival(push) {
                return Poll::Ready(Some(arrival));
            }
        }
        Poll::Pending
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
        let start = envelope.body.as_ptr() as usize - payload.as_ptr() as usize;
        let body = start..start + envelope.body.len();
        Some(Arrival {
            from,
            payload,
            body,
        })
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
async fn keep(client: redis::Client, channels: [String; 2], filler: Arc<Filler>) {
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
            let mut connection = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
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
