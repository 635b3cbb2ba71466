//! The limit of this stack, for the benchmark: hyper on one current_thread tokio
//! runtime, one process, the same handler (copied from `examples/hello.rs`, as
//! node 0) and so the same response bytes as `hello`.
//! `PORT=0 cargo run --release --example bare_hyper`
//!
//! With `THREADS=N`: thread per core, N threads in one process, each with its
//! own current_thread runtime and `SO_REUSEPORT` listener (TechEmpower's hyper
//! setup): what processes are measured against in `bench/run.sh`.
//!
//! With the `tls` feature and `TLS_CERT`, `TLS_KEY` (PEM files): HTTPS through
//! tokio-rustls with ring and rustls's own per-process ticketer, ALPN `h2` and
//! `http/1.1`, as a Rust server would do it by hand (`bench/tls.sh`).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1)
        .max(1);
    // THREADS=N: thread per core, as TechEmpower's hyper entry runs, one
    // current_thread runtime per thread, each with its own SO_REUSEPORT
    // listener on the port, in one process.
    let first = listener(port, threads > 1)?;
    eprintln!("listening on http://{}", first.local_addr()?);
    let port = first.local_addr()?.port();
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(listener(port, true)?);
    }
    // The first on this thread: one thread in all unless THREADS says more
    // (a second thread alone makes glibc's malloc take its slower paths).
    let first = listeners.remove(0);
    for (id, listener) in listeners.into_iter().enumerate() {
        std::thread::spawn(move || serve(id + 1, listener));
    }
    serve(0, first)
}

/// A listening socket on 127.0.0.1:`port`, in the `SO_REUSEPORT` group if `shared`.
fn listener(port: u16, shared: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(shared)?;
    socket.set_nonblocking(true)?;
    socket.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Serves `listener` on a current_thread runtime of this thread's own.
fn serve(id: usize, listener: std::net::TcpListener) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let builder = auto::Builder::new(TokioExecutor::new());
        #[cfg(feature = "tls")]
        let tls = tls::acceptor();
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let builder = builder.clone();
            #[cfg(feature = "tls")]
            if let Some(acceptor) = tls.clone() {
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |req| hello(id, req));
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                continue;
            }
            tokio::spawn(async move {
                let service = service_fn(move |req| hello(id, req));
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

// The handler of `examples/hello.rs`, unchanged.

async fn hello(id: usize, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
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

#[cfg(feature = "tls")]
mod tls {
    use std::sync::Arc;

    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{self, ServerConfig};

    /// The acceptor for `TLS_CERT` and `TLS_KEY`, if set.
    pub fn acceptor() -> Option<tokio_rustls::TlsAcceptor> {
        let cert = std::env::var("TLS_CERT").ok()?;
        let key = std::env::var("TLS_KEY").ok()?;
        let chain = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}
