//! The whole-binary upgrade on SIGUSR2: the master starts a new master from
//! the executable's path, hands it the listening sockets, and once the new
//! tree is ready drains its own and exits. Real processes, a real file
//! replaced on disk, load from outside during the upgrade.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{get, get_within, poll, processes_with, KeepAlive, Program};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(30);

/// A folder of the test's own, holding the program's executable.
struct Install {
    dir: PathBuf,
}

impl Install {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("multinode-upgrade-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Install { dir }
    }

    fn exe(&self) -> PathBuf {
        self.dir.join("app")
    }

    /// Puts `contents` at the executable's path as a new file (a deploy:
    /// the running processes keep the old one).
    fn deploy(&self, contents: &[u8]) {
        use std::os::unix::fs::PermissionsExt;
        let next = self.dir.join("app.next");
        std::fs::write(&next, contents).unwrap();
        std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&next, self.exe()).unwrap();
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The probe, and a different build of it: the same with bytes appended
/// (ELF ignores them), so that it is another file with other contents.
fn builds() -> (Vec<u8>, Vec<u8>) {
    let probe = std::fs::read(common::example("probe")).unwrap();
    let mut other = probe.clone();
    other.extend_from_slice(b"\nmultinode upgrade test: another build\n");
    (probe, other)
}

/// Requests from outside until stopped: keep-alive and fresh connections.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads = (0..4)
            .map(|i| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    let mut errors = Vec::new();
                    let mut keep_alive = KeepAlive::new(addr);
                    while !stop.load(Ordering::Relaxed) {
                        let answer = match i % 2 {
                            0 => keep_alive.get("/").map(|s| (s, String::new())),
                            _ => get_within(addr, "/", Duration::from_secs(10)),
                        };
                        match answer {
                            Ok((200, _)) => drop(ok.fetch_add(1, Ordering::Relaxed)),
                            other => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                errors.push(format!("{other:?}"));
                            }
                        }
                    }
                    errors
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    /// Stops; (answered with 200, errors).
    fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let errors = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let _ = self.failed;
        (self.ok.load(Ordering::Relaxed), errors)
    }
}

/// The (device, inode) of the file `path` names, or a process's executable.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[test]
fn sigusr2_upgrades_the_whole_tree_to_the_new_file_under_load() {
    upgrade_under_load("least_conn");
}

#[test]
fn an_upgrade_with_reuse_port_hands_over_every_nodes_socket() {
    upgrade_under_load("reuse_port");
}

#[test]
fn an_upgrade_with_a_shared_socket() {
    upgrade_under_load("shared");
}

