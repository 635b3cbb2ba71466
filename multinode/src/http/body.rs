//! The request body a service is handed: hyper's, with a time limit between
//! arrivals, so that a client that stops sending its body cannot hold the
//! request (and its connection) for ever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::time::Sleep;

/// Any error a service or a body may give.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request's body: hyper's [`Incoming`], which fails with
/// [`io::ErrorKind::TimedOut`] once nothing of it has arrived for the server's
/// [`body_read_timeout`](super::Server::body_read_timeout) while it was being read
/// (nginx's `client_body_timeout`). The time runs only while the handler waits for
/// the body: a handler busy with other things first is not cut.
///
/// It implements [`hyper::body::Body`], so `http_body_util::BodyExt::collect`
/// and axum take it as they take `Incoming`.
///
/// ```no_run
/// use http_body_util::BodyExt;
/// use hyper::{Request, Response, StatusCode};
/// use multinode::http::Body;
///
/// async fn upload(req: Request<Body>) -> Result<Response<String>, std::convert::Infallible> {
///     Ok(match req.into_body().collect().await {
///         Ok(body) => Response::new(format!("{} bytes\n", body.to_bytes().len())),
///         Err(error) if error.kind() == std::io::ErrorKind::TimedOut => Response::builder()
///             .status(StatusCode::REQUEST_TIMEOUT)
///             .body(String::new())
///             .unwrap(),
///         Err(error) => Response::builder()
///             .status(StatusCode::BAD_REQUEST)
///             .body(error.to_string())
///             .unwrap(),
///     })
/// }
///
/// #[multinode::main]
/// async fn main(nodes: multinode::Nodes) -> std::io::Result<()> {
///     multinode::http::serve(nodes, hyper::service::service_fn(upload)).await
/// }
/// ```
#[derive(Debug)]
pub struct Body {
    inner: Incoming,
    timeout: Duration,
    /// Armed when a read finds nothing, dropped when something arrives.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl Body {
    pub(super) fn new(inner: Incoming, timeout: Duration) -> Self {
        Body {
            inner,
            timeout,
            waiting: None,
        }
    }

    /// hyper's body, without the time limit.
    ///
    /// ```
    /// fn raw(req: hyper::Request<multinode::http::Body>) -> hyper::body::Incoming {
    ///     req.into_body().into_inner()
    /// }
    /// ```
    pub fn into_inner(self) -> Incoming {
        self.inner
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = None;
                Poll::Ready(frame.map(|result| result.map_err(io::Error::other)))
            }
            Poll::Pending => {
                let timeout = this.timeout;
                let waiting = this
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match waiting.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no request body arrived for {timeout:?}"),
                    )))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
