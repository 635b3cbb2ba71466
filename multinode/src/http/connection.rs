//! One connection: the task that drives it to its end (idle timeout, graceful
//! stop), and the service wrapper that counts its requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body as HttpBody, Incoming};
use hyper::header::HeaderValue;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::server::graceful::GracefulConnection;
use tokio_util::sync::CancellationToken;

use super::body::{Body, BoxError};
use super::sending::{stalled, Sending};
use super::watched;
use crate::balance::Tally;

/// How long, once the node stops, a connection may stay quiet before it is closed.
pub(super) const QUIET_GRACE: Duration = Duration::from_millis(500);

/// What ends a connection early: the node's stop, and being idle this long.
pub(super) struct Limits {
    pub stop: CancellationToken,
    /// How long an HTTP/1 connection may have no request in progress.
    pub idle: Duration,
    /// The same for an HTTP/2 connection.
    pub idle_http2: Duration,
    /// How long what the connection owes its client may make no progress.
    pub send: Duration,
}

/// Why a connection is cut short.
enum Interrupt {
    Stop,
    Idle,
    Stalled,
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
pub(super) async fn drive<C>(connection: C, state: Arc<PerConnection>, limits: Limits)
where
    C: GracefulConnection,
    C::Error: Into<BoxError>,
{
    tokio::pin!(connection);
    // One watch over the sending side, through the stop too.
    let stall = stalled(&state.sending, limits.send);
    tokio::pin!(stall);
    let watcher = async {
        tokio::select! {
            biased;
            () = limits.stop.cancelled() => Interrupt::Stop,
            () = idle(&state, limits.idle, limits.idle_http2) => Interrupt::Idle,
            () = &mut stall => Interrupt::Stalled,
        }
    };
    let result = match watched::Watched::new(connection.as_mut(), watcher).await {
        Ok(result) => result,
        Err(Interrupt::Stalled) => {
            tracing::debug!(
                "closing a connection whose client took nothing for {:?}",
                limits.send
            );
            return;
        }
        Err(Interrupt::Idle) if state.http2.load(Ordering::Relaxed) => {
            // GOAWAY, so that the client opens a new connection for what follows.
            tracing::debug!(
                "closing an HTTP/2 connection idle for {:?}",
                limits.idle_http2
            );
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(QUIET_GRACE, connection).await {
                Ok(result) => result,
                Err(_) => return,
            }
        }
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
                () = &mut stall => {
                    tracing::debug!("closing a draining connection whose client took nothing for {:?}", limits.send);
                    return;
                }
            }
            if state.requests.load(Ordering::Acquire) == served {
                connection.as_mut().graceful_shutdown();
                tokio::select! {
                    result = &mut connection => break result,
                    () = &mut stall => return,
                }
            }
        },
    };
    if let Err(error) = result {
        tracing::debug!("connection ended with an error: {}", error.into());
    }
}

/// Resolves once a connection has had no request in progress, and nothing
/// being sent, for at least `timeout` (`timeout_http2` once it is known to
/// speak HTTP/2), checking four
/// times per timeout: a wake-up per quarter of it, instead of a timer moved at
/// every request.
async fn idle(state: &PerConnection, timeout: Duration, timeout_http2: Duration) {
    const CHECKS: u32 = 4;
    let mut quiet = 0;
    let look = || {
        (
            state.requests.load(Ordering::Acquire),
            state.sending.progress(),
        )
    };
    let mut seen = look();
    while quiet < CHECKS {
        let period = match state.http2.load(Ordering::Relaxed) {
            true => timeout_http2,
            false => timeout,
        };
        tokio::time::sleep(period / CHECKS).await;
        let now = look();
        // A response still being sent (a long download) is not idleness:
        // `send_timeout` watches it.
        let busy =
            now != seen || state.in_progress.load(Ordering::Acquire) > 0 || state.sending.owing();
        quiet = if busy { 0 } else { quiet + 1 };
        seen = now;
    }
}