fn upgrade_under_load(balance: &str) {
    let install = Install::new(balance);
    let (old, new) = builds();
    install.deploy(&old);
    let mut program = Program::start_exe(
        &install.exe(),
        &[("MULTINODE_NODES", "3"), ("PROBE_BALANCE", balance)],
    );
    let addr = program.ready();
    let old_master = program.pid();
    let load = Load::start(addr);
    assert!(poll(WAIT, || (load.ok.load(Ordering::Relaxed) > 200)
        .then_some(()))
    .is_some());
    install.deploy(&new);
    let new_file = file_id(&install.exe()).unwrap();
    program.signal(Signal::SIGUSR2);
    let status = program.wait_exit(WAIT);
    assert!(status.success(), "the old master exits 0: {status:?}");
    program.wait_for("upgrade: the new master", 1, WAIT);
    // Some more requests on the new tree alone.
    let served = load.ok.load(Ordering::Relaxed);
    assert!(
        poll(WAIT, || (load.ok.load(Ordering::Relaxed) > served + 200)
            .then_some(()))
        .is_some()
    );
    let (ok, errors) = load.stop();
    assert!(
        errors.is_empty(),
        "{} errors of {ok}: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let serving = processes_with(&program.marker);
    assert_eq!(serving.len(), 3, "a new master and 2 workers: {serving:?}");
    assert!(!serving.contains(&old_master));
    for pid in &serving {
        let exe = file_id(Path::new(&format!("/proc/{pid}/exe")));
        assert_eq!(exe, Some(new_file), "process {pid} runs the new file");
    }
    // Every answer comes from the new tree.
    for _ in 0..20 {
        let (_, body) = get(addr, "/").unwrap();
        assert!(serving.contains(&common::pid_in(&body)), "{body}");
    }
    let new_master = *serving
        .iter()
        .find(|pid| common::children(**pid).len() == 2)
        .expect("the new master");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(new_master as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let gone = poll(WAIT, || {
        processes_with(&program.marker).is_empty().then_some(())
    });
    assert!(gone.is_some(), "the new tree stops on SIGTERM");
}

#[test]
fn a_new_binary_that_cannot_boot_leaves_the_old_tree_serving() {
    let install = Install::new("broken");
    let (old, _) = builds();
    install.deploy(&old);
    let program = Program::start_exe(&install.exe(), &[("MULTINODE_NODES", "2")]);
    let addr = program.ready();
    let before = processes_with(&program.marker);
    // A build that fails after a moment, so that a second USR2 finds the
    // upgrade under way.
    install.deploy(b"#!/bin/sh\nsleep 1\necho 'broken build' >&2\nexit 3\n");
    program.signal(Signal::SIGUSR2);
    program.wait_for("upgrade: starting a new master", 1, WAIT);
    program.signal(Signal::SIGUSR2);
    program.wait_for("SIGUSR2: an upgrade is under way", 1, WAIT);
    program.wait_for("upgrade failed", 1, WAIT);
    program.wait_for("this master serves on", 1, WAIT);
    assert_eq!(get(addr, "/").unwrap().0, 200);
    let after = poll(WAIT, || {
        let now = processes_with(&program.marker);
        (now == before).then_some(now)
    });
    assert!(
        after.is_some(),
        "nothing left over: {:?} then {:?}",
        before,
        processes_with(&program.marker)
    );
    assert_eq!(program.count("upgrade: starting a new master"), 1);
}

#[test]
fn as_pid_1_the_init_follows_the_new_master() {
    let install = Install::new("pid1");
    let (old, new) = builds();
    install.deploy(&old);
    let mut program = Program::start_under(
        &["unshare", "--pid", "--fork"],
        &install.exe(),
        &[("MULTINODE_NODES", "2")],
    );
    let addr = program.ready();
    let first = |pid: u32| common::children(pid).into_iter().next();
    let init = first(program.pid()).expect("PID 1 of the namespace");
    let old_master = first(init).expect("the master, PID 1's child");
    install.deploy(&new);
    // PID 1 forwards SIGUSR2 to the master.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(init as i32), Signal::SIGUSR2).unwrap();
    program.wait_for("this master drains and exits", 1, WAIT);
    let gone = poll(WAIT, || (!common::is_alive(old_master)).then_some(()));
    assert!(gone.is_some(), "the old master exits");
    let new_master = poll(WAIT, || first(init).filter(|pid| *pid != old_master))
        .expect("the new master, PID 1's child now");
    assert_eq!(
        file_id(Path::new(&format!("/proc/{new_master}/exe"))),
        file_id(&install.exe())
    );
    for _ in 0..20 {
        assert_eq!(
            get(addr, "/").unwrap().0,
            200,
            "PID 1 did not stop with the old master"
        );
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(init as i32), Signal::SIGTERM).unwrap();
    assert!(program.wait_exit(WAIT).success(), "{:?}", program.log());
}

/// A file whose presence makes every probe node that starts boot slowly.
struct SlowBoot(PathBuf);

impl SlowBoot {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("multinode-slow-boot-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        SlowBoot(path)
    }

    fn env(&self) -> [(&str, &str); 2] {
        [
            ("PROBE_SLOW_BOOT_IF", self.0.to_str().unwrap()),
            ("PROBE_SLOW_BOOT_MS", "3000"),
        ]
    }

    fn on(&self) {
        std::fs::write(&self.0, b"").unwrap();
    }

    fn off(&self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Drop for SlowBoot {
    fn drop(&mut self) {
        self.off();
    }
}

#[test]
fn upgrade_timeout_bounds_the_new_masters_boot() {
    let slow = SlowBoot::new();
    // A new tree that needs 3 s, given 1 s: stopped, the old one serves on.
    let [a, b] = slow.env();
    let env = [
        a,
        b,
        ("MULTINODE_NODES", "2"),
        ("MULTINODE_UPGRADE_TIMEOUT", "1"),
    ];
    let program = Program::start("probe", &env);
    let addr = program.ready();
    let before = processes_with(&program.marker);
    slow.on();
    program.signal(Signal::SIGUSR2);
    program.wait_for("the new master was not ready in 1s", 1, WAIT);
    program.wait_for("this master serves on", 1, WAIT);
    assert_eq!(get(addr, "/").unwrap().0, 200);
    let only_the_old = poll(WAIT, || {
        let now = processes_with(&program.marker);
        (now == before).then_some(())
    });
    assert!(
        only_the_old.is_some(),
        "the new tree is gone: {before:?} then {:?}",
        processes_with(&program.marker)
    );
    drop(program);
    // The same, given 10 s: upgraded.
    slow.off();
    let env = [
        a,
        b,
        ("MULTINODE_NODES", "2"),
        ("MULTINODE_UPGRADE_TIMEOUT", "10"),
    ];
    let mut program = Program::start("probe", &env);
    let addr = program.ready();
    slow.on();
    program.signal(Signal::SIGUSR2);
    let status = program.wait_exit(WAIT);
    assert!(status.success(), "the old master hands over: {status:?}");
    assert_eq!(program.count("not ready in"), 0);
    assert_eq!(get(addr, "/").unwrap().0, 200);
}

#[test]
fn a_stop_right_after_sigusr2_stops_both_trees() {
    let slow = SlowBoot::new();
    let [a, b] = slow.env();
    let mut program = Program::start("probe", &[a, b, ("MULTINODE_NODES", "2")]);
    program.ready();
    // The new tree needs 3 s: the stop surely comes while it starts.
    slow.on();
    program.signal(Signal::SIGUSR2);
    program.wait_for("upgrade: the new master started", 1, WAIT);
    program.signal(Signal::SIGTERM);
    let status = program.wait_exit(WAIT);
    assert!(status.success(), "the old tree drains: {status:?}");
    let gone = poll(WAIT, || {
        processes_with(&program.marker).is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "nothing outlives the stop: {:?}",
        processes_with(&program.marker)
    );
}

#[test]
fn an_upgrade_after_sigttin_starts_every_node_that_serves() {
    let env = [("MULTINODE_NODES", "3"), ("PROBE_BALANCE", "reuse_port")];
    let mut program = Program::start("probe", &env);
    let addr = program.ready();
    program.signal(Signal::SIGTTIN);
    program.wait_for("node ready node=3", 1, WAIT);
    program.signal(Signal::SIGUSR2);
    assert!(
        program.wait_exit(WAIT).success(),
        "the old master hands over"
    );
    let four = poll(WAIT, || {
        Some(processes_with(&program.marker)).filter(|p| p.len() == 4)
    });
    assert!(
        four.is_some(),
        "a new master and 3 workers: {:?}",
        processes_with(&program.marker)
    );
    // Every socket of the group has its acceptor: each of the 4 nodes answers.
    let mut ids = std::collections::BTreeSet::new();
    let all = poll(WAIT, || {
        let (_, body) = get(addr, "/").ok()?;
        ids.insert(body.split_whitespace().nth(1)?.to_owned());
        (ids.len() == 4).then_some(())
    });
    assert!(all.is_some(), "nodes answering: {ids:?}");
}

#[test]
fn as_pid_1_the_init_follows_the_new_master_at_the_hand_over() {
    let mut program = Program::start_under(
        &["unshare", "--pid", "--fork"],
        &common::example("probe"),
        &[("MULTINODE_NODES", "2")],
    );
    let addr = program.ready();
    let first = |pid: u32| common::children(pid).into_iter().next();
    let init = first(program.pid()).expect("PID 1 of the namespace");
    // A request in flight keeps the old tree draining for a while.
    let slow = std::thread::spawn(move || get(addr, "/slow?ms=3000"));
    program.wait_for("slow request started", 1, WAIT);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(init as i32), Signal::SIGUSR2).unwrap();
    program.wait_for("this master drains and exits", 1, WAIT);
    // docker stop, while the old tree still drains: the new master stops.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(init as i32), Signal::SIGTERM).unwrap();
    program.wait_for("SIGTERM: stopping", 1, WAIT);
    assert_eq!(
        slow.join().unwrap().expect("the old tree's request ends").0,
        200
    );
    assert!(program.wait_exit(WAIT).success(), "{:?}", program.log());
}
