//! Serving HTTP on a node's listener: hyper-util's automatic HTTP/1.1 and HTTP/2
//! connection builder, with an idle timeout against slow clients and graceful drain.

use std::borrow::BorrowMut;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use std::time::Duration;

use hyper::body::Body as HttpBody;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio_util::task::TaskTracker;

use crate::nodes::Nodes;

mod body;
mod connection;
mod counted_io;
mod sending;
mod service;
mod watched;

pub use body::Body;
pub use service::{Hyper, IntoService, Tower};

use body::BoxError;
use connection::{drive, Counted, Limits, PerConnection};
use counted_io::CountedIo;

/// The default limit on how long an HTTP/1 connection may go without a request in
/// progress: a client sending its headers, or idle between requests.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The default limit on how long an HTTP/2 connection may go without a request
/// in progress (nginx's `keepalive_timeout` is 75 s).
const HTTP2_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default limit on waiting for more of a request's body (nginx's
/// `client_body_timeout` is 60 s).
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The default limit on a response that makes no progress (nginx's
/// `send_timeout` is 60 s).
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// The default limit on a request's headers, in bytes.
const MAX_HEADER_SIZE: usize = 64 * 1024;
/// The longest TLS handshake (axum-server's): a client that opens a
/// connection and never says hello, or stalls in the middle, is cut.
#[cfg(feature = "tls")]
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes the TLS handshake on `io` (at most [`HANDSHAKE_TIMEOUT`]), then
/// serves the connection as a plain one is. A connection whose handshake
/// fails is closed, logged at debug.
#[cfg(feature = "tls")]
async fn secure<S, B>(
    acceptor: tokio_rustls::TlsAcceptor,
    io: CountedIo,
    builder: auto::Builder<TokioExecutor>,
    (service, state, limits): (Counted<S>, Arc<PerConnection>, Limits),
) where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    // Finished even once the node stops: the client is starting a request,
    // which is then answered with `Connection: close`.
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io));
    let stream = match handshake.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return tracing::debug!("a TLS handshake failed: {error}"),
        Err(_) => {
            return tracing::debug!("a TLS handshake took over {HANDSHAKE_TIMEOUT:?}: closing it")
        }
    };
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    drive(connection, state, limits).await
}

/// Serves `service` on this node's listener until its shutdown fires, then stops
/// accepting and lets in-flight requests finish within `shutdown_timeout`: requests
/// that still arrive on open connections are answered with `Connection: close`,
/// and a connection is closed once it has been quiet for half a second, so that no
/// client loses a request to the stop. An upgraded connection (a WebSocket) counts
/// as open, in the load table and for the stop, until the code it was handed to
/// drops it.
///
/// HTTP/1.1 with keep-alive, and HTTP/2 by prior knowledge, on the same port; an
/// HTTP/1 client that takes longer than 30 s to send its headers, or leaves its
/// connection idle that long, is disconnected; a handler reading a request body
/// that stops arriving for 60 s gets an error (see [`Body`]). Takes
/// `Nodes` by value or as `&mut Nodes` (to keep using it afterwards). For other
/// settings, see [`Server`].
///
/// ```no_run
/// use std::convert::Infallible;
/// use http_body_util::Full;
/// use hyper::{body::Bytes, Request, Response};
/// use multinode::http::Body;
///
/// async fn hello(_: Request<Body>) -> Result<Response<Full<Bytes>>, Infallible> {
///     Ok(Response::new(Full::new(Bytes::from("hello\n"))))
/// }
///
/// #[multinode::main(port = 8080, nodes = 4)]
/// async fn main(nodes: multinode::Nodes) -> std::io::Result<()> {
///     multinode::http::serve(nodes, hyper::service::service_fn(hello)).await
/// }
/// ```
pub async fn serve<N, T, M, S, B>(nodes: N, service: T) -> io::Result<()>
where
    N: BorrowMut<Nodes>,
    T: IntoService<M, Service = S>,
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Server::new(service).serve(nodes).await
}

/// An HTTP server for a node, with settings; [`serve`] is `Server::new(service).serve(nodes)`.
///
/// ```no_run
/// # use std::convert::Infallible;
/// # use http_body_util::Full;
/// # use hyper::{body::Bytes, Request, Response};
/// # use multinode::http::Body;
/// # async fn hello(_: Request<Body>) -> Result<Response<Full<Bytes>>, Infallible> {
/// #     Ok(Response::new(Full::new(Bytes::from("hello\n"))))
/// # }
/// use std::time::Duration;
///
/// #[multinode::main]
/// async fn main(nodes: multinode::Nodes) -> std::io::Result<()> {
///     multinode::http::Server::new(hyper::service::service_fn(hello))
///         .header_read_timeout(Duration::from_secs(5))
///         .serve(nodes)
///         .await
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Server<S> {
    service: S,
    header_read_timeout: Duration,
    http2_idle_timeout: Duration,
    send_timeout: Duration,
    body_read_timeout: Duration,
    max_header_size: usize,
}

