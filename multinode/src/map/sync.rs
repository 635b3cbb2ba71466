//! A (re)starting copy of the map waits for one whole snapshot from a live
//! peer before its node is ready: this decides when that wait is over.

use std::collections::BTreeSet;

/// How a peer answered the request for a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The last part of its snapshot came: this copy holds all it held.
    Complete,
    /// It is starting too, and has nothing to give.
    NotSynced,
}

/// Whether this copy still waits for a snapshot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Syncing {
    /// Asked these nodes; none gave a whole snapshot yet.
    Waiting { unanswered: BTreeSet<usize> },
    /// Holds what the others hold (or nobody held anything).
    Synced,
}

impl Syncing {
    /// The wait after asking `peers`: over at once when there is no one to ask.
    pub fn asking(peers: impl IntoIterator<Item = usize>) -> Self {
        let unanswered: BTreeSet<usize> = peers.into_iter().collect();
        if unanswered.is_empty() {
            return Syncing::Synced;
        }
        Syncing::Waiting { unanswered }
    }

    /// `from` answered; whether this answer ended the wait. One whole
    /// snapshot is enough; if every peer is starting too, the map starts
    /// empty, as they all do.
    pub fn answered(&mut self, from: usize, answer: Answer) -> bool {
        let Syncing::Waiting { unanswered } = self else {
            return false;
        };
        unanswered.remove(&from);
        if answer == Answer::Complete || unanswered.is_empty() {
            *self = Syncing::Synced;
            return true;
        }
        false
    }

    pub fn is_synced(&self) -> bool {
        *self == Syncing::Synced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_a_copy_is_synced_at_once() {
        assert!(Syncing::asking([]).is_synced());
    }

    #[test]
    fn one_whole_snapshot_ends_the_wait() {
        let mut sync = Syncing::asking([1, 2, 3]);
        assert!(!sync.answered(1, Answer::NotSynced));
        assert!(sync.answered(3, Answer::Complete));
        assert!(!sync.answered(2, Answer::Complete));
        assert!(sync.is_synced());
    }

    #[test]
    fn when_every_peer_is_starting_too_the_wait_ends_empty() {
        let mut sync = Syncing::asking([1, 2]);
        assert!(!sync.answered(2, Answer::NotSynced));
        assert!(sync.answered(1, Answer::NotSynced));
    }

    #[test]
    fn answers_from_nodes_not_asked_change_nothing_else() {
        let mut sync = Syncing::asking([1]);
        assert!(!sync.answered(5, Answer::NotSynced));
        assert!(!sync.is_synced());
    }
}
