//! A fixture for the integration tests in `tests/`: `hello`'s shape with the knobs
//! the tests turn. Not an example to copy; see `hello.rs` and `axum.rs`.
//!
//! - `GET /` answers `node {id} pid {pid} generation {generation}`;
//! - `GET /child-env` answers the environment a child process of the body sees;
//! - `GET /orphan` starts a shell that leaves a `sleep 0.3` orphaned;
//! - `GET /count` adds one to the node's counter `probe_orders_total`
//!   (answering `node {id} counted`); `GET /metrics` answers the whole
//!   server's metrics (`Load::metrics`); `GET /nodes` answers
//!   `node {id} of {count}` (`Load::nodes`, what `Nodes::count` says);
//! - `PROBE_JSON_LOGS=1`: the program's own subscriber, JSON lines;
//! - headers must arrive within 500 ms, and a request body may pause 500 ms at
//!   most; an HTTP/2 connection is closed after 1 s
//!   without a request;
//! - `PROBE_FAIL_IN_MASTER=1` makes the master's body return an error at once;
//! - `PROBE_FAIL_REPLACEMENTS=1` makes every incarnation after the first of a
//!   worker fail at once, before it is ready (a deploy that cannot boot);
//! - `PROBE_BALANCE=shared` or `reuse_port` selects that `Balance` (default
//!   `least_conn`); `MULTINODE_BALANCE` would override the code the same way;
//! - `PROBE_FAIL_WORKERS=1` makes every worker's body fail at once (a crash loop);
//! - `PROBE_IGNORE_SHUTDOWN=1` makes every node's body go on after serving, as a
//!   body that ignores its shutdown would;
//! - `PROBE_BOOT_FAILURES`, `PROBE_TIMEOUT_MS`, `PROBE_SHUTDOWN_TIMEOUT_MS` and
//!   `PROBE_MASTER_LISTEN=0` set `boot_failures`, `watchdog_timeout`, `shutdown_timeout`
//!   (default 5 s) and `master_listen = false`;
//! - `PROBE_NO_LISTENER=1`: every node takes the message layer and no listener,
//!   logs `mesh-only node {id} generation {g} up`, and waits for its shutdown (the
//!   README's "Talking between processes");
//! - `PROBE_SLOW_REPLACEMENT_MS=n`: a replacement (generation > 1) blocks its
//!   runtime that long before anything else (a slow boot);
//! - `PROBE_SEND_TIMEOUT_MS=n` sets `send_timeout` (default 60 s); `GET /big`
//!   answers 64 MiB;
//! - `PROBE_SLOW_BOOT_IF=path` with `PROBE_SLOW_BOOT_MS=n`: while the file
//!   `path` exists, every node that starts blocks its runtime n ms first (a tree
//!   that boots slowly, say the new one of an upgrade);
//! - `GET /table` answers the open connections of every node, as the load table
//!   has them: `open 0:1 1:0 …`;
//! - `GET /upgrade` (with `Upgrade: echo`) switches protocols and echoes what
//!   it reads on the upgraded connection, logging `upgraded connection open`;
//! - `GET /slow?ms=N` answers after N ms; `GET /block?ms=N` blocks the node's
//!   runtime for N ms (a handler stuck in a blocking loop); `GET /stream?ms=N`
//!   sends the first line of its body at once and the last after N ms;
//! - `POST /echo` answers the request's body, or 408 when reading it failed;
//! - `GET /leak?kb=N` leaks N KiB for good, written to (a leaky handler).
//!
//! It uses `multinode::Builder` directly, which is what the attribute expands to.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;

use multinode::http::Server;
use multinode::{Balance, Nodes};

