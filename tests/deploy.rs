//! Deploying: what systemd and containers see of a multinode program. Real
//! processes: systemd's notifications on a datagram socket the test binds,
//! socket activation by Debian's `systemd-socket-activate`, and the program as
//! PID 1 of its own pid namespace (`unshare --pid --fork`).

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::redis::free_port;
use common::{children, get, get_within, poll, Program};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(20);

/// A `NOTIFY_SOCKET` of the test's own, in a folder of its own.
struct NotifySocket {
    dir: PathBuf,
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "multinode-notify-{}-{}",
            std::process::id(),
            common::marker().replace('=', "-")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = UnixDatagram::bind(dir.join("notify")).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        NotifySocket {
            dir,
            socket,
            seen: Vec::new(),
        }
    }

    fn path(&self) -> String {
        self.dir.join("notify").to_string_lossy().into_owned()
    }

    /// The next datagram that holds the line `line`, skipping others (kept in
    /// `seen`); panics after `WAIT`.
    fn next_with(&mut self, line: &str) -> String {
        self.next_where(|l| l == line)
    }

    /// Reads what waits on the socket (until 100 ms pass with nothing) into `seen`.
    fn drain(&mut self) {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buffer) {
            self.seen
                .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
    }

    /// The next datagram with a line that passes `test`.
    fn next_where(&mut self, test: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        let mut buffer = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buffer) {
                let datagram = String::from_utf8_lossy(&buffer[..n]).into_owned();
                self.seen.push(datagram.clone());
                if datagram.lines().any(&test) {
                    return datagram;
                }
            }
        }
        panic!("no such line within {WAIT:?}; seen: {:?}", self.seen);
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn systemd_is_told_ready_reloading_ready_and_stopping_in_order() {
    let mut notify = NotifySocket::bind();
    let path = notify.path();
    let mut program = Program::start(
        "probe",
        &[("MULTINODE_NODES", "3"), ("NOTIFY_SOCKET", &path)],
    );
    let ready = notify.next_with("READY=1");
    assert!(
        ready.contains("STATUS=3 nodes serving, generation 1"),
        "{ready:?}"
    );
    program.ready();
    program.signal(Signal::SIGHUP);
    let reloading = notify.next_with("RELOADING=1");
    let usec = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("RELOADING=1 without MONOTONIC_USEC: {reloading:?}"));
    assert!(usec.parse::<u64>().unwrap() > 0);
    let reloaded = notify.next_with("READY=1");
    assert!(
        reloaded.contains("STATUS=3 nodes serving, generation 2"),
        "{reloaded:?}"
    );
    program.wait_for("rolling restart done", 1, WAIT);
    program.signal(Signal::SIGTERM);
    notify.next_with("STOPPING=1");
    assert!(program.wait_exit(WAIT).success());
    // Only the master speaks to systemd: its workers' and body's children do
    // not have the variable.
    program.assert_no_process_left();
}

#[test]
fn a_reload_that_stops_tells_systemd_the_old_processes_serve_on() {
    let mut notify = NotifySocket::bind();
    let path = notify.path();
    let program = Program::start(
        "probe",
        &[
            ("MULTINODE_NODES", "2"),
            ("NOTIFY_SOCKET", &path),
            ("PROBE_FAIL_REPLACEMENTS", "1"),
        ],
    );
    notify.next_with("READY=1");
    program.ready();
    program.signal(Signal::SIGHUP);
    notify.next_with("RELOADING=1");
    // systemd waits for READY=1 after RELOADING=1, failed or not.
    let ready = notify.next_with("READY=1");
    assert!(
        ready.contains("STATUS=reload stopped: node 1's replacement failed"),
        "{ready:?}"
    );
    program.wait_for("rolling restart stopped", 1, WAIT);
}

