//! HTTPS from outside (the `tls` feature): `probe` with 4 nodes and a
//! certificate the test makes with `openssl`, against `curl`, `h2load` and
//! `openssl s_client`: every node answers over HTTP/1.1 and HTTP/2, sessions
//! resume on every node, bad clients cost one connection, certificates change
//! with a reload, and bad ones are refused.

#![cfg(feature = "tls")]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{certs, poll, Program};
use nix::sys::signal::Signal;

const WAIT: Duration = Duration::from_secs(20);

/// `probe` with 4 nodes serving HTTPS with `dir`'s `cert.pem` and `key.pem`.
fn https(dir: &Path, more: &[(&str, &str)]) -> Program {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut env = vec![
        ("MULTINODE_NODES", "4"),
        ("MULTINODE_TLS_CERT", cert.to_str().unwrap()),
        ("MULTINODE_TLS_KEY", key.to_str().unwrap()),
    ];
    env.extend_from_slice(more);
    Program::start("probe", &env)
}

/// `curl` to `path` over TLS, trusting `dir`'s CA: the body and the HTTP
/// version, or why not.
fn curl(dir: &Path, addr: SocketAddr, path: &str, http: &str) -> Result<(String, String), String> {
    let port = addr.port();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", http, "--cacert"])
        .arg(dir.join("ca.pem"))
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_version}"])
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .expect("curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)));
    }
    let (body, version) = text.rsplit_once('\n').unwrap_or((&text, ""));
    Ok((body.to_owned(), version.to_owned()))
}

/// `openssl s_client` to `addr` as `localhost`, trusting `dir`'s CA.
fn s_client_to(dir: &Path, addr: SocketAddr) -> Command {
    let mut command = Command::new("openssl");
    command
        .args(["s_client", "-connect", &addr.to_string()])
        .args(["-servername", "localhost", "-CAfile"])
        .arg(dir.join("ca.pem"));
    command
}

/// One request through `openssl s_client` (`-sess_out` or `-sess_in FILE`):
/// whether the session was resumed, and what the node answered.
fn s_client(dir: &Path, addr: SocketAddr, session: (&str, &Path)) -> (bool, String) {
    let mut child = s_client_to(dir, addr)
        .arg(session.0)
        .arg(session.1)
        .arg("-ign_eof")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl");
    let request = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let reused = out.lines().any(|l| l.starts_with("Reused,"));
    let body = out
        .lines()
        .find(|l| l.starts_with("node "))
        .unwrap_or("")
        .to_owned();
    (reused, body)
}

/// The pid in a `probe` answer (`node 2 pid 4242 generation 1`).
fn pid(body: &str) -> u32 {
    common::pid_in(body)
}

#[test]
fn every_node_answers_over_http1_and_http2_and_h2load_has_no_failure() {
    let dir = certs::folder("tls-every");
    certs::site(&dir, "one");
    let program = https(&dir, &[]);
    let addr = program.ready();
    program.wait_for("listening on https://", 1, WAIT);
    for http in ["--http1.1", "--http2"] {
        let mut pids = BTreeSet::new();
        let every = poll(WAIT, || {
            let (body, version) = curl(&dir, addr, "/", http).unwrap();
            assert_eq!(
                version,
                if http == "--http2" { "2" } else { "1.1" },
                "{http}"
            );
            pids.insert(pid(&body));
            (pids.len() == 4).then_some(())
        });
        assert!(every.is_some(), "{http}: {pids:?} of 4 answered");
    }
    let out = Command::new("h2load")
        .args(["-n", "4000", "-c", "8", "-m", "4"])
        .arg(format!("https://127.0.0.1:{}/", addr.port()))
        .output()
        .expect("h2load (apt-get install nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("4000 succeeded, 0 failed, 0 errored, 0 timeout"),
        "{text}"
    );
    assert_eq!(program.count("panicked"), 0);
}

