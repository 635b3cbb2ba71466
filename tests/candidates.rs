//! `least_conn` waits only for nodes that are accepting: a node stopped, blocked
//! or draining drops out of the candidates at once, and the others take every
//! arrival; a node at `max_connections` accepts nothing more. Counted in slow requests, not timed: before, every sequential request
//! waited out the 20 ms deferral to the node that took nothing.

mod common;

use std::time::{Duration, Instant};

use common::{get, get_within, Program};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(20);

/// Of `n` sequential requests on fresh connections, how many took over 15 ms;
/// each must be answered within 3 s.
fn slow_requests(addr: std::net::SocketAddr, n: usize) -> usize {
    (0..n)
        .filter(|i| {
            let started = Instant::now();
            let answer = get_within(addr, "/", Duration::from_secs(3));
            let (status, _) = answer.unwrap_or_else(|e| panic!("request {i} not answered: {e}"));
            assert_eq!(status, 200);
            started.elapsed() > Duration::from_millis(15)
        })
        .count()
}

/// With one of 4 nodes stopped (SIGSTOP), 200 sequential requests on fresh
/// connections are each answered, and few wait.
fn a_stopped_node_costs_nothing(balance: &str) -> Program {
    let program = Program::start(
        "probe",
        &[("MULTINODE_NODES", "4"), ("PROBE_BALANCE", balance)],
    );
    let addr = program.ready();
    let stopped = *program.workers().iter().next().unwrap();
    kill(Pid::from_raw(stopped as i32), Signal::SIGSTOP).unwrap();
    let slow = std::panic::catch_unwind(|| slow_requests(addr, 200));
    kill(Pid::from_raw(stopped as i32), Signal::SIGCONT).unwrap();
    let slow = slow.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    assert!(
        slow < 40,
        "{slow} of 200 requests waited for the stopped node"
    );
    // Resumed, it serves again.
    let serving = (0..200)
        .filter_map(|_| get(addr, "/").ok())
        .any(|(_, body)| common::pid_in(&body) == stopped);
    assert!(serving, "the resumed node {stopped} serves again");
    program
}

#[test]
fn a_stopped_node_is_not_waited_for() {
    a_stopped_node_costs_nothing("least_conn");
}

#[test]
fn a_stopped_node_keeps_no_connection_with_reuse_port() {
    // Its own queue in the SO_REUSEPORT group: the master takes what waits
    // there, and new connections are steered to the other sockets.
    let program = a_stopped_node_costs_nothing("reuse_port");
    program.wait_for("accepts again", 1, WAIT);
    let log = program.log();
    let line = log.iter().find(|l| l.contains("accepts again")).unwrap();
    let handed: usize = line
        .split("handed=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no handed=N in {line:?}"));
    // Of 200 connections a quarter hash to its socket; steered, few arrive there.
    assert!(handed < 20, "{handed} connections taken from its queue");
}

#[test]
fn a_draining_node_is_not_waited_for() {
    let program = Program::start(
        "probe",
        &[
            ("MULTINODE_NODES", "4"),
            ("PROBE_SHUTDOWN_TIMEOUT_MS", "20000"),
        ],
    );
    let addr = program.ready();
    // Slow requests spread over the nodes, then the highest drains with its own.
    let slow: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || get(addr, "/slow?ms=6000")))
        .collect();
    program.wait_for("slow request started", 8, WAIT);
    program.signal(Signal::SIGTTOU);
    program.wait_for("SIGTTOU: removing the node", 1, WAIT);
    let waited = slow_requests(addr, 200);
    assert!(
        waited < 40,
        "{waited} of 200 requests waited for the draining node"
    );
    for request in slow {
        assert_eq!(request.join().unwrap().expect("finished").0, 200);
    }
}

#[test]
fn a_full_node_accepts_nothing_more_and_the_arrival_waits_for_room() {
    use std::io::{Read, Write};
    let program = Program::start(
        "probe",
        &[("MULTINODE_NODES", "2"), ("MULTINODE_MAX_CONNECTIONS", "2")],
    );
    let addr = program.ready();
    // Four connections held open: two per node, each node at its limit.
    let mut held: Vec<_> = (0..4)
        .map(|_| {
            let mut client = common::KeepAlive::connect(addr).unwrap();
            assert_eq!(client.get("/").unwrap(), 200);
            client
        })
        .collect();
    let mut fifth = std::net::TcpStream::connect(addr).unwrap();
    write!(
        fifth,
        "GET /table HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8];
    assert!(
        fifth.read(&mut byte).is_err(),
        "no node at its limit accepted a fifth connection"
    );
    // It waits in the backlog, and is answered once a held connection closes.
    drop(held.pop());
    fifth.set_read_timeout(Some(WAIT)).unwrap();
    let mut response = String::new();
    fifth.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("open 0:2 1:2"), "{response}");
}