fn main() {
    let balance = match std::env::var("PROBE_BALANCE").as_deref() {
        Ok("shared") => Balance::Shared,
        Ok("reuse_port") => Balance::ReusePort,
        _ => Balance::LeastConn,
    };
    let number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let mut builder = multinode::Builder::new()
        .port(0)
        .nodes(2)
        .shutdown_timeout(Duration::from_millis(
            number("PROBE_SHUTDOWN_TIMEOUT_MS").unwrap_or(5000),
        ))
        .balance(balance)
        .master_listen(number("PROBE_MASTER_LISTEN") != Some(0));
    if let Some(failures) = number("PROBE_BOOT_FAILURES") {
        builder = builder.boot_failures(failures as u32);
    }
    if let Some(ms) = number("PROBE_TIMEOUT_MS") {
        builder = builder.watchdog_timeout(Duration::from_millis(ms));
    }
    if std::env::var_os("PROBE_JSON_LOGS").is_some() {
        builder = builder.logging(multinode::Logging::Own(json_logs));
    }
    builder.run(body)
}

/// The program's own subscriber: JSON lines on stderr, with each event's spans.
fn json_logs() {
    tracing_subscriber::fmt()
        .json()
        .with_span_list(true)
        .with_current_span(true)
        .with_writer(std::io::stderr)
        .init();
}

/// The `ms` parameter of `?ms=N`.
fn query_ms(req: &hyper::Request<multinode::http::Body>) -> u64 {
    req.uri()
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(1000)
}

