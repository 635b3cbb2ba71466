//! The message layer's tests: nodes meshed in one process, as the master would mesh them.

use super::*;
use crate::control::incarnation::Incarnation;
use crate::mesh::peer::tests::connect;
use crate::mesh::peer::{run, Inbound};
use proptest::prelude::*;
use std::time::Duration;

type Node = (mpsc::UnboundedSender<Inbound>, Arc<PeerQueue>);

/// `n` nodes (ids 0..n) in this process, meshed as the master would mesh them.
fn mesh(n: usize) -> Vec<Node> {
    let nodes: Vec<Node> = (0..n)
        .map(|id| {
            let (tx, rx) = mpsc::unbounded_channel();
            let queue = Arc::new(PeerQueue::default());
            tokio::spawn(run(Incarnation::new(id, 1), rx, queue.clone()));
            (tx, queue)
        })
        .collect();
    for a in 0..n {
        for b in a + 1..n {
            connect(&nodes[a].0, &nodes[b].0, ((a, 1), (b, 1)));
        }
    }
    nodes
}

fn messages<M>(nodes: &[Node], id: usize, options: Options) -> (Sender<M>, Receiver<M>)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    start(
        id,
        0..nodes.len(),
        nodes[id].1.clone(),
        options,
        (None, None),
        tokio_util::sync::CancellationToken::new(),
    )
}

#[test]
fn both_halves_can_go_to_any_task() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Sender<String>>();
    send_and_sync::<Receiver<String>>();
}

#[tokio::test]
async fn every_node_hears_every_other_once_in_order() {
    let nodes = mesh(4);
    let layers: Vec<_> = (0..4)
        .map(|id| messages::<(usize, u32)>(&nodes, id, Options::new()))
        .collect();
    let mut receivers = Vec::new();
    for (id, (tx, rx)) in layers.into_iter().enumerate() {
        assert_eq!(tx.nodes(), (0..4).filter(|n| *n != id).collect::<Vec<_>>());
        for seq in 0..100 {
            tx.broadcast(&(id, seq)).await.unwrap();
        }
        assert_eq!(
            tx.send(id, &(id, 0)).await,
            Err(SendError::UnknownNode(id.into()))
        );
        assert_eq!(
            tx.send(9, &(id, 0)).await,
            Err(SendError::UnknownNode(9.into()))
        );
        receivers.push(rx);
    }
    for (id, rx) in receivers.iter_mut().enumerate() {
        let mut next = [0u32; 4];
        for _ in 0..300 {
            let (from, (sender, seq)) = rx.recv().await.unwrap();
            assert_eq!(from, sender);
            assert_ne!(from, id);
            assert_eq!(seq, next[from.id()], "per-sender order");
            next[from.id()] += 1;
        }
        let more = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await;
        assert!(more.is_err(), "nothing twice: {:?}", more.ok());
    }
}

