//! A wake-up for one waiting task, kept until it is taken: what
//! `Notify::notify_one` and `notified()` do for a single waiter, without
//! `Notify`'s lock and list of waiters. A mesh writer is woken after every
//! direct write, to give the stream back for the next one.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use futures_util::task::AtomicWaker;

#[derive(Default)]
pub(crate) struct Signal {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    /// Raises it and wakes the task waiting for it; with none waiting, the next
    /// [`wait`](Self::wait) returns at once.
    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Waits until it is raised, and lowers it. One task waits at a time.
    /// Cancel safe: a raise is taken only by the wait that returns.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.raised.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Raised between the look and the registration: seen here.
            match self.raised.swap(false, Ordering::AcqRel) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_raise_before_the_wait_is_kept_and_taken_once() {
        let signal = Signal::default();
        signal.raise();
        signal.raise();
        let kept = tokio::time::timeout(Duration::from_secs(10), signal.wait());
        assert!(kept.await.is_ok(), "a raise with no one waiting is kept");
        let again = tokio::time::timeout(Duration::from_millis(50), signal.wait());
        assert!(again.await.is_err(), "two raises before a wait are one");
    }

    #[tokio::test]
    async fn a_raise_wakes_the_waiting_task_every_time() {
        let signal = Arc::new(Signal::default());
        let (done, mut woken) = tokio::sync::mpsc::unbounded_channel();
        let waiter = tokio::spawn({
            let signal = signal.clone();
            async move {
                for _ in 0..100 {
                    signal.wait().await;
                    done.send(()).unwrap();
                }
            }
        });
        for _ in 0..100 {
            tokio::task::yield_now().await; // the waiter waits
            signal.raise();
            let took = tokio::time::timeout(Duration::from_secs(10), woken.recv());
            assert!(took.await.is_ok(), "woken");
        }
        waiter.await.unwrap();
    }
}
