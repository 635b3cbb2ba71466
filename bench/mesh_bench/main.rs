//! The mesh benchmark (run by `bench/run.sh`, or alone:
//! `cargo run --release --example mesh_bench`). Four nodes; node 0 measures and
//! prints, then returns, which stops every node:
//!
//! - messages/s and MB/s from node 1 to node 0 through the message layer, for 64-byte
//!   and 4 KiB `Bytes` payloads, against the same frames over a bare Unix
//!   socketpair with the same codec (tokio-util's length-delimited), written and
//!   read by two threads, each on its own current_thread runtime like two nodes;
//!   and the same for a 64-byte payload in a fixed array (`[u8; 64]`), which
//!   decodes without an allocation: the message layer's own cost, without the
//!   allocator's;
//! - broadcast latency from node 0 to the 3 others: per broadcast, until the last
//!   of them has it (CLOCK_MONOTONIC is one clock for every process; each
//!   receiver keeps its latencies and reports them after the last broadcast),
//!   p50 and p99; and the floors under it on this machine, measured by turns
//!   with it: the same over bare socketpairs to 3 threads and to 3 processes
//!   sleeping in a blocking read, and to 3 processes on a tokio runtime;
//! - round trips from node 0 to the 3 others: a request broadcast, until every
//!   answer is back, p50 and p99.
//!
//! `QUICK=1` sends fewer messages; `ONLY=64` (or `ONLY=4096`) measures that
//! size alone (both payloads for 64), 10 rounds, and no broadcast (for a
//! profiler); `ONLY=broadcast` measures the latencies alone (broadcast, round
//! trip, floors). For `bench/mesh_instructions.py`, with `ONLY`: `PAYLOAD=bytes`
//! (or `array`) one payload, `COUNT` messages a round, `ROUNDS` rounds, and
//! `SIDE=mesh` the message layer alone, or `SIDE=bare` the bare socketpair
//! alone, without starting the nodes; `SIDE=bare-postcard` the bare socketpair
//! with each message encoded (`postcard::to_slice`, in the write buffer) and
//! decoded (`postcard::from_bytes`) as a program without the mesh would. The output
//! is one CSV line per figure after a `mesh,` prefix, which `bench/run.py` reads.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use bytes::Bytes;
use multinode::mesh::{Receiver, Sender};
use multinode::Nodes;
use serde::{Deserialize, Serialize};

mod bare;
mod floor;
mod plan;

use bare::{bare_postcard, bare_socketpair};
use floor::{time_arrivals, time_arrivals_in_a_runtime, Floor, Receivers};
use plan::{Plan, Side};

#[derive(Debug, Serialize, Deserialize)]
enum Bench {
    Up,
    Go {
        size: usize,
        count: usize,
        array: bool,
    },
    Start,
    Data(Bytes),
    Array(Array64),
    End,
    Ping {
        sent_ns: u64,
    },
    /// Asks a worker for the latencies it measured: one `Latency` each, in order.
    Report,
    Latency {
        latency_ns: u64,
    },
    /// A request that each worker answers at once.
    Ask,
    Answer,
}

fn main() {
    if let Some(kind) = std::env::var_os(BARE_RECEIVER) {
        // One of the floor's receiver processes: its socket is standard input.
        let socket = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
        let latencies = match kind.to_str() {
            Some("tokio") => time_arrivals_in_a_runtime(socket.into()),
            _ => time_arrivals(socket.into()),
        };
        for latency in latencies {
            println!("{latency}");
        }
        return;
    }
    if matches!(Plan::from_env().side, Side::Bare | Side::BarePostcard) {
        return bare_only();
    }
    multinode::Builder::new().port(0).nodes(4).run(body)
}