#[tokio::test]
async fn a_cancelled_recv_loses_nothing() {
    let nodes = mesh(2);
    let (tx, _rx0) = messages::<u32>(&nodes, 0, Options::new());
    let (_tx1, mut rx) = messages::<u32>(&nodes, 1, Options::new());
    let sending = tokio::spawn(async move {
        for n in 0..2000 {
            tx.send(1, &n).await.unwrap();
            if n % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let (mut next, mut cancelled) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while next < 2000 && tokio::time::Instant::now() < deadline {
        // A select! whose other branch is often ready first.
        tokio::select! {
            biased;
            _ = tokio::task::yield_now(), if next % 3 == 0 => cancelled += 1,
            got = rx.recv() => {
                assert_eq!(got, Some((NodeId::local(0), next)), "in order, none lost");
                next += 1;
            }
        }
    }
    assert_eq!(next, 2000);
    assert!(cancelled > 0);
    sending.await.unwrap();
}

#[tokio::test]
async fn a_slow_receiver_makes_the_sender_wait() {
    let nodes = mesh(2);
    let options = Options::new().queue(8);
    let (tx, _rx0) = messages::<Vec<u8>>(&nodes, 0, options);
    let (_tx1, mut rx) = messages::<Vec<u8>>(&nodes, 1, options);
    let big = vec![7u8; 64 * 1024];
    // Node 1 reads nothing: the socket, its inbox and node 0's queue fill up,
    // and then try_send fails instead of queueing more.
    let mut queued = 0;
    let full = loop {
        match tx.try_send(1, &big) {
            Ok(()) => queued += 1,
            Err(error) => break error,
        }
        if queued > 10_000 {
            panic!("10 000 messages of 64 KiB queued: no back-pressure");
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(full, SendError::Full(1.into()));
    assert!(queued < 100, "{queued} queued");
    // Once node 1 reads, every queued message arrives.
    for _ in 0..queued {
        assert_eq!(rx.recv().await.unwrap().1.len(), big.len());
    }
    let too_big = vec![0u8; options.max_frame_len + 1];
    assert!(matches!(
        tx.send(1, &too_big).await,
        Err(SendError::TooLarge { .. })
    ));
    // What was encoded for it is gone: the next message arrives intact.
    tx.send(1, &vec![1, 2, 3]).await.unwrap();
    assert_eq!(rx.recv().await.unwrap().1, vec![1, 2, 3]);
}

/// Receives on its own task, as a node's body would; what it gets comes out
/// of the channel.
fn receiving(mut rx: Receiver<String>) -> mpsc::UnboundedReceiver<(NodeId, String)> {
    let (got, heard) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            let _ = got.send(message);
        }
    });
    heard
}

#[tokio::test]
async fn a_bad_frame_closes_that_stream_only() {
    use tokio::io::AsyncWriteExt;
    // Node 0 takes its streams raw, as a misbehaving peer would.
    let nodes = mesh(3);
    let mut rogue = crate::mesh::Peers::new(nodes[0].1.clone());
    let (tx1, rx1) = messages::<String>(&nodes, 1, Options::new().max_frame_len(1024));
    let (tx2, rx2) = messages::<String>(&nodes, 2, Options::new().max_frame_len(1024));
    let (mut heard1, mut heard2) = (receiving(rx1), receiving(rx2));
    let (mut to_one, mut to_two) = {
        let (a, b) = (rogue.recv().await.unwrap(), rogue.recv().await.unwrap());
        if a.id() == 1 {
            (a, b)
        } else {
            (b, a)
        }
    };
    let mut buf = [0u8; 1];
    let closed = |read| matches!(read, Ok(Ok(0) | Err(_)));
    // A length prefix far over the limit.
    to_one.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let read = tokio::io::AsyncReadExt::read(&mut to_one, &mut buf);
    let read = tokio::time::timeout(Duration::from_secs(5), read).await;
    assert!(closed(read), "node 1 closed the stream");
    // Node 1 still talks with node 2, both ways.
    tx2.send(1, &"still here".to_string()).await.unwrap();
    assert_eq!(
        heard1.recv().await,
        Some((NodeId::local(2), "still here".to_string()))
    );
    tx1.send(2, &"me too".to_string()).await.unwrap();
    // A whole frame whose body is no String: node 2 closes that stream when
    // its receiver comes to it, and gets node 1's message after it.
    to_two.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
    tx1.send(2, &"after".to_string()).await.unwrap();
    let read = tokio::io::AsyncReadExt::read(&mut to_two, &mut buf);
    let read = tokio::time::timeout(Duration::from_secs(5), read).await;
    assert!(closed(read), "node 2 closed the stream");
    for text in ["me too", "after"] {
        assert_eq!(
            heard2.recv().await,
            Some((NodeId::local(1), text.to_string()))
        );
    }
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
enum Sample {
    Text(String),
    Numbers(Vec<u64>),
    Pair(u8, Option<i32>),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Random and mutated input never panics the frame decoder or the message
    /// decoder, and the buffer never grows past the input plus one frame.
    #[test]
    fn frames_and_messages_never_panic(
        input in proptest::collection::vec(any::<u8>(), 0..512),
        valid in proptest::collection::vec(any::<u64>(), 0..8),
        flip in any::<(usize, u8)>(),
    ) {
        let max = 256;
        let mut stream = BytesMut::new();
        let sample = Sample::Numbers(valid);
        let body = postcard::to_stdvec(&sample).unwrap();
        stream.extend_from_slice(&(body.len() as u32).to_be_bytes());
        stream.extend_from_slice(&body);
        stream.extend_from_slice(&input);
        let at = flip.0 % stream.len();
        stream[at] ^= flip.1;
        // Read in chunks of 7 bytes, as the inbox reads (with its own chunk).
        let limit = stream.len() + max + 64;
        let mut frames = crate::mesh::wire::Frames::new(max);
        'reading: for chunk in stream.chunks(7) {
            frames.for_reading(7).extend_from_slice(chunk);
            loop {
                match frames.next() {
                    Ok(Some(frame)) => drop(postcard::from_bytes::<Sample>(frame)),
                    Ok(None) => break,
                    Err(_) => break 'reading, // the stream is closed
                }
            }
            prop_assert!(frames.for_reading(7).capacity() <= limit);
        }
    }
}