/// `tries` resumptions (each a new connection) of the session a first
/// connection got: for each, whether it was resumed and whether it reached the
/// node that issued the session's ticket.
fn resumptions(dir: &Path, addr: SocketAddr, tries: usize) -> Vec<(bool, bool)> {
    let session = dir.join("session.pem");
    let (reused, first) = s_client(dir, addr, ("-sess_out", &session));
    assert!(!reused, "the first handshake is a full one");
    let issuer = pid(&first);
    (0..tries)
        .map(|_| {
            let (reused, body) = s_client(dir, addr, ("-sess_in", &session));
            (reused, pid(&body) == issuer)
        })
        .collect()
}

#[test]
fn a_session_resumes_on_every_node_and_only_on_its_own_with_per_node_keys() {
    let dir = certs::folder("tls-resume");
    certs::site(&dir, "one");
    let shared = https(&dir, &[]);
    let addr = shared.ready();
    let tries = resumptions(&dir, addr, 16);
    let elsewhere = tries.iter().filter(|(_, issuer)| !issuer).count();
    let resumed = tries.iter().filter(|(reused, _)| *reused).count();
    eprintln!("shared keys: {resumed} of 16 resumed, {elsewhere} on another node");
    assert!(elsewhere > 0, "some connections reached other nodes");
    assert_eq!(resumed, 16, "every node resumes");
    drop(shared);
    let per_node = https(&dir, &[("MULTINODE_TLS_TICKETS", "node")]);
    let addr = per_node.ready();
    let tries = resumptions(&dir, addr, 16);
    let elsewhere = tries.iter().filter(|(_, issuer)| !issuer).count();
    let resumed = tries.iter().filter(|(reused, _)| *reused).count();
    eprintln!("per-node keys: {resumed} of 16 resumed, {elsewhere} on another node");
    assert!(elsewhere > 0, "some connections reached other nodes");
    for (reused, issuer) in tries {
        assert_eq!(reused, issuer, "only the issuing node resumes");
    }
}

#[test]
fn a_stalled_handshake_is_cut_after_its_limit_while_others_are_served() {
    let dir = certs::folder("tls-stall");
    certs::site(&dir, "one");
    let program = https(&dir, &[]);
    let addr = program.ready();
    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).unwrap();
    let mut half = TcpStream::connect(addr).unwrap();
    // The start of a ClientHello, and then nothing.
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    for _ in 0..8 {
        curl(&dir, addr, "/", "--http1.1").expect("others are served meanwhile");
    }
    for stream in [&mut silent, &mut half] {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut byte = [0u8; 1];
        let read = stream.read(&mut byte);
        assert!(matches!(read, Ok(0) | Err(_)), "closed: {read:?}");
    }
    let took = started.elapsed();
    eprintln!("the stalled handshakes were cut after {took:?}");
    assert!(
        took >= Duration::from_secs(9),
        "cut at the limit, not before: {took:?}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_eq!(program.count("panicked"), 0);
}

#[test]
fn plain_http_and_garbage_on_the_tls_port_close_that_connection_only() {
    let dir = certs::folder("tls-garbage");
    certs::site(&dir, "one");
    let program = https(&dir, &[]);
    let addr = program.ready();
    let hostile: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        &[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff],
        &[0x00; 64],
    ];
    for bytes in hostile {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let started = Instant::now();
        stream.write_all(bytes).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer); // a TLS alert at most, then EOF
        assert!(started.elapsed() < Duration::from_secs(5), "closed at once");
        assert!(!String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"));
    }
    // A client that goes away in the middle of its handshake.
    let mut vanishing = TcpStream::connect(addr).unwrap();
    vanishing
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .unwrap();
    drop(vanishing);
    let (body, _) = curl(&dir, addr, "/", "--http2").unwrap();
    assert!(body.starts_with("node "), "{body}");
    assert_eq!(program.count("panicked"), 0);
    let served = poll(WAIT, || {
        let (table, _) = curl(&dir, addr, "/table", "--http1.1").ok()?;
        // `open 0:1 1:0 …`: only this request's own connection is open.
        let open: u64 = table
            .split_whitespace()
            .filter_map(|pair| pair.split_once(':')?.1.parse::<u64>().ok())
            .sum();
        (open == 1).then_some(())
    });
    assert!(
        served.is_some(),
        "the load table counts the closed ones out"
    );
}

