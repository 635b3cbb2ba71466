//! The supervisor under the faults real operations bring, seen from outside: a
//! program without a listener, running out of descriptors, scaling and reloading
//! in any order, workers that never exit when told to drain, and the whole group
//! frozen and resumed. Each was a test that failed before its fix.

mod common;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::time::Duration;

use common::{get, poll, Program};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(20);

/// The pid a log line `... {needle}{pid}` names, once it is there.
fn pid_after(program: &Program, needle: &str) -> u32 {
    program.wait_for(needle, 1, WAIT);
    let line = program
        .log()
        .into_iter()
        .find(|l| l.contains(needle))
        .unwrap();
    let rest = &line[line.find(needle).unwrap() + needle.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The pid of incarnation `generation` of worker `slot`, from "node started".
fn worker_pid(program: &Program, slot: usize, generation: u64) -> u32 {
    pid_after(
        program,
        &format!("node started node={slot} generation={generation} pid="),
    )
}

fn sigkill(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
}

#[test]
fn a_program_without_a_listener_is_ready_survives_kills_and_reloads() {
    let program = Program::start(
        "probe",
        &[
            ("PROBE_NO_LISTENER", "1"),
            ("MULTINODE_NODES", "3"),
            ("PROBE_BOOT_FAILURES", "2"),
        ],
    );
    program.wait_for("all 3 nodes ready", 1, WAIT);
    // Each incarnation ran longer than a crash loop's: none of these kills is a
    // failed boot, however many there are.
    for generation in 1..=3 {
        program.wait_for(
            &format!("node ready node=1 generation={generation}"),
            1,
            WAIT,
        );
        let pid = worker_pid(&program, 1, generation);
        std::thread::sleep(Duration::from_millis(2200)); // up longer than STABLE_UPTIME
        sigkill(pid);
    }
    program.wait_for("node ready node=1 generation=4", 1, WAIT);
    assert_eq!(program.count("failed to start"), 0);
    program.signal(Signal::SIGHUP);
    program.wait_for("rolling restart done", 1, WAIT);
    program.wait_for("node ready node=2 generation=2", 1, WAIT);
}

#[test]
fn running_out_of_descriptors_never_stops_the_server() {
    // A client may hold more connections than the nodes have descriptors.
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap()
        .1;
    if limit < 4096 {
        eprintln!("skipped: this test needs 4096 descriptors, the hard limit is {limit}");
        return;
    }
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, limit, limit)
        .unwrap();
    let program = Program::start_with_nofile("hello", &[("MULTINODE_NODES", "4")], Some(256));
    let addr = program.ready();
    let idle: Vec<TcpStream> = (0..1100)
        .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap())
        .collect();
    let before: BTreeSet<u32> = program.workers();
    // Until the nodes took what they could: their descriptor counts settle.
    let descriptors = || -> Vec<usize> {
        before
            .iter()
            .chain([program.pid()].iter())
            .map(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()))
            .collect()
    };
    let mut last = descriptors();
    let settled = poll(WAIT, || {
        std::thread::sleep(Duration::from_millis(300)); // the sampling period
        let now = descriptors();
        let same = now == last && now.iter().all(|n| *n > 100);
        last = now.clone();
        same.then_some(now)
    });
    eprintln!("descriptors per node: {settled:?}");
    assert!(settled.is_some(), "the nodes took what they could");
    let victim = *before.iter().next().unwrap();
    sigkill(victim);
    program.wait_for("node exited", 1, WAIT);
    // The slot is started again however long the descriptors stay short.
    let replaced = poll(WAIT, || {
        let now = program.workers();
        (now.len() == 3 && !now.contains(&victim)).then_some(now)
    });
    assert!(replaced.is_some(), "a replacement worker");
    std::thread::sleep(Duration::from_millis(1500)); // the accept loops meet EMFILE meanwhile
    assert!(
        common::is_alive(program.pid()),
        "the master serves on:\n{}",
        program.log().join("\n")
    );
    assert_eq!(program.count("failed to start"), 0);
    let accept_lines = program.count("accept failed");
    assert!(
        accept_lines <= 20,
        "repeated accept errors are rate-limited: {accept_lines} lines"
    );
    drop(idle);
    let answered = poll(WAIT, || get(addr, "/").ok().filter(|(s, _)| *s == 200));
    assert!(answered.is_some(), "it answers once the client lets go");
}

