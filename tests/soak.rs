//! A soak of mixed faults against a 4-node server under load: kills, reloads,
//! scaling up and down, SIGTERM to one worker, in a seeded random order, about a
//! minute. Afterwards every slot serves, nothing is left a zombie, the load table
//! counts the connections that are open, the master's descriptors and memory are
//! back where they were, and no request failed but on a connection held by a
//! killed process.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{descriptors, get, pids_answering, poll, rss_kib, Program};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const FAULTS: usize = 200;
const CLIENTS: usize = 2;
const WAIT: Duration = Duration::from_secs(30);

/// xorshift64: the same faults in the same order on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn zombies_of(pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or("").split(' ').collect();
            fields.first() == Some(&"Z") && fields.get(1) == Some(&pid.to_string().as_str())
        })
        .count()
}

/// The member worker slots, from the master's log of scaling.
fn members(program: &Program) -> BTreeSet<usize> {
    let mut members: BTreeSet<usize> = (1..4).collect();
    for line in program.log() {
        let slot = |needle: &str| -> Option<usize> {
            let rest = &line[line.find(needle)? + needle.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        if let Some(slot) = slot("SIGTTIN: adding a node node=") {
            members.insert(slot);
        }
        if let Some(slot) = slot("SIGTTOU: removing the node node=") {
            members.remove(&slot);
        }
    }
    members
}

#[test]
fn two_hundred_mixed_faults_under_load_leave_the_server_whole() {
    let program = Program::start(
        "probe",
        &[
            ("MULTINODE_NODES", "4"),
            ("PROBE_SHUTDOWN_TIMEOUT_MS", "1000"),
        ],
    );
    let addr = program.ready();
    let master = program.pid();
    // One of each first, so that whatever the master opens lazily is open.
    program.signal(Signal::SIGHUP);
    program.wait_for("rolling restart done", 1, WAIT);
    program.signal(Signal::SIGTTIN);
    program.wait_for("node ready node=4", 1, WAIT);
    program.signal(Signal::SIGTTOU);
    program.wait_for("node removed node=4", 1, WAIT);
    let before = (settled_descriptors(master), rss_kib(master));

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut refused, mut cut) = (0u32, 0u32, 0u32);
                while !stop.load(Ordering::Relaxed) && ok < 200_000 {
                    match get(addr, "/") {
                        Ok((200, _)) => ok += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
                        other => {
                            eprintln!("failed request: {other:?}");
                            cut += 1
                        }
                    }
                }
                (ok, refused, cut)
            })
        })
        .collect();

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut kills = 0;
    for _ in 0..FAULTS {
        let workers: Vec<u32> = program.workers().into_iter().collect();
        let nodes = members(&program).len() + 1;
        match rng.below(10) {
            0..=2 if !workers.is_empty() => {
                let victim = workers[rng.below(workers.len())];
                if kill(Pid::from_raw(victim as i32), Signal::SIGKILL).is_ok() {
                    kills += 1;
                }
            }
            3..=4 if !workers.is_empty() => {
                let victim = workers[rng.below(workers.len())];
                let _ = kill(Pid::from_raw(victim as i32), Signal::SIGTERM);
            }
            5..=6 => program.signal(Signal::SIGHUP),
            7 if nodes < 6 => program.signal(Signal::SIGTTIN),
            8 if nodes > 2 => program.signal(Signal::SIGTTOU),
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(250)); // the pace of the faults
    }

    // Settled: every reload over, every member slot serving.
    let reloads_settled = poll(WAIT, || {
        let started = program.count("SIGHUP: rolling restart");
        let ended =
            program.count("rolling restart done") + program.count("rolling restart stopped");
        (started == ended).then_some(())
    });
    assert!(reloads_settled.is_some(), "every reload ended");
    let slots = members(&program);
    let serving = poll(WAIT, || {
        let workers = program.workers();
        (workers.len() == slots.len()).then_some(workers)
    })
    .unwrap_or_else(|| {
        panic!(
            "one process per member slot {slots:?}: {:?}",
            program.workers()
        )
    });
    let mut expected = serving.clone();
    expected.insert(master);
    assert_eq!(
        pids_answering(addr, &expected),
        expected,
        "every node answers"
    );
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut refused, mut cut) = (0, 0, 0);
    for client in clients {
        let (o, r, c) = client.join().unwrap();
        (ok, refused, cut) = (ok + o, refused + r, cut + c);
    }
    eprintln!("{FAULTS} faults ({kills} kills): {ok} answered, {refused} refused, {cut} cut");
    assert_eq!(refused, 0, "no connection refused");
    assert!(
        cut <= kills * CLIENTS as u32,
        "{cut} requests failed, more than the {kills} kills could have held"
    );
    assert!(ok > 1000, "the load went on: {ok}");
    // The load table tells the truth: the only connection open is the one asking.
    let mut last = String::new();
    let truthful = poll(WAIT, || {
        let (_, body) = get(addr, "/table").ok()?;
        let open: u32 = body
            .split_whitespace()
            .skip(1)
            .map(|pair| pair.split(':').nth(1).unwrap().parse::<u32>().unwrap())
            .sum();
        last = body;
        (open == 1).then_some(())
    });
    assert!(
        truthful.is_some(),
        "the load table after the faults: {last}"
    );
    let zombies = poll(Duration::from_secs(5), || {
        (zombies_of(master) == 0).then_some(())
    });
    assert!(zombies.is_some(), "no zombie");
    // Back to 3 workers, as before the faults, to compare the master's descriptors.
    for _ in 0..4 {
        let (now, changes) = (members(&program).len(), program.count("SIGTT"));
        match now {
            3 => break,
            n if n < 3 => program.signal(Signal::SIGTTIN),
            _ => program.signal(Signal::SIGTTOU),
        }
        program.wait_for("SIGTT", changes + 1, WAIT);
    }
    let three = poll(WAIT, || (program.workers().len() == 3).then_some(()));
    assert!(three.is_some(), "3 workers: {:?}", program.workers());
    let after = (settled_descriptors(master), rss_kib(master));
    assert!(
        after.0.abs_diff(before.0) <= 2,
        "the master's descriptors: {} before, {} after",
        before.0,
        after.0
    );
    assert!(
        after.1 <= before.1 + before.1 / 10,
        "the master's RSS: {} KiB before, {} KiB after",
        before.1,
        after.1
    );
}

/// The master's descriptors once they stop changing (streams of a node that
/// just exited close as their EOF is read).
fn settled_descriptors(pid: u32) -> usize {
    let mut last = descriptors(pid);
    poll(WAIT, || {
        std::thread::sleep(Duration::from_millis(200)); // the sampling period
        let now = descriptors(pid);
        let same = now == last;
        last = now;
        same.then_some(now)
    })
    .expect("the descriptors settle")
}
