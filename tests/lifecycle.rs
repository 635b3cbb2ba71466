//! Lifecycle, seen from outside: crash-loop backoff and the stop after K failed
//! starts, the watchdog, stragglers at shutdown, and scaling with SIGTTIN/SIGTTOU.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{descriptors, get, pids_answering, poll, Program};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(20);

/// Seconds since midnight of a log line's timestamp (`2026-11-24T11:34:23.060055Z ...`).
fn seconds(line: &str) -> f64 {
    let time = line.split('T').nth(1).unwrap().split('Z').next().unwrap();
    let mut parts = time.split(':').map(|p| p.parse::<f64>().unwrap());
    let (h, m, s) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    h * 3600.0 + m * 60.0 + s
}

#[test]
fn a_crash_loop_backs_off_then_stops_everything_naming_the_error() {
    let mut program = Program::start(
        "probe",
        &[("PROBE_FAIL_WORKERS", "1"), ("PROBE_BOOT_FAILURES", "3")],
    );
    let status = program.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "exit status");
    let log = program.log();
    let starts: Vec<f64> = log
        .iter()
        .filter(|l| l.contains("node started node=1"))
        .map(|l| seconds(l))
        .collect();
    assert_eq!(
        starts.len(),
        3,
        "three starts of node 1:\n{}",
        log.join("\n")
    );
    let gaps = [starts[1] - starts[0], starts[2] - starts[1]];
    assert!(gaps[0] >= 0.09, "first backoff {gaps:?}");
    assert!(
        gaps[1] >= 0.19 && gaps[1] > gaps[0],
        "the backoff doubles: {gaps:?}"
    );
    let stop = log
        .iter()
        .find(|l| l.contains("failed to start 3 times in a row"))
        .expect("the reason for stopping");
    assert!(
        stop.contains(
            "last error: main returned an error: \"node 1 cannot start: PROBE_FAIL_WORKERS\""
        ),
        "{stop}"
    );
    program.assert_no_process_left();
}

#[test]
fn the_watchdog_replaces_a_worker_whose_runtime_is_stuck() {
    let program = Program::start(
        "probe",
        &[("PROBE_TIMEOUT_MS", "1000"), ("PROBE_MASTER_LISTEN", "0")],
    );
    let addr = program.ready();
    let before = program.workers();
    // Every node is a worker: this blocks one of them for 30 s.
    let blocked = std::thread::spawn(move || get(addr, "/block?ms=30000"));
    program.wait_for("blocking the runtime", 1, WAIT);
    program.wait_for("the node is stuck; killing it", 1, Duration::from_secs(5));
    assert!(
        blocked.join().unwrap().is_err(),
        "the stuck node's request dies with it"
    );
    program.wait_for("generation=2", 1, WAIT);
    let after = poll(WAIT, || {
        let now = program.workers();
        (now.len() == 2 && now != before).then_some(now)
    })
    .expect("a replacement");
    assert_eq!(pids_answering(addr, &after), after, "both serve again");
    assert_eq!(
        program.count("the node is stuck"),
        1,
        "healthy nodes are left alone"
    );
}

#[test]
fn a_request_that_outlives_shutdown_timeout_is_cut_and_the_exit_says_so() {
    let mut program = Program::start("probe", &[("PROBE_SHUTDOWN_TIMEOUT_MS", "1000")]);
    let addr = program.ready();
    let request = std::thread::spawn(move || get(addr, "/slow?ms=30000"));
    program.wait_for("slow request started", 1, WAIT);
    program.signal(Signal::SIGTERM);
    let status = program.wait_exit(Duration::from_secs(10));
    assert_ne!(status.code(), Some(0), "something had to be cut");
    program.wait_for("cutting them", 1, Duration::from_secs(1));
    assert!(request.join().unwrap().is_err(), "the slow request was cut");
    program.assert_no_process_left();
}

#[test]
fn a_body_that_ignores_shutdown_is_killed_after_shutdown_timeout() {
    let mut program = Program::start(
        "probe",
        &[
            ("PROBE_IGNORE_SHUTDOWN", "1"),
            ("PROBE_SHUTDOWN_TIMEOUT_MS", "500"),
        ],
    );
    program.ready();
    program.signal(Signal::SIGTERM);
    program.wait_for("ignoring the shutdown", 2, WAIT);
    let status = program.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "exit status");
    program.wait_for("still running", 1, Duration::from_secs(1));
    program.assert_no_process_left();
}

