//! The floors under broadcast latency: bare receivers, threads or processes.

use crate::{now_ns, worst_of, BARE_RECEIVER};

/// The floor under broadcast latency on this machine: the same broadcasts over
/// bare socketpairs to 3 threads, or 3 processes (as the nodes are), sleeping in
/// a blocking `read` (no runtime, no framing, no encoding), each timing the
/// arrivals and reporting the latencies at the end.
///
/// The third floor is the one under any async receiver: 3 processes, each
/// reading with a current_thread tokio runtime (what a node's is) instead of
/// a blocking `read`.
pub struct Floor {
    ends: Vec<std::os::unix::net::UnixStream>,
    receivers: Vec<Box<dyn FnOnce() -> Vec<u64> + Send>>,
}

#[derive(Clone, Copy, PartialEq)]
pub enum Receivers {
    Threads,
    Processes,
    Runtimes,
}

impl Floor {
    pub fn start(kind: Receivers) -> Floor {
        use std::io::Read;
        let mut ends = Vec::new();
        let mut receivers: Vec<Box<dyn FnOnce() -> Vec<u64> + Send>> = Vec::new();
        for _ in 0..3 {
            let (here, there) = std::os::unix::net::UnixStream::pair().unwrap();
            if kind != Receivers::Threads {
                let runtime = kind == Receivers::Runtimes;
                let child = std::process::Command::new(std::env::current_exe().unwrap())
                    .env(BARE_RECEIVER, if runtime { "tokio" } else { "1" })
                    .stdin(std::os::fd::OwnedFd::from(there))
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                receivers.push(Box::new(move || {
                    let out = child.wait_with_output().unwrap();
                    let text = String::from_utf8(out.stdout).unwrap();
                    text.lines().map(|l| l.parse().unwrap()).collect()
                }));
            } else {
                let thread = std::thread::spawn(move || time_arrivals(there));
                receivers.push(Box::new(move || thread.join().unwrap()));
            }
            ends.push(here);
        }
        // The same start as the nodes': every receiver is up and waiting.
        for end in &mut ends {
            end.read_exact(&mut [0]).unwrap();
        }
        Floor { ends, receivers }
    }

    /// One broadcast: 8 bytes to each (a socket buffer's room is never short).
    pub fn ping(&mut self) {
        use std::io::Write;
        let sent = now_ns().to_le_bytes();
        for end in &mut self.ends {
            end.write_all(&sent).unwrap();
        }
    }

    /// Per broadcast, the latency of the last receiver to have it.
    pub fn finish(self) -> Vec<u64> {
        drop(self.ends);
        let reports: Vec<_> = self.receivers.into_iter().map(|r| r()).collect();
        worst_of(&reports)
    }
}

/// A bare receiver: says it is ready (one byte), reads the send times (8 bytes
/// each) until the end of the stream, and times their arrivals.
pub fn time_arrivals(mut socket: std::os::unix::net::UnixStream) -> Vec<u64> {
    use std::io::{Read, Write};
    socket.write_all(b"r").unwrap();
    let mut latencies = Vec::new();
    let mut sent = [0; 8];
    while socket.read_exact(&mut sent).is_ok() {
        latencies.push(now_ns() - u64::from_le_bytes(sent));
    }
    latencies
}

/// The same on a current_thread tokio runtime.
pub fn time_arrivals_in_a_runtime(socket: std::os::unix::net::UnixStream) -> Vec<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    socket.set_nonblocking(true).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut socket = tokio::net::UnixStream::from_std(socket).unwrap();
        socket.write_all(b"r").await.unwrap();
        let mut latencies = Vec::new();
        let mut sent = [0; 8];
        while socket.read_exact(&mut sent).await.is_ok() {
            latencies.push(now_ns() - u64::from_le_bytes(sent));
        }
        latencies
    })
}
