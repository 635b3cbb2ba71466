//! The mesh, seen from outside: real processes exchanging messages and raw
//! streams, a restart, a peer that writes garbage, and a receiver that stalls.
//! Each node of `examples/mesh_probe.rs` logs what it gets on stderr.

mod common;

use std::time::Duration;

use common::{get, is_alive, pids_answering, poll, rss_kib, KeepAlive, Program};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(20);

/// `GET /broadcast?tag=…` on fresh connections until a node other than those in
/// `not_from` sends it; returns the sender's id.
fn broadcast(addr: std::net::SocketAddr, tag: &str, not_from: &[usize]) -> usize {
    for _ in 0..200 {
        let (status, body) = get(addr, &format!("/broadcast?tag={tag}")).unwrap();
        if status != 200 {
            continue; // a node without the message layer (the rogue)
        }
        let sender: usize = body.split_whitespace().nth(1).unwrap().parse().unwrap();
        if !not_from.contains(&sender) {
            return sender;
        }
        // Sent by a node we did not want: a new tag, so counts stay exact.
        return broadcast(addr, &format!("{tag}x"), not_from);
    }
    panic!("no node broadcast {tag}");
}

#[test]
fn every_node_hears_every_other_and_a_broadcast_arrives_once() {
    let program = Program::start("mesh_probe", &[("MULTINODE_NODES", "4")]);
    let addr = program.ready();
    program.wait_for("got hello", 12, WAIT);
    for node in 0..4 {
        let heard: std::collections::BTreeSet<usize> = (0..4)
            .filter(|k| program.count(&format!("node {node} got hello {k} from {k}")) == 1)
            .collect();
        let others: std::collections::BTreeSet<usize> = (0..4).filter(|k| *k != node).collect();
        assert_eq!(heard, others, "node {node} hears each other node once");
    }
    // Two broadcasts from the node of one keep-alive connection: once the second
    // reached everyone, a duplicate of the first (same sender, so earlier in order)
    // would have too.
    let mut client = KeepAlive::connect(addr).unwrap();
    assert_eq!(client.get("/broadcast?tag=first").unwrap(), 200);
    assert_eq!(client.get("/broadcast?tag=second").unwrap(), 200);
    program.wait_for("got tag second from", 3, WAIT);
    assert_eq!(
        program.count("got tag first from"),
        3,
        "once to each of the 3 others"
    );
}

#[test]
fn raw_peers_see_eof_then_meet_the_replacement() {
    let program = Program::start(
        "mesh_probe",
        &[("MULTINODE_NODES", "3"), ("MESH_MODE", "raw")],
    );
    program.ready();
    program.wait_for("raw line from", 6, WAIT);
    let victim = program.node_pid(2, 1);
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    program.wait_for("raw peer 2 generation 1 eof", 2, WAIT);
    program.wait_for("raw peer 2 generation 2 up", 2, WAIT);
    for node in [0, 1] {
        program.wait_for(&format!("node {node} raw line from 2: hi from 2"), 2, WAIT);
    }
    // ...and the replacement hears from both others.
    program.wait_for("node 2 raw line from", 4, WAIT);
}

#[test]
fn messages_to_a_restarting_node_wait_for_its_replacement() {
    let program = Program::start(
        "mesh_probe",
        &[
            ("MULTINODE_NODES", "3"),
            ("PROBE_SLOW_REPLACEMENT_MS", "2000"),
        ],
    );
    let addr = program.ready();
    program.wait_for("got hello", 6, WAIT);
    let victim = program.node_pid(2, 1);
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    poll(WAIT, || (!is_alive(victim)).then_some(())).expect("node 2 died");
    program.wait_for("node=2 generation=2", 1, WAIT); // its replacement started
                                                      // The replacement blocks for 2 s before its mesh handshakes: this is queued.
    broadcast(addr, "while-down", &[2]);
    assert_eq!(
        program.count("probe up: node 2 generation 2"),
        0,
        "sent before the replacement was meshed"
    );
    program.wait_for("node 2 got tag while-down", 1, WAIT);
    // And the replacement's own messages flow.
    program.wait_for("got hello 2 from 2", 4, WAIT);
}

#[test]
fn a_bad_frame_closes_that_stream_only() {
    let program = Program::start(
        "mesh_probe",
        &[("MULTINODE_NODES", "4"), ("MESH_ROGUE", "1")],
    );
    let addr = program.ready();
    program.wait_for("rogue wrote garbage to", 2, WAIT);
    program.wait_for("bad frame", 1, WAIT);
    program.wait_for("malformed message", 1, WAIT);
    for (node, error) in [(2, "bad frame"), (3, "malformed message")] {
        let line = program
            .log()
            .into_iter()
            .find(|l| l.contains(error))
            .unwrap();
        assert!(line.contains(&format!("node{{id={node} ")), "{line}");
        assert!(line.contains("closing the stream from node 1"), "{line}");
    }
    // Every node still serves HTTP...
    let mut pids = program.workers();
    pids.insert(program.pid());
    assert_eq!(pids_answering(addr, &pids), pids);
    // ...the pairs are meshed again, and what the rogue writes then arrives...
    for node in [2, 3] {
        program.wait_for(&format!("node {node} got hello 1 from 1"), 1, WAIT);
    }
    // ...and the nodes the rogue wrote to still hear the others.
    let sender = broadcast(addr, "after", &[1]);
    for node in [0, 2, 3].into_iter().filter(|n| *n != sender) {
        program.wait_for(&format!("node {node} got tag after from {sender}"), 1, WAIT);
    }
    assert_eq!(program.count("node exited"), 0, "no node died");
}

