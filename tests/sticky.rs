//! `balance = "sticky"` from outside: clients bound to 64 loopback source
//! addresses (127.0.0.2 to 127.0.0.65), each making fresh connections to
//! `probe` with 4 nodes: every address is answered by one node, the addresses
//! spread over the nodes, a reload keeps the mapping, and a stopped node's
//! clients are answered by the others meanwhile.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{poll, Program};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(20);

/// `GET /` from source address `source` on a fresh connection: the answering
/// node's id.
fn node_from(source: &str, addr: SocketAddr, limit: Duration) -> std::io::Result<usize> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into())?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(5))?;
    let mut stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(limit))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    body.strip_prefix("node ")
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not a probe answer: {response:?}")))
}

fn sources() -> Vec<String> {
    (2..66).map(|i| format!("127.0.0.{i}")).collect()
}

/// Each source's node over `tries` fresh connections; panics if one source
/// was answered by two nodes.
fn mapping(addr: SocketAddr, tries: usize) -> BTreeMap<String, usize> {
    let mut map = BTreeMap::new();
    for source in sources() {
        for _ in 0..tries {
            let node = node_from(&source, addr, WAIT).unwrap();
            let home = *map.entry(source.clone()).or_insert(node);
            assert_eq!(home, node, "{source} reached nodes {home} and {node}");
        }
    }
    map
}

/// Jain's fairness index of how many sources each node has.
fn jain(map: &BTreeMap<String, usize>, nodes: usize) -> f64 {
    let mut counts = vec![0f64; nodes];
    map.values().for_each(|n| counts[*n] += 1.0);
    let sum: f64 = counts.iter().sum();
    sum * sum / (nodes as f64 * counts.iter().map(|c| c * c).sum::<f64>())
}

fn sticky() -> Program {
    Program::start(
        "probe",
        &[("MULTINODE_NODES", "4"), ("MULTINODE_BALANCE", "sticky")],
    )
}

#[test]
fn each_client_address_reaches_one_node_and_a_reload_keeps_the_mapping() {
    let program = sticky();
    let addr = program.ready();
    let map = mapping(addr, 20);
    let fairness = jain(&map, 4);
    eprintln!("64 addresses over 4 nodes: Jain {fairness:.3}");
    assert!(fairness >= 0.9, "{map:?}");
    let before = program.workers();
    program.signal(Signal::SIGHUP);
    let replaced = poll(WAIT, || {
        let now = program.workers();
        (now.len() == 3 && now.is_disjoint(&before)).then_some(())
    });
    assert!(replaced.is_some(), "the workers were replaced");
    program.wait_for("rolling restart done", 1, WAIT);
    assert_eq!(mapping(addr, 3), map, "the same mapping after the reload");
}

#[test]
fn a_stopped_nodes_clients_are_answered_by_the_others_then_come_back() {
    let program = sticky();
    let addr = program.ready();
    let map = mapping(addr, 2);
    // A node other than the master's, which serves on while the test runs.
    let stopped_id = *map.values().find(|n| **n != 0).unwrap();
    let needle = format!("node started node={stopped_id} generation=1 pid=");
    let log = program.log();
    let line = log.iter().find(|l| l.contains(&needle)).unwrap();
    let stopped: u32 = line[line.find(&needle).unwrap() + needle.len()..]
        .trim()
        .parse()
        .unwrap();
    let its: Vec<&String> = map
        .iter()
        .filter(|(_, n)| **n == stopped_id)
        .map(|(s, _)| s)
        .collect();
    kill(Pid::from_raw(stopped as i32), Signal::SIGSTOP).unwrap();
    let mut slowest = Duration::ZERO;
    for source in &its {
        let started = Instant::now();
        let node = node_from(source, addr, Duration::from_secs(5)).unwrap();
        slowest = slowest.max(started.elapsed());
        assert_ne!(node, stopped_id, "{source} waited on the stopped node");
    }
    eprintln!(
        "{} clients of a stopped node: the slowest answered in {slowest:?}",
        its.len()
    );
    for (source, node) in &map {
        if *node != stopped_id {
            assert_eq!(
                node_from(source, addr, WAIT).unwrap(),
                *node,
                "{source} moved"
            );
        }
    }
    kill(Pid::from_raw(stopped as i32), Signal::SIGCONT).unwrap();
    let back = poll(WAIT, || {
        let nodes: BTreeSet<usize> = its
            .iter()
            .map(|s| node_from(s, addr, WAIT).unwrap())
            .collect();
        (nodes == BTreeSet::from([stopped_id])).then_some(())
    });
    assert!(back.is_some(), "its clients come back once it runs again");
}

#[test]
fn an_upgrade_keeps_the_mapping() {
    let mut program = sticky();
    let addr = program.ready();
    let map = mapping(addr, 2);
    program.signal(Signal::SIGUSR2);
    let status = program.wait_exit(WAIT);
    assert!(status.success(), "the old master exits 0: {status:?}");
    program.wait_for("upgrade: the new master", 1, WAIT);
    assert_eq!(mapping(addr, 3), map, "the same mapping in the new tree");
    let new_tree = common::processes_with(&program.marker);
    for pid in new_tree {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}