#[test]
fn after_an_upgrade_systemd_is_told_the_new_masters_pid() {
    let mut notify = NotifySocket::bind();
    let path = notify.path();
    let mut program = Program::start(
        "probe",
        &[("MULTINODE_NODES", "2"), ("NOTIFY_SOCKET", &path)],
    );
    notify.next_with("READY=1");
    let addr = program.ready();
    program.signal(Signal::SIGUSR2);
    let datagram = notify.next_where(|line| line.starts_with("MAINPID="));
    let pid: u32 = datagram
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(pid, program.pid());
    assert!(program.wait_exit(WAIT).success());
    assert!(common::is_alive(pid), "the new master serves");
    assert_eq!(get(addr, "/").unwrap().0, 200);
    // The old master, no longer the service's main process, says nothing
    // more: STOPPING=1 from it would stop the service.
    notify.drain();
    assert!(
        !notify.seen.iter().any(|d| d.contains("STOPPING=1")),
        "{:?}",
        notify.seen
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    notify.next_with("STOPPING=1");
}

#[test]
fn the_supervision_loop_feeds_systemds_watchdog() {
    let mut notify = NotifySocket::bind();
    let path = notify.path();
    let program = Program::start(
        "probe",
        &[
            ("MULTINODE_NODES", "2"),
            ("NOTIFY_SOCKET", &path),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    notify.next_with("READY=1");
    let started = Instant::now();
    for _ in 0..3 {
        notify.next_with("WATCHDOG=1");
    }
    // At least every half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises.
    assert!(started.elapsed() < Duration::from_secs(2));
    let addr = program.ready();
    let (_, env) = get(addr, "/child-env").unwrap();
    for variable in ["NOTIFY_SOCKET", "WATCHDOG_USEC"] {
        assert!(!env.contains(variable), "{variable} reached a child: {env}");
    }
}

#[test]
fn a_socket_passed_by_systemd_socket_activate_is_served() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let program = Program::start_under(
        &["systemd-socket-activate", "-l", &listen],
        &common::example("probe"),
        &[("MULTINODE_NODES", "2"), ("MULTINODE_PORT", "1")],
    );
    // systemd-socket-activate starts the program on the first connection,
    // which waits in the socket's queue meanwhile.
    let addr = listen.parse().unwrap();
    let (status, body) = poll(WAIT, || get_within(addr, "/", WAIT).ok()).expect("an answer");
    assert_eq!(status, 200, "{body}");
    assert_eq!(program.addr(), addr, "the log names the passed socket");
    program.ready();
    let workers = program.workers();
    assert_eq!(workers.len(), 1, "node 1 runs in a process of its own");
    let pids = common::pids_answering(addr, &workers);
    assert!(
        workers.is_subset(&pids),
        "the workers serve the passed socket too"
    );
    for _ in 0..10 {
        let (_, env) = get(addr, "/child-env").unwrap();
        assert!(!env.contains("LISTEN_FDS"), "LISTEN_FDS reached a child");
        assert!(!env.contains("LISTEN_PID"), "LISTEN_PID reached a child");
    }
    assert_eq!(program.count("cannot listen"), 0);
}

#[test]
fn a_passed_socket_that_is_not_a_listening_tcp_socket_is_a_clear_error() {
    // systemd-socket-activate --datagram passes a UDP socket.
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut program = Program::start_under(
        &["systemd-socket-activate", "--datagram", "-l", &listen],
        &common::example("probe"),
        &[("MULTINODE_NODES", "2")],
    );
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let status = poll(WAIT, || {
        udp.send_to(b"wake", &listen).ok()?;
        program.child.try_wait().unwrap()
    })
    .expect("the program exits");
    assert_eq!(status.code(), Some(2), "{:?}", program.log());
    program.wait_for("LISTEN_FDS", 1, WAIT);
    let log = program.log().join("\n");
    assert!(log.contains("not a listening TCP socket"), "{log}");
    program.assert_no_process_left();
}

#[test]
fn as_pid_1_orphans_are_reaped_and_sigterm_stops_gracefully() {
    let mut program = Program::start_under(
        &["unshare", "--pid", "--fork"],
        &common::example("probe"),
        &[("MULTINODE_NODES", "2")],
    );
    let addr = program.ready();
    // unshare's child is PID 1 of the namespace.
    let init = *children(program.pid())
        .iter()
        .next()
        .expect("unshare's child");
    for _ in 0..4 {
        let (status, body) = get(addr, "/orphan").unwrap();
        assert_eq!(status, 200, "{body}");
    }
    // Orphans go to PID 1; a zombie keeps its name and parent in /proc.
    let sleeps = || sleeps_under(init);
    let reaped = poll(Duration::from_secs(5), || (sleeps() == 0).then_some(()));
    assert!(
        reaped.is_some(),
        "{} orphaned sleeps left (zombies) under PID 1 ({init})",
        sleeps()
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(init as i32), Signal::SIGTERM).unwrap();
    program.wait_for("SIGTERM: stopping", 1, WAIT);
    assert!(program.wait_exit(WAIT).success(), "{:?}", program.log());
    program.assert_no_process_left();
}

/// The `sleep` processes, zombies included, whose parent is `parent`.
fn sleeps_under(parent: u32) -> usize {
    let parent = parent.to_string();
    let entries = std::fs::read_dir("/proc").unwrap();
    entries
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            let (name, rest) = stat.rsplit_once(") ").unwrap_or_default();
            name.ends_with("(sleep") && rest.split(' ').nth(1) == Some(parent.as_str())
        })
        .count()
}