#[test]
fn scale_down_then_reload_keeps_the_removed_node_gone() {
    let program = Program::start("mesh_probe", &[("MULTINODE_NODES", "4")]);
    let addr = program.ready();
    program.signal(Signal::SIGTTOU);
    program.wait_for("node removed node=3", 1, WAIT);
    program.signal(Signal::SIGHUP);
    program.wait_for("rolling restart done", 1, WAIT);
    for slot in 1..=2 {
        program.wait_for(
            &format!("node {slot} generation 2 knows [0, {}]", 3 - slot),
            1,
            WAIT,
        );
    }
    // Past a send queue's length: a queue to the removed node would fill.
    for n in 0..1100 {
        let (status, _) = get(addr, &format!("/broadcast?tag=b{n}")).expect("answered");
        assert_eq!(status, 200);
    }
}

#[test]
fn sigttou_while_the_top_slot_backs_off_leaves_nothing_running() {
    let program = Program::start("probe", &[("MULTINODE_NODES", "2")]);
    program.ready();
    // Quick deaths in a row: the backoff grows to 800 ms.
    for generation in 1..=4 {
        sigkill(worker_pid(&program, 1, generation));
    }
    program.wait_for("delay_ms=800", 1, WAIT);
    program.signal(Signal::SIGTTOU);
    program.wait_for("node removed node=1", 1, WAIT);
    let started = poll(Duration::from_secs(2), || {
        Some(program.workers()).filter(|w| !w.is_empty())
    });
    assert_eq!(started, None, "no process for the removed slot");
}

#[test]
fn a_reload_after_a_scale_down_starts_nothing_for_the_removed_slot() {
    let program = Program::start(
        "probe",
        &[
            ("MULTINODE_NODES", "3"),
            ("PROBE_IGNORE_SHUTDOWN", "1"),
            ("PROBE_SHUTDOWN_TIMEOUT_MS", "1500"),
        ],
    );
    program.ready();
    program.signal(Signal::SIGTTOU); // node 2 drains, and never exits by itself
    program.wait_for("SIGTTOU: removing the node", 1, WAIT);
    program.signal(Signal::SIGHUP);
    program.wait_for("rolling restart done", 1, WAIT);
    assert_eq!(
        program.count("node started node=2 generation=2"),
        0,
        "nothing started for the removed slot"
    );
    program.wait_for("node removed node=2", 1, WAIT);
    let one = poll(WAIT, || Some(program.workers()).filter(|w| w.len() == 1));
    assert!(one.is_some(), "one worker left: {:?}", program.workers());
}

#[test]
fn a_worker_that_never_drains_is_killed_at_its_deadline_and_the_reload_ends() {
    let program = Program::start(
        "probe",
        &[
            ("MULTINODE_NODES", "2"),
            ("PROBE_IGNORE_SHUTDOWN", "1"),
            ("PROBE_SHUTDOWN_TIMEOUT_MS", "1000"),
        ],
    );
    program.ready();
    let old = worker_pid(&program, 1, 1);
    program.signal(Signal::SIGHUP);
    program.wait_for("rolling restart done", 1, WAIT);
    assert!(!common::is_alive(old), "the old incarnation was killed");
    program.wait_for("killing it", 1, Duration::from_secs(1));
    // A worker sent SIGTERM by hand drains, is replaced, and is killed likewise.
    let second = worker_pid(&program, 1, 2);
    kill(Pid::from_raw(second as i32), Signal::SIGTERM).unwrap();
    program.wait_for("node ready node=1 generation=3", 1, WAIT);
    let gone = poll(WAIT, || (!common::is_alive(second)).then_some(()));
    assert!(gone.is_some(), "the drained worker was killed");
}

