//! The status board: the part of the shared segment that says how
//! each slot stands, for metrics and the status page. The master writes each
//! slot's process (pid, generation, state, restarts, last exit) and its own
//! counters; each node writes its mesh counters and the program's own metrics.
//! Every process maps it, so any of them can report on all without asking
//! anyone. Counters are per slot, over every incarnation: they never go back
//! when a node restarts.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use super::load_table::TABLE_SLOTS;

/// The program's own metrics each node can have.
pub(crate) const USER_METRICS: usize = 16;
/// The longest name of one (Prometheus' rules: `[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub(crate) const NAME_BYTES: usize = 48;

/// A slot's process, as the master knows it.
#[repr(C, align(64))]
pub(crate) struct ProcessLine {
    pub pid: AtomicU32,
    pub generation: AtomicU32,
    /// A [`SlotState`] as a number.
    pub state: AtomicU32,
    pub restarts: AtomicU32,
    /// A [`LastExit`] as two numbers.
    exit_kind: AtomicU32,
    exit_value: AtomicU32,
    /// When the current incarnation started (ms of `CLOCK_MONOTONIC`), 0 if none.
    pub started_ms: AtomicU64,
}

/// What a slot is doing, for a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum SlotState {
    Empty = 0,
    Starting = 1,
    Serving = 2,
    Draining = 3,
    BackingOff = 4,
    Ended = 5,
}

impl SlotState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            SlotState::Empty => "empty",
            SlotState::Starting => "starting",
            SlotState::Serving => "serving",
            SlotState::Draining => "draining",
            SlotState::BackingOff => "backing off",
            SlotState::Ended => "ended",
        }
    }

    fn from_u32(value: u32) -> Self {
        match value {
            1 => SlotState::Starting,
            2 => SlotState::Serving,
            3 => SlotState::Draining,
            4 => SlotState::BackingOff,
            5 => SlotState::Ended,
            _ => SlotState::Empty,
        }
    }
}

/// How a slot's last process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LastExit {
    None,
    Code(i32),
    Signal(i32),
}

/// The master's own counters.
#[repr(C, align(64))]
pub(crate) struct SupervisorLine {
    pub reloads: AtomicU64,
    pub boot_failures: AtomicU64,
    pub watchdog_kills: AtomicU64,
    /// When the master started (ms of `CLOCK_MONOTONIC`).
    pub started_ms: AtomicU64,
    /// When the supervision loop last turned (ms of `CLOCK_MONOTONIC`): `/livez`.
    pub turned_ms: AtomicU64,
    /// 1 from the moment a stop begins: `/readyz` answers 503.
    pub stopping: AtomicU64,
    /// How many nodes must serve for `/readyz` to answer 200 (`ready_nodes`).
    pub ready_nodes: AtomicU64,
    /// Workers recycled for `max_requests`, for `max_memory`, and killed over
    /// `max_memory_hard`.
    pub recycled_requests: AtomicU64,
    pub recycled_memory: AtomicU64,
    pub memory_kills: AtomicU64,
}

/// A node's message layer, over every incarnation.
#[repr(C, align(64))]
#[derive(Default)]
pub(crate) struct MeshLine {
    pub sent: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub received: AtomicU64,
    pub received_bytes: AtomicU64,
    pub refused_full: AtomicU64,
    pub refused_gone: AtomicU64,
    /// Messages from other machines dropped: from a machine not live in the
    /// namespace, of another message type, over `max_frame_len`.
    pub dropped_stranger: AtomicU64,
    pub dropped_other_type: AtomicU64,
    pub dropped_oversized: AtomicU64,
    /// Messages waiting in its outgoing queues now.
    pub queued: AtomicU64,
}

/// One of the program's metrics in one node: its name, kind and value.
#[repr(C, align(64))]
pub(crate) struct UserLine {
    /// 0 free, 1 being named, 2 named (then `kind` and `name` never change).
    state: AtomicU32,
    kind: AtomicU32,
    value: AtomicU64,
    name: [AtomicU64; NAME_BYTES / 8],
}

/// A metric's kind: a counter only goes up; a gauge goes anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter = 1,
    Gauge = 2,
}

/// The board's layout, after the load table's lines in the same memory.
#[repr(C)]
pub(crate) struct Board {
    processes: [ProcessLine; TABLE_SLOTS],
    supervisor: SupervisorLine,
    mesh: [MeshLine; TABLE_SLOTS],
    user: [[UserLine; USER_METRICS]; TABLE_SLOTS],
}

impl Board {
    pub(crate) fn process(&self, slot: usize) -> &ProcessLine {
        &self.processes[slot]
    }

    pub(crate) fn supervisor(&self) -> &SupervisorLine {
        &self.supervisor
    }

    pub(crate) fn mesh(&self, slot: usize) -> &MeshLine {
        &self.mesh[slot]
    }