impl Server<()> {
    /// A server for `service` with the default settings.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// let server = multinode::http::Server::new(hyper::service::service_fn(
    ///     |_req: hyper::Request<multinode::http::Body>| async {
    ///         Ok::<_, Infallible>(hyper::Response::new(String::from("hi")))
    ///     },
    /// ));
    /// # let _ = server;
    /// ```
    pub fn new<T: IntoService<M>, M>(service: T) -> Server<T::Service> {
        Server {
            service: service.into_service(),
            header_read_timeout: HEADER_READ_TIMEOUT,
            http2_idle_timeout: HTTP2_IDLE_TIMEOUT,
            send_timeout: SEND_TIMEOUT,
            body_read_timeout: BODY_READ_TIMEOUT,
            max_header_size: MAX_HEADER_SIZE,
        }
    }
}

impl<S> Server<S> {
    /// How long an HTTP/1 client may take to send a request's headers (default 30 s)
    /// before it is disconnected, so that slow clients cannot hold connections.
    ///
    /// It is timed per connection, four times per period: a connection is closed
    /// once it has had no new request, and no request still being answered, for
    /// between this long and a quarter more. So a client slow to send its headers
    /// is cut, and so is a connection left idle between keep-alive requests (as
    /// nginx's `keepalive_timeout` and hyper's own header-read timeout do), but
    /// never a slow handler or a long response body. HTTP/2 connections have
    /// their own, [`http2_idle_timeout`](Self::http2_idle_timeout).
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # let service = hyper::service::service_fn(|_req: hyper::Request<multinode::http::Body>| async {
    /// #     Ok::<_, Infallible>(hyper::Response::new(String::from("hi")))
    /// # });
    /// let server = multinode::http::Server::new(service)
    ///     .header_read_timeout(std::time::Duration::from_secs(5));
    /// # let _ = server;
    /// ```
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How long an HTTP/2 connection may go without a request in progress before
    /// it is closed with a GOAWAY (default 60 s), so that idle clients cannot hold
    /// connections (and descriptors) for ever.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # let service = hyper::service::service_fn(|_req: hyper::Request<multinode::http::Body>| async {
    /// #     Ok::<_, Infallible>(hyper::Response::new(String::from("hi")))
    /// # });
    /// let server = multinode::http::Server::new(service)
    ///     .http2_idle_timeout(std::time::Duration::from_secs(120));
    /// # let _ = server;
    /// ```
    pub fn http2_idle_timeout(mut self, timeout: Duration) -> Self {
        self.http2_idle_timeout = timeout;
        self
    }

    /// How long a connection may owe its client a response that makes no
    /// progress (default 60 s, nginx's `send_timeout`): a client that stops
    /// reading, or an HTTP/2 client whose flow-control window stays closed, is
    /// disconnected then, and the connection counted as closed. During a stop
    /// it is cut at this limit or at the drain's deadline, whichever comes
    /// first. A response whose body waits for the program (a stream of events)
    /// is not the client's fault and does not count.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// let server = multinode::http::Server::new(hyper::service::service_fn(
    ///     |_req: hyper::Request<multinode::http::Body>| async {
    ///         Ok::<_, Infallible>(hyper::Response::new(String::from("hi")))
    ///     },
    /// ))
    /// .send_timeout(std::time::Duration::from_secs(30));
    /// # let _ = server;
    /// ```
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    /// How long a handler reading a request's body may wait for more of it
    /// (default 60 s, as nginx's `client_body_timeout`): past that, the read fails
    /// with [`std::io::ErrorKind::TimedOut`] (see [`Body`]), the handler answers as
    /// it sees fit (408 is usual), and the connection closes after the answer.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # let service = hyper::service::service_fn(|_req: hyper::Request<multinode::http::Body>| async {
    /// #     Ok::<_, Infallible>(hyper::Response::new(String::from("hi")))
    /// # });
    /// let server = multinode::http::Server::new(service)
    ///     .body_read_timeout(std::time::Duration::from_secs(10));
    /// # let _ = server;
    /// ```
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// The largest request head, in bytes (default 64 KiB): an HTTP/1 request
    /// whose head is larger is answered `431 Request Header Fields Too Large`
    /// (hyper's floor is 8 KiB), an HTTP/2 one is refused.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # let service = hyper::service::service_fn(|_req: hyper::Request<multinode::http::Body>| async {
    /// #     Ok::<_, Infallible>(hyper::Response::new(String::from("hi")))
    /// # });
    /// let server = multinode::http::Server::new(service).max_header_size(16 * 1024);
    /// # let _ = server;
    /// ```
    pub fn max_header_size(mut self, bytes: usize) -> Self {
        self.max_header_size = bytes;
        self
    }

