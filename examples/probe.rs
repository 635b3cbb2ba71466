//! A fixture for the integration tests in `tests/`: `hello`'s shape with the knobs
//! the tests turn. Not an example to copy; see `hello.rs` and `axum.rs`.
//!
//! - `GET /` answers `node {id} pid {pid} generation {generation}`;
//! - `GET /child-env` answers the environment a child process of the body sees;
//! - headers must arrive within 500 ms;
//! - `PROBE_FAIL_IN_MASTER=1` makes the master's body return an error at once;
//! - `PROBE_FAIL_REPLACEMENTS=1` makes every incarnation after the first of a
//!   worker fail at once, before it is ready (a deploy that cannot boot);
//! - `PROBE_BALANCE=shared` or `reuse_port` selects that `Balance` (default
//!   `least_conn`); `MULTINODE_BALANCE` would override the code the same way.
//!
//! It uses `multinode::Builder` directly, which is what the attribute expands to.

use std::convert::Infallible;
use std::time::Duration;

use multinode::http::Server;
use multinode::{Balance, Nodes};

fn main() {
    let balance = match std::env::var("PROBE_BALANCE").as_deref() {
        Ok("shared") => Balance::Shared,
        Ok("reuse_port") => Balance::ReusePort,
        _ => Balance::LeastConn,
    };
    multinode::Builder::new()
        .port(0)
        .nodes(2)
        .shutdown_timeout(Duration::from_secs(5))
        .balance(balance)
        .run(body)
}

async fn body(nodes: Nodes) -> Result<(), String> {
    if nodes.is_master() && std::env::var_os("PROBE_FAIL_IN_MASTER").is_some() {
        return Err("failure requested by PROBE_FAIL_IN_MASTER".into());
    }
    if nodes.generation() > 1 && std::env::var_os("PROBE_FAIL_REPLACEMENTS").is_some() {
        return Err("replacement failure requested by PROBE_FAIL_REPLACEMENTS".into());
    }
    let (id, generation) = (nodes.id(), nodes.generation());
    let service = hyper::service::service_fn(
        move |req: hyper::Request<hyper::body::Incoming>| async move {
            let body = match req.uri().path() {
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
            Ok::<_, Infallible>(hyper::Response::new(body))
        },
    );
    Server::new(service)
        .header_read_timeout(Duration::from_millis(500))
        .serve(nodes)
        .await
        .map_err(|e| e.to_string())
}
