//! The state machine's recycling state: the workers found due, in order, and
//! the one being recycled (plain data; `machine/recycle.rs` moves it on).

use std::collections::VecDeque;

use super::recycler::Why;
use super::slot::{Generation, Slot};

/// The workers due, and the one being recycled.
#[derive(Debug, Default)]
pub(crate) struct Recycles {
    pub queue: VecDeque<(Slot, Generation, Why)>,
    pub now: Recycling,
}

#[derive(Debug, Default, PartialEq)]
pub(crate) enum Recycling {
    #[default]
    Idle,
    /// Incarnation `generation` of `slot`, until a new one serves and the
    /// old one is gone, or the new one failed.
    Replacing { slot: Slot, generation: Generation },
}

impl Recycles {
    /// Whether a recycling is under way.
    pub fn busy(&self) -> bool {
        self.now != Recycling::Idle
    }
}
