//! Four processes answering on one port.
//!
//! ```text
//! cargo run --example hello
//! curl http://127.0.0.1:8080/            # hello from node 2 (pid 41236)
//! curl http://127.0.0.1:8080/slow?ms=3000  # answers after 3 s; Ctrl-C meanwhile: it still does
//! ```

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use multinode::http::Body;
use multinode::Nodes;

#[multinode::main(port = 8080, nodes = 4)]
async fn main(nodes: Nodes) -> Result<(), Box<dyn std::error::Error>> {
    if nodes.is_master() {
        tracing::info!("master is node {}", nodes.id());
    }
    let id = nodes.id();
    multinode::http::serve(nodes, service_fn(move |req| hello(id, req))).await?;
    Ok(())
}

async fn hello(id: usize, req: Request<Body>) -> Result<Response<Full<Bytes>>, Infallible> {
    let pid = std::process::id();
    let response = match req.uri().path() {
        "/" => Response::new(format!("hello from node {id} (pid {pid})\n")),
        "/slow" => {
            let ms = query_ms(req.uri().query()).unwrap_or(1000).min(60_000);
            tracing::info!(ms, "slow request started");
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(format!("slept {ms} ms on node {id} (pid {pid})\n"))
        }
        _ => {
            let mut response = Response::new("not found\n".to_owned());
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    };
    Ok(response.map(|body| Full::new(Bytes::from(body))))
}

/// The `ms` parameter of `/slow?ms=N`.
fn query_ms(query: Option<&str>) -> Option<u64> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))?
        .parse()
        .ok()
}
