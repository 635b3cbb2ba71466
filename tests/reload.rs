//! SIGHUP: a rolling restart under load (fresh connections and keep-alive ones)
//! replaces every worker without a single failed request, and a replacement that cannot boot leaves the old one serving.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{get, poll, KeepAlive, Program};
use nix::sys::signal::Signal;

/// A client sending requests until told to stop (at most 50 000), on fresh
/// connections or on a keep-alive one: (answered 200, failed).
fn load(
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    keep_alive: bool,
) -> JoinHandle<(u32, u32)> {
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, 0);
        let mut connection = KeepAlive::new(addr);
        while !stop.load(Ordering::Relaxed) && ok + failed < 50_000 {
            let status = match keep_alive {
                true => connection.get("/"),
                false => get(addr, "/").map(|(status, _)| status),
            };
            match status {
                Ok(200) => ok += 1,
                other => {
                    eprintln!("failed request: {other:?}");
                    failed += 1
                }
            }
        }
        (ok, failed)
    })
}

#[test]
fn sighup_replaces_every_worker_without_a_failed_request() {
    for mode in ["least_conn", "reuse_port"] {
        let mut program = Program::start(
            "probe",
            &[("MULTINODE_NODES", "3"), ("PROBE_BALANCE", mode)],
        );
        let addr = program.ready();
        let before = program.workers();
        assert_eq!(before.len(), 2);
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|i| load(addr, stop.clone(), i % 2 == 0))
            .collect();
        for reload in 1..=2 {
            program.signal(Signal::SIGHUP);
            program.wait_for("rolling restart done", reload, Duration::from_secs(30));
        }
        stop.store(true, Ordering::Relaxed);
        let (ok, failed) = clients
            .into_iter()
            .map(|c| c.join().unwrap())
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        eprintln!("{mode}, during two reloads: {ok} answered, {failed} failed");
        let after = program.workers();
        assert_eq!(after.len(), 2, "{mode}: {after:?}");
        assert!(
            after.is_disjoint(&before),
            "{mode}: every worker replaced: {before:?} -> {after:?}"
        );
        assert_eq!(failed, 0, "{mode}: no request failed");
        assert!(ok > 0);
        assert_eq!(program.count("draining the old incarnation"), 4, "{mode}");
        assert_eq!(
            program.count("generation=3"),
            4,
            "{mode}: started and ready, per worker"
        );
        program.signal(Signal::SIGTERM);
        assert_eq!(
            program.wait_exit(Duration::from_secs(15)).code(),
            Some(0),
            "{mode}"
        );
    }
}

#[test]
fn a_replacement_that_cannot_boot_leaves_the_old_worker_serving() {
    let program = Program::start(
        "probe",
        &[("MULTINODE_NODES", "3"), ("PROBE_FAIL_REPLACEMENTS", "1")],
    );
    let addr = program.ready();
    let before = program.workers();
    program.signal(Signal::SIGHUP);
    program.wait_for("rolling restart stopped", 1, Duration::from_secs(30));
    assert_eq!(program.workers(), before, "the old workers keep serving");
    assert_eq!(
        program.count("node started"),
        3,
        "only one replacement was tried"
    );
    // Every node still answers, and no restart is scheduled for the failed one.
    let mut expected = before.clone();
    expected.insert(program.pid());
    assert_eq!(common::pids_answering(addr, &expected), expected);
    assert!(poll(Duration::from_millis(300), || (program
        .count("restarting node")
        > 0)
    .then_some(()))
    .is_none());
}

#[test]
fn twenty_replacements_leak_no_descriptor_and_leave_no_zombie() {
    let program = Program::start("probe", &[("MULTINODE_NODES", "2")]);
    let addr = program.ready();
    let descriptors = || {
        std::fs::read_dir(format!("/proc/{}/fd", program.pid()))
            .unwrap()
            .count()
    };
    // One reload first, so that every lazily opened descriptor exists already.
    program.signal(Signal::SIGHUP);
    program.wait_for("rolling restart done", 1, Duration::from_secs(30));
    let before = descriptors();
    for reload in 2..=21 {
        program.signal(Signal::SIGHUP);
        program.wait_for("rolling restart done", reload, Duration::from_secs(30));
    }
    assert_eq!(program.count("old incarnation exited"), 21);
    assert_eq!(get(addr, "/").unwrap().0, 200);
    assert_eq!(
        descriptors(),
        before,
        "the master's descriptors after 20 more replacements"
    );
    let zombies = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or("").split(' ').collect();
            fields.first() == Some(&"Z")
                && fields.get(1) == Some(&program.pid().to_string().as_str())
        })
        .count();
    assert_eq!(zombies, 0, "every child reaped");
}
