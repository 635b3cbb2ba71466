//! Recycling from outside (`probe`, 3 workers, the master serving none): under
//! wrk with keep-alive, a leaky route with `max_memory` set, and plain requests
//! with `max_requests`, recycle every worker at least once with no failed
//! request and no non-2xx answer, and never two at once; over
//! `max_memory_hard` a worker is killed and started again; bad values name
//! their variable.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::{get, poll, Program};

const WAIT: Duration = Duration::from_secs(20);

/// A probe with 3 workers (the master serves none: it is never recycled),
/// and `env`.
fn probe(env: &[(&str, &str)]) -> (Program, SocketAddr) {
    let mut all = vec![("MULTINODE_NODES", "3"), ("PROBE_MASTER_LISTEN", "0")];
    all.extend_from_slice(env);
    let program = Program::start("probe", &all);
    let addr = program.ready();
    (program, addr)
}

/// wrk (1 thread, 8 keep-alive connections) on `path` for `seconds`: its summary.
fn wrk(addr: SocketAddr, path: &str, seconds: u32) -> String {
    let output = Command::new("wrk")
        .args(["-t1", "-c8", &format!("-d{seconds}s"), "--latency"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("the recycling tests need wrk: apt-get install wrk");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every node of 1 to 3 was recycled (the log's `recycling node N:` lines):
/// how many recycles there were.
fn every_worker_recycled(program: &Program) -> usize {
    let mut nodes = std::collections::BTreeSet::new();
    let mut count = 0;
    for line in program.log() {
        if let Some(rest) = line.split("recycling node ").nth(1) {
            nodes.insert(rest.split(':').next().unwrap().parse::<usize>().unwrap());
            count += 1;
        }
    }
    assert_eq!(
        nodes.into_iter().collect::<Vec<_>>(),
        [1, 2, 3],
        "{:?}",
        program.log()
    );
    count
}

/// wrk on `path` while the master's children are counted every 2 ms: the
/// summary, and the most worker processes seen at once. One recycling at a
/// time is one process more than the workers (the replacement, then the old
/// one draining); two at once would be two more.
fn wrk_counting_processes(program: &Program, addr: SocketAddr, path: &str) -> (String, usize) {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counter = {
        let (done, master) = (done.clone(), program.pid());
        std::thread::spawn(move || {
            let mut most = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(common::children(master).len());
                std::thread::sleep(Duration::from_millis(2));
            }
            most
        })
    };
    let summary = wrk(addr, path, 10);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    (summary, counter.join().unwrap())
}

/// The server's `multinode_recycles_total` for `reason`, from `/metrics`.
fn recycles(addr: SocketAddr, reason: &str) -> u64 {
    let (_, text) = get(addr, "/metrics").unwrap();
    let needle = format!("multinode_recycles_total{{reason=\"{reason}\"}} ");
    let line = text.lines().find(|l| l.starts_with(&needle)).unwrap();
    line[needle.len()..].parse().unwrap()
}

fn assert_clean(summary: &str) {
    assert!(
        summary.contains("requests in"),
        "wrk did not run: {summary}"
    );
    assert!(
        !summary.contains("Socket errors"),
        "failed requests: {summary}"
    );
    assert!(!summary.contains("Non-2xx"), "non-2xx answers: {summary}");
}

#[test]
fn a_leaky_route_under_load_recycles_every_worker_one_at_a_time_with_no_failed_request() {
    // A debug worker starts near 9 MiB; 16 KiB a request passes 40 MiB within
    // 2000 requests (well under a second of wrk), and must stay over for half
    // a second.
    let (program, addr) = probe(&[
        ("MULTINODE_MAX_MEMORY", "40M"),
        ("MULTINODE_MAX_MEMORY_WINDOW", "0.5"),
    ]);
    let (summary, most) = wrk_counting_processes(&program, addr, "/leak?kb=16");
    assert_clean(&summary);
    assert_eq!(most, 4, "3 workers and at most one being recycled");
    let count = every_worker_recycled(&program);
    let counted = poll(WAIT, || {
        (recycles(addr, "max_memory") >= count as u64).then_some(())
    });
    assert!(counted.is_some(), "/metrics counts {count} recycles");
    assert!(program.count("stayed over max_memory") >= 3);
    assert_eq!(program.count("killing node"), 0);
}

#[test]
fn max_requests_recycles_every_worker_one_at_a_time_with_no_failed_request() {
    let (program, addr) = probe(&[
        ("MULTINODE_MAX_REQUESTS", "3000"),
        ("MULTINODE_MAX_REQUESTS_JITTER", "1000"),
    ]);
    let (summary, most) = wrk_counting_processes(&program, addr, "/");
    assert_clean(&summary);
    assert_eq!(most, 4, "3 workers and at most one being recycled");
    let count = every_worker_recycled(&program);
    let counted = poll(WAIT, || {
        (recycles(addr, "max_requests") >= count as u64).then_some(())
    });
    assert!(counted.is_some(), "/metrics counts {count} recycles");
    assert!(program.count("its max_requests with jitter") >= 3);
}

#[test]
fn over_the_hard_ceiling_a_worker_is_killed_and_started_again() {
    let (program, addr) = probe(&[("MULTINODE_MAX_MEMORY_HARD", "64M")]);
    let (status, body) = get(addr, "/leak?kb=98304").unwrap(); // 96 MiB
    assert_eq!(status, 200, "{body}");
    let node: usize = body.split(' ').nth(1).unwrap().parse().unwrap();
    program.wait_for(
        &format!("killing node {node}: its resident memory"),
        1,
        WAIT,
    );
    program.wait_for("over max_memory_hard (64 MiB)", 1, WAIT);
    // Its slot serves again, from a new process.
    let again = poll(WAIT, || {
        let log = program.log();
        log.iter()
            .any(|l| {
                l.contains("node ready")
                    && l.contains(&format!("node={node}"))
                    && l.contains("generation=2")
            })
            .then_some(())
    });
    assert!(again.is_some(), "node {node} was not started again");
    let (_, metrics) = get(addr, "/metrics").unwrap();
    assert!(
        metrics.contains("multinode_memory_kills_total 1"),
        "{metrics}"
    );
}

#[test]
fn bad_recycling_values_name_their_variable_and_start_nothing() {
    for (var, value) in [
        ("MULTINODE_MAX_MEMORY", "12Q"),
        ("MULTINODE_MAX_REQUESTS", "0"),
        ("MULTINODE_MAX_MEMORY_WINDOW", "soon"),
    ] {
        let mut program = Program::start("probe", &[(var, value)]);
        let status = program.wait_exit(WAIT);
        assert!(!status.success(), "{var}={value} was taken");
        program.wait_for(&format!("{var}=\"{value}\""), 1, WAIT);
        program.assert_no_process_left();
    }
}

#[test]
fn a_recycling_whose_replacement_fails_says_so_and_is_tried_again() {
    // One worker, whose every replacement fails at once: it serves on, and is
    // due again.
    let (program, addr) = probe(&[
        ("MULTINODE_NODES", "1"),
        ("MULTINODE_MAX_REQUESTS", "20"),
        ("PROBE_FAIL_REPLACEMENTS", "1"),
    ]);
    for _ in 0..40 {
        get(addr, "/").unwrap();
    }
    program.wait_for(
        "recycling node 1 failed: its replacement did not become ready",
        1,
        WAIT,
    );
    // Asked again for the same incarnation once the retry time has passed,
    // and failed again; never said to be recycled.
    program.wait_for("recycling node 1: it served", 2, WAIT);
    program.wait_for(
        "recycling node 1 failed: its replacement did not become ready",
        2,
        WAIT,
    );
    assert_eq!(program.count(" recycled node="), 0, "{:?}", program.log());
    let (status, body) = get(addr, "/").unwrap();
    assert!(status == 200 && body.contains("generation 1"), "{body}");
}
