//! Serving HTTP on a node's listener: hyper-util's automatic HTTP/1.1 and HTTP/2
//! connection builder, with an idle timeout against slow clients and graceful drain.

use std::borrow::BorrowMut;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::header::HeaderValue;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::balance::Tally;
use crate::Nodes;

mod watched;

/// The default limit on how long an HTTP/1 connection may go without a request in
/// progress: a client sending its headers, or idle between requests.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

type BoxError = Box<dyn StdError + Send + Sync>;

/// Serves `service` on this node's listener until its shutdown fires, then stops
/// accepting and lets in-flight requests finish within `shutdown_timeout`: requests
/// that still arrive on open connections are answered with `Connection: close`,
/// and a connection is closed once it has been quiet for half a second, so that no
/// client loses a request to the stop.
///
/// HTTP/1.1 with keep-alive, and HTTP/2 by prior knowledge, on the same port; an
/// HTTP/1 client that takes longer than 30 s to send its headers, or leaves its
/// connection idle that long, is disconnected. Takes
/// `Nodes` by value or as `&mut Nodes` (to keep using it afterwards). For other
/// settings, see [`Server`].
///
/// ```no_run
/// use std::convert::Infallible;
/// use http_body_util::Full;
/// use hyper::{body::{Bytes, Incoming}, Request, Response};
///
/// async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
///     Ok(Response::new(Full::new(Bytes::from("hello\n"))))
/// }
///
/// #[multinode::main(port = 8080, nodes = 4)]
/// async fn main(nodes: multinode::Nodes) -> std::io::Result<()> {
///     multinode::http::serve(nodes, hyper::service::service_fn(hello)).await
/// }
/// ```
pub async fn serve<N, S, B>(nodes: N, service: S) -> io::Result<()>
where
    N: BorrowMut<Nodes>,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
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
/// # use hyper::{body::{Bytes, Incoming}, Request, Response};
/// # async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
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
}

