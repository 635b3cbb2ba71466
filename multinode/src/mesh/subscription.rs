//! What the other machines publish for one node (the `cluster` feature), read
//! by its `Receiver` straight from the Redis client's stream: no task between
//! them, as a hop between two tasks costs more than the rest of the way on a
//! busy machine. The subscription is made again after a lost connection, with
//! backoff; connecting runs in a task of its own, so that it starts at once and
//! goes on while nobody receives.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures_util::{FutureExt, Stream};
use redis::aio::PubSubStream;
use tokio::task::JoinHandle;
use tracing::warn;

use super::bridge::{Envelope, Outage};
use super::NodeId;

/// A message from another machine: the message as Redis delivered it (not
/// copied), and where its body lies in its payload.
pub(crate) struct Arrival {
    pub from: NodeId,
    message: redis::Msg,
    body: std::ops::Range<usize>,
}

impl Arrival {
    /// The message's postcard bytes.
    pub fn body(&self) -> &[u8] {
        &self.message.get_payload_bytes()[self.body.clone()]
    }
}

/// One node's subscription to its machine's channel and its own.
pub(crate) struct Subscription {
    client: redis::Client,
    /// This node's machine: its own broadcasts are not for it.
    machine: String,
    channels: [String; 2],
    state: State,
    outage: Outage,
    garbage: crate::throttle::Throttle,
    /// The last sender's machine, not allocated again for each of its messages.
    last: Arc<str>,
    span: tracing::Span,
}

enum State {
    Connecting(JoinHandle<redis::RedisResult<PubSubStream>>),
    Live(PubSubStream),
    /// Before the next try.
    Waiting(Pin<Box<tokio::time::Sleep>>),
}

impl Subscription {
    /// Subscribes (in the background) to `channels` for node `me` of `machine`.
    pub fn start(client: redis::Client, machine: String, me: usize) -> Self {
        let channels = [
            format!("multinode:to:{machine}"),
            format!("multinode:to:{machine}:{me}"),
        ];
        let state = State::Connecting(connect(&client, &channels));
        Subscription {
            client,
            machine,
            channels,
            state,
            outage: Outage::new("subscription"),
            garbage: crate::throttle::Throttle::default(),
            last: Arc::from(""),
            span: tracing::Span::current(),
        }
    }

    /// The next message from another machine; never the end.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arrival>> {
        loop {
            match &mut self.state {
                State::Connecting(connecting) => {
                    let subscribed = ready!(connecting.poll_unpin(cx));
                    self.state = match subscribed {
                        Ok(Ok(stream)) => {
                            self.span.in_scope(|| self.outage.ended());
                            State::Live(stream)
                        }
                        Ok(Err(error)) => self.retry(&format!("{:?}", error.kind())),
                        Err(error) => self.retry(&error.to_string()),
                    };
                }
                State::Waiting(sleep) => {
                    ready!(sleep.poll_unpin(cx));
                    self.state = State::Connecting(connect(&self.client, &self.channels));
                }
                State::Live(stream) => match ready!(Pin::new(stream).poll_next(cx)) {
                    Some(message) => {
                        if let Some(arrival) = self.arrival(message) {
                            return Poll::Ready(Some(arrival));
                        }
                    }
                    None => {
                        self.span
                            .in_scope(|| self.outage.started("connection lost"));
                        self.state = State::Connecting(connect(&self.client, &self.channels));
                    }
                },
            }
        }
    }

    /// Logs the outage (once) and waits before the next try.
    fn retry(&mut self, why: &str) -> State {
        self.span.in_scope(|| self.outage.started(why));
        State::Waiting(Box::pin(tokio::time::sleep(self.outage.backoff())))
    }

    /// `message` as a message from another machine; `None` for garbage (logged
    /// at most once a second) and for this machine's own.
    fn arrival(&mut self, message: redis::Msg) -> Option<Arrival> {
        let payload = message.get_payload_bytes();
        let Ok(envelope) = postcard::from_bytes::<Envelope>(payload) else {
            if let Some(held) = self.garbage.admit(std::time::Instant::now()) {
                let channel = message.get_channel_name();
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
            message,
            body,
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let State::Connecting(connecting) = &self.state {
            connecting.abort();
        }
    }
}

/// Connects and subscribes to `channels`, in a task of its own.
fn connect(
    client: &redis::Client,
    channels: &[String; 2],
) -> JoinHandle<redis::RedisResult<PubSubStream>> {
    let (client, channels) = (client.clone(), channels.clone());
    tokio::spawn(async move {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&channels).await?;
        Ok(pubsub.into_on_message())
    })
}
