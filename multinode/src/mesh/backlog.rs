//! What Redis delivered to one node and its `Receiver` has not taken yet (the
//! `cluster` feature), bounded in bytes. The Redis client reads its connection
//! as fast as Redis writes, whether or not the node takes its messages: without
//! a bound, a node that takes them more slowly than they come would hold them
//! all. Past the bound, what comes is dropped and counted (pub/sub is at most
//! once anyway), as Redis itself would drop a subscriber that lags
//! (`client-output-buffer-limit pubsub`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use redis::{PushInfo, Value};
use tokio::sync::mpsc;

/// The most bytes waiting for one node: Redis's own hard limit for a
/// subscriber's output buffer.
pub(super) const LIMIT: usize = 32 * 1024 * 1024;

#[derive(Default)]
struct Count {
    waiting: AtomicUsize,
    dropped: AtomicU64,
}

/// The Redis client's side: it pushes what it reads.
pub(super) struct Filler {
    queue: mpsc::UnboundedSender<(PushInfo, usize)>,
    count: Arc<Count>,
    limit: usize,
}

/// The node's side.
pub(super) struct Backlog {
    queue: mpsc::UnboundedReceiver<(PushInfo, usize)>,
    count: Arc<Count>,
}

/// A backlog of at most `limit` bytes (one message more when it is empty, so
/// that a message over the limit still passes).
pub(super) fn new(limit: usize) -> (Filler, Backlog) {
    let (tx, rx) = mpsc::unbounded_channel();
    let count = Arc::new(Count::default());
    let filler = Filler {
        queue: tx,
        count: count.clone(),
        limit,
    };
    (filler, Backlog { queue: rx, count })
}

impl Filler {
    /// Queues `info`, or drops it when the backlog is full; `Err` once the
    /// node's side is gone.
    pub fn push(&self, info: PushInfo) -> Result<(), ()> {
        let len = size(&info);
        let waiting = &self.count.waiting;
        let add = |now| admits(now, len, self.limit).then(|| now + len);
        if waiting.fetch_update(Relaxed, Relaxed, add).is_err() {
            self.count.dropped.fetch_add(1, Relaxed);
            return Ok(());
        }
        self.queue.send((info, len)).map_err(|_| ())
    }
}

/// The kind of the mark that says a reading of the cluster is done.
const MARK: &str = "multinode-reading";

impl Filler {
    /// Queues a mark (`is_mark`), whatever the bound: it is next to nothing.
    pub fn mark(&self) {
        let mark = PushInfo {
            kind: redis::PushKind::Other(MARK.into()),
            data: Vec::new(),
        };
        let _ = self.queue.send((mark, 0));
    }
}

/// Whether `push` is a mark queued by [`Filler::mark`], not Redis's.
pub(super) fn is_mark(push: &PushInfo) -> bool {
    matches!(&push.kind, redis::PushKind::Other(kind) if kind == MARK)
}

impl Backlog {
    /// The next push, in order; `None` once the client is gone.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<PushInfo>> {
        self.queue.poll_recv(cx).map(|next| {
            next.map(|(info, len)| {
                self.count.waiting.fetch_sub(len, Relaxed);
                info
            })
        })
    }

    /// How many messages were dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.count.dropped.swap(0, Relaxed)
    }
}

/// Whether `len` more bytes may join `waiting`.
fn admits(waiting: usize, len: usize, limit: usize) -> bool {
    waiting == 0 || waiting.saturating_add(len) <= limit
}

/// The bytes a push holds (what a message's channel and payload take).
fn size(info: &PushInfo) -> usize {
    info.data
        .iter()
        .map(|value| match value {
            Value::BulkString(bytes) => bytes.len(),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::PushKind;

    fn message(len: usize) -> PushInfo {
        PushInfo {
            kind: PushKind::Message,
            data: vec![
                Value::BulkString(b"multinode:to:b".to_vec()),
                Value::BulkString(vec![0; len]),
            ],
        }
    }

    #[test]
    fn admits_up_to_the_limit_and_one_message_when_empty() {
        assert!(admits(0, 100, 10));
        assert!(admits(4, 6, 10));
        assert!(!admits(5, 6, 10));
        assert!(!admits(usize::MAX, 1, 10));
    }

    #[tokio::test]
    async fn past_the_limit_messages_are_dropped_and_counted_until_taken() {
        let (filler, mut backlog) = new(100);
        let channel = "multinode:to:b".len();
        for _ in 0..5 {
            filler.push(message(40 - channel)).unwrap(); // 40 bytes each
        }
        assert_eq!(backlog.take_dropped(), 3, "2 of 40 fit in 100");
        let next = std::future::poll_fn(|cx| backlog.poll_next(cx)).await;
        assert_eq!(next, Some(message(40 - channel)));
        filler.push(message(40 - channel)).unwrap(); // room again
        assert_eq!(backlog.take_dropped(), 0);
        drop(backlog);
        assert!(filler.push(message(1)).is_err());
    }
}
