//! When a node reports ready to the master: once its body has started (its
//! first poll is over) and nothing it started holds it back, such as a
//! replicated map still waiting for its snapshot. A rolling reload waits for
//! this before the old node drains.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;

use tokio::sync::{oneshot, watch};

/// What holds a node back from ready: a count of [`Hold`]s.
#[derive(Clone, Debug)]
pub(crate) struct Readiness(Arc<watch::Sender<usize>>);

/// Keeps its node from reporting ready while it lives.
#[derive(Debug)]
pub(crate) struct Hold(Arc<watch::Sender<usize>>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.send_modify(|holds| *holds -= 1);
    }
}

impl Readiness {
    pub fn new() -> Self {
        Readiness(Arc::new(watch::Sender::new(0)))
    }

    pub fn hold(&self) -> Hold {
        self.0.send_modify(|holds| *holds += 1);
        Hold(self.0.clone())
    }

    /// Resolves once no hold remains.
    async fn reached(self) {
        let mut holds = self.0.subscribe();
        let _ = holds.wait_for(|holds| *holds == 0).await;
    }
}

/// Runs `body`, and sends on `ready` once its first poll is over (what it
/// holds back from the start is then held) and no hold remains: at once when
/// none does, even if the body has returned already.
pub(crate) async fn run<F: Future>(
    body: F,
    readiness: Readiness,
    ready: oneshot::Sender<()>,
) -> F::Output {
    let mut starting = Some((readiness.hold(), readiness, ready));
    let mut body = pin!(body);
    poll_fn(|cx| {
        let polled = body.as_mut().poll(cx);
        if let Some((hold, readiness, ready)) = starting.take() {
            drop(hold);
            if *readiness.0.borrow() == 0 {
                let _ = ready.send(());
            } else {
                tokio::spawn(async move {
                    readiness.reached().await;
                    let _ = ready.send(());
                });
            }
        }
        polled
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_waits_for_the_first_poll_and_every_hold() {
        let readiness = Readiness::new();
        let (ready_tx, mut ready_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let held = readiness.clone();
        let body = async move {
            let hold = held.hold(); // taken in the first poll
            let _ = release_rx.await;
            drop(hold);
            std::future::pending::<()>().await
        };
        let running = tokio::spawn(run(body, readiness, ready_tx));
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(ready_rx.try_recv().is_err(), "ready while a hold remains");
        release_tx.send(()).unwrap();
        ready_rx.await.expect("ready once the hold is dropped");
        running.abort();
    }

    #[tokio::test]
    async fn a_body_that_holds_nothing_is_ready_at_once() {
        let (ready_tx, ready_rx) = oneshot::channel();
        run(async {}, Readiness::new(), ready_tx).await;
        ready_rx.await.expect("ready");
    }
}
