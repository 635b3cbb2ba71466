//! Signals sent to every process of the server, as `pkill NAME`, `kill -SIG
//! -PGID` and `systemctl kill` send them: the master acts once, and no worker
//! dies of a signal meant for the master (nginx's workers ignore them too).
//! TERM, INT and QUIT to one worker drain that worker, and it is replaced.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{get, is_alive, poll, Program};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

const WAIT: Duration = Duration::from_secs(20);

/// `signal` to the program's whole process group.
fn to_all(program: &Program, signal: Signal) {
    killpg(Pid::from_raw(program.pid() as i32), signal).unwrap();
}

/// Whether `pid` has a signal pending (not yet handled); false once it is gone.
fn pending(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .filter(|l| l.starts_with("SigPnd:") || l.starts_with("ShdPnd:"))
        .any(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|mask| !mask.trim_matches('0').is_empty())
        })
}

/// `pid`'s state letter (`S`, `R`, `T` for stopped, ...).
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(") ").next()?.chars().next()
}

/// Waits until every process of `pids` has taken what was sent to it, then
/// asserts that each lives on, not stopped.
fn all_took_it_and_live(pids: &BTreeSet<u32>, what: &str) {
    for pid in pids {
        let taken = poll(WAIT, || (!pending(*pid)).then_some(()));
        assert!(taken.is_some(), "process {pid} never took {what}");
    }
    for pid in pids {
        assert!(is_alive(*pid), "process {pid} died of {what}");
        assert_ne!(
            state(*pid),
            Some('T'),
            "process {pid} was stopped by {what}"
        );
    }
}

/// The master and its workers.
fn tree(program: &Program) -> BTreeSet<u32> {
    let mut pids = program.workers();
    pids.insert(program.pid());
    pids
}

#[test]
fn usr1_and_winch_to_every_process_kill_or_stop_none() {
    let program = Program::start("probe", &[("MULTINODE_NODES", "3")]);
    let addr = program.ready();
    let pids = tree(&program);
    assert_eq!(pids.len(), 3, "{pids:?}");
    to_all(&program, Signal::SIGUSR1);
    program.wait_for("SIGUSR1", 1, WAIT);
    all_took_it_and_live(&pids, "SIGUSR1");
    to_all(&program, Signal::SIGWINCH);
    all_took_it_and_live(&pids, "SIGWINCH");
    assert_eq!(tree(&program), pids, "the same processes serve");
    assert_eq!(get(addr, "/").unwrap().0, 200);
}

#[test]
fn hup_to_every_process_reloads_once_and_kills_no_worker() {
    let program = Program::start("probe", &[("MULTINODE_NODES", "3")]);
    let addr = program.ready();
    to_all(&program, Signal::SIGHUP);
    program.wait_for("rolling restart done", 1, WAIT);
    assert_eq!(
        program.count("SIGHUP: rolling restart"),
        1,
        "the master acts once"
    );
    assert_eq!(program.count("node exited"), 0, "no worker died of SIGHUP");
    assert_eq!(get(addr, "/").unwrap().0, 200);
}

#[test]
fn ttin_and_ttou_to_every_process_scale_once_and_stop_no_worker() {
    let program = Program::start("probe", &[("MULTINODE_NODES", "3")]);
    program.ready();
    let before = tree(&program);
    to_all(&program, Signal::SIGTTIN);
    program.wait_for("node ready node=3", 1, WAIT);
    all_took_it_and_live(&before, "SIGTTIN");
    assert_eq!(
        program.count("SIGTTIN: adding a node"),
        1,
        "the master acts once"
    );
    let four = tree(&program);
    assert_eq!(four.len(), 4, "{four:?}");
    to_all(&program, Signal::SIGTTOU);
    program.wait_for("node removed node=3", 1, WAIT);
    let three: BTreeSet<u32> = four.iter().copied().filter(|p| is_alive(*p)).collect();
    all_took_it_and_live(&three, "SIGTTOU");
    assert_eq!(three.len(), 3, "one node removed, once: {three:?}");
    assert_eq!(program.count("node exited"), 0, "no worker died");
}

#[test]
fn usr2_to_every_process_upgrades_and_kills_no_worker() {
    let mut program = Program::start("probe", &[("MULTINODE_NODES", "3")]);
    let addr = program.ready();
    to_all(&program, Signal::SIGUSR2);
    let status = program.wait_exit(WAIT);
    assert!(
        status.success(),
        "the old master hands over and exits 0: {status:?}"
    );
    assert_eq!(program.count("node exited"), 0, "no worker died of SIGUSR2");
    assert_eq!(get(addr, "/").unwrap().0, 200, "the new tree serves");
}

#[test]
fn term_int_and_quit_to_a_worker_drain_it_and_it_is_replaced() {
    let program = Program::start("probe", &[("MULTINODE_NODES", "2")]);
    let addr = program.ready();
    for (generation, signal) in [
        (1, Signal::SIGTERM),
        (2, Signal::SIGINT),
        (3, Signal::SIGQUIT),
    ] {
        // Node 1 is the one worker; its last incarnation once the one before is gone.
        let one = poll(WAIT, || Some(program.workers()).filter(|w| w.len() == 1));
        let worker = *one.expect("one worker").first().unwrap();
        kill(Pid::from_raw(worker as i32), signal).unwrap();
        let next = format!("node ready node=1 generation={}", generation + 1);
        program.wait_for(&next, 1, WAIT);
        let gone = poll(WAIT, || (!is_alive(worker)).then_some(()));
        assert!(
            gone.is_some(),
            "the drained worker {worker} exits after {signal}"
        );
        assert!(program.count(&format!("{signal}: draining this node")) >= 1);
    }
    assert!(is_alive(program.pid()));
    assert_eq!(
        program.count("node exited"),
        0,
        "each one drained, none died"
    );
    assert_eq!(get(addr, "/").unwrap().0, 200);
}
