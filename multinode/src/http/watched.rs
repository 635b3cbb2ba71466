//! Running a connection under a watcher (the node's stop, the idle timeout)
//! without polling the watcher at every wake-up.
//!
//! A connection's task wakes a few times per request. `tokio::select!` over the
//! connection and the watcher would poll both at every wake-up; polling the stop's
//! `cancelled()` alone takes the token's lock, on every request's way
//! (`bench/instructions.sh` counts it). [`Watched`] polls the watcher as
//! [`Woken`] does: again only once it woke the task.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::woken::Woken;

pin_project_lite::pin_project! {
    /// Resolves to `Ok(output)` when `connection` ends, or to `Err(output)` when
    /// `watcher` resolves first. The connection is polled first.
    pub(super) struct Watched<C, W> {
        #[pin]
        connection: C,
        #[pin]
        watcher: Woken<W>,
    }
}

impl<C, W> Watched<C, W> {
    pub(super) fn new(connection: C, watcher: W) -> Self {
        Watched {
            connection,
            watcher: Woken::new(watcher),
        }
    }
}

impl<C: Future, W: Future> Future for Watched<C, W> {
    type Output = Result<C::Output, W::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.connection.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        this.watcher.poll(cx).map(Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::woken::tests::counted;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn the_connection_s_output_when_it_ends_first() {
        let token = CancellationToken::new();
        let watched = Watched::new(async { 7 }, token.cancelled_owned());
        assert_eq!(watched.await, Ok(7));
    }

    #[tokio::test]
    async fn the_watcher_is_polled_only_when_it_was_woken() {
        let token = CancellationToken::new();
        let (wake, mut woken) = tokio::sync::mpsc::unbounded_channel::<()>();
        // Wakes the "connection" 100 times, one at a time, then stops.
        let (stopper, _open) = (token.clone(), wake.clone());
        tokio::spawn(async move {
            for _ in 0..100 {
                wake.send(()).unwrap();
                tokio::task::yield_now().await;
            }
            stopper.cancel();
        });
        let connection = async move { while woken.recv().await.is_some() {} };
        let (connection_polls, watcher_polls) = (Arc::default(), Arc::default());
        let watched = Watched::new(
            counted(Arc::clone(&connection_polls), connection),
            counted(Arc::clone(&watcher_polls), token.cancelled_owned()),
        );
        let outcome = tokio::time::timeout(Duration::from_secs(10), watched).await;
        assert_eq!(outcome, Ok(Err(())), "the stop ends it");
        assert!(connection_polls.load(Ordering::Relaxed) >= 100);
        // Once to give it a waker, once when it fired.
        assert_eq!(watcher_polls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_watcher_ready_at_the_first_poll_ends_it() {
        let token = CancellationToken::new();
        token.cancel();
        let watched = Watched::new(std::future::pending::<()>(), token.cancelled_owned());
        let outcome = tokio::time::timeout(Duration::from_secs(10), watched).await;
        assert_eq!(outcome, Ok(Err(())));
    }
}