async fn body(nodes: Nodes) -> Result<(), String> {
    if nodes.is_master() && std::env::var_os("PROBE_FAIL_IN_MASTER").is_some() {
        return Err("failure requested by PROBE_FAIL_IN_MASTER".into());
    }
    if nodes.generation() > 1 && std::env::var_os("PROBE_FAIL_REPLACEMENTS").is_some() {
        return Err("replacement failure requested by PROBE_FAIL_REPLACEMENTS".into());
    }
    if !nodes.is_master() && std::env::var_os("PROBE_FAIL_WORKERS").is_some() {
        // Blocking, so that the runtime reads nothing meanwhile: the worker exits
        // with control messages it never read (its mesh streams), as a crash does,
        // which resets its control socket.
        std::thread::sleep(std::time::Duration::from_millis(50));
        return Err(format!(
            "node {} cannot start: PROBE_FAIL_WORKERS",
            nodes.id()
        ));
    }
    if let Some(ms) = std::env::var("PROBE_SLOW_REPLACEMENT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        if nodes.generation() > 1 {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
    if let (Some(path), Some(ms)) = (
        std::env::var_os("PROBE_SLOW_BOOT_IF"),
        std::env::var("PROBE_SLOW_BOOT_MS")
            .ok()
            .and_then(|v| v.parse().ok()),
    ) {
        if std::path::Path::new(&path).exists() {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
    let ignore_shutdown = std::env::var_os("PROBE_IGNORE_SHUTDOWN").is_some();
    if std::env::var_os("PROBE_NO_LISTENER").is_some() {
        return mesh_only(nodes).await;
    }
    if nodes.is_master() && std::env::var("PROBE_MASTER_LISTEN").as_deref() == Ok("0") {
        nodes.shutdown().await; // it supervises only
        return Ok(());
    }
    let (id, generation) = (nodes.id(), nodes.generation());
    let load = nodes.load();
    let orders = nodes
        .counter("probe_orders_total")
        .map_err(|e| e.to_string())?;
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<multinode::http::Body>| {
            let (load, orders) = (load.clone(), orders.clone());
            async move {
                if req.uri().path() == "/upgrade" {
                    tokio::spawn(echo(hyper::upgrade::on(&mut req)));
                    let response = hyper::Response::builder()
                        .status(hyper::StatusCode::SWITCHING_PROTOCOLS)
                        .header(hyper::header::CONNECTION, "upgrade")
                        .header(hyper::header::UPGRADE, "echo")
                        .body(Full::new(Bytes::new()).boxed())
                        .unwrap();
                    return Ok(response);
                }
                if req.uri().path() == "/echo" {
                    // A body that stops arriving ends in an error (a time limit).
                    let (status, text) = match req.into_body().collect().await {
                        Ok(body) => (hyper::StatusCode::OK, body.to_bytes()),
                        Err(error) => {
                            tracing::info!("request body failed: {error}");
                            (hyper::StatusCode::REQUEST_TIMEOUT, Bytes::new())
                        }
                    };
                    let mut response = hyper::Response::new(Full::new(text).boxed());
                    *response.status_mut() = status;
                    return Ok(response);
                }
                let body = match req.uri().path() {
                    "/table" => load
                        .open_connections()
                        .iter()
                        .fold("open".to_owned(), |line, (id, open)| {
                            format!("{line} {id}:{open}")
                        }),
                    "/stream" => {
                        let ms = Duration::from_millis(query_ms(&req));
                        let lines = futures_util::stream::unfold(0, move |line| async move {
                            let text = match line {
                                0 => "started\n".to_owned(),
                                1 => {
                                    tokio::time::sleep(ms).await;
                                    format!("ended on node {id}\n")
                                }
                                _ => return None,
                            };
                            Some((
                                Ok::<_, Infallible>(Frame::data(Bytes::from(text))),
                                line + 1,
                            ))
                        });
                        return Ok(hyper::Response::new(StreamBody::new(lines).boxed()));
                    }
                    "/slow" => {
                        tracing::info!("slow request started");
                        tokio::time::sleep(Duration::from_millis(query_ms(&req))).await;
                        format!("slept on node {id}\n")
                    }
                    "/block" => {
                        tracing::info!("blocking the runtime");
                        std::thread::sleep(Duration::from_millis(query_ms(&req)));
                        format!("blocked node {id}\n")
                    }
                    "/metrics" => load.metrics(),
                    "/leak" => {
                        let kb = req
                            .uri()
                            .query()
                            .and_then(|q| q.strip_prefix("kb="))
                            .and_then(|n| n.parse::<usize>().ok())
                            .unwrap_or(64);
                        Vec::leak(vec![1u8; kb << 10]);
                        format!("node {id} leaked {kb} KiB\n")
                    }
                    "/nodes" => format!("node {id} of {}\n", load.nodes()),
                    // More than a client's and the kernel's buffers hold.
                    "/big" => "x".repeat(64 << 20),
                    "/count" => {
                        orders.inc();
                        format!("node {id} counted\n")
                    }
                    "/orphan" => {
                        // The shell exits at once; its `sleep` lives on, orphaned.
                        let shell = tokio::process::Command::new("sh")
                            .args(["-c", "sleep 0.3 & exit 0"])
                            .status()
                            .await;
                        format!("orphaned a sleep: {shell:?}\n")
                    }
                    "/child-env" => {
                        let output = tokio::process::Command::new("env").output().await;
                        output.map_or_else(
                            |e| e.to_string(),
                            |o| String::from_utf8_lossy(&o.stdout).into_owned(),
                        )
                    }
                    _ => format!(
                        "node {id} pid {} generation {generation}\n",
                        std::process::id()
                    ),
                };
                Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body)).boxed()))
            }
        });
    let send_timeout = std::env::var("PROBE_SEND_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(60), Duration::from_millis);
    let served = Server::new(service)
        .header_read_timeout(Duration::from_millis(500))
        .http2_idle_timeout(Duration::from_secs(1))
        .body_read_timeout(Duration::from_millis(500))
        .send_timeout(send_timeout)
        .serve(nodes)
        .await
        .map_err(|e| e.to_string());
    if ignore_shutdown {
        tracing::info!("ignoring the shutdown");
        std::future::pending::<()>().await;
    }
    served
}

/// A body that talks to the other nodes and serves no HTTP.
async fn mesh_only(mut nodes: Nodes) -> Result<(), String> {
    let (id, generation) = (nodes.id(), nodes.generation());
    let (tx, mut rx) = nodes.take_messages::<String>().expect("taken once");
    tracing::info!("mesh-only node {id} generation {generation} up");
    let _ = tx
        .broadcast(&format!("node {id} generation {generation} up"))
        .await;
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    nodes.shutdown().await;
    Ok(())
}

/// Echoes what an upgraded connection sends, until it ends.
async fn echo(upgrade: hyper::upgrade::OnUpgrade) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(upgraded) = upgrade.await else { return };
    let mut io = hyper_util::rt::TokioIo::new(upgraded);
    tracing::info!("upgraded connection open");
    let mut buf = [0u8; 1024];
    while let Ok(n @ 1..) = io.read(&mut buf).await {
        if io.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}
