//! Serving: every node answers on the one port, HTTP/1.1 and HTTP/2, slow clients
//! are cut off, an axum Router is served as it is, and the body's children see no private
//! variable. Real processes on an ephemeral loopback port.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{get, pid_in, pids_answering, poll, KeepAlive, Program};

#[test]
fn four_processes_all_answer_on_one_port() {
    let program = Program::start("hello", &[("MULTINODE_NODES", "4")]);
    let addr = program.ready();
    let workers = program.workers();
    assert_eq!(
        workers.len(),
        3,
        "three workers beside the master: {workers:?}"
    );
    let mut expected = workers.clone();
    expected.insert(program.pid());
    let seen = pids_answering(addr, &expected);
    assert_eq!(seen, expected, "every node answers over fresh connections");
    let (status, body) = get(addr, "/").unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("hello from node "), "{body}");
    assert_eq!(get(addr, "/nowhere").unwrap().0, 404);
}

#[test]
fn the_shared_balance_mode_serves_from_every_node_too() {
    let program = Program::start("probe", &[("PROBE_BALANCE", "shared")]);
    let addr = program.ready();
    program.wait_for("balance=Shared", 1, Duration::from_secs(1));
    let mut expected = program.workers();
    assert_eq!(expected.len(), 1);
    expected.insert(program.pid());
    assert_eq!(pids_answering(addr, &expected), expected);
}

#[test]
fn http2_with_prior_knowledge() {
    let program = Program::start("hello", &[("MULTINODE_NODES", "2")]);
    let addr = program.ready();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body, version) = runtime.block_on(async {
        use http_body_util::{BodyExt, Empty};
        let (mut sender, _connection) = http2(addr).await;
        let request = hyper::Request::get(format!("http://{addr}/"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let (status, version) = (response.status(), response.version());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned(), version)
    });
    assert_eq!((status.as_u16(), version), (200, hyper::Version::HTTP_2));
    assert!(body.starts_with("hello from node "), "{body}");
}

/// An HTTP/2 connection by prior knowledge, on the current runtime: the sender
/// and the connection's task (which ends when the connection does).
async fn http2(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("HTTP/2 handshake");
    (sender, tokio::spawn(connection))
}

#[test]
fn a_client_slow_to_send_headers_is_disconnected() {
    let program = Program::start("probe", &[]);
    let addr = program.ready();
    assert_a_slow_head_is_cut(TcpStream::connect(addr).unwrap());
    // The node is still serving.
    assert_eq!(get(addr, "/").unwrap().0, 200);
}

#[test]
fn each_request_on_a_kept_alive_connection_gets_its_own_header_timeout() {
    // The probe's header-read timeout is 500 ms; each request's starts afresh.
    let program = Program::start("probe", &[]);
    let addr = program.ready();
    let mut client = KeepAlive::connect(addr).unwrap();
    let started = Instant::now();
    for _ in 0..6 {
        assert_eq!(client.get("/").expect("the connection is still open"), 200);
        // The client's think time, well under the timeout; together, over twice it.
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(started.elapsed() > Duration::from_millis(1000));
    // A slow head after those still gets cut off.
    assert_a_slow_head_is_cut(client.into_stream());
}

/// Sends a request head that never ends, and checks that the server closes the
/// connection, without an answer, well within 5 s (the probe's timeout: 500 ms).
fn assert_a_slow_head_is_cut(mut stream: TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n")
        .unwrap(); // never finished
    let started = Instant::now();
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("the server closes the connection instead of waiting forever");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "",
        "closed without an answer"
    );
}

#[test]
fn requests_in_progress_longer_than_the_header_timeout_are_not_cut() {
    // The probe's header-read timeout is 500 ms: a slow handler, and a response
    // body that takes that long, are requests in progress, not idle connections.
    let program = Program::start("probe", &[]);
    let addr = program.ready();
    let (status, body) = get(addr, "/slow?ms=1500").unwrap();
    assert_eq!(
        (status, body.starts_with("slept on node")),
        (200, true),
        "{body}"
    );
    let (status, body) = get(addr, "/stream?ms=1500").unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("started") && body.contains("ended on node"),
        "{body}"
    );
}

#[test]
fn an_axum_router_is_served_spread_and_counted() {
    let program = Program::start("axum", &[]);
    let addr = program.ready();
    let (mut answered, mut requests) = (BTreeSet::new(), 0);
    let spread = poll(Duration::from_secs(10), || {
        let (status, body) = get(addr, "/").unwrap();
        requests += 1;
        assert_eq!(status, 200);
        assert!(body.starts_with("hello from axum on node "), "{body}");
        answered.insert(body.trim().rsplit(' ').next().unwrap().to_owned());
        (answered.len() == 2).then_some(())
    });
    assert!(spread.is_some(), "only node {answered:?} answered");
    let (_, metrics) = get(addr, "/metrics").unwrap();
    let counted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("multinode_node_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(
        counted >= requests,
        "{requests} requests, {counted} counted:\n{metrics}"
    );
}

