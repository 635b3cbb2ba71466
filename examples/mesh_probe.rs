//! A fixture for the mesh tests in `tests/mesh.rs`. Not an example to copy; see
//! `chat.rs` or the README's "Talking between processes".
//!
//! Every node logs `probe up: node {id} generation {g} pid {pid}`, then:
//! - with the message layer, `node {id} generation {g} knows [ids]`: the nodes its
//!   message layer sends to;
//! - by default, takes the message layer, sends `Hello(id)` to every other node
//!   and logs what it gets (`node {id} got hello {k} from {k}`, `node {id} got tag
//!   {t} from {k}`); `GET /broadcast?tag=T` broadcasts `Tag(T)` from the node that
//!   answers; with `MULTINODE_CLUSTER`, `GET /send?to=MACHINE/ID&tag=T` sends
//!   `Tag(T)` to node ID of another machine (answering `sent` or the error), and
//!   `GET /machines` lists the other machines, `GET /nodes` their nodes, and each node logs `node {id} sees
//!   machines [..]` when they change;
//! - `MESH_MODE=raw`: takes the raw peers, writes `hi from {id}` on each and logs
//!   every line read and each EOF;
//! - `MESH_ROGUE=k`: node `k` takes its peers raw, writes a well-formed hello on
//!   any stream meshed again with a node it wrote to before, and on the first writes an oversized length
//!   prefix to node k+1 and a malformed message to node k+2;
//! - `MESH_FLOOD=1`: node 1 sends 20 000 messages of 4 KiB to node 2, which reads
//!   nothing until it gets SIGUSR1;
//! - `MESH_DEAF=k`: node `k` reads nothing until it gets SIGUSR1;
//! - `MESH_DROP_RECEIVER=1`: node 2 drops its message receiver at once (with
//!   `MESH_FLOOD`, instead of waiting for SIGUSR1), and logs `node 2 dropped its
//!   receiver`;
//! - `MESH_LINGER_MS=n`: once its server has stopped, a node goes on taking
//!   messages n ms more before it exits (a tree that drains slowly);
//! - `MESH_MAX_FRAME=n`: the message layer's `max_frame_len`;
//! - `GET /broadcast?tag=T&pad=N` pads the tag with N `x`; `GET
//!   /flood?to=MACHINE/ID&count=N` sends N small blobs there; `GET
//!   /stamp?to=K` sends node K of this machine a stamp, which K logs as `node K
//!   got a stamp after B blobs, U us after it began reading` (a deaf node
//!   begins at SIGUSR1);
//! - `PROBE_SLOW_REPLACEMENT_MS=n`: a replacement (generation > 1) blocks its
//!   runtime that long before anything else, its mesh handshakes included.

use std::convert::Infallible;
use std::time::Duration;

use multinode::mesh::{NodeId, Peers, Sender};
use multinode::Nodes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tracing::info;

#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    Hello(usize),
    Tag(String),
    Blob(multinode::mesh::Bytes), // one write each, even in a debug build
    Stamp,
}

const FLOOD: usize = 20_000;