impl<S> Server<S> {
    /// A server for `service` with the default settings.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// let server = multinode::http::Server::new(hyper::service::service_fn(
    ///     |_req: hyper::Request<hyper::body::Incoming>| async {
    ///         Ok::<_, Infallible>(hyper::Response::new(String::from("hi")))
    ///     },
    /// ));
    /// # let _ = server;
    /// ```
    pub fn new(service: S) -> Self {
        Server {
            service,
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }

    /// How long an HTTP/1 client may take to send a request's headers (default 30 s)
    /// before it is disconnected, so that slow clients cannot hold connections.
    ///
    /// It is timed per connection, four times per period: a connection is closed
    /// once it has had no new request, and no request still being answered, for
    /// between this long and a quarter more. So a client slow to send its headers
    /// is cut, and so is a connection left idle between keep-alive requests (as
    /// nginx's `keepalive_timeout` and hyper's own header-read timeout do), but
    /// never a slow handler or a long response body. HTTP/2 connections are left
    /// to the client.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # let service = hyper::service::service_fn(|_req: hyper::Request<hyper::body::Incoming>| async {
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

    /// Serves until the node's shutdown fires, then drains (see [`serve`]). Fails
    /// at once if the node has no listener (taken already, or the master with
    /// `master_listen = false`), and with `TimedOut` when connections were still
    /// open at `shutdown_timeout` and had to be cut.
    ///
    /// ```no_run
    /// use std::convert::Infallible;
    /// use hyper::{body::Incoming, Request, Response};
    ///
    /// async fn hi(_: Request<Incoming>) -> Result<Response<String>, Infallible> {
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
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
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
        // request, about 1000 instructions (bench/instructions.sh); `drive` times
        // the connection instead, at a cost per connection.
        builder.http1().header_read_timeout(None).keep_alive(true);
        builder.http2().timer(TokioTimer::new());
        let shutdown = nodes.shutdown_token();
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
                        let state = Arc::new(PerConnection {
                            tally,
                            requests: AtomicU64::new(0),
                            in_progress: AtomicUsize::new(0),
                            http2: AtomicBool::new(false),
                            stopping: stopping.clone(),
                        });
                        let service = Counted {
                            inner: self.service.clone(),
                            connection: state.clone(),
                        };
                        let connection = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        let limits = Limits {
                            stop: shutdown.clone(),
                            idle: self.header_read_timeout,
                        };
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

/// How long, once the node stops, a connection may stay quiet before it is closed.
const QUIET_GRACE: Duration = Duration::from_millis(500);

/// What ends a connection early: the node's stop, and being idle this long.
struct Limits {
    stop: CancellationToken,
    idle: Duration,
}

/// Why a connection is cut short.
enum Interrupt {
    Stop,
    Idle,
}

/// Runs one connection to its end. An HTTP/1 connection with no request in
/// progress for `limits.idle` is closed (see [`Server::header_read_timeout`]).
/// When the node stops, lets the connection finish what it serves and closes it
/// without losing a request:
///
/// - requests that still arrive are answered, with `Connection: close`, so the
///   client reconnects (to a live node) instead of finding the connection gone;
/// - the connection is closed only once no request has started for
///   [`QUIET_GRACE`]. hyper would close an idle keep-alive connection at once, racing
///   the client's next request, and hyper-util's `GracefulShutdown` cancels a
///   connection whose first bytes it has not read yet: closing a socket with an
///   unread request resets it.
async fn drive<C>(connection: C, state: Arc<PerConnection>, limits: Limits)
where
    C: GracefulConnection,
    C::Error: Into<BoxError>,
{
    tokio::pin!(connection);
    let watcher = async {
        tokio::select! {
            biased;
            () = limits.stop.cancelled() => Interrupt::Stop,
            () = idle(&state, limits.idle) => Interrupt::Idle,
        }
    };
    let result = match watched::Watched::new(connection.as_mut(), watcher).await {
        Ok(result) => result,
        Err(Interrupt::Idle) => {
            tracing::debug!("closing a connection idle for {:?}", limits.idle);
            return;
        }
        Err(Interrupt::Stop) => loop {
            state.stopping.store(true, Ordering::Release);
            let served = state.requests.load(Ordering::Acquire);
            tokio::select! {
                result = &mut connection => break result,
                _ = tokio::time::sleep(QUIET_GRACE) => {}
            }
            if state.requests.load(Ordering::Acquire) == served {
                connection.as_mut().graceful_shutdown();
                break connection.await;
            }
        },
    };
    if let Err(error) = result {
        tracing::debug!("connection ended with an error: {}", error.into());
    }
}

/// Resolves once an HTTP/1 connection has had no request in progress for at least
/// `timeout`, checking four times per `timeout`: a wake-up per quarter of it,
/// instead of a timer moved at every request. Never for HTTP/2, whose clients keep
/// their connections open between requests by design.
async fn idle(state: &PerConnection, timeout: Duration) {
    const CHECKS: u32 = 4;
    let mut quiet = 0;
    let mut seen = state.requests.load(Ordering::Acquire);
    while quiet < CHECKS {
        tokio::time::sleep(timeout / CHECKS).await;
        if state.http2.load(Ordering::Relaxed) {
            return std::future::pending().await; // and no more wake-ups for it
        }
        let requests = state.requests.load(Ordering::Acquire);
        let busy = requests != seen || state.in_progress.load(Ordering::Acquire) > 0;
        quiet = if busy { 0 } else { quiet + 1 };
        seen = requests;
    }
}

/// What a connection's service shares with the task that drives it.
struct PerConnection {
    /// Its line in the load table.
    tally: Tally,
    /// Requests started on it.
    requests: AtomicU64,
    /// Requests started and not yet answered in full.
    in_progress: AtomicUsize,
    /// Whether it speaks HTTP/2 (seen at its first request).
    http2: AtomicBool,
    /// The server's flag, set once the node stops.
    stopping: Arc<AtomicBool>,
}

/// The user's service, counting each request (in the connection and in this
/// node's line of the load table) until its response is sent, and asking HTTP/1
/// clients to reconnect once the node stops.
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    connection: Arc<PerConnection>,
}

impl<S, B, R> Service<Request<R>> for Counted<S>
where
    S: Service<Request<R>, Response = Response<B>>,
{
    type Response = Response<ResponseBody<B>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn call(&self, request: Request<R>) -> Self::Future {
        let connection = &self.connection;
        connection.tally.request();
        connection.requests.fetch_add(1, Ordering::AcqRel);
        connection.in_progress.fetch_add(1, Ordering::AcqRel);
        // HTTP/2 has no `Connection` header: GOAWAY does that job.
        let http1 = request.version() < hyper::Version::HTTP_2;
        if !http1 {
            connection.http2.store(true, Ordering::Relaxed);
        }
        ResponseFuture {
            inner: self.inner.call(request),
            in_progress: Some(InProgress(connection.clone())),
            http1,
        }
    }
}

/// A request in progress on its connection, until dropped.
struct InProgress(Arc<PerConnection>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// The user's response future; the response it gives keeps the request in
    /// progress until its body is sent, and says `Connection: close` when the
    /// node is stopping.
    struct ResponseFuture<F> {
        #[pin]
        inner: F,
        in_progress: Option<InProgress>,
        http1: bool,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        let in_progress = this.in_progress.take();
        if let Some(InProgress(connection)) = &in_progress {
            if *this.http1 && connection.stopping.load(Ordering::Acquire) {
                response
                    .headers_mut()
                    .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            }
        }
        Poll::Ready(Ok(response.map(|inner| ResponseBody {
            inner,
            _in_progress: in_progress,
        })))
    }
}

pin_project_lite::pin_project! {
    /// The user's response body, keeping its request in progress until dropped
    /// (hyper drops it once sent, or when the connection ends).
    struct ResponseBody<B> {
        #[pin]
        inner: B,
        _in_progress: Option<InProgress>,
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_after_four_quiet_checks_and_http2_never() {
        let state = PerConnection {
            tally: Tally::for_tests(),
            requests: AtomicU64::new(0),
            in_progress: AtomicUsize::new(0),
            http2: AtomicBool::new(false),
            stopping: Arc::new(AtomicBool::new(false)),
        };
        let timeout = Duration::from_secs(4);
        let started = tokio::time::Instant::now();
        idle(&state, timeout).await;
        assert_eq!(started.elapsed(), timeout, "four checks, one a second");
        state.in_progress.store(1, Ordering::Release);
        let busy = tokio::time::timeout(10 * timeout, idle(&state, timeout));
        assert!(busy.await.is_err(), "a request in progress is not idle");
        state.in_progress.store(0, Ordering::Release);
        state.http2.store(true, Ordering::Relaxed);
        let http2 = tokio::time::timeout(10 * timeout, idle(&state, timeout));
        assert!(http2.await.is_err(), "HTTP/2 is never idle");
    }
}