#[test]
fn child_processes_never_see_the_private_variables() {
    let program = Program::start("probe", &[]);
    let addr = program.ready();
    let master = program.pid();
    // Ask until a worker (not the master) answers; then look at its child's env.
    let mut checked = BTreeSet::new();
    for _ in 0..200 {
        let (_, whoami) = get(addr, "/").unwrap();
        let (status, env) = get(addr, "/child-env").unwrap();
        assert_eq!(status, 200);
        assert!(
            env.contains("MULTINODE_TEST_MARKER="),
            "a child's environment: {env}"
        );
        assert!(!env.contains("MULTINODE_WORKER"), "{env}");
        assert!(!env.contains("MULTINODE_CONTROL_FD"), "{env}");
        checked.insert(pid_in(&whoami));
        if checked.iter().any(|pid| *pid != master) && checked.contains(&master) {
            return;
        }
    }
    panic!("never reached both the master and a worker: {checked:?}");
}

#[test]
fn an_idle_http2_connection_is_closed_with_a_goaway() {
    let program = Program::start("probe", &[]);
    let addr = program.ready();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let closed = runtime.block_on(async {
        use http_body_util::{BodyExt, Empty};
        let (mut sender, connection) = http2(addr).await;
        let request = hyper::Request::get(format!("http://{addr}/"))
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
        // The probe's HTTP/2 idle timeout is 1 s.
        tokio::time::timeout(Duration::from_secs(10), connection).await
    });
    assert!(closed.is_ok(), "the idle HTTP/2 connection is still open");
}

#[test]
fn an_oversized_request_head_is_refused_and_the_node_serves_on() {
    let program = Program::start("probe", &[("MULTINODE_NODES", "1")]);
    let addr = program.ready();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let big = "a".repeat(100 * 1024);
    let head = format!("GET / HTTP/1.1\r\nHost: test\r\nX-Big: {big}\r\n\r\n");
    let _ = stream.write_all(head.as_bytes()); // it may be cut before the end
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(
        response.starts_with("HTTP/1.1 431"),
        "{:?}",
        &response[..response.len().min(80)]
    );
    assert_eq!(get(addr, "/").unwrap().0, 200);
}

#[test]
fn an_upgraded_connection_is_counted_and_drained_at_stop() {
    let mut program = Program::start(
        "probe",
        &[
            ("MULTINODE_NODES", "1"),
            ("PROBE_SHUTDOWN_TIMEOUT_MS", "1500"),
        ],
    );
    let addr = program.ready();
    let mut upgraded = TcpStream::connect(addr).unwrap();
    upgraded
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        upgraded,
        "GET /upgrade HTTP/1.1\r\nHost: test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        upgraded.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let echoes = |stream: &mut TcpStream, text: &[u8]| {
        stream.write_all(text).is_ok() && {
            let mut got = vec![0u8; text.len()];
            stream.read_exact(&mut got).is_ok() && got == text
        }
    };
    assert!(echoes(&mut upgraded, b"ping"));
    // Counted: the table has it, and the request asking.
    let (_, table) = get(addr, "/table").unwrap();
    assert_eq!(table.trim(), "open 0:2", "{table}");
    // Drained: the stop waits for it, then cuts it and says so.
    program.signal(nix::sys::signal::Signal::SIGTERM);
    program.wait_for("draining", 1, Duration::from_secs(10));
    assert!(
        echoes(&mut upgraded, b"still here"),
        "the stop waits for it"
    );
    let status = program.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "it had to be cut");
    program.wait_for("cutting them", 1, Duration::from_secs(1));
}

#[test]
fn a_request_body_that_stops_arriving_is_timed_out() {
    // The probe's body-read timeout is 500 ms.
    let program = Program::start("probe", &[("MULTINODE_NODES", "2")]);
    let addr = program.ready();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n0123456789")
        .unwrap(); // 90 bytes never come
    let started = Instant::now();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("the server answers and closes instead of waiting forever");
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
    // A body that arrives, slowly but within the limit between reads, is read.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head =
        "POST /echo HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: 6\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    for part in ["ab", "cd", "ef"] {
        std::thread::sleep(Duration::from_millis(300));
        stream.write_all(part.as_bytes()).unwrap();
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200") && response.ends_with("abcdef"),
        "{response:?}"
    );
    assert_eq!(get(addr, "/").unwrap().0, 200);
}