/// `SIDE=bare` or `bare-postcard`: the bare socketpair's rounds, with no node
/// started.
fn bare_only() {
    let plan = Plan::from_env();
    let codec = plan.side == Side::BarePostcard;
    for (size, count, array) in plan.phases {
        let frame = Bytes::from(postcard::to_stdvec(&data(size, array)).unwrap());
        let times: Vec<_> = (0..plan.rounds)
            .map(|_| match codec {
                true => bare_postcard(data(size, array), count),
                false => bare_socketpair(frame.clone(), count),
            })
            .collect();
        let name = ["bare socketpair", "bare socketpair postcard"][usize::from(codec)];
        report(
            &phase_name(name, size, array),
            count,
            size,
            frame.len(),
            &times,
        );
    }
}

fn phase_name(path: &str, size: usize, array: bool) -> String {
    format!("{path} {size} B{}", if array { " array" } else { "" })
}

/// Set in the environment of the floor's receiver processes.
const BARE_RECEIVER: &str = "MESH_BENCH_BARE_RECEIVER";

fn now_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

async fn body(mut nodes: Nodes) {
    let (tx, rx) = nodes.take_messages::<Bench>().unwrap();
    if nodes.is_master() {
        measure(tx, rx).await;
    } else {
        tx.send(0, &Bench::Up).await.unwrap();
        tokio::select! {
            _ = serve(tx, rx) => {}
            _ = nodes.shutdown() => {}
        }
    }
}

/// A worker: sends what node 0 asks for, times pings and reports their latencies.
async fn serve(tx: Sender<Bench>, mut rx: Receiver<Bench>) {
    let mut latencies = Vec::new();
    while let Some((_, message)) = rx.recv().await {
        match message {
            Bench::Go { size, count, array } => {
                let data = data(size, array);
                tx.send(0, &Bench::Start).await.unwrap();
                for _ in 0..count {
                    tx.send(0, &data).await.unwrap();
                }
                tx.send(0, &Bench::End).await.unwrap();
            }
            Bench::Ping { sent_ns } => latencies.push(now_ns() - sent_ns),
            Bench::Ask => tx.send(0, &Bench::Answer).await.unwrap(),
            Bench::Report => {
                for latency_ns in latencies.drain(..) {
                    tx.send(0, &Bench::Latency { latency_ns }).await.unwrap();
                }
            }
            _ => {}
        }
    }
}

