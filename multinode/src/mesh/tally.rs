//! The message layer's counters on the status board (`board.rs`): what this
//! node sent, received and had refused, and how many messages wait in its
//! queues, per node slot over every incarnation. Without a board (the mesh's
//! own tests), nothing is counted.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::send_error::SendError;
use crate::shm::segment::Segment;

/// Why a message from another machine was dropped.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Refusal {
    /// Its sender is not a live machine of the namespace.
    Stranger = 0,
    /// It carries another message type.
    OtherType = 1,
    /// Its body is over `max_frame_len`.
    Oversized = 2,
}

#[derive(Clone, Default)]
pub(crate) struct Tally {
    board: Option<(Arc<Segment>, usize)>,
}

impl Tally {
    /// Counts for node `slot` on `table`'s board.
    pub(crate) fn new(shm: Option<Arc<Segment>>, slot: usize) -> Self {
        Tally {
            board: shm.map(|t| (t, slot)),
        }
    }

    #[inline]
    fn line(&self) -> Option<&crate::shm::board::MeshLine> {
        self.board
            .as_ref()
            .map(|(shm, slot)| shm.board().mesh(*slot))
    }

    /// `result` of sending a message of `bytes` to one node, counted.
    #[inline]
    pub(crate) fn sent(
        &self,
        result: Result<(), SendError>,
        bytes: usize,
    ) -> Result<(), SendError> {
        if let Some(line) = self.line() {
            match &result {
                Ok(()) => {
                    line.sent.fetch_add(1, Relaxed);
                    line.sent_bytes.fetch_add(bytes as u64, Relaxed);
                }
                Err(SendError::Full(_)) => drop(line.refused_full.fetch_add(1, Relaxed)),
                Err(SendError::Gone(_)) => drop(line.refused_gone.fetch_add(1, Relaxed)),
                Err(_) => {}
            }
        }
        result
    }

    /// A message of `bytes` received.
    #[inline]
    pub(crate) fn received(&self, bytes: usize) {
        if let Some(line) = self.line() {
            line.received.fetch_add(1, Relaxed);
            line.received_bytes.fetch_add(bytes as u64, Relaxed);
        }
    }

    /// A message from another machine dropped, for `refusal`.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn refused(&self, refusal: Refusal) {
        if let Some(line) = self.line() {
            let counter = match refusal {
                Refusal::Stranger => &line.dropped_stranger,
                Refusal::OtherType => &line.dropped_other_type,
                Refusal::Oversized => &line.dropped_oversized,
            };
            counter.fetch_add(1, Relaxed);
        }
    }

    /// `frames` wait in this node's queues now.
    pub(crate) fn queued(&self, frames: usize) {
        if let Some(line) = self.line() {
            line.queued.store(frames as u64, Relaxed);
        }
    }
}
