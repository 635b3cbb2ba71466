//! The replicated map's benchmark (`bench/map.py` runs it beside
//! `mesh_bench`'s broadcast; alone: `cargo run --release --example
//! map_bench`). Four nodes, one `multinode::map::Map`; node 0 measures and
//! prints, then returns, which stops every node:
//!
//! - a read (`Map::get` of a 32-byte value among 10 000 keys, cloned), in ns,
//!   against the same lookup and clone in a `HashMap` behind a `RwLock` and
//!   in a bare `HashMap`, in this process;
//! - a write's time until every other node has it: node 0 writes a key
//!   holding the time (CLOCK_MONOTONIC, one clock for every process), once a
//!   millisecond; each other node, woken by `Map::changes`, keeps the time
//!   each key took to reach its copy and reports them at the end; per write,
//!   the last node's, p50 and p99 (the mesh's broadcast, measured by
//!   `mesh_bench` in the same `bench/map.py` run, is its floor).
//!
//! `QUICK=1` writes fewer keys. One CSV line per figure after a `map,` prefix.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use multinode::map::{Map, Options};
use multinode::Nodes;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Value {
    Text(String),
    /// When it was written (ns, CLOCK_MONOTONIC).
    Stamp(u64),
    /// A reader's latencies, in the order of the writes.
    Report(Vec<u64>),
}

const KEYS: usize = 10_000;
const READS: usize = 2_000_000;

fn main() {
    multinode::Builder::new().port(0).nodes(4).run(body)
}

fn now_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

fn writes() -> usize {
    match std::env::var_os("QUICK") {
        Some(_) => 500,
        None => 3_000,
    }
}

async fn body(mut nodes: Nodes) {
    let map: Map<String, Value> = nodes.take_map(Options::new()).await.unwrap();
    if nodes.is_master() {
        measure(map).await;
    } else {
        tokio::select! {
            _ = read_writes(map, nodes.id()) => {}
            _ = nodes.shutdown() => {}
        }
    }
}

async fn measure(map: Map<String, Value>) {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("session:{i:08}")).collect();
    let value = Value::Text("x".repeat(32));
    let mut bare = HashMap::new();
    for key in &keys {
        map.insert(key.clone(), value.clone()).await.unwrap();
        bare.insert(key.clone(), value.clone());
    }
    let locked = RwLock::new(bare.clone());
    for round in 0..3 {
        let per_read = |f: &dyn Fn(&str) -> Option<Value>| {
            let began = Instant::now();
            for i in 0..READS {
                black_box(f(&keys[i % KEYS]));
            }
            began.elapsed().as_nanos() as f64 / READS as f64
        };
        let map_ns = per_read(&|k| map.get(k));
        let locked_ns = per_read(&|k| locked.read().unwrap().get(k).cloned());
        let bare_ns = per_read(&|k| bare.get(k).cloned());
        println!("map,read,round {round},map_ns,{map_ns:.1}");
        println!("map,read,round {round},rwlock_hashmap_ns,{locked_ns:.1}");
        println!("map,read,round {round},hashmap_ns,{bare_ns:.1}");
    }
    // Every reader is up and watching.
    let mut changes = map.changes();
    while (1..4).any(|k| map.get(&format!("up{k}")).is_none()) {
        changes.changed().await.unwrap();
    }
    let writes = writes();
    for i in 0..writes {
        map.insert(format!("w{i}"), Value::Stamp(now_ns()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let reports = loop {
        let reports: Vec<_> = (1..4)
            .filter_map(|k| match map.get(&format!("report{k}")) {
                Some(Value::Report(latencies)) => Some(latencies),
                _ => None,
            })
            .collect();
        if reports.len() == 3 {
            break reports;
        }
        changes.changed().await.unwrap();
    };
    let mut worst: Vec<u64> = (0..writes)
        .map(|i| reports.iter().map(|r| r[i]).max().unwrap())
        .collect();
    worst.sort_unstable();
    let pct = |p: f64| worst[((worst.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    println!("map,write to 3 nodes,p50_us,{:.1}", pct(0.50));
    println!("map,write to 3 nodes,p99_us,{:.1}", pct(0.99));
}

/// A reader: times each write's arrival, then reports.
async fn read_writes(map: Map<String, Value>, id: usize) {
    let mut changes = map.changes();
    map.insert(format!("up{id}"), Value::Stamp(0))
        .await
        .unwrap();
    let (writes, mut latencies) = (writes(), Vec::new());
    while latencies.len() < writes {
        if changes.changed().await.is_err() {
            return;
        }
        let now = now_ns();
        while let Some(Value::Stamp(sent)) = map.get(&format!("w{}", latencies.len())) {
            latencies.push(now.saturating_sub(sent));
        }
    }
    let report = Value::Report(latencies);
    map.insert(format!("report{id}"), report).await.unwrap();
    std::future::pending::<()>().await
}