    /// Serves until the node's shutdown fires, then drains (see [`serve`]). Fails
    /// at once if the node has no listener (taken already, or the master with
    /// `master_listen = false`), and with `TimedOut` when connections were still
    /// open at `shutdown_timeout` and had to be cut.
    ///
    /// ```no_run
    /// use std::convert::Infallible;
    /// use hyper::{Request, Response};
    /// use multinode::http::Body;
    ///
    /// async fn hi(_: Request<Body>) -> Result<Response<String>, Infallible> {
    ///     Ok(Response::new("hi\n".into()))
    /// }
    ///
    /// #[multinode::main]
    /// async fn main(mut nodes: multinode::Nodes) -> std::io::Result<()> {
    ///     let server = multinode::http::Server::new(hyper::service::service_fn(hi));
    ///     server.serve(&mut nodes).await?;
    ///     println!("node {} drained", nodes.id());
    ///     Ok(())
    /// }
    /// ```
    pub async fn serve<N, B>(self, mut nodes: N) -> io::Result<()>
    where
        N: BorrowMut<Nodes>,
        S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: HttpBody + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let nodes = nodes.borrow_mut();
        let acceptor = nodes.take_acceptor().ok_or_else(|| {
            io::Error::other(format!(
                "node {} has no listener: taken already, or master_listen = false",
                nodes.id()
            ))
        })??;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper's header-read timeout makes an extra read and dispatch per
        // request (bench/instructions.sh counts it); `drive` times the
        // connection instead, at a cost per connection.
        builder
            .http1()
            .header_read_timeout(None)
            .keep_alive(true)
            .max_buf_size(self.max_header_size.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.max_header_size).unwrap_or(u32::MAX));
        let shutdown = nodes.shutdown_token();
        #[cfg(feature = "tls")]
        let tls = nodes.tls().cloned();
        // The token, read per request, would take its lock three times: this
        // flag is set by whichever task sees the stop first.
        let stopping = Arc::new(AtomicBool::new(false));
        let connections = TaskTracker::new();
        let mut accept_errors = crate::throttle::Throttle::default();
        loop {
            tokio::select! {
                accepted = acceptor.accept() => match accepted {
                    Ok((stream, tally)) => {
                        let _ = stream.set_nodelay(true);
                        let tally = Arc::new(tally);
                        let sending = Arc::new(sending::Sending::default());
                        let token = connections.token();
                        let io = CountedIo::new(stream, sending.clone(), tally.clone(), token);
                        let state = Arc::new(PerConnection {
                            tally,
                            requests: AtomicU64::new(0),
                            in_progress: AtomicUsize::new(0),
                            http2: AtomicBool::new(false),
                            stopping: stopping.clone(),
                            sending,
                        });
                        let service = Counted {
                            inner: self.service.clone(),
                            connection: state.clone(),
                            body_read_timeout: self.body_read_timeout,
                        };
                        let limits = Limits {
                            stop: shutdown.clone(),
                            idle: self.header_read_timeout,
                            idle_http2: self.http2_idle_timeout,
                            send: self.send_timeout,
                        };
                        #[cfg(feature = "tls")]
                        if let Some(tls) = &tls {
                            let (acceptor, builder) = (tls.acceptor(), builder.clone());
                            let secured = secure(acceptor, io, builder, (service, state, limits));
                            connections.spawn(secured);
                            continue;
                        }
                        let connection = builder
                            .serve_connection_with_upgrades(TokioIo::new(io), service)
                            .into_owned();
                        connections.spawn(drive(connection, state, limits));
                    }
                    Err(error) => {
                        // EMFILE and the like: pause instead of spinning.
                        if let Some(held) = accept_errors.admit(std::time::Instant::now()) {
                            tracing::warn!(held_back = held, "accept failed: {error}");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = shutdown.cancelled() => break,
            }
        }
        stopping.store(true, Ordering::Release);
        drop(acceptor);
        connections.close();
        tracing::info!(connections = connections.len(), "draining");
        if tokio::time::timeout(nodes.shutdown_timeout(), connections.wait())
            .await
            .is_err()
        {
            let cut = connections.len();
            tracing::warn!(
                "{cut} connections still open after shutdown_timeout ({:?}); cutting them",
                nodes.shutdown_timeout()
            );
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{cut} connections were cut at shutdown_timeout"),
            ));
        }
        Ok(())
    }
}
