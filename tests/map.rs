//! `multinode::map` from outside (`examples/map_probe.rs`, 4 nodes): writes on
//! every node at once leave every copy equal; a node SIGKILLed and restarted
//! holds every entry before it answers; entries expire on every node; a value
//! over the frame limit, and a key over the bound, are the writer's error and
//! reach no copy.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{get, poll, Program};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(20);

/// An answer's node, generation and the rest (`node 2 generation 1: rest`).
fn parse(body: &str) -> (usize, u64, String) {
    let (who, rest) = body
        .split_once(": ")
        .unwrap_or_else(|| panic!("not a map_probe answer: {body:?}"));
    let mut words = who.split(' ');
    let id = words.nth(1).unwrap().parse().unwrap();
    let generation = words.nth(1).unwrap().parse().unwrap();
    (id, generation, rest.to_owned())
}

/// `path` on fresh connections until each of the 4 nodes answered it (the
/// kernel spreads them by hash): each node's status and answer.
fn from_every_node(addr: SocketAddr, path: &str) -> BTreeMap<usize, (u16, String)> {
    let mut answers = BTreeMap::new();
    let all = poll(WAIT, || {
        let (status, body) = get(addr, path).ok()?;
        let (id, _, rest) = parse(&body);
        answers.insert(id, (status, rest));
        (answers.len() == 4).then_some(())
    });
    assert!(all.is_some(), "not every node answered {path}: {answers:?}");
    answers
}

fn start(env: &[(&str, &str)]) -> (Program, SocketAddr) {
    let program = Program::start("map_probe", env);
    let addr = program.ready();
    (program, addr)
}

#[test]
fn writes_on_every_node_at_once_leave_every_copy_equal() {
    let (program, addr) = start(&[("MAP_WRITES", "400")]);
    program.wait_for("wrote 400", 4, WAIT);
    let mut last = BTreeMap::new();
    let equal = poll(WAIT, || {
        last = from_every_node(addr, "/");
        let first = &last.values().next()?.1;
        let same = last.values().all(|(_, answer)| answer == first);
        (same && !first.starts_with("keys 0 ")).then_some(())
    });
    assert!(equal.is_some(), "the copies differ: {last:?}");
}

#[test]
fn a_node_killed_and_restarted_holds_every_entry_before_it_answers() {
    let (program, addr) = start(&[("MAP_FILL", "2000")]);
    program.wait_for("node 0 filled 2000", 1, WAIT);
    let full = poll(WAIT, || {
        let answers = from_every_node(addr, "/");
        answers
            .values()
            .all(|(_, a)| a.starts_with("keys 2000 "))
            .then_some(answers)
    })
    .expect("every copy holds the 2000 entries");
    let digest = full[&0].1.clone();
    let victim = program.node_pid(2, 1);
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    // Every answer of the new node 2 holds what the others held, its first
    // included: it serves only once its snapshot is in.
    let mut seen = 0;
    let restarted = poll(WAIT, || {
        let (_, body) = get(addr, "/").ok()?;
        let (id, generation, rest) = parse(&body);
        if id == 2 && generation == 2 {
            assert_eq!(rest, digest, "node 2 answered before it held every entry");
            seen += 1;
        }
        (seen >= 3).then_some(())
    });
    assert!(restarted.is_some(), "the new node 2 never answered");
    assert_eq!(
        program.count("map of 2000 keys; probe up: node 2 generation 2"),
        1
    );
    program.wait_for("map: snapshot from node", 1, WAIT);
}

#[test]
fn entries_expire_on_every_node() {
    let (_program, addr) = start(&[]);
    let (status, body) = get(addr, "/put?key=brief&value=v&ttl_ms=1500").unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(addr, "/put?key=kept&value=v").unwrap();
    assert_eq!(status, 200, "{body}");
    // Every copy has it while it lives (well within its 1.5 s, as the
    // mesh takes microseconds)...
    let answers = from_every_node(addr, "/get?key=brief");
    assert!(
        answers.values().all(|(status, _)| *status == 200),
        "a copy lacks a live entry: {answers:?}"
    );
    // ...and none once it is past its time, counted out too.
    let gone = poll(WAIT, || {
        let answers = from_every_node(addr, "/get?key=brief");
        let counts = from_every_node(addr, "/");
        (answers.values().all(|(status, _)| *status == 404)
            && counts.values().all(|(_, a)| a.starts_with("keys 1 ")))
        .then_some(())
    });
    assert!(gone.is_some(), "an expired entry is still held");
}

#[test]
fn a_value_over_the_frame_limit_is_the_writers_error_and_reaches_no_copy() {
    let (_program, addr) = start(&[("MAP_MAX_FRAME", "1024")]);
    let (status, body) = get(addr, "/put?key=big&value=v&pad=4000").unwrap();
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("over the mesh's max_frame_len of 1024"),
        "{body}"
    );
    let (status, body) = get(addr, "/put?key=small&value=v").unwrap();
    assert_eq!(status, 200, "the map still takes writes: {body}");
    let answers = from_every_node(addr, "/get?key=big");
    assert!(
        answers.values().all(|(status, _)| *status == 404),
        "{answers:?}"
    );
    let small = poll(WAIT, || {
        let answers = from_every_node(addr, "/get?key=small");
        answers
            .values()
            .all(|(status, _)| *status == 200)
            .then_some(())
    });
    assert!(small.is_some(), "the small write did not reach every copy");
}

#[test]
fn a_key_over_the_bound_is_refused_and_a_held_one_rewritten() {
    let (_program, addr) = start(&[("MAP_MAX_ENTRIES", "3")]);
    for key in ["a", "b", "c"] {
        // Each through any node: wait until every copy counts it, so that
        // the bound is seen wherever the next one lands.
        let (status, body) = get(addr, &format!("/put?key={key}&value=1")).unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let counted = poll(WAIT, || {
        let counts = from_every_node(addr, "/");
        counts
            .values()
            .all(|(_, a)| a.starts_with("keys 3 "))
            .then_some(())
    });
    assert!(counted.is_some());
    let (status, body) = get(addr, "/put?key=d&value=1").unwrap();
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("max_entries of 3"), "{body}");
    let (status, body) = get(addr, "/put?key=a&value=2").unwrap();
    assert_eq!(status, 200, "{body}");
}
