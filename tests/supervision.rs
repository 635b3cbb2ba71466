//! Supervision, seen from outside: restarts, graceful stop with requests in
//! flight, Ctrl-C to the process group, the master killed, the body failing.

mod common;

use std::time::{Duration, Instant};

use common::{get, is_alive, pids_answering, poll, processes_with, KeepAlive, Program};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

#[test]
fn a_killed_worker_is_replaced_in_its_slot() {
    let program = Program::start("hello", &[("MULTINODE_NODES", "4")]);
    let addr = program.ready();
    let before = program.workers();
    let victim = *before.iter().next().unwrap();
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let after = poll(Duration::from_secs(10), || {
        let now = program.workers();
        (now.len() == 3 && !now.contains(&victim)).then_some(now)
    })
    .expect("a replacement worker");
    let replacement = *after.difference(&before).next().unwrap();
    program.wait_for("generation=2", 1, Duration::from_secs(10));
    program.wait_for("node exited", 1, Duration::from_secs(1));
    let mut expected = after.clone();
    expected.insert(program.pid());
    let seen = pids_answering(addr, &expected);
    assert!(
        seen.contains(&replacement),
        "the replacement serves: {seen:?}"
    );
}

#[test]
fn sigterm_drains_requests_in_flight_and_exits_zero() {
    let mut program = Program::start("hello", &[("MULTINODE_NODES", "4")]);
    let addr = program.ready();
    let workers = program.workers();
    let requests: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || get(addr, "/slow?ms=1500")))
        .collect();
    program.wait_for("slow request started", 8, Duration::from_secs(10));
    program.signal(Signal::SIGTERM);
    for request in requests {
        let (status, body) = request.join().unwrap().expect("the request completes");
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("slept 1500 ms"), "{body}");
    }
    let status = program.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "exit status");
    assert!(workers.iter().all(|pid| !is_alive(*pid)), "no worker left");
    assert!(
        processes_with(&program.marker).is_empty(),
        "no process left"
    );
}

#[test]
fn requests_on_a_busy_connection_after_the_stop_ask_the_client_to_reconnect() {
    let mut program = Program::start("hello", &[("MULTINODE_NODES", "1")]);
    let addr = program.ready();
    let mut client = KeepAlive::connect(addr).unwrap();
    assert_eq!(client.get("/").unwrap(), 200);
    assert!(client.is_connected(), "keep-alive before the stop");
    program.signal(Signal::SIGTERM);
    // Never quiet, so the node does not close it: only `Connection: close` on a
    // response ends it, and no request may fail.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.is_connected() {
        assert!(
            Instant::now() < deadline,
            "no Connection: close within 10 s"
        );
        assert_eq!(client.get("/").expect("answered, not cut"), 200);
        std::thread::sleep(Duration::from_millis(20)); // well under the quiet time
    }
    let status = program.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "exit status");
}

/// Starts `hello` with `nodes` and one `/slow?ms=…` request in flight.
fn with_a_slow_request(
    nodes: &str,
    ms: u32,
) -> (
    Program,
    std::thread::JoinHandle<std::io::Result<(u16, String)>>,
) {
    let program = Program::start("hello", &[("MULTINODE_NODES", nodes)]);
    let addr = program.ready();
    let request = std::thread::spawn(move || get(addr, &format!("/slow?ms={ms}")));
    program.wait_for("slow request started", 1, Duration::from_secs(10));
    (program, request)
}

#[test]
fn ctrl_c_to_the_process_group_stops_everything_gracefully() {
    let (mut program, request) = with_a_slow_request("3", 1000);
    killpg(Pid::from_raw(program.pid() as i32), Signal::SIGINT).unwrap();
    let (status, _) = request.join().unwrap().expect("the request completes");
    assert_eq!(status, 200);
    assert_eq!(program.wait_exit(Duration::from_secs(15)).code(), Some(0));
    assert!(
        processes_with(&program.marker).is_empty(),
        "no process left"
    );
}

#[test]
fn a_second_sigint_stops_at_once() {
    let (mut program, _request) = with_a_slow_request("2", 20_000);
    program.signal(Signal::SIGINT);
    program.wait_for("stopping 2 nodes gracefully", 1, Duration::from_secs(5));
    let started = Instant::now();
    program.signal(Signal::SIGINT);
    let status = program.wait_exit(Duration::from_secs(5));
    assert_ne!(status.code(), Some(0), "stopped, not drained");
    assert!(started.elapsed() < Duration::from_secs(5));
    program.assert_no_process_left();
}

#[test]
fn killing_the_master_takes_every_worker_with_it() {
    let mut program = Program::start("hello", &[("MULTINODE_NODES", "4")]);
    program.ready();
    let workers = program.workers();
    assert_eq!(workers.len(), 3);
    program.signal(Signal::SIGKILL);
    program.wait_exit(Duration::from_secs(5));
    let started = Instant::now();
    let gone = poll(Duration::from_secs(2), || {
        workers
            .iter()
            .all(|pid| !is_alive(*pid))
            .then_some(started.elapsed())
    });
    let gone = gone.expect("every worker exits after the master was killed");
    eprintln!("workers gone {gone:?} after the master");
    assert!(gone < Duration::from_secs(1), "took {gone:?}");
}

#[test]
fn an_error_from_the_body_exits_one_and_stops_the_workers() {
    let mut program = Program::start("probe", &[("PROBE_FAIL_IN_MASTER", "1")]);
    let status = program.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(1));
    program.wait_for(
        "failure requested by PROBE_FAIL_IN_MASTER",
        1,
        Duration::from_secs(2),
    );
    program.assert_no_process_left();
}