async fn measure(tx: Sender<Bench>, mut rx: Receiver<Bench>) {
    let mut up = 0;
    while up < 3 {
        if let Some((_, Bench::Up)) = rx.recv().await {
            up += 1;
        }
    }
    let Plan {
        quick,
        only,
        rounds,
        side,
        phases,
    } = Plan::from_env();
    for (size, count, array) in phases {
        let frame = Bytes::from(postcard::to_stdvec(&data(size, array)).unwrap());
        let (mut mesh, mut bare) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            if side == Side::Both {
                bare.push(bare_socketpair(frame.clone(), count));
            }
            tx.send(1, &Bench::Go { size, count, array }).await.unwrap();
            let mut started = None;
            let mut received = 0;
            let elapsed = loop {
                match rx.recv().await.unwrap().1 {
                    Bench::Start => started = Some(Instant::now()),
                    Bench::Data(_) | Bench::Array(_) => received += 1,
                    Bench::End => break started.unwrap().elapsed(),
                    _ => {}
                }
            };
            assert_eq!(received, count);
            mesh.push(elapsed);
        }
        report(
            &phase_name("mesh", size, array),
            count,
            size,
            frame.len(),
            &mesh,
        );
        if side == Side::Both {
            let bare_name = phase_name("bare socketpair", size, array);
            report(&bare_name, count, size, frame.len(), &bare);
        }
    }
    if only.is_some() {
        return;
    }
    // Broadcast latency, one broadcast at a time, with a pause between two in
    // which every receiver has it and sleeps again. The receivers keep their
    // latencies until asked after the last: an answer to each broadcast would
    // take a core from the receivers still waiting for one (on 2 cores, one
    // of 3 always is), and broadcasts (a chat message, an invalidation) have none.
    // The floors' broadcasts take turns with the mesh's, so that each figure
    // and its floor see the machine alike (on this VM, whether the idle core
    // is halted moves a run's every latency by 2 to 5 times).
    let pings = if quick { 300 } else { 2000 };
    let kinds = [
        Receivers::Threads,
        Receivers::Processes,
        Receivers::Runtimes,
    ];
    let mut floors = kinds.map(Floor::start);
    for _ in 0..pings {
        tx.broadcast(&Bench::Ping { sent_ns: now_ns() })
            .await
            .unwrap();
        tokio::time::sleep(IDLE).await;
        for floor in &mut floors {
            floor.ping();
            tokio::time::sleep(IDLE).await;
        }
    }
    tx.broadcast(&Bench::Report).await.unwrap();
    let mut reports = std::collections::BTreeMap::<usize, Vec<u64>>::new();
    while reports.values().map(Vec::len).sum::<usize>() < 3 * pings {
        if let Some((from, Bench::Latency { latency_ns })) = rx.recv().await {
            reports.entry(from.id()).or_default().push(latency_ns);
        }
    }
    let reports: Vec<_> = reports.into_values().collect();
    let once_each = reports.len() == 3 && reports.iter().all(|r| r.len() == pings);
    assert!(once_each, "every broadcast arrived once at each node");
    print_latency("broadcast to 3 nodes", worst_of(&reports));
    // Round trips: node 0 asks the 3 others and waits for every answer (a
    // scatter-gather, or any request between nodes), then pauses the same.
    let mut trips = Vec::with_capacity(pings);
    for _ in 0..pings {
        let sent = Instant::now();
        tx.broadcast(&Bench::Ask).await.unwrap();
        let mut answers = 0;
        while answers < 3 {
            if let Some((_, Bench::Answer)) = rx.recv().await {
                answers += 1;
            }
        }
        trips.push(sent.elapsed().as_nanos() as u64);
        tokio::time::sleep(IDLE).await;
    }
    print_latency("round trip to 3 nodes", trips);
    let names = ["threads", "processes", "tokio processes"];
    for (floor, what) in floors.into_iter().zip(names) {
        let latencies = tokio::task::spawn_blocking(move || floor.finish());
        print_latency(
            &format!("bare broadcast to 3 {what}"),
            latencies.await.unwrap(),
        );
    }
}

/// A message of `size` bytes of payload: a `Bytes`, or the 64 bytes of an array.
fn data(size: usize, array: bool) -> Bench {
    if array {
        Bench::Array(Array64([0x42; 64]))
    } else {
        Bench::Data(Bytes::from(vec![0x42; size]))
    }
}

/// 64 bytes encoded as serde bytes (a length, then the bytes: the same frame as a
/// `Bytes` of 64), decoded into the array: no allocation.
#[derive(Debug)]
struct Array64([u8; 64]);

impl Serialize for Array64 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Array64 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Array64;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("64 bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Array64, E> {
                let array = bytes
                    .try_into()
                    .map_err(|_| E::invalid_length(bytes.len(), &self))?;
                Ok(Array64(array))
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

/// The pause between two broadcasts, so that the receivers are asleep when one comes.
const IDLE: Duration = Duration::from_millis(1);

/// Prints p50 and p99 of `latencies` (ns) in µs.
fn print_latency(what: &str, mut latencies: Vec<u64>) {
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    println!("mesh,{what},p50_us,{:.1}", pct(0.50));
    println!("mesh,{what},p99_us,{:.1}", pct(0.99));
}

/// Per broadcast, the latency of the last receiver to have it.
fn worst_of(reports: &[Vec<u64>]) -> Vec<u64> {
    (0..reports[0].len())
        .map(|ping| reports.iter().map(|r| r[ping]).max().unwrap())
        .collect()
}

/// Prints messages/s and MB/s (payload bytes) for each round's time.
fn report(what: &str, count: usize, size: usize, frame: usize, times: &[Duration]) {
    for time in times {
        let per_second = count as f64 / time.as_secs_f64();
        println!(
            "mesh,{what},msgs_per_s,{per_second:.0},MB_per_s,{:.1},frame_bytes,{frame}",
            per_second * size as f64 / 1e6
        );
    }
}
