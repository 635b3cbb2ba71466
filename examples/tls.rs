//! Four processes answering HTTPS on one port, each resuming the TLS sessions
//! the others started (`cargo run --features tls --example tls`).
//!
//! A certificate for `localhost` to try it with, signed by a CA of your own:
//!
//! ```text
//! openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=example CA" \
//!     -keyout ca.key -out ca.pem
//! openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout key.pem -out req.csr
//! printf 'subjectAltName=DNS:localhost\n' > san.cnf
//! openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
//!     -extfile san.cnf -out cert.pem
//! cargo run --features tls --example tls
//! curl --cacert ca.pem https://localhost:8443/          # hello over TLS from node 1 …
//! curl --cacert ca.pem --http2 https://localhost:8443/  # … over HTTP/2
//! ```
//!
//! Replace `cert.pem` and `key.pem`, then `kill -HUP` the master: the nodes are
//! replaced one by one, each reading the new files, and no connection is
//! refused. `MULTINODE_TLS_CERT` and `MULTINODE_TLS_KEY` name other files.

use std::convert::Infallible;

use hyper::service::service_fn;
use hyper::{Request, Response};
use multinode::http::Body;
use multinode::Nodes;

#[multinode::main(port = 8443, nodes = 4, tls_cert = "cert.pem", tls_key = "key.pem")]
async fn main(nodes: Nodes) -> std::io::Result<()> {
    let id = nodes.id();
    multinode::http::serve(nodes, service_fn(move |req| hello(id, req))).await
}

async fn hello(id: usize, req: Request<Body>) -> Result<Response<String>, Infallible> {
    let pid = std::process::id();
    let version = req.version();
    Ok(Response::new(format!(
        "hello over TLS from node {id} (pid {pid}), {version:?}\n"
    )))
}
