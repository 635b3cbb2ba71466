//! What the benchmark relies on: the per-node totals the master reports are exact,
//! and every balance mode keeps serving across a worker restart without refusing a
//! connection.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{get, pids_answering, poll, Program};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The `node totals` lines: (node, connections, requests).
fn totals(program: &Program) -> Vec<(usize, u64, u64)> {
    let field = |line: &str, name: &str| -> u64 {
        let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        line[start..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    program
        .log()
        .iter()
        .filter(|line| line.contains("node totals"))
        .map(|l| {
            (
                field(l, "node") as usize,
                field(l, "connections"),
                field(l, "requests"),
            )
        })
        .collect()
}

/// Stops the program gracefully (exit 0) and reads the totals of its 4 nodes.
fn stop_and_read_totals(program: &mut Program) -> Vec<(usize, u64, u64)> {
    program.signal(Signal::SIGTERM);
    assert_eq!(program.wait_exit(Duration::from_secs(15)).code(), Some(0));
    program.wait_for("node totals", 4, Duration::from_secs(2));
    totals(program)
}

#[test]
fn per_node_totals_are_exact() {
    let mut program = Program::start("hello", &[("MULTINODE_NODES", "4")]);
    let addr = program.ready();
    for _ in 0..60 {
        assert_eq!(get(addr, "/").unwrap().0, 200);
    }
    // 40 requests on one keep-alive connection.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for _ in 0..40 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 512];
        while !seen.ends_with(b")\n") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed early");
            seen.extend_from_slice(&buf[..n]);
        }
    }
    drop(stream);
    let totals = stop_and_read_totals(&mut program);
    let nodes: Vec<usize> = totals.iter().map(|t| t.0).collect();
    assert_eq!(nodes, vec![0, 1, 2, 3]);
    assert_eq!(
        totals.iter().map(|t| t.1).sum::<u64>(),
        61,
        "connections: {totals:?}"
    );
    assert_eq!(
        totals.iter().map(|t| t.2).sum::<u64>(),
        100,
        "requests: {totals:?}"
    );
}

#[test]
fn every_mode_serves_across_a_restart_without_refusing() {
    for mode in ["least_conn", "reuse_port", "shared"] {
        let program = Program::start(
            "probe",
            &[("PROBE_BALANCE", mode), ("MULTINODE_NODES", "3")],
        );
        let addr = program.ready();
        let stop = Arc::new(AtomicBool::new(false));
        let client = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut refused, mut cut) = (0u32, 0u32, 0u32);
                // Bounded: stops when told, or after 20 000 requests.
                while !stop.load(Ordering::Relaxed) && ok + refused + cut < 20_000 {
                    match get(addr, "/") {
                        Ok((200, _)) => ok += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
                        // A request in flight on the killed worker is cut: not a refusal.
                        _ => cut += 1,
                    }
                }
                (ok, refused, cut)
            })
        };
        let victim = *program.workers().iter().next().unwrap();
        kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
        let mut expected = poll(Duration::from_secs(10), || {
            let now = program.workers();
            (now.len() == 2 && !now.contains(&victim)).then_some(now)
        })
        .unwrap_or_else(|| panic!("{mode}: no replacement"));
        program.wait_for("generation=2", 2, Duration::from_secs(10)); // started, ready
        expected.insert(program.pid());
        assert_eq!(
            pids_answering(addr, &expected),
            expected,
            "{mode}: every node answers"
        );
        stop.store(true, Ordering::Relaxed);
        let (ok, refused, cut) = client.join().unwrap();
        eprintln!("{mode}: {ok} answered, {refused} refused, {cut} cut by the kill");
        assert_eq!(refused, 0, "{mode}: the port never refuses");
        assert!(
            cut <= 3,
            "{mode}: only requests in flight on the killed worker fail: {cut}"
        );
        assert!(ok > 0, "{mode}");
    }
}

/// Opens 64 keep-alive connections at once (as wrk does) to `probe` with 4 nodes in
/// `mode`, then one request on each while all stay open; returns the connections
/// per node.
fn connections_per_node(mode: &str) -> Vec<u64> {
    let mut program = Program::start(
        "probe",
        &[("MULTINODE_NODES", "4"), ("PROBE_BALANCE", mode)],
    );
    let addr = program.ready();
    let mut clients: Vec<_> = (0..64)
        .map(|_| common::KeepAlive::connect(addr).unwrap())
        .collect();
    for client in &mut clients {
        assert_eq!(client.get("/").unwrap(), 200);
    }
    let totals = stop_and_read_totals(&mut program);
    drop(clients);
    totals.iter().map(|t| t.1).collect()
}

#[test]
fn least_conn_gives_every_node_its_share_of_keep_alive_connections() {
    let per_node = connections_per_node("least_conn");
    assert_eq!(per_node.iter().sum::<u64>(), 64, "{per_node:?}");
    // 16 each is fair; the bounds leave room for a noisy machine, not for skew.
    assert!(
        per_node.iter().all(|n| (8..=24).contains(n)),
        "{per_node:?}"
    );
}

#[test]
fn least_conn_shares_sequential_fresh_connections_too() {
    let mut program = Program::start("probe", &[("MULTINODE_NODES", "4")]);
    let addr = program.ready();
    for _ in 0..200 {
        assert_eq!(get(addr, "/").unwrap().0, 200);
    }
    let per_node: Vec<u64> = stop_and_read_totals(&mut program)
        .iter()
        .map(|t| t.1)
        .collect();
    // 50 each is fair; a shared queue gives the first process to wake most of them.
    assert!(per_node.iter().all(|n| *n >= 25), "{per_node:?}");
}