#[test]
fn a_stalled_receiver_bounds_the_senders_memory() {
    let program = Program::start(
        "mesh_probe",
        &[("MULTINODE_NODES", "3"), ("MESH_FLOOD", "1")],
    );
    program.ready();
    program.wait_for("node 1 flood: queue full after", 1, WAIT);
    let line = program
        .log()
        .into_iter()
        .find(|l| l.contains("queue full after"))
        .unwrap();
    let queued: usize = line
        .split("queue full after ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The sender's queue (1024) and what the socket holds (a few dozen): the
    // stalled receiver reads nothing, so nothing piles up on its side.
    assert!(queued < 1_500, "{queued} of 4 KiB messages queued");
    let sender = program.node_pid(1, 1);
    let rss = rss_kib(sender);
    assert!(rss < 48 * 1024, "the sender holds {rss} KiB");
    assert_eq!(program.count("all 20000 queued"), 0, "the sender waits");
    kill(
        Pid::from_raw(program.node_pid(2, 1) as i32),
        Signal::SIGUSR1,
    )
    .unwrap();
    program.wait_for("node 2 flood received 20000", 1, WAIT);
    program.wait_for("node 1 flood: all 20000 queued", 1, WAIT);
}

#[test]
fn a_node_that_drops_its_receiver_blocks_no_sender_and_leaks_nothing() {
    let program = Program::start(
        "mesh_probe",
        &[
            ("MULTINODE_NODES", "3"),
            ("MESH_FLOOD", "1"),
            ("MESH_DROP_RECEIVER", "1"),
        ],
    );
    program.ready();
    program.wait_for("node 2 dropped its receiver", 1, WAIT);
    // Far more than a queue and a socket hold: read and discarded.
    program.wait_for("node 1 flood: all 20000 queued", 1, WAIT);
    let dropper = program.node_pid(2, 1);
    let descriptors = || {
        std::fs::read_dir(format!("/proc/{dropper}/fd"))
            .unwrap()
            .count()
    };
    let before = descriptors();
    for generation in 1..=5 {
        kill(
            Pid::from_raw(program.node_pid(1, generation) as i32),
            Signal::SIGKILL,
        )
        .unwrap();
        program.wait_for(
            &format!("probe up: node 1 generation {}", generation + 1),
            1,
            WAIT,
        );
    }
    let settled = common::poll(WAIT, || (descriptors() == before).then_some(()));
    assert!(
        settled.is_some(),
        "node 2's descriptors after 5 restarts of node 1: {before} -> {}",
        descriptors()
    );
}

/// The mesh streams `pid` holds: its Unix stream sockets whose other end is in
/// another process (tokio's signal handling keeps both ends of one of its own).
/// Read from `ss -xa` (iproute2), the only place that names a socket's peer.
fn mesh_streams(pid: u32) -> usize {
    let inodes: std::collections::BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let out = std::process::Command::new("ss")
        .arg("-xa")
        .output()
        .unwrap();
    assert!(out.status.success(), "ss -xa failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.len() >= 8 && fields[0] == "u_str")
        .filter(|fields| inodes.contains(fields[5]) && !inodes.contains(fields[7]))
        .count()
}

#[test]
fn only_a_program_that_takes_the_mesh_opens_its_streams() {
    // Every node of mesh_probe takes the message layer: one stream to each other.
    let program = Program::start("mesh_probe", &[("MULTINODE_NODES", "4")]);
    program.ready();
    program.wait_for("got hello", 12, WAIT);
    let mut pids = program.workers();
    pids.insert(program.pid());
    for pid in &pids {
        assert_eq!(mesh_streams(*pid), 3, "process {pid} of mesh_probe");
    }
    drop(program);
    // hello's body never does: no stream at start, nor after a restart.
    let program = Program::start("hello", &[("MULTINODE_NODES", "6")]);
    program.ready();
    program.wait_for("node ready", 6, WAIT);
    let worker = *program.workers().first().unwrap();
    kill(Pid::from_raw(worker as i32), Signal::SIGKILL).unwrap();
    program.wait_for("node ready", 7, WAIT);
    let mut pids = program.workers();
    pids.insert(program.pid());
    assert_eq!(pids.len(), 6);
    for pid in &pids {
        assert_eq!(mesh_streams(*pid), 0, "process {pid} of hello");
    }
}

/// Context switches of every thread of `pid` so far: each wake-up is one.
fn switches(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .map(|task| std::fs::read_to_string(task.unwrap().path().join("status")).unwrap())
        .flat_map(|status| {
            status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .map(|line| {
                    line.split_whitespace()
                        .last()
                        .unwrap()
                        .parse::<u64>()
                        .unwrap()
                })
                .collect::<Vec<_>>()
        })
        .sum()
}

#[test]
fn an_idle_node_that_took_the_mesh_is_not_woken() {
    let program = Program::start("mesh_probe", &[("MULTINODE_NODES", "2")]);
    program.ready();
    program.wait_for("got hello", 2, WAIT);
    let worker = *program.workers().first().unwrap();
    // Once its start is over, a second and a half with nothing to do (the
    // count of what waits in its queues used to wake it four times a second).
    let quiet = poll(WAIT, || {
        let before = switches(worker);
        std::thread::sleep(Duration::from_millis(1500));
        (switches(worker) <= before + 2).then_some(())
    });
    assert!(quiet.is_some(), "node 1 keeps being woken while idle");
}
