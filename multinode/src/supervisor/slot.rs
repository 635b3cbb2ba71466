//! What the supervisor knows of one slot: its current incarnations, the ones
//! draining, and its crash-loop counters. Plain data for the state machine.

use std::time::{Duration, Instant};

pub(crate) type Slot = usize;
pub(crate) type Generation = u64;

/// What a live process waits for, if anything: each is a deadline the state
/// machine acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// Serving: nothing but the watchdog.
    None,
    /// Booting: killed if not ready by then.
    ReadyBy(Instant),
    /// Told to drain: killed if not gone by then.
    KillAt(Instant),
    /// Killed already: only its exit is awaited.
    Killed,
}

/// One incarnation of a slot: a started process.
#[derive(Clone, Debug)]
pub(crate) struct Process {
    pub generation: Generation,
    pub started: Instant,
    /// When its runtime last said it is not stuck (or when it started).
    pub heartbeat: Instant,
    pub deadline: Deadline,
}

impl Process {
    pub fn booting(generation: Generation, now: Instant, ready_within: Duration) -> Self {
        Process {
            generation,
            started: now,
            heartbeat: now,
            deadline: Deadline::ReadyBy(now + ready_within),
        }
    }

    /// When the state machine must next look at it.
    pub fn due(&self) -> Option<Instant> {
        match self.deadline {
            Deadline::ReadyBy(at) | Deadline::KillAt(at) => Some(at),
            Deadline::None | Deadline::Killed => None,
        }
    }
}

/// Where a slot is in its life.
#[derive(Clone, Debug)]
pub(crate) enum Current {
    /// Started, not ready yet.
    Booting(Process),
    /// Ready: its body runs.
    Serving(Process),
    /// A rolling restart's step: `old` serves until `new` is ready.
    Replacing { old: Process, new: Process },
    /// Waiting to be started again (crash-loop backoff, or short of resources).
    BackingOff { until: Instant },
    /// Scaled down (SIGTTOU): gone until a SIGTTIN brings it back.
    Removed,
    /// Not started again: `restart = false`, given up, or the whole server stopping.
    Ended,
}

impl Current {
    /// Whether the slot is a member of the mesh: it serves, or will again.
    pub fn is_member(&self) -> bool {
        !matches!(self, Current::Removed | Current::Ended)
    }

    /// The incarnation that serves, if one does.
    pub fn serving(&self) -> Option<Generation> {
        match self {
            Current::Serving(p) | Current::Replacing { old: p, .. } => Some(p.generation),
            _ => None,
        }
    }

    pub fn processes(&self) -> impl Iterator<Item = &Process> {
        let (a, b) = match self {
            Current::Booting(p) | Current::Serving(p) => (Some(p), None),
            Current::Replacing { old, new } => (Some(old), Some(new)),
            _ => (None, None),
        };
        a.into_iter().chain(b)
    }

    pub fn processes_mut(&mut self) -> impl Iterator<Item = &mut Process> {
        let (a, b) = match self {
            Current::Booting(p) | Current::Serving(p) => (Some(p), None),
            Current::Replacing { old, new } => (Some(old), Some(new)),
            _ => (None, None),
        };
        a.into_iter().chain(b)
    }

    /// Takes every process out, leaving `then`.
    pub fn take_processes(&mut self, then: Current) -> Vec<Process> {
        match std::mem::replace(self, then) {
            Current::Booting(p) | Current::Serving(p) => vec![p],
            Current::Replacing { old, new } => vec![old, new],
            _ => Vec::new(),
        }
    }
}

/// One slot.
#[derive(Clone, Debug)]
pub(crate) struct SlotState {
    /// The last generation started.
    pub generation: Generation,
    pub current: Current,
    /// Incarnations told to stop, until they exit.
    pub draining: Vec<Process>,
    /// Consecutive quick exits: the backoff exponent.
    pub crashes: u32,
    /// Consecutive exits before ready.
    pub boot_failures: u32,
    /// The last reason an incarnation gave for failing.
    pub last_error: Option<String>,
}

impl SlotState {
    pub fn new() -> Self {
        SlotState {
            generation: 0,
            current: Current::Ended,
            draining: Vec::new(),
            crashes: 0,
            boot_failures: 0,
            last_error: None,
        }
    }

    /// Every live process of the slot, current and draining.
    pub fn processes(&self) -> impl Iterator<Item = &Process> {
        self.current.processes().chain(self.draining.iter())
    }

    pub fn processes_mut(&mut self) -> impl Iterator<Item = &mut Process> {
        self.current.processes_mut().chain(self.draining.iter_mut())
    }

    pub fn has_processes(&self) -> bool {
        self.processes().next().is_some()
    }

    /// When the state machine must next look at the slot, if ever: the
    /// earliest deadline of its processes, or the end of its backoff.
    pub fn due(&self) -> Option<Instant> {
        let backoff = match self.current {
            Current::BackingOff { until } => Some(until),
            _ => None,
        };
        self.processes()
            .filter_map(Process::due)
            .chain(backoff)
            .min()
    }
}

/// The delay before restarting a worker after `crashes` quick exits in a row.
pub(crate) fn backoff(crashes: u32, first: Duration, max: Duration) -> Duration {
    match crashes {
        0 => Duration::ZERO,
        n => first.saturating_mul(1 << (n - 1).min(16)).min(max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let (first, max) = (Duration::from_millis(100), Duration::from_secs(10));
        assert_eq!(backoff(0, first, max), Duration::ZERO);
        assert_eq!(backoff(1, first, max), Duration::from_millis(100));
        assert_eq!(backoff(3, first, max), Duration::from_millis(400));
        assert_eq!(backoff(40, first, max), max);
    }
}
