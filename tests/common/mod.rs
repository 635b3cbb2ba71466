//! Helpers for the integration tests: start a built example as a real process
//! group on an ephemeral loopback port, talk HTTP to it, and look at its processes
//! from outside through /proc. Every wait is a bounded poll.

#![allow(dead_code)] // each test file uses its own subset

pub mod browser;
pub mod certs;
pub mod machines;
pub mod redis;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Polls `check` every 10 ms until it gives a value or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The path of a built example (`cargo test` builds the examples).
pub fn example(name: &str) -> PathBuf {
    let dir = std::env::current_exe().unwrap();
    let path = dir
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --examples`",
        path.display()
    );
    path
}

/// A unique marker put in a program's environment, so that every process it
/// started can be found (and counted) through /proc, even after the master exited.
pub fn marker() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("MULTINODE_TEST_MARKER={}-{n}", std::process::id())
}

/// The live (not zombie) processes for which `matches(pid)` holds.
fn live_processes(matches: impl Fn(&std::path::Path) -> bool) -> BTreeSet<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            (matches(&entry.path()) && is_alive(pid)).then_some(pid)
        })
        .collect()
}

/// The live processes whose environment holds `marker`.
pub fn processes_with(marker: &str) -> BTreeSet<u32> {
    live_processes(|proc| {
        std::fs::read(proc.join("environ")).is_ok_and(|environ| {
            environ
                .split(|b| *b == 0)
                .any(|var| var == marker.as_bytes())
        })
    })
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(") ")
                .next()
                .and_then(|rest| rest.chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// The live children of `pid`.
pub fn children(pid: u32) -> BTreeSet<u32> {
    let parent = pid.to_string();
    live_processes(|proc| {
        std::fs::read_to_string(proc.join("stat")).is_ok_and(|stat| {
            stat.rsplit(") ")
                .next()
                .and_then(|rest| rest.split(' ').nth(1))
                == Some(parent.as_str())
        })
    })
}

/// A started example: its master process (leader of its own process group) and
/// everything it wrote on stderr.
pub struct Program {
    pub child: Child,
    pub marker: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Program {
    /// Starts `example` with `env` (plus `MULTINODE_PORT=0` unless given).
    pub fn start(example_name: &str, env: &[(&str, &str)]) -> Program {
        Program::start_with_nofile(example_name, env, None)
    }

    /// [`Program::start`] with its descriptor limit (soft and hard) set to
    /// `nofile`, as `ulimit -n` in a shell would.
    pub fn start_with_nofile(
        example_name: &str,
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Program {
        Program::launch(Command::new(example(example_name)), env, nofile)
    }

    /// [`Program::start`] under a wrapper that runs the example, such as
    /// `["systemd-socket-activate", "-l", ADDR]` or `["unshare", "--pid", "--fork"]`:
    /// the program's pid is the wrapper's.
    pub fn start_under(wrapper: &[&str], exe: &std::path::Path, env: &[(&str, &str)]) -> Program {
        let mut command = Command::new(wrapper[0]);
        command.args(&wrapper[1..]).arg(exe);
        Program::launch(command, env, None)
    }

    /// [`Program::start`] from the executable at `path` (a copy of an example).
    pub fn start_exe(path: &std::path::Path, env: &[(&str, &str)]) -> Program {
        Program::launch(Command::new(path), env, None)
    }

    fn launch(mut command: Command, env: &[(&str, &str)], nofile: Option<u64>) -> Program {
        let marker = marker();
        let (key, value) = marker.split_once('=').unwrap();
        command
            .env("MULTINODE_PORT", "0")
            .env("RUST_LOG", "info")
            .env(key, value)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(limit) = nofile {
            // SAFETY: setrlimit is async-signal-safe and allocates nothing.
            unsafe {
                command.pre_exec(move || {
                    use nix::sys::resource::{setrlimit, Resource};
                    setrlimit(Resource::RLIMIT_NOFILE, limit, limit).map_err(Into::into)
                });
            }
        }
        let mut child = command.spawn().expect("start the example");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("  | {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Program { child, marker, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line written on stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// How many stderr lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until `n` stderr lines contain `needle`.
    pub fn wait_for(&self, needle: &str, n: usize, timeout: Duration) {
        if poll(timeout, || (self.count(needle) >= n).then_some(())).is_none() {
            panic!(
                "no {n} lines with {needle:?} within {timeout:?}; log:\n{}",
                self.log().join("\n")
            );
        }
    }

    /// The pid that node `id`, incarnation `generation`, of a `probe` or
    /// `mesh_probe` logged when it came up (`probe up: node … pid …`).
    pub fn node_pid(&self, id: usize, generation: u64) -> u32 {
        let needle = format!("probe up: node {id} generation {generation} pid ");
        self.wait_for(&needle, 1, Duration::from_secs(20));
        let log = self.log();
        let line = log.iter().find(|l| l.contains(&needle)).unwrap();
        line[line.find(&needle).unwrap() + needle.len()..]
            .trim()
            .parse()
            .unwrap()
    }

    /// The address from the master's `listening on http://ADDR` line (or
    /// `https://`).
    pub fn addr(&self) -> SocketAddr {
        self.wait_for("listening on http", 1, Duration::from_secs(10));
        let log = self.log();
        let line = log
            .iter()
            .find(|l| l.contains("listening on http"))
            .unwrap();
        let rest = &line[line.find("listening on http").unwrap()..];
        let rest = &rest[rest.find("://").unwrap() + 3..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// Waits until the master logged every node ready; returns the address.
    pub fn ready(&self) -> SocketAddr {
        let addr = self.addr();
        self.wait_for("nodes ready", 1, Duration::from_secs(20));
        addr
    }

    /// The live worker processes.
    pub fn workers(&self) -> BTreeSet<u32> {
        children(self.pid())
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    /// Asserts that every process of the program is gone (within 2 s: a worker
    /// may still be exiting when the master has).
    pub fn assert_no_process_left(&self) {
        let gone = poll(Duration::from_secs(2), || {
            processes_with(&self.marker).is_empty().then_some(())
        });
        assert!(
            gone.is_some(),
            "processes left: {:?}",
            processes_with(&self.marker)
        );
    }

    /// Waits for the master to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        poll(timeout, || child.try_wait().unwrap())
            .unwrap_or_else(|| panic!("the master did not exit within {timeout:?}"))
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        // Only what this test started: the program's own process group.
        let _ = killpg(Pid::from_raw(self.pid() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    get_within(addr, path, Duration::from_secs(30))
}

/// [`get`], failing when no answer came within `limit` of the request.
pub fn get_within(addr: SocketAddr, path: &str, limit: Duration) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(limit))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The pid in a `hello` or `probe` answer (`... pid N ...`).
pub fn pid_in(body: &str) -> u32 {
    let after = body
        .split("pid ")
        .nth(1)
        .unwrap_or_else(|| panic!("no pid in {body:?}"));
    after
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Fresh connections until every pid of `expected` answered (at most 400).
pub fn pids_answering(addr: SocketAddr, expected: &BTreeSet<u32>) -> BTreeSet<u32> {
    let mut seen = BTreeSet::new();
    for _ in 0..400 {
        let (status, body) = get(addr, "/").expect("GET /");
        assert_eq!(status, 200, "{body}");
        seen.insert(pid_in(&body));
        if expected.is_subset(&seen) {
            break;
        }
    }
    seen
}

/// An HTTP/1.1 client on one keep-alive connection, which reconnects when a
/// response says `Connection: close` (as browsers and wrk do).
pub struct KeepAlive {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr) -> Self {
        KeepAlive { addr, stream: None }
    }

    /// A client connected now (a request is sent only by `get`).
    pub fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let mut client = KeepAlive::new(addr);
        client.reconnect()?;
        Ok(client)
    }

    fn reconnect(&mut self) -> std::io::Result<()> {
        let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        self.stream = Some(BufReader::new(stream));
        Ok(())
    }

    /// Whether the connection stays open for the next request (the last
    /// response did not say `Connection: close`).
    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// The connection, to write to by hand (after a whole response was read).
    pub fn into_stream(self) -> TcpStream {
        self.stream.expect("connected").into_inner()
    }

    /// `GET path`: the status.
    pub fn get(&mut self, path: &str) -> std::io::Result<u16> {
        if self.stream.is_none() {
            self.reconnect()?;
        }
        let reader = self.stream.as_mut().unwrap();
        write!(
            reader.get_mut(),
            "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"
        )?;
        let (mut status, mut length, mut close) = (0, 0usize, false);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed mid-response",
                ));
            }
            let lower = line.trim_end().to_ascii_lowercase();
            if lower.is_empty() {
                break;
            } else if lower.starts_with("http/1.1 ") {
                status = lower[9..12].parse().unwrap_or(0);
            } else if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse().unwrap_or(0);
            } else if lower == "connection: close" {
                close = true;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        if close {
            self.stream = None;
        }
        Ok(status)
    }
}

/// The resident memory of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// How many descriptors `pid` has open (0 once it is gone).
pub fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}
