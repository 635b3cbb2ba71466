//! Bad input before anything starts: a port in use, bad environment values, a
//! process started with worker variables but no control socket. Each is one line
//! naming the address or the variable, a non-zero exit, and no process left. A bad
//! `RUST_LOG` is only reported: logs are not worth refusing to serve.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::{processes_with, Program};

/// Runs `hello` with `env`; returns (exit code, stderr lines), after checking that
/// no process of it is left.
fn run_failing(env: &[(&str, &str)]) -> (Option<i32>, Vec<String>) {
    let mut program = Program::start("hello", env);
    let status = program.wait_exit(Duration::from_secs(10));
    // stderr is read by a thread: give it the chance to see the last line.
    common::poll(Duration::from_secs(2), || {
        (!program.log().is_empty()).then_some(())
    });
    assert!(
        processes_with(&program.marker).is_empty(),
        "no process left behind"
    );
    (status.code(), program.log())
}

#[test]
fn a_port_in_use_is_one_line_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, log) = run_failing(&[("MULTINODE_PORT", &port), ("MULTINODE_NODES", "4")]);
    assert_eq!(code, Some(1));
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].contains(&format!("127.0.0.1:{port}")), "{log:?}");
    assert!(log[0].contains("in use"), "{log:?}");
}

#[test]
fn a_port_held_by_reuse_port_sockets_is_in_use_too() {
    // Another program's SO_REUSEPORT group must not silently share our port.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_reuse_port(true).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(16).unwrap();
    let port = socket
        .local_addr()
        .unwrap()
        .as_socket()
        .unwrap()
        .port()
        .to_string();
    let (code, log) = run_failing(&[("MULTINODE_PORT", &port)]);
    assert_eq!(code, Some(1));
    assert!(log[0].contains("in use"), "{log:?}");
}

#[test]
fn bad_environment_values_name_the_variable() {
    for (var, value) in [
        ("MULTINODE_PORT", "http"),
        ("MULTINODE_PORT", "70000"),
        ("MULTINODE_NODES", "0"),
        ("MULTINODE_NODES", "four"),
        ("MULTINODE_HOST", "not a host.invalid"),
    ] {
        let (code, log) = run_failing(&[(var, value)]);
        assert_eq!(code, Some(2), "{var}={value}: {log:?}");
        assert_eq!(log.len(), 1, "{var}={value}: {log:?}");
        assert!(log[0].contains(&format!("{var}=\"{value}\"")), "{log:?}");
    }
}

#[test]
fn worker_variables_without_a_control_socket_are_a_clear_error() {
    for (fd, why) in [
        ("0", "not a socket"),
        ("99", "no such open descriptor"),
        ("x", "not a descriptor"),
        ("-1", "not a descriptor"),
    ] {
        let (code, log) = run_failing(&[("MULTINODE_WORKER", "1"), ("MULTINODE_CONTROL_FD", fd)]);
        assert_eq!(code, Some(2), "{log:?}");
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(log[0].contains("MULTINODE_CONTROL_FD"), "{log:?}");
        assert!(log[0].contains(why), "{log:?}");
        assert!(
            log[0].contains("not started by a multinode master"),
            "{log:?}"
        );
    }
}

#[test]
fn a_bad_log_filter_is_reported_and_the_program_serves_at_info() {
    let program = Program::start(
        "hello",
        &[("RUST_LOG", "multinode=loud"), ("MULTINODE_NODES", "2")],
    );
    let addr = program.ready(); // "listening on", an info line: info it is
    assert_eq!(common::get(addr, "/").unwrap().0, 200);
    let log = program.log();
    let warned = log
        .iter()
        .filter(|l| l.contains("RUST_LOG=\"multinode=loud\" is not a log filter"))
        .count();
    assert!(
        warned >= 1,
        "one line per process naming the variable: {log:?}"
    );
}

/// Runs `probe` with `env`: (exit code, stderr lines), no process left.
fn probe_failing(env: &[(&str, &str)]) -> (Option<i32>, Vec<String>) {
    let mut program = Program::start("probe", env);
    let status = program.wait_exit(Duration::from_secs(10));
    common::poll(Duration::from_secs(2), || {
        (!program.log().is_empty()).then_some(())
    });
    program.assert_no_process_left();
    (status.code(), program.log())
}

#[test]
fn out_of_range_durations_are_errors_naming_the_key() {
    let max = u64::MAX.to_string();
    for (var, value, key) in [
        (
            "PROBE_SHUTDOWN_TIMEOUT_MS",
            max.as_str(),
            "`shutdown_timeout`",
        ),
        ("PROBE_TIMEOUT_MS", max.as_str(), "`watchdog_timeout`"),
        ("PROBE_TIMEOUT_MS", "5", "`watchdog_timeout`"),
    ] {
        let (code, log) = probe_failing(&[(var, value)]);
        assert_eq!(code, Some(2), "{var}={value}: {log:?}");
        assert_eq!(log.len(), 1, "{var}={value}: {log:?}");
        assert!(log[0].contains(key), "{var}={value}: {log:?}");
    }
}
