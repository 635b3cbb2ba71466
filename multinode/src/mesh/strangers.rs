//! Messages from machines that this node's last reading of the cluster did not
//! show, held until the next readings say whether they are live: a machine that
//! just joined is seen a few ms later, by the reading its first message asks
//! for, and its messages are then delivered in their order; one that is still
//! not live two readings later is a stranger, and its messages are dropped.

use std::collections::VecDeque;

use super::arrival::Arrival;

/// The most messages held at once; more from strangers are dropped at once.
const HOLD: usize = 1024;

#[derive(Default)]
pub(crate) struct Strangers {
    /// Each held message, and the readings done when it came.
    held: VecDeque<(Arrival, u64)>,
    readings: u64,
}

/// What becomes of the first held message.
pub(crate) enum Verdict {
    /// Its machine is live: deliver it.
    Deliver(Arrival),
    /// Two readings later, its machine is still not live: drop it.
    Drop(Arrival),
}

impl Strangers {
    /// Holds `arrival`; gives it back when too many are held.
    pub fn hold(&mut self, arrival: Arrival) -> Result<(), Arrival> {
        if self.held.len() >= HOLD {
            return Err(arrival);
        }
        self.held.push_back((arrival, self.readings));
        Ok(())
    }

    /// Whether messages of `machine` are held: its next ones wait behind them.
    pub fn holds(&self, machine: &str) -> bool {
        !self.held.is_empty()
            && self
                .held
                .iter()
                .any(|(a, _)| a.from.machine() == Some(machine))
    }

    /// A reading of the cluster is done.
    pub fn reading_done(&mut self) {
        self.readings += 1;
    }

    /// The first held message's fate, if it is decided: its machine is live
    /// now, or was not in two readings since it came (the first may have
    /// begun before the machine joined).
    pub fn next(&mut self, is_live: impl Fn(&str) -> bool) -> Option<Verdict> {
        let (arrival, since) = self.held.front()?;
        let live = is_live(arrival.from.machine().unwrap_or_default());
        if !live && self.readings < since + 2 {
            return None; // undecided: it stays first
        }
        let (arrival, _) = self.held.pop_front()?;
        Some(if live {
            Verdict::Deliver(arrival)
        } else {
            Verdict::Drop(arrival)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::node_id::NodeId;

    fn from(machine: &str, n: u8) -> Arrival {
        Arrival::new(NodeId::remote(machine, 0), vec![n], 0..1)
    }

    fn body(verdict: Option<Verdict>) -> Option<(bool, u8)> {
        verdict.map(|v| match v {
            Verdict::Deliver(a) => (true, a.body()[0]),
            Verdict::Drop(a) => (false, a.body()[0]),
        })
    }

    #[test]
    fn a_machine_that_just_joined_is_delivered_in_order_and_a_stranger_dropped() {
        let mut strangers = Strangers::default();
        assert!(strangers.hold(from("new", 1)).is_ok());
        assert!(strangers.hold(from("new", 2)).is_ok());
        assert!(strangers.holds("new") && !strangers.holds("other"));
        assert!(strangers.next(|_| false).is_none(), "no reading yet");
        strangers.reading_done();
        assert!(
            strangers.next(|_| false).is_none(),
            "one reading may predate it"
        );
        assert_eq!(body(strangers.next(|m| m == "new")), Some((true, 1)));
        assert_eq!(body(strangers.next(|m| m == "new")), Some((true, 2)));
        assert!(strangers.next(|_| true).is_none());
        assert!(strangers.hold(from("ghost", 3)).is_ok());
        strangers.reading_done();
        assert!(strangers.next(|_| false).is_none());
        strangers.reading_done();
        assert_eq!(body(strangers.next(|_| false)), Some((false, 3)));
        for n in 0..HOLD {
            assert!(strangers.hold(from("ghost", n as u8)).is_ok());
        }
        assert!(strangers.hold(from("ghost", 0)).is_err(), "bounded");
    }
}