    /// Slot `slot`'s metric named `name` of `kind`: the one it had (a restarted
    /// node finds its counter where it left it), or a free line. `None` when
    /// all are taken, or the name is taken by a metric of another kind.
    pub(crate) fn user(&self, slot: usize, name: &str, kind: Kind) -> Option<usize> {
        let packed = pack(name);
        let lines = &self.user[slot];
        for (index, line) in lines.iter().enumerate() {
            if line.state.load(std::sync::atomic::Ordering::Acquire) == 2 && line.packed() == packed
            {
                return (line.kind.load(Relaxed) == kind as u32).then_some(index);
            }
        }
        for (index, line) in lines.iter().enumerate() {
            if line
                .state
                .compare_exchange(0, 1, std::sync::atomic::Ordering::AcqRel, Relaxed)
                .is_ok()
            {
                for (word, value) in line.name.iter().zip(packed) {
                    word.store(value, Relaxed);
                }
                line.kind.store(kind as u32, Relaxed);
                line.state.store(2, std::sync::atomic::Ordering::Release);
                return Some(index);
            }
        }
        None
    }

    /// The value of slot `slot`'s metric `index` (from [`Board::user`]).
    pub(crate) fn user_value(&self, slot: usize, index: usize) -> &AtomicU64 {
        &self.user[slot][index].value
    }

    /// Slot `slot`'s metrics: (name, kind, value).
    pub(crate) fn users(&self, slot: usize) -> Vec<(String, Kind, u64)> {
        self.user[slot]
            .iter()
            .filter(|l| l.state.load(std::sync::atomic::Ordering::Acquire) == 2)
            .map(|l| {
                let kind = match l.kind.load(Relaxed) {
                    2 => Kind::Gauge,
                    _ => Kind::Counter,
                };
                (unpack(&l.packed()), kind, l.value.load(Relaxed))
            })
            .collect()
    }
}

impl ProcessLine {
    pub(crate) fn state(&self) -> SlotState {
        SlotState::from_u32(self.state.load(Relaxed))
    }

    pub(crate) fn set_state(&self, state: SlotState) {
        self.state.store(state as u32, Relaxed);
    }

    pub(crate) fn last_exit(&self) -> LastExit {
        let value = self.exit_value.load(Relaxed) as i32;
        match self.exit_kind.load(Relaxed) {
            1 => LastExit::Code(value),
            2 => LastExit::Signal(value),
            _ => LastExit::None,
        }
    }

    pub(crate) fn set_last_exit(&self, exit: LastExit) {
        let (kind, value) = match exit {
            LastExit::None => (0, 0),
            LastExit::Code(code) => (1, code),
            LastExit::Signal(signal) => (2, signal),
        };
        self.exit_value.store(value as u32, Relaxed);
        self.exit_kind.store(kind, Relaxed);
    }
}

impl UserLine {
    fn packed(&self) -> [u64; NAME_BYTES / 8] {
        std::array::from_fn(|i| self.name[i].load(Relaxed))
    }
}

/// Whether `name` may name a metric: Prometheus' rules, at most `NAME_BYTES`.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    first_ok
        && name.len() <= NAME_BYTES
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn pack(name: &str) -> [u64; NAME_BYTES / 8] {
    let mut bytes = [0u8; NAME_BYTES];
    let len = name.len().min(NAME_BYTES);
    bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
    std::array::from_fn(|i| {
        u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap_or_default())
    })
}

fn unpack(packed: &[u64; NAME_BYTES / 8]) -> String {
    let bytes: Vec<u8> = packed
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .take_while(|b| *b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_found_again_by_name_and_kind() {
        let board = crate::shm::zeroed::zeroed::<Board>();
        let orders = board.user(3, "orders_total", Kind::Counter).unwrap();
        board.user_value(3, orders).fetch_add(5, Relaxed);
        let again = board.user(3, "orders_total", Kind::Counter).unwrap();
        assert_eq!(
            board.user_value(3, again).load(Relaxed),
            5,
            "a restarted node finds its counter"
        );
        assert!(board.user(3, "orders_total", Kind::Gauge).is_none());
        assert_eq!(
            board.users(3),
            vec![("orders_total".to_owned(), Kind::Counter, 5)]
        );
        for i in 1..USER_METRICS {
            assert!(board.user(3, &format!("m{i}"), Kind::Gauge).is_some());
        }
        assert!(board.user(3, "one_too_many", Kind::Counter).is_none());
        assert!(board.users(4).is_empty(), "per slot");
    }

    #[test]
    fn names_follow_prometheus() {
        assert!(valid_name("orders_total") && valid_name("http:requests") && valid_name("_x"));
        assert!(!valid_name("") && !valid_name("9lives") && !valid_name("a-b"));
        assert!(!valid_name(&"a".repeat(NAME_BYTES + 1)));
    }
}
