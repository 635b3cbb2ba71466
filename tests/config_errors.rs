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

/// Runs `hello` as if an upgrade had started it, with `MULTINODE_LISTENERS` and
/// `MULTINODE_UPGRADE_FD` as given, and at descriptors 7, 8 and 9 a listening
/// TCP socket, `/dev/null` and a Unix stream socket; returns its exit code and
/// stderr once it exited.
fn run_as_upgraded(listeners: &str, back: &str) -> (Option<i32>, String) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    let (unix, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let fds = [tcp.as_raw_fd(), null.as_raw_fd(), unix.as_raw_fd()];
    let stderr = tempfile_path("stderr");
    let mut command = Command::new(common::example("hello"));
    command
        .env("MULTINODE_PORT", "0")
        .env("MULTINODE_LISTENERS", listeners)
        .env("MULTINODE_UPGRADE_FD", back)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .process_group(0);
    // SAFETY: fcntl and dup2 are async-signal-safe and allocate nothing.
    unsafe {
        command.pre_exec(move || {
            // Each source moved out of the way first (at 50 or above): one of
            // them may already be 7, 8 or 9, and dup2 onto itself would leave
            // it close-on-exec.
            let mut moved = [0; 3];
            for (to, fd) in moved.iter_mut().zip(fds) {
                *to = nix::libc::fcntl(fd, nix::libc::F_DUPFD_CLOEXEC, 50);
                if *to < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in moved.iter().enumerate() {
                if nix::libc::dup2(*fd, 7 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let status = common::poll(Duration::from_secs(10), || child.try_wait().unwrap());
    if status.is_none() {
        let group = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
    }
    let text = std::fs::read_to_string(&stderr).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr);
    (status.expect("it exits").code(), text)
}

fn tempfile_path(what: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("multinode-{what}-{}-{n}", std::process::id()))
}

#[test]
fn inherited_descriptors_are_checked_before_they_are_taken() {
    for (listeners, back, says) in [
        (
            "shared:2",
            "9",
            "descriptor 2 is standard input, output or error",
        ),
        ("0:7,1:7", "9", "descriptor 7 is named twice"),
        ("shared:40", "9", "descriptor 40 is not open"),
        ("shared:8", "9", "descriptor 8 is not a socket"),
        (
            "shared:9",
            "9",
            "descriptor 9 is not a listening TCP socket",
        ),
        (
            "shared:7",
            "2",
            "MULTINODE_UPGRADE_FD=2: descriptor 2 is standard",
        ),
        (
            "shared:7",
            "7",
            "MULTINODE_UPGRADE_FD=7: descriptor 7 is named twice",
        ),
        (
            "shared:7",
            "8",
            "MULTINODE_UPGRADE_FD=8: descriptor 8 is not a socket",
        ),
    ] {
        let (code, stderr) = run_as_upgraded(listeners, back);
        let case = format!("MULTINODE_LISTENERS={listeners} MULTINODE_UPGRADE_FD={back}");
        assert_eq!(code, Some(2), "{case}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "{case}: one line on stderr, still open: {stderr:?}"
        );
        assert!(lines[0].contains(says), "{case}: {stderr}");
        if back != "2" && back != "7" && back != "8" {
            assert!(lines[0].contains("MULTINODE_LISTENERS"), "{case}: {stderr}");
        }
    }
}
