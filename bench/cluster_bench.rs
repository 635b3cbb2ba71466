//! The cross-machine benchmark (the `cluster` feature; run by `bench/run.py`'s
//! cluster section, which starts a `redis-server` and two "machines" on this
//! one). With `MULTINODE_MACHINE=b`, every node of b records when each
//! broadcast from machine a arrives (CLOCK_MONOTONIC, one clock for every
//! process here) and, at the end, sends its figures to node 0 of a. With
//! `MULTINODE_MACHINE=a`, node 0 waits for b, broadcasts `COUNT` (100 000) messages of
//! 64 bytes as fast as it can (the rate, first to last arrival), then 2000 one
//! at a time 0.5 ms apart (the latency, unloaded), and prints b's figures as
//! `cluster,…` CSV lines; then it returns, which stops machine a.
//!
//! `BARE_SENDER=1` is a machine a without multinode: the bare client publishes
//! multinode's envelopes to machine b's nodes, which measure as above, so that
//! b's side is measured alone.
//!
//! `FLOOR=1` measures the floor instead, without multinode: one connection
//! publishing the same payloads to one channel, and as many subscriber
//! connections as b has nodes, each on its own thread, with the same client
//! crate and the same Redis.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use multinode::mesh::NodeId;
use multinode::Nodes;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum Bench {
    /// As fast as the sender can: for the rate.
    Flood {
        payload: Bytes,
    },
    /// One at a time, `GAP` apart: for the latency.
    Ping {
        sent_ns: u64,
        payload: Bytes,
    },
    End,
    /// One receiver's figures: the flood's messages and their arrival span,
    /// the pings' latencies.
    Report {
        count: u64,
        span_ns: u64,
        p50_ns: u64,
        p99_ns: u64,
    },
}

/// Between two pings: an unloaded latency.
const GAP: Duration = Duration::from_micros(500);
const PINGS: usize = 2000;

const PAYLOAD: usize = 64;

fn count() -> usize {
    std::env::var("COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(100_000)
}

fn now_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Collects latencies; the figures of a run.
#[derive(Default)]
struct Arrivals {
    first: Option<Instant>,
    last: Option<Instant>,
    count: u64,
    latencies: Vec<u64>,
}

impl Arrivals {
    fn flood(&mut self) {
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.count += 1;
    }

    fn ping(&mut self, sent_ns: u64) {
        self.latencies.push(now_ns().saturating_sub(sent_ns));
    }

    fn report(mut self) -> Bench {
        self.latencies.sort_unstable();
        let at = |q: f64| {
            let i = ((self.latencies.len() as f64 - 1.0) * q) as usize;
            self.latencies.get(i).copied().unwrap_or(0)
        };
        let span = match (self.first, self.last) {
            (Some(first), Some(last)) => (last - first).as_nanos() as u64,
            _ => 0,
        };
        Bench::Report {
            count: self.count,
            span_ns: span,
            p50_ns: at(0.5),
            p99_ns: at(0.99),
        }
    }
}

fn print(what: &str, reports: &[Bench]) {
    for report in reports {
        if let Bench::Report {
            count,
            span_ns,
            p50_ns,
            p99_ns,
        } = report
        {
            let rate = *count as f64 / (*span_ns.max(&1) as f64 / 1e9);
            println!("cluster,{what},msgs_per_s,{rate:.0}");
            println!("cluster,{what},p50_us,{:.1}", *p50_ns as f64 / 1e3);
            println!("cluster,{what},p99_us,{:.1}", *p99_ns as f64 / 1e3);
        }
    }
}

fn main() {
    if std::env::var_os("FLOOR").is_some() {
        return floor();
    }
    if std::env::var_os("BARE_SENDER").is_some() {
        return bare_sender();
    }
    multinode::Builder::new().port(0).nodes(2).run(body)
}

async fn body(mut nodes: Nodes) -> Result<(), String> {
    let machine = std::env::var("MULTINODE_MACHINE").unwrap_or_default();
    let (tx, mut rx) = nodes.take_messages::<Bench>().ok_or("taken")?;
    if machine != "a" {
        // Machine b: every node measures what a broadcasts.
        let mut arrivals = Arrivals::default();
        while let Some((from, message)) = rx.recv().await {
            match message {
                Bench::Flood { .. } if !from.is_local() => arrivals.flood(),
                Bench::Ping { sent_ns, .. } if !from.is_local() => arrivals.ping(sent_ns),
                Bench::End => {
                    let report = std::mem::take(&mut arrivals).report();
                    tx.send(NodeId::remote("a", 0), &report)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                _ => {}
            }
        }
        return Ok(());
    }
    if !nodes.is_master() {
        drop(rx); // what node 0 broadcasts is read and dropped
        nodes.shutdown().await;
        return Ok(());
    }
    // Node 0 of machine a: wait for b, warm up, measure.
    let started = Instant::now();
    while !tx.machines().contains(&"b".to_owned()) {
        if started.elapsed() > Duration::from_secs(20) {
            return Err("machine b never joined".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // b's subscriptions
    let payload = Bytes::from(vec![7u8; PAYLOAD]);
    for _ in 0..count() {
        let flood = Bench::Flood {
            payload: payload.clone(),
        };
        tx.broadcast(&flood).await.map_err(|e| e.to_string())?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // the flood is through
    for _ in 0..PINGS {
        let ping = Bench::Ping {
            sent_ns: now_ns(),
            payload: payload.clone(),
        };
        tx.broadcast(&ping).await.map_err(|e| e.to_string())?;
        tokio::time::sleep(GAP).await;
    }
    tx.broadcast(&Bench::End).await.map_err(|e| e.to_string())?;
    let mut reports = Vec::new();
    while reports.len() < 2 {
        let received = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await;
        match received {
            Ok(Some((from, report @ Bench::Report { .. }))) if !from.is_local() => {
                reports.push(report)
            }
            Ok(Some(_)) => {}
            _ => return Err("no report from b".into()),
        }
    }
    print("multinode a to b", &reports);
    Ok(())
}

/// The floor: the same payloads through the same Redis with the bare client.
fn floor() {
    let url = std::env::var("MULTINODE_CLUSTER").expect("MULTINODE_CLUSTER");
    let client = redis::Client::open(url).unwrap();
    let subscribers: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            let (ready_tx, ready) = std::sync::mpsc::channel();
            let thread = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let mut pubsub = client.get_async_pubsub().await.unwrap();
                    pubsub.subscribe("floor").await.unwrap();
                    ready_tx.send(()).unwrap();
                    let mut arrivals = Arrivals::default();
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let payload = message.get_payload_bytes();
                        match payload.first() {
                            Some(b'F') => arrivals.flood(),
                            Some(b'P') => {
                                let sent = u64::from_le_bytes(payload[1..9].try_into().unwrap());
                                arrivals.ping(sent);
                            }
                            _ => break, // the end
                        }
                    }
                    arrivals.report()
                })
            });
            ready.recv().unwrap();
            thread
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let mut payload = vec![7u8; PAYLOAD];
        // The flood: pipelines of 256, as the bridge sends what waits.
        payload[0] = b'F';
        for _ in 0..count().div_ceil(256) {
            let mut pipeline = redis::pipe();
            for _ in 0..256 {
                pipeline.cmd("PUBLISH").arg("floor").arg(&payload).ignore();
            }
            let () = pipeline.query_async(&mut connection).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        payload[0] = b'P';
        for _ in 0..PINGS {
            payload[1..9].copy_from_slice(&now_ns().to_le_bytes());
            let _: i64 = redis::cmd("PUBLISH")
                .arg("floor")
                .arg(&payload)
                .query_async(&mut connection)
                .await
                .unwrap();
            tokio::time::sleep(GAP).await;
        }
        let _: i64 = redis::cmd("PUBLISH")
            .arg("floor")
            .arg("end")
            .query_async(&mut connection)
            .await
            .unwrap();
    });
    let reports: Vec<Bench> = subscribers.into_iter().map(|t| t.join().unwrap()).collect();
    print("bare redis client", &reports);
}

