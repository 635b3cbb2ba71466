//! `GET /livez` and `GET /readyz` on the admin listener, Kubernetes' way: 200
//! and `ok`, or 503 and why. Read from shared memory, never from a worker, so
//! they answer while every worker is busy.

use bytes::Bytes;
use hyper::StatusCode;

use crate::shm::board::SlotState;
use crate::shm::load_table::{now_ms, TABLE_SLOTS};
use crate::shm::segment::Segment;

/// Past this without a turn of the supervision loop (which turns every
/// second at least), the master is not live.
const STUCK_MS: u64 = 5_000;

type Answer = (StatusCode, &'static str, Bytes);

fn answer(status: StatusCode, text: String) -> Answer {
    (status, "text/plain; charset=utf-8", Bytes::from(text))
}

/// Whether the master's loop turns.
pub(super) fn live(shm: &Segment) -> Answer {
    let turned = shm
        .board()
        .supervisor()
        .turned_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    verdict_live(now_ms().saturating_sub(turned))
}

fn verdict_live(since_ms: u64) -> Answer {
    match since_ms < STUCK_MS {
        true => answer(StatusCode::OK, "ok\n".into()),
        false => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the master's supervision loop has not turned for {since_ms} ms\n"),
        ),
    }
}

/// Whether enough nodes serve, and no stop has begun.
pub(super) fn ready(shm: &Segment) -> Answer {
    use std::sync::atomic::Ordering::Relaxed;
    let line = shm.board().supervisor();
    let end = shm.table().serving_end().min(TABLE_SLOTS);
    let serving = (0..end)
        .filter(|s| shm.board().process(*s).state() == SlotState::Serving)
        .count() as u64;
    verdict_ready(
        line.stopping.load(Relaxed) != 0,
        serving,
        line.ready_nodes.load(Relaxed).max(1),
    )
}

fn verdict_ready(stopping: bool, serving: u64, needed: u64) -> Answer {
    if stopping {
        answer(StatusCode::SERVICE_UNAVAILABLE, "stopping\n".into())
    } else if serving < needed {
        let why = format!("{serving} nodes serve; ready_nodes is {needed}\n");
        answer(StatusCode::SERVICE_UNAVAILABLE, why)
    } else {
        answer(StatusCode::OK, "ok\n".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_until_a_stop_begins_or_too_few_serve_and_live_while_the_loop_turns() {
        assert_eq!(verdict_ready(false, 4, 1).0, StatusCode::OK);
        assert_eq!(verdict_ready(true, 4, 1).0, StatusCode::SERVICE_UNAVAILABLE);
        let few = verdict_ready(false, 2, 3);
        assert_eq!(few.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(few.2, "2 nodes serve; ready_nodes is 3\n");
        assert_eq!(verdict_live(1_000).0, StatusCode::OK);
        assert_eq!(verdict_live(STUCK_MS).0, StatusCode::SERVICE_UNAVAILABLE);
    }
}
