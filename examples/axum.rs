//! The listener of every node handed to `axum::serve`, with graceful shutdown.
//!
//! ```text
//! cargo run --example axum
//! curl http://127.0.0.1:3000/    # hello from axum on node 1
//! ```

use axum::routing::get;
use axum::Router;
use multinode::Nodes;

// A listener handed to axum accepts on its own, so spread connections with one
// SO_REUSEPORT queue per node (the default, least_conn, needs multinode::http).
#[multinode::main(port = 3000, nodes = 2, balance = "reuse_port")]
async fn main(mut nodes: Nodes) -> std::io::Result<()> {
    let id = nodes.id();
    let app = Router::new().route(
        "/",
        get(move || async move { format!("hello from axum on node {id}\n") }),
    );
    let listener = nodes.take_listener().expect("every node serves");
    axum::serve(listener, app)
        .with_graceful_shutdown(nodes.shutdown())
        .await
}