/// A message between machines as multinode publishes it (its `bridge.rs`).
#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    machine: &'a str,
    node: u32,
    kind: u32,
    body: &'a [u8],
}

/// `BARE_SENDER=1`: machine a is the bare client, publishing multinode's
/// envelopes to the nodes of a multinode machine b: the latency of b's side
/// alone (the floor's sender, multinode's receivers).
fn bare_sender() {
    let url = std::env::var("MULTINODE_CLUSTER").expect("MULTINODE_CLUSTER");
    let client = redis::Client::open(url).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        // Machine a's claim, live for 2 minutes by Redis's clock.
        let claim = redis::Script::new(
            "local t = redis.call('TIME')
             redis.call('SET', KEYS[1], 'bare', 'PX', 120000)
             return redis.call('ZADD', KEYS[2], tonumber(t[1]) * 1000 + 120000, 'a')",
        );
        let _: i64 = claim
            .key("multinode:cluster_bench:machine:a")
            .key("multinode:cluster_bench:machines")
            .invoke_async(&mut connection)
            .await
            .unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub
            .subscribe("multinode:cluster_bench:to:a:0")
            .await
            .unwrap();
        let mut reports = pubsub.into_on_message();
        tokio::time::sleep(Duration::from_millis(1500)).await; // b reads the claim
        let envelope = |message: &Bench| {
            let body = postcard::to_allocvec(message).unwrap();
            let envelope = Envelope {
                machine: "a",
                node: 0,
                kind: multinode::__private::fingerprint::of::<Bench>(),
                body: &body,
            };
            postcard::to_allocvec(&envelope).unwrap()
        };
        let payload = Bytes::from(vec![7u8; PAYLOAD]);
        for _ in 0..PINGS {
            let ping = Bench::Ping {
                sent_ns: now_ns(),
                payload: payload.clone(),
            };
            let _: i64 = redis::cmd("PUBLISH")
                .arg("multinode:cluster_bench:to:b")
                .arg(envelope(&ping))
                .query_async(&mut connection)
                .await
                .unwrap();
            tokio::time::sleep(GAP).await;
        }
        let _: i64 = redis::cmd("PUBLISH")
            .arg("multinode:cluster_bench:to:b")
            .arg(envelope(&Bench::End))
            .query_async(&mut connection)
            .await
            .unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            let message = tokio::time::timeout(Duration::from_secs(30), reports.next())
                .await
                .unwrap()
                .unwrap();
            let envelope: Envelope = postcard::from_bytes(message.get_payload_bytes()).unwrap();
            let report = postcard::from_bytes::<Bench>(envelope.body).unwrap();
            print(
                &format!("bare a to multinode b/{}", envelope.node),
                std::slice::from_ref(&report),
            );
            got.push(report);
        }
    });
}
