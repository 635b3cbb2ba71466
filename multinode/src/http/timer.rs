//! hyper's timer for one HTTP/1 connection, whose header-read timeouts share one
//! tokio `Sleep`.
//!
//! hyper starts a header-read timeout for every request of a connection (so it
//! also bounds how long a kept-alive connection may wait for its next request)
//! and drops it once the head is read. With hyper-util's `TokioTimer`, each one
//! is a new boxed `Sleep`, put into the runtime's timer wheel when first polled
//! and taken out when dropped: about 500 instructions per request
//! (`bench/instructions.sh`). Here the connection keeps one `Sleep` in the wheel.
//! A timeout that ends later than the `Sleep` (the next request's) takes it over
//! when it fires, and only then moves it: once per timeout period, not once per
//! request.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// The connection's one `Sleep`, made when a timeout is first polled.
type Shared = Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>;

/// The timer of one connection: make a new one for each connection. Its
/// timeouts share one `Sleep`, so it suits timeouts that follow one another,
/// like hyper's HTTP/1 header-read timeout, not ones that run side by side.
#[derive(Clone, Default)]
pub(super) struct ConnectionTimer {
    sleep: Shared,
}

impl Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(Timeout {
            sleep: self.sleep.clone(),
            deadline,
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<Timeout>() {
            Some(timeout) => timeout.get_mut().deadline = new_deadline,
            None => *sleep = self.sleep_until(new_deadline),
        }
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// One timeout: a deadline, which the shared `Sleep` takes when polled.
struct Timeout {
    sleep: Shared,
    deadline: Instant,
}

impl Future for Timeout {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let mut shared = self.sleep.lock().unwrap_or_else(PoisonError::into_inner);
        let sleep = shared.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        // A later deadline is taken when the sleep reaches the earlier one, not
        // at every request.
        loop {
            std::task::ready!(sleep.as_mut().poll(cx));
            if sleep.deadline() >= deadline {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(deadline);
        }
    }
}

impl Sleep for Timeout {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    const SHORT: Duration = Duration::from_millis(100);
    const LONG: Duration = Duration::from_secs(60);

    /// Polls `timeout` once: whether it has fired.
    async fn fired(timeout: &mut Pin<Box<dyn Sleep>>) -> bool {
        poll_fn(|cx| Poll::Ready(timeout.as_mut().poll(cx).is_ready())).await
    }

    /// Waits (up to 10 s) for `timeout` to fire.
    async fn fires(timeout: Pin<Box<dyn Sleep>>) -> bool {
        tokio::time::timeout(Duration::from_secs(10), timeout)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_timeout_fires_at_its_deadline_and_not_before() {
        let timer = ConnectionTimer::default();
        let start = Instant::now();
        let mut timeout = timer.sleep(SHORT);
        assert!(!fired(&mut timeout).await);
        assert!(fires(timeout).await);
        assert!(start.elapsed() >= SHORT);
    }

    #[tokio::test]
    async fn each_timeout_has_its_own_deadline() {
        // As hyper does it: a timeout per request, polled while the head is
        // awaited and dropped once it is read.
        let timer = ConnectionTimer::default();
        let mut first = timer.sleep(SHORT);
        assert!(!fired(&mut first).await);
        drop(first);
        let mut second = timer.sleep(LONG);
        assert!(!fired(&mut second).await);
        tokio::time::sleep(3 * SHORT).await;
        assert!(
            !fired(&mut second).await,
            "the first deadline fired the second"
        );
        drop(second);
        // A later, shorter one still fires, once the shared sleep has fired too.
        for _ in 0..2 {
            let mut third = timer.sleep(SHORT);
            assert!(!fired(&mut third).await);
            assert!(fires(third).await);
        }
    }

    #[tokio::test]
    async fn reset_moves_a_timeout_later_or_earlier() {
        let timer = ConnectionTimer::default();
        let mut timeout = timer.sleep(SHORT);
        assert!(!fired(&mut timeout).await);
        timer.reset(&mut timeout, timer.now() + LONG);
        tokio::time::sleep(3 * SHORT).await;
        assert!(!fired(&mut timeout).await, "moved later");
        timer.reset(&mut timeout, timer.now() + SHORT);
        assert!(fires(timeout).await, "moved earlier");
    }
}
