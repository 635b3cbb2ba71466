//! `send_timeout`: a client that takes nothing of what it is owed is
//! disconnected, and its connection counted as closed: an HTTP/1 client that
//! never reads, an HTTP/2 client whose flow-control window stays closed, and
//! either during a stop. The probe's limit is set to 1 s.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{get, poll, Program};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(20);

fn probe(env: &[(&str, &str)]) -> (Program, SocketAddr) {
    let mut all = vec![("MULTINODE_NODES", "1"), ("PROBE_SEND_TIMEOUT_MS", "1000")];
    all.extend_from_slice(env);
    let program = Program::start("probe", &all);
    let addr = program.ready();
    (program, addr)
}

/// Waits until the load table counts one open connection: the one asking.
fn only_the_asking_connection_is_open(addr: SocketAddr) {
    let mut last = String::new();
    let closed = poll(WAIT, || {
        last = get(addr, "/table").ok()?.1;
        (last.trim() == "open 0:1").then_some(())
    });
    assert!(closed.is_some(), "still counted: {last:?}");
}

/// A client that asks for 64 MiB and reads none of it.
fn asks_and_never_reads(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    stream
}

#[test]
fn an_http1_client_that_never_reads_is_disconnected() {
    let (_program, addr) = probe(&[]);
    let _stalled = asks_and_never_reads(addr);
    only_the_asking_connection_is_open(addr);
}

#[test]
fn a_slow_download_is_neither_idle_nor_stalled() {
    // The probe's idle limit is 500 ms; reading 64 MiB this way takes longer.
    let (_program, addr) = probe(&[]);
    let mut stream = asks_and_never_reads(addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut chunk = vec![0u8; 256 << 10];
    let mut read = 0usize;
    let started = std::time::Instant::now();
    loop {
        match std::io::Read::read(&mut stream, &mut chunk) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(error) => panic!("cut after {read} bytes: {error}"),
        }
        if read >= 64 << 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        read >= 64 << 20,
        "cut after {read} bytes, {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "slow enough to be cut as idle"
    );
}

#[test]
fn an_http2_client_whose_window_stays_closed_is_disconnected() {
    let (_program, addr) = probe(&[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ended = runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .initial_stream_window_size(0)
                .adaptive_window(false)
                .handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("HTTP/2 handshake");
        let connection = tokio::spawn(connection);
        let request = hyper::Request::get(format!("http://{addr}/"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        // The head comes (it is not flow-controlled); the body never can.
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
        drop(response);
        ended
    });
    assert!(ended.is_ok(), "the stalled HTTP/2 connection is still open");
    only_the_asking_connection_is_open(addr);
}

#[test]
fn a_stop_cuts_a_stalled_client_at_the_send_timeout_not_the_drain_deadline() {
    let (mut program, addr) = probe(&[("PROBE_SHUTDOWN_TIMEOUT_MS", "30000")]);
    let _stalled = asks_and_never_reads(addr);
    // The request is being answered once the table counts it.
    let counted = poll(WAIT, || {
        let (_, table) = get(addr, "/table").ok()?;
        (table.trim() == "open 0:2").then_some(())
    });
    assert!(counted.is_some());
    program.signal(Signal::SIGTERM);
    let status = program.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "drained, not cut: {status:?}");
}
