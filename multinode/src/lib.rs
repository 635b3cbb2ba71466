//! multinode: N processes serving one port, from one attribute on `main`.
//!
//! ```no_run
//! use std::convert::Infallible;
//! use http_body_util::Full;
//! use hyper::{body::Bytes, Request, Response};
//! use multinode::http::Body;
//!
//! async fn hello(_: Request<Body>) -> Result<Response<Full<Bytes>>, Infallible> {
//!     Ok(Response::new(Full::new(Bytes::from(format!("hello from pid {}\n", std::process::id())))))
//! }
//!
//! #[multinode::main(port = 8080, nodes = 4)]
//! async fn main(nodes: multinode::Nodes) -> std::io::Result<()> {
//!     if nodes.is_master() {
//!         println!("the master is node {}", nodes.id());
//!     }
//!     multinode::http::serve(nodes, hyper::service::service_fn(hello)).await
//! }
//! ```
//!
//! The process the user starts is the master, node 0: it binds the port, then
//! starts the workers by re-executing its own binary, hands each its listening
//! socket over a private control socket, restarts the ones that die, and stops them
//! all gracefully on SIGTERM or SIGINT. The body of `main` runs in every process;
//! [`Nodes`] tells it which one it is.
//!
//! The [`guide`] says how to configure, operate and deploy it: signals, reloads,
//! systemd, upgrades, metrics, and the mesh across machines.

#![warn(missing_docs)]

#[cfg(not(unix))]
compile_error!(
    "multinode runs on Unix only (Linux is what it is tested on): it passes sockets \
     between processes with SCM_RIGHTS"
);

mod activation;
mod admin;
mod balance;
#[cfg(feature = "cluster")]
mod cluster;
mod config;
mod control;
pub mod http;
mod init;
mod limits;
mod listener;
mod load;
pub mod map;
pub mod mesh;
pub mod metrics;
mod nodes;
mod notify;
mod readiness;
mod roles;
mod shm;
mod supervisor;
mod throttle;
#[cfg(feature = "tls")]
mod tls;
mod upgrade;
mod woken;

/// Turns `async fn main(nodes: Nodes)` into a multi-process server.
///
/// Every key is a [`Builder`] method of the same name, which documents it:
/// durations are written in seconds (`shutdown_timeout = 0.5`), enums as their
/// snake-case names (`flavor = "current_thread"`, `balance = "reuse_port"`). An
/// unknown key is a compile error that lists them all.
///
/// ```no_run
/// #[multinode::main(port = 8080, nodes = 4, shutdown_timeout = 10)]
/// async fn main(nodes: multinode::Nodes) {
///     nodes.shutdown().await;
/// }
/// ```
pub use attribute::main;
pub use config::{Balance, Builder, Flavor, Logging};
pub use load::Load;
pub use mesh::Peer;
pub use nodes::Nodes;
pub use roles::MainResult;

/// The guide: configuring, operating, deploying and spreading a multinode
/// server, a page each (the same pages as `multinode/docs/` in the repository).
pub mod guide {
    #[doc = include_str!("../docs/configuration.md")]
    pub mod configuration {}
    #[doc = include_str!("../docs/operating.md")]
    pub mod operating {}
    #[doc = include_str!("../docs/deploying.md")]
    pub mod deploying {}
    #[doc = include_str!("../docs/across-machines.md")]
    pub mod across_machines {}
    #[doc = include_str!("../docs/https.md")]
    pub mod https {}
    #[doc = include_str!("../docs/how-it-works.md")]
    pub mod how_it_works {}
}

/// What `#[multinode::main]` expands to uses, and the benchmarks' bare
/// clients; nothing else should.
#[doc(hidden)]
pub mod __private {
    pub use crate::config::ranges;
    pub use crate::mesh::fingerprint;
}

/// The attribute's version for this build: with the `multi-thread` feature, or
/// one that makes `flavor = "multi_thread"` a compile error saying how to turn it on.
mod attribute {
    #[cfg(feature = "multi-thread")]
    pub use multinode_macros::main;
    #[cfg(not(feature = "multi-thread"))]
    pub use multinode_macros::main_without_multi_thread as main;
}