/// `s_client`'s view of the certificate served: its subject line.
fn served_subject(dir: &Path, addr: SocketAddr) -> String {
    let out = s_client_to(dir, addr)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    out.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn a_new_certificate_is_served_after_a_reload_under_load_with_no_failure() {
    let dir = certs::folder("tls-reload");
    certs::site(&dir, "one");
    let program = https(&dir, &[]);
    let addr = program.ready();
    assert!(served_subject(&dir, addr).contains("O = one"));
    let before = program.workers();
    // The load: new connections one after another, all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (dir, stop): (PathBuf, _) = (dir.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match curl(&dir, addr, "/", "--http1.1") {
                    Ok(_) => ok += 1,
                    Err(why) => failed.push(why),
                }
            }
            (ok, failed)
        })
    };
    certs::leaf(&dir, "two", "cert.pem", "key.pem");
    program.signal(Signal::SIGHUP);
    let replaced = poll(WAIT, || {
        let now = program.workers();
        (now.len() == 3 && now.is_disjoint(&before)).then_some(())
    });
    program.wait_for("all 4 nodes ready", 1, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    assert!(replaced.is_some(), "every worker was replaced");
    eprintln!("{ok} requests during the reload, {} failed", failed.len());
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 10, "{ok}");
    for _ in 0..8 {
        let subject = served_subject(&dir, addr);
        assert!(subject.contains("O = two"), "{subject}");
    }
}

#[test]
fn a_certificate_that_does_not_load_is_refused_at_start_and_at_reload() {
    let dir = certs::folder("tls-bad");
    certs::site(&dir, "one");
    certs::leaf(&dir, "other", "other.pem", "other.key");
    std::fs::write(dir.join("garbage.pem"), "not a certificate\n").unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    for (cert, key, says) in [
        (
            path("missing.pem"),
            path("key.pem"),
            format!("cannot read the certificate {}", path("missing.pem")),
        ),
        (
            path("garbage.pem"),
            path("key.pem"),
            format!(
                "the certificate {} holds no PEM certificate",
                path("garbage.pem")
            ),
        ),
        (
            path("cert.pem"),
            path("other.key"),
            format!(
                "the private key {} does not go with the certificate {}",
                path("other.key"),
                path("cert.pem")
            ),
        ),
    ] {
        let mut program = Program::start(
            "probe",
            &[
                ("MULTINODE_NODES", "2"),
                ("MULTINODE_TLS_CERT", &cert),
                ("MULTINODE_TLS_KEY", &key),
            ],
        );
        let status = program.wait_exit(WAIT);
        assert_eq!(status.code(), Some(2), "{:?}", program.log());
        program.wait_for(&says, 1, WAIT);
        program.assert_no_process_left();
    }
    let program = https(&dir, &[]);
    let addr = program.ready();
    let before = program.workers();
    std::fs::write(dir.join("cert.pem"), "not a certificate\n").unwrap();
    program.signal(Signal::SIGHUP);
    program.wait_for("SIGHUP: not reloading, the nodes serve on", 1, WAIT);
    program.wait_for("holds no PEM certificate", 1, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(program.workers(), before, "no node was replaced");
    let (body, _) = curl(&dir, addr, "/", "--http2").unwrap();
    assert!(body.starts_with("node "), "{body}");
}

#[test]
fn every_node_takes_the_rotated_ticket_keys() {
    let dir = certs::folder("tls-rotate");
    certs::site(&dir, "one");
    let program = https(&dir, &[("MULTINODE_TLS_ROTATE_SECS", "2")]);
    let addr = program.ready();
    // Two rotations later, a node's tickets open on every node only if every
    // node has the keys the master made since.
    std::thread::sleep(Duration::from_millis(4500));
    let tries = resumptions(&dir, addr, 12);
    let elsewhere = tries.iter().filter(|(_, issuer)| !issuer).count();
    let resumed = tries.iter().filter(|(reused, _)| *reused).count();
    eprintln!("after two rotations: {resumed} of 12 resumed, {elsewhere} on another node");
    assert!(elsewhere > 0, "some connections reached other nodes");
    assert_eq!(resumed, 12, "every node has the new keys");
}
