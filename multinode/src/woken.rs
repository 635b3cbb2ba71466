//! A future that is polled again only once it has woken its task.
//!
//! A task polls every future it awaits in a `select!` each time anything in it
//! wakes. Some futures are expensive to poll for what they usually say: a
//! `CancellationToken`'s `cancelled()` takes the token's lock and the `Notify`'s
//! at every poll, to answer "not yet" (`bench/instructions.sh` and the mesh's
//! broadcast counts showed it). [`Woken`] polls its future with a waker of its
//! own, and again only once that waker has fired.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

pin_project_lite::pin_project! {
    /// `inner`, polled at the first poll and then only after it woke the task.
    pub(crate) struct Woken<F> {
        #[pin]
        inner: F,
        signal: Arc<Signal>,
        own_waker: Waker,
        // The task's waker that `signal` holds, to compare without its lock.
        task: Option<Waker>,
    }
}

impl<F> Woken<F> {
    pub(crate) fn new(inner: F) -> Self {
        let signal = Arc::new(Signal {
            // So that the first poll polls `inner`, which gives it its waker.
            fired: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Woken {
            inner,
            own_waker: Waker::from(signal.clone()),
            signal,
            task: None,
        }
    }
}

impl<F: Future> Future for Woken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if !this.task.as_ref().is_some_and(|t| same_task(t, cx.waker())) {
            *this.task = Some(cx.waker().clone());
            *this.signal.lock() = Some(cx.waker().clone());
        }
        // Cleared before `inner` is polled: a wake from then on is seen next time.
        if this.signal.fired.load(Ordering::Acquire)
            && this.signal.fired.swap(false, Ordering::AcqRel)
        {
            return this.inner.poll(&mut Context::from_waker(this.own_waker));
        }
        Poll::Pending
    }
}

/// Whether two wakers do the same: the same data, and a table of the same
/// functions. `Waker::will_wake` compares the tables' addresses, and a generic
/// one can have several copies: a task blocked on by a runtime (tokio's
/// `block_on`) clones its waker with another copy than the one it polls with,
/// and `will_wake` is false every time.
fn same_task(a: &Waker, b: &Waker) -> bool {
    a.data() == b.data() && a.vtable() == b.vtable()
}

/// The inner future's waker: notes that it fired and wakes the task.
struct Signal {
    fired: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Signal {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        self.task.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        if let Some(task) = self.lock().as_ref() {
            task.wake_by_ref();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    /// `inner`, counting its polls.
    pub(crate) fn counted<F: Future>(
        polls: Arc<AtomicUsize>,
        inner: F,
    ) -> impl Future<Output = F::Output> {
        let mut inner = Box::pin(inner);
        poll_fn(move |cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            inner.as_mut().poll(cx)
        })
    }

    #[tokio::test]
    async fn it_is_polled_only_when_it_woke_the_task() {
        let token = CancellationToken::new();
        let (wake, mut woken) = tokio::sync::mpsc::unbounded_channel::<()>();
        // Wakes the task 100 times, one at a time, then cancels.
        let stopper = token.clone();
        tokio::spawn(async move {
            for _ in 0..100 {
                wake.send(()).unwrap();
                tokio::task::yield_now().await;
            }
            stopper.cancel();
        });
        let polls = Arc::default();
        let mut stop = std::pin::pin!(Woken::new(counted(
            Arc::clone(&polls),
            token.cancelled_owned()
        )));
        let mut wakes = 0;
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                tokio::select! {
                    biased;
                    () = &mut stop => break,
                    Some(()) = woken.recv() => wakes += 1,
                }
            }
        });
        assert!(outcome.await.is_ok(), "the cancellation ends it");
        assert_eq!(wakes, 100);
        // Once to give it a waker, once when it fired.
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_waker_and_its_clone_are_the_same_task_also_in_block_on() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (blocked_on, clone) = runtime.block_on(poll_fn(|cx| {
            Poll::Ready((cx.waker().clone(), cx.waker().clone().clone()))
        }));
        assert!(same_task(&blocked_on, &clone));
        let spawned = runtime.block_on(async {
            tokio::spawn(poll_fn(|cx| Poll::Ready(cx.waker().clone())))
                .await
                .unwrap()
        });
        assert!(!same_task(&blocked_on, &spawned), "another task");
    }

    #[tokio::test]
    async fn a_future_ready_at_the_first_poll_is_ready() {
        let token = CancellationToken::new();
        token.cancel();
        let stop = Woken::new(token.cancelled_owned());
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), stop).await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn a_task_that_moves_gives_its_new_waker() {
        let token = CancellationToken::new();
        let mut stop = Box::pin(Woken::new(token.clone().cancelled_owned()));
        // Polled first by one task, then awaited by another.
        let first = poll_fn(|cx| Poll::Ready(stop.as_mut().poll(cx).is_pending()));
        assert!(first.await);
        let other = tokio::spawn(stop);
        tokio::task::yield_now().await;
        token.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(10), other).await;
        assert!(matches!(ended, Ok(Ok(()))), "the second task is woken");
    }
}
