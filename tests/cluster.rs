//! Machines meeting through Redis (the `cluster` feature): each master claims its
//! machine's name in a `redis-server` the test starts, keeps it while it runs,
//! and gives it back when it stops. Real processes, a real Redis.

#![cfg(feature = "cluster")]

mod common;

use std::time::Duration;

use common::redis::{free_port, Redis};
use common::{get, poll, Program};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(20);

fn machine(redis: &Redis, name: &str) -> Program {
    Program::start(
        "probe",
        &[
            ("MULTINODE_NODES", "2"),
            ("MULTINODE_CLUSTER", &redis.url()),
            ("MULTINODE_MACHINE", name),
        ],
    )
}

fn holder(redis: &Redis, name: &str) -> String {
    redis
        .command(&["GET", &format!("multinode:machine:{name}")])
        .unwrap()
}

#[test]
fn two_masters_cannot_claim_one_machine_name() {
    let Some(redis) = Redis::start() else { return };
    let first = machine(&redis, "m1");
    let addr = first.ready();
    assert!(holder(&redis, "m1").starts_with(&first.pid().to_string()));
    let mut second = machine(&redis, "m1");
    let status = second.wait_exit(WAIT);
    assert_eq!(status.code(), Some(2), "{:?}", second.log());
    let log = second.log().join("\n");
    assert!(
        log.contains("machine name \"m1\" is held by another master"),
        "{log}"
    );
    second.assert_no_process_left();
    assert_eq!(get(addr, "/").unwrap().0, 200, "the first serves on");
}

#[test]
fn a_stopped_master_gives_its_name_back_and_a_killed_one_loses_it_within_the_ttl() {
    let Some(redis) = Redis::start() else { return };
    let mut stopped = machine(&redis, "m2");
    stopped.ready();
    stopped.signal(Signal::SIGTERM);
    stopped.wait_exit(WAIT);
    assert_eq!(holder(&redis, "m2"), "$-1", "given back at stop");

    let killed = machine(&redis, "m3");
    killed.ready();
    killpg(Pid::from_raw(killed.pid() as i32), Signal::SIGKILL).unwrap();
    let freed = poll(Duration::from_secs(8), || {
        (holder(&redis, "m3") == "$-1").then_some(())
    });
    assert!(freed.is_some(), "a dead master's name expires (TTL 5 s)");
    let again = machine(&redis, "m3");
    again.ready();
}

#[test]
fn a_master_starts_without_redis_and_joins_once_it_answers() {
    let port = free_port();
    let url = format!("redis://:s3cret-pass@127.0.0.1:{port}");
    let program = Program::start(
        "probe",
        &[
            ("MULTINODE_NODES", "2"),
            ("MULTINODE_CLUSTER", &url),
            ("MULTINODE_MACHINE", "late"),
        ],
    );
    let addr = program.ready();
    assert_eq!(get(addr, "/").unwrap().0, 200);
    program.wait_for("starting alone", 1, WAIT);
    let Some(redis) = Redis::start_on(port, Some("s3cret-pass")) else {
        return;
    };
    let joined = poll(WAIT, || {
        holder(&redis, "late")
            .starts_with(&program.pid().to_string())
            .then_some(())
    });
    assert!(joined.is_some(), "{:?}", program.log());
    program.wait_for("joined again", 1, WAIT);
    let log = program.log().join("\n");
    assert!(
        !log.contains("s3cret-pass"),
        "the password is never logged:\n{log}"
    );
}

#[test]
fn bad_cluster_settings_are_one_line_naming_the_variable() {
    for (vars, expected) in [
        (
            vec![("MULTINODE_CLUSTER", "http://:pw@host")],
            "MULTINODE_CLUSTER=\"http://:***@host\"",
        ),
        (
            vec![
                ("MULTINODE_CLUSTER", "redis://127.0.0.1:1"),
                ("MULTINODE_MACHINE", "a/b"),
            ],
            "MULTINODE_MACHINE=\"a/b\"",
        ),
    ] {
        let mut program = Program::start("probe", &vars);
        let status = program.wait_exit(WAIT);
        assert_eq!(status.code(), Some(2));
        let log = program.log();
        assert!(log.iter().any(|l| l.contains(expected)), "{log:?}");
        assert!(!log.join("\n").contains(":pw@"), "{log:?}");
        program.assert_no_process_left();
    }
}