/// What a connection's service shares with the task that drives it.
pub(super) struct PerConnection {
    /// Its line in the load table.
    pub tally: Arc<Tally>,
    /// Requests started on it.
    pub requests: AtomicU64,
    /// Requests started and not yet answered in full.
    pub in_progress: AtomicUsize,
    /// Whether it speaks HTTP/2 (seen at its first request).
    pub http2: AtomicBool,
    /// The server's flag, set once the node stops.
    pub stopping: Arc<AtomicBool>,
    /// Whether what it owes its client moves.
    pub sending: Arc<Sending>,
}

/// The user's service, counting each request (in the connection and in this
/// node's line of the load table) until its response is sent, and asking HTTP/1
/// clients to reconnect once the node stops.
#[derive(Clone)]
pub(super) struct Counted<S> {
    pub inner: S,
    pub connection: Arc<PerConnection>,
    /// The longest wait for more of a request's body.
    pub body_read_timeout: Duration,
}

impl<S, B> Service<Request<Incoming>> for Counted<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
{
    type Response = Response<ResponseBody<B>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let timeout = self.body_read_timeout;
        let request = request.map(|body| Body::new(body, timeout));
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
            in_progress: Some(InProgress {
                connection: connection.clone(),
                owed: false,
            }),
            http1,
        }
    }
}

/// A request in progress on its connection, until dropped; `owed` while its
/// response's next step is the transport's (see `sending`).
pub(super) struct InProgress {
    connection: Arc<PerConnection>,
    owed: bool,
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.connection.in_progress.fetch_sub(1, Ordering::AcqRel);
        self.connection.sending.owe(self.owed, false);
    }
}

pin_project_lite::pin_project! {
    /// The user's response future; the response it gives keeps the request in
    /// progress until its body is sent, and says `Connection: close` when the
    /// node is stopping.
    pub(super) struct ResponseFuture<F> {
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
        let mut in_progress = this.in_progress.take();
        if let Some(request) = &mut in_progress {
            let connection = &request.connection;
            if *this.http1 && connection.stopping.load(Ordering::Acquire) {
                response
                    .headers_mut()
                    .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            }
            // The head is made: sending it, and asking for the body, is the
            // transport's turn.
            connection.sending.owe(false, true);
            request.owed = true;
        }
        Poll::Ready(Ok(response.map(|inner| ResponseBody { inner, in_progress })))
    }
}

pin_project_lite::pin_project! {
    /// The user's response body, keeping its request in progress until dropped
    /// (hyper drops it once sent, or when the connection ends).
    pub(super) struct ResponseBody<B> {
        #[pin]
        inner: B,
        in_progress: Option<InProgress>,
    }
}

impl<B: HttpBody> HttpBody for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        if let Some(request) = this.in_progress {
            // A frame given is the transport's to send; otherwise the body's turn.
            let owed = matches!(frame, Poll::Ready(Some(Ok(_))));
            request.connection.sending.polled(request.owed, owed);
            request.owed = owed;
        }
        frame
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
    async fn a_connection_is_idle_after_four_quiet_checks_of_its_protocols_timeout() {
        let state = PerConnection {
            tally: Arc::new(Tally::for_tests()),
            requests: AtomicU64::new(0),
            in_progress: AtomicUsize::new(0),
            http2: AtomicBool::new(false),
            stopping: Arc::new(AtomicBool::new(false)),
            sending: Arc::default(),
        };
        let (timeout, http2) = (Duration::from_secs(4), Duration::from_secs(40));
        let started = tokio::time::Instant::now();
        idle(&state, timeout, http2).await;
        assert_eq!(started.elapsed(), timeout, "four checks, one a second");
        state.in_progress.store(1, Ordering::Release);
        let busy = tokio::time::timeout(100 * timeout, idle(&state, timeout, http2));
        assert!(busy.await.is_err(), "a request in progress is not idle");
        state.in_progress.store(0, Ordering::Release);
        state.http2.store(true, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        idle(&state, timeout, http2).await;
        assert_eq!(started.elapsed(), http2, "HTTP/2 has its own timeout");
    }
}
