//! `GET /livez` and `GET /readyz` on the admin listener, from outside: live
//! while the master's loop turns, ready while enough nodes serve, and 503 from
//! the moment a stop begins while the requests in flight complete.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::redis::free_port;
use common::{get, poll, Program};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(20);

fn admin_program(more: &[(&str, &str)]) -> (Program, SocketAddr) {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin_text = admin.to_string();
    let mut env = vec![
        ("MULTINODE_NODES", "4"),
        ("MULTINODE_ADMIN", admin_text.as_str()),
    ];
    env.extend_from_slice(more);
    let program = Program::start("probe", &env);
    program.ready();
    (program, admin)
}

#[test]
fn readyz_turns_503_at_once_when_a_stop_begins_while_requests_in_flight_complete() {
    let (mut program, admin) = admin_program(&[]);
    assert_eq!(get(admin, "/livez").unwrap(), (200, "ok\n".into()));
    let ready = poll(WAIT, || {
        (get(admin, "/readyz").ok()?.0 == 200).then_some(())
    });
    assert!(ready.is_some(), "ready once the nodes serve");
    let addr = program.addr();
    let slow = std::thread::spawn(move || get(addr, "/slow?ms=1500"));
    program.wait_for("slow request started", 1, WAIT);
    let signalled = Instant::now();
    program.signal(Signal::SIGTERM);
    // Asked back to back (no pause between polls), so that the figure is
    // the server's, not the poll's.
    let deadline = signalled + WAIT;
    let turned = loop {
        match get(admin, "/readyz") {
            Ok((503, body)) => break Some((signalled.elapsed(), body)),
            _ if Instant::now() > deadline => break None,
            _ => {}
        }
    };
    let (after, body) = turned.expect("503 once the stop begins");
    eprintln!("/readyz answered 503 ({body:?}) {after:?} after SIGTERM");
    assert_eq!(body, "stopping\n");
    assert!(after < Duration::from_millis(100), "{after:?}");
    assert_eq!(get(admin, "/livez").unwrap().0, 200, "live while it drains");
    let (status, _) = slow
        .join()
        .unwrap()
        .expect("the request in flight completes");
    assert_eq!(status, 200);
    assert!(program.wait_exit(WAIT).success());
}

#[test]
fn readyz_waits_for_ready_nodes_and_bad_values_name_the_variable() {
    let (_program, admin) = admin_program(&[("MULTINODE_READY_NODES", "5")]);
    let (status, body) = get(admin, "/readyz").unwrap();
    assert_eq!(
        (status, body.as_str()),
        (503, "4 nodes serve; ready_nodes is 5\n")
    );
    let mut bad = Program::start("probe", &[("MULTINODE_READY_NODES", "0")]);
    assert_eq!(bad.wait_exit(WAIT).code(), Some(2));
    bad.wait_for("MULTINODE_READY_NODES=\"0\"", 1, WAIT);
    bad.assert_no_process_left();
}