fn main() {
    multinode::Builder::new()
        .port(0)
        .nodes(4)
        .shutdown_timeout(Duration::from_secs(5))
        .run(body)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

async fn body(mut nodes: Nodes) -> Result<(), String> {
    let (id, generation, pid) = (nodes.id(), nodes.generation(), std::process::id());
    if let Some(ms) = env("PROBE_SLOW_REPLACEMENT_MS").and_then(|v| v.parse().ok()) {
        if generation > 1 {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
    info!("probe up: node {id} generation {generation} pid {pid}");
    let rogue = env("MESH_ROGUE").and_then(|v| v.parse::<usize>().ok());
    let sender = if env("MESH_MODE").as_deref() == Some("raw") {
        tokio::spawn(raw(id, nodes.take_peers().unwrap()));
        None
    } else if rogue == Some(id) {
        tokio::spawn(misbehave(id, nodes.take_peers().unwrap()));
        None
    } else {
        let mut options = multinode::mesh::Options::new();
        if let Some(max) = env("MESH_MAX_FRAME").and_then(|v| v.parse().ok()) {
            options = options.max_frame_len(max);
        }
        let (tx, mut rx) = nodes.take_messages_with::<Msg>(options).unwrap();
        info!("node {id} generation {generation} knows {:?}", tx.nodes());
        let fingerprint = multinode::__private::fingerprint::of::<Msg>();
        info!("node {id} message fingerprint {fingerprint}");
        let mut machines = tx.watch_machines();
        tokio::spawn(async move {
            while machines.changed().await.is_ok() {
                info!("node {id} sees machines {:?}", *machines.borrow());
            }
        });
        let flood = env("MESH_FLOOD").is_some();
        let deaf = (flood && id == 2) || env("MESH_DEAF") == Some(id.to_string());
        if env("MESH_DROP_RECEIVER").is_some() && id == 2 {
            drop(rx);
            info!("node 2 dropped its receiver");
        } else {
            tokio::spawn(async move {
                if deaf {
                    let mut usr1 = tokio::signal::unix::signal(
                        tokio::signal::unix::SignalKind::user_defined1(),
                    )
                    .unwrap();
                    info!("node {id} not reading until SIGUSR1");
                    usr1.recv().await;
                    info!("node {id} reading");
                }
                let (mut blobs, began) = (0, std::time::Instant::now());
                while let Some((from, message)) = rx.recv().await {
                    match message {
                        Msg::Stamp => {
                            let us = began.elapsed().as_micros();
                            info!("node {id} got a stamp after {blobs} blobs, {us} us after it began reading");
                        }
                        Msg::Hello(k) => info!("node {id} got hello {k} from {from}"),
                        Msg::Tag(tag) => info!("node {id} got tag {tag} from {from}"),
                        Msg::Blob(_) => {
                            blobs += 1;
                            if blobs == FLOOD {
                                info!("node {id} flood received {blobs}");
                            }
                        }
                    }
                }
            });
        }
        for k in tx.nodes() {
            tx.send(k, &Msg::Hello(id))
                .await
                .map_err(|e| e.to_string())?;
        }
        if flood && id == 1 {
            tokio::spawn(flood_node_2(tx.clone()));
        }
        Some(tx)
    };
    let service = hyper::service::service_fn(move |req: hyper::Request<multinode::http::Body>| {
        let sender = sender.clone();
        async move {
            let query = |key: &str| {
                req.uri().query().and_then(|q| {
                    q.split('&')
                        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
                        .map(str::to_owned)
                })
            };
            let tag = query("tag");
            let mut response = hyper::Response::new(String::new());
            match (req.uri().path(), tag, sender) {
                ("/send", Some(tag), Some(tx)) => {
                    // to=MACHINE/ID: a node of another machine of the cluster.
                    let to = query("to").unwrap_or_default();
                    let (machine, node) = to.split_once('/').unwrap_or(("", "0"));
                    let node = NodeId::remote(machine, node.parse().unwrap_or(0));
                    *response.body_mut() = match tx.send(node, &Msg::Tag(tag.clone())).await {
                        Ok(()) => format!("node {id} sent {tag} to {to}\n"),
                        Err(error) => format!("node {id} could not send {tag}: {error}\n"),
                    };
                }
                ("/machines", _, Some(tx)) => {
                    *response.body_mut() = format!("{:?}\n", tx.machines());
                }
                ("/nodes", _, Some(tx)) => {
                    let nodes: Vec<String> =
                        tx.remote_nodes().iter().map(|n| n.to_string()).collect();
                    *response.body_mut() = format!("{nodes:?}\n");
                }
                ("/flood", _, Some(tx)) => {
                    let to = query("to").unwrap_or_default();
                    let (machine, node) = to.split_once('/').unwrap_or(("", "0"));
                    let node = NodeId::remote(machine, node.parse().unwrap_or(0));
                    let count: usize = query("count").and_then(|c| c.parse().ok()).unwrap_or(0);
                    let blob = Msg::Blob(vec![0x5a; 16].into());
                    let mut sent = 0;
                    for _ in 0..count {
                        if tx.send(node.clone(), &blob).await.is_ok() {
                            sent += 1;
                        }
                    }
                    *response.body_mut() = format!("node {id} flooded {sent}\n");
                }
                ("/stamp", _, Some(tx)) => {
                    let to: usize = query("to").and_then(|t| t.parse().ok()).unwrap_or(0);
                    if to == id {
                        *response.status_mut() = hyper::StatusCode::CONFLICT;
                    } else {
                        tx.send(to, &Msg::Stamp).await.unwrap();
                        *response.body_mut() = format!("node {id} stamped {to}\n");
                    }
                }
                ("/broadcast", Some(tag), Some(tx)) => {
                    let pad: usize = query("pad").and_then(|p| p.parse().ok()).unwrap_or(0);
                    let tag = format!("{tag}{}", "x".repeat(pad));
                    tx.broadcast(&Msg::Tag(tag.clone())).await.unwrap();
                    *response.body_mut() = format!("node {id} pid {pid} broadcast {tag}\n");
                }
                ("/broadcast", _, _) => {
                    *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE
                }
                _ => {
                    *response.body_mut() = format!("node {id} pid {pid} generation {generation}\n")
                }
            }
            Ok::<_, Infallible>(response)
        }
    });
    let served = multinode::http::serve(nodes, service).await;
    if let Some(ms) = env("MESH_LINGER_MS").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    served.map_err(|e| e.to_string())
}

async fn flood_node_2(tx: Sender<Msg>) {
    let blob = Msg::Blob(vec![0x5a; 4096].into());
    let mut full_logged = false;
    for sent in 0..FLOOD {
        if !full_logged {
            match tx.try_send(2, &blob) {
                Ok(()) => continue,
                Err(error) => {
                    info!("node 1 flood: queue full after {sent} ({error})");
                    full_logged = true;
                }
            }
        }
        tx.send(2, &blob).await.unwrap();
    }
    info!("node 1 flood: all {FLOOD} queued");
}

async fn raw(id: usize, mut peers: Peers) {
    while let Some(peer) = peers.recv().await {
        let (other, generation) = (peer.id(), peer.generation());
        info!("node {id} raw peer {other} generation {generation} up");
        tokio::spawn(async move {
            let (read, mut write) = peer.into_split();
            write
                .write_all(format!("hi from {id}\n").as_bytes())
                .await?;
            let mut lines = BufReader::new(read).lines();
            while let Some(line) = lines.next_line().await? {
                info!("node {id} raw line from {other}: {line}");
            }
            info!("node {id} raw peer {other} generation {generation} eof");
            std::io::Result::Ok(())
        });
    }
}

async fn misbehave(id: usize, mut peers: Peers) {
    let mut kept = Vec::new();
    let mut wronged = std::collections::BTreeSet::new();
    while let Some(mut peer) = peers.recv().await {
        let (bytes, what): (Vec<u8>, &str) = if wronged.contains(&peer.id()) {
            // A stream meshed again: this time a well-formed `Msg::Hello(id)`.
            let body = postcard::to_stdvec(&Msg::Hello(id)).unwrap();
            let frame = [&(body.len() as u32).to_be_bytes()[..], &body].concat();
            (frame, "a hello on a new stream")
        } else if peer.id() == id + 1 {
            // A length prefix far over the limit.
            (u32::MAX.to_be_bytes().to_vec(), "garbage")
        } else if peer.id() == id + 2 {
            // A frame that is no Msg.
            ([&4u32.to_be_bytes()[..], &[0xff; 4]].concat(), "garbage")
        } else {
            (Vec::new(), "")
        };
        if !bytes.is_empty() {
            wronged.insert(peer.id());
            let _ = peer.write_all(&bytes).await;
            info!("node {id} rogue wrote {what} to {}", peer.id());
        }
        kept.push(peer);
    }
}