#[test]
fn sigttou_during_a_reload_lets_the_reload_end_and_the_next_one_run() {
    let program = Program::start(
        "probe",
        &[
            ("MULTINODE_NODES", "3"),
            ("PROBE_SLOW_REPLACEMENT_MS", "1500"),
        ],
    );
    program.ready();
    program.signal(Signal::SIGHUP);
    program.wait_for("node started node=1 generation=2", 1, WAIT);
    program.signal(Signal::SIGTTOU); // node 2, next in line
    program.wait_for("rolling restart done", 1, WAIT);
    program.wait_for("node removed node=2", 1, WAIT);
    program.signal(Signal::SIGHUP);
    program.wait_for("rolling restart done", 2, WAIT);
    assert_eq!(program.count("already under way"), 0);
    assert_eq!(program.count("node started node=2 generation=2"), 0);
    program.wait_for("node ready node=1 generation=3", 1, WAIT);
}

#[test]
fn the_whole_group_frozen_and_resumed_loses_no_worker() {
    let program = Program::start(
        "probe",
        &[("MULTINODE_NODES", "3"), ("PROBE_TIMEOUT_MS", "1000")],
    );
    let addr = program.ready();
    let before = program.workers();
    let group = Pid::from_raw(program.pid() as i32);
    killpg(group, Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_millis(2500)); // Ctrl-Z, longer than the watchdog
    killpg(group, Signal::SIGCONT).unwrap();
    let killed = poll(Duration::from_secs(2), || {
        (program.count("the node is stuck") > 0).then_some(())
    });
    assert!(
        killed.is_none(),
        "a healthy worker was killed:\n{}",
        program.log().join("\n")
    );
    assert_eq!(program.workers(), before);
    assert_eq!(get(addr, "/").unwrap().0, 200);
    // One worker stopped alone is stuck, and is replaced.
    let alone = *before.iter().next().unwrap();
    kill(Pid::from_raw(alone as i32), Signal::SIGSTOP).unwrap();
    program.wait_for("the node is stuck", 1, WAIT);
    let replaced = poll(WAIT, || {
        let now = program.workers();
        (now.len() == 2 && !now.contains(&alone)).then_some(())
    });
    assert!(replaced.is_some());
}

#[test]
fn a_replacement_slower_than_ten_seconds_still_meets_every_node() {
    let program = Program::start(
        "mesh_probe",
        &[
            ("MULTINODE_NODES", "3"),
            ("PROBE_SLOW_REPLACEMENT_MS", "11000"),
        ],
    );
    program.ready();
    program.wait_for("got hello", 6, WAIT);
    sigkill(worker_pid(&program, 2, 1));
    // Its runtime blocked for 11 s, the replacement answers its handshakes late:
    // the others wait for it rather than give the pair up.
    program.wait_for("probe up: node 2 generation 2", 1, WAIT);
    for node in [0, 1] {
        program.wait_for(&format!("node {node} got hello 2 from 2"), 2, WAIT);
    }
    assert_eq!(program.count("no handshake within"), 0);
}

#[test]
fn the_old_worker_then_its_replacement_dying_during_a_reload_leave_the_slot_served() {
    let program = Program::start(
        "probe",
        &[
            ("MULTINODE_NODES", "2"),
            ("PROBE_SLOW_REPLACEMENT_MS", "3000"),
        ],
    );
    let addr = program.ready();
    let old = worker_pid(&program, 1, 1);
    program.signal(Signal::SIGHUP);
    let new = worker_pid(&program, 1, 2); // booting for 3 s
    sigkill(old);
    program.wait_for("node exited while being replaced", 1, WAIT);
    sigkill(new);
    // The slot is started again, and serves.
    program.wait_for("node ready node=1 generation=3", 1, WAIT);
    let served = poll(WAIT, || {
        let workers = program.workers();
        (workers.len() == 1).then_some(workers)
    })
    .expect("one worker");
    let mut expected = served.clone();
    expected.insert(program.pid());
    assert_eq!(common::pids_answering(addr, &expected), expected);
    // The first reload ended too, and the next one runs.
    program.wait_for("rolling restart done", 1, WAIT);
    program.signal(Signal::SIGHUP);
    program.wait_for("rolling restart done", 2, WAIT);
}