fn scale(balance: &str) {
    let program = Program::start(
        "mesh_probe",
        &[("MULTINODE_NODES", "3"), ("MULTINODE_BALANCE", balance)],
    );
    let addr = program.ready();
    program.wait_for("got hello", 6, WAIT);
    let serving = |program: &Program| -> BTreeSet<u32> {
        let mut pids = program.workers();
        pids.insert(program.pid());
        pids
    };
    program.signal(Signal::SIGTTIN);
    program.wait_for("probe up: node 3 generation 1", 1, WAIT);
    let four = poll(WAIT, || Some(serving(&program)).filter(|p| p.len() == 4)).expect("4 nodes");
    assert_eq!(pids_answering(addr, &four), four, "the new node serves");
    for node in 0..3 {
        // The mesh follows: the new node met every other.
        program.wait_for(&format!("node {node} got hello 3 from 3"), 1, WAIT);
    }
    program.signal(Signal::SIGTTOU);
    program.wait_for("node removed node=3", 1, WAIT);
    let three = serving(&program);
    assert_eq!(three.len(), 3, "{three:?}");
    for _ in 0..50 {
        let (status, _) = get(addr, "/").expect("no refused connection");
        assert_eq!(status, 200);
    }
    assert_eq!(pids_answering(addr, &three), three);
    program.signal(Signal::SIGTTOU);
    program.wait_for("node removed node=2", 1, WAIT);
    program.signal(Signal::SIGTTOU);
    program.wait_for("node removed node=1", 1, WAIT);
    program.signal(Signal::SIGTTOU);
    program.wait_for("one node left", 1, WAIT);
    assert_eq!(serving(&program).len(), 1);
    assert_eq!(get(addr, "/").unwrap().0, 200, "the master still serves");
}

#[test]
fn sigttin_adds_a_node_and_sigttou_removes_the_highest() {
    scale("least_conn");
}

#[test]
fn scaling_with_reuse_port_listeners() {
    scale("reuse_port");
}

/// Polls `GET /nodes` until each of `ids` has answered `of {count}`.
fn every_node_counts(addr: std::net::SocketAddr, ids: std::ops::Range<usize>, count: usize) {
    let mut seen = BTreeSet::new();
    let done = poll(WAIT, || {
        let (_, body) = get(addr, "/nodes").ok()?;
        // `node {id} of {count}`
        let words: Vec<&str> = body.split_whitespace().collect();
        if words.get(3) == Some(&count.to_string().as_str()) {
            seen.insert(words[1].parse::<usize>().ok()?);
        }
        ids.clone().all(|id| seen.contains(&id)).then_some(())
    });
    assert!(
        done.is_some(),
        "nodes that said {count}: {seen:?} of {ids:?}"
    );
}

#[test]
fn count_follows_sigttin_and_sigttou_in_every_node() {
    let program = Program::start("probe", &[("MULTINODE_NODES", "3")]);
    let addr = program.ready();
    every_node_counts(addr, 0..3, 3);
    program.signal(Signal::SIGTTIN);
    program.wait_for("node ready node=3", 1, WAIT);
    every_node_counts(addr, 0..4, 4);
    program.signal(Signal::SIGTTOU);
    program.wait_for("node removed node=3", 1, WAIT);
    every_node_counts(addr, 0..3, 3);
    program.signal(Signal::SIGTTOU);
    program.wait_for("node removed node=2", 1, WAIT);
    every_node_counts(addr, 0..2, 2);
}

#[test]
fn a_worker_leaks_no_descriptor_while_its_peer_restarts() {
    let program = Program::start("mesh_probe", &[("MULTINODE_NODES", "3")]);
    program.ready();
    program.wait_for("got hello", 6, WAIT);
    let (stays, master) = (program.node_pid(1, 1), program.pid());
    let before = (descriptors(stays), descriptors(master));
    for generation in 1..=5 {
        let victim = program.node_pid(2, generation);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
        // The replacement is meshed with node 1 and the master's node.
        program.wait_for("got hello 2 from 2", 2 * (generation as usize + 1), WAIT);
    }
    // Old streams close as their EOF is read: poll until the counts settle.
    let settled = poll(WAIT, || {
        let now = (descriptors(stays), descriptors(master));
        (now == before).then_some(now)
    });
    assert_eq!(
        settled,
        Some(before),
        "descriptors of node 1 and the master, before and after 5 restarts of node 2: {before:?} / {:?}",
        (descriptors(stays), descriptors(master))
    );
}
