//! An axum `Router` served by `multinode::http::serve`, as it is: the
//! connections spread by `least_conn`, counted in `/metrics`, bounded by the
//! server's client limits, and drained gracefully on a stop.
//!
//! ```text
//! cargo run --example axum
//! curl http://127.0.0.1:3000/          # hello from axum on node 1
//! curl http://127.0.0.1:3000/metrics   # every node's figures
//! ```

use axum::routing::get;
use axum::Router;
use multinode::Nodes;

#[multinode::main(port = 3000, nodes = 2)]
async fn main(nodes: Nodes) -> std::io::Result<()> {
    let (id, load) = (nodes.id(), nodes.load());
    let app = Router::new()
        .route(
            "/",
            get(move || async move { format!("hello from axum on node {id}\n") }),
        )
        .route("/metrics", get(move || async move { load.metrics() }));
    multinode::http::serve(nodes, app).await
}
