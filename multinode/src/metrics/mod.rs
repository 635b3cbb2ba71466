//! Metrics for the whole server, in the Prometheus text format: every node's
//! figures and the supervisor's, read from the shared status board
//! (`board.rs`) and load table, so any process renders them for all without
//! asking anyone. The admin listener serves them (`GET /metrics`), and
//! [`Nodes::metrics`](crate::Nodes::metrics) gives the same text to a route of
//! the program's own.
//!
//! The program's own counters and gauges ([`Nodes::counter`](crate::Nodes::counter),
//! [`Nodes::gauge`](crate::Nodes::gauge)) live there too: each node counts in
//! its own line, and the text has one series per node (label `node`) and
//! their sum (no `node` label; select it with `{node=""}`).
//!
//! Counters are kept per node slot over every incarnation: a node that
//! restarts finds its counters where its predecessor left them, so no
//! counter goes back while the master runs.

pub(crate) mod process;

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::shm::board::{Kind, LastExit, SlotState};
use crate::shm::segment::Segment;

/// One of the program's counters, in this node's line of the shared board.
/// Made by [`Nodes::counter`](crate::Nodes::counter).
///
/// ```no_run
/// # fn f(nodes: &multinode::Nodes) {
/// let orders = nodes.counter("orders_total").expect("a valid name");
/// orders.inc();
/// # }
/// ```
#[derive(Clone)]
pub struct Counter {
    shm: Arc<Segment>,
    slot: usize,
    index: usize,
}

impl Counter {
    /// Adds one.
    ///
    /// ```no_run
    /// # fn f(orders: multinode::metrics::Counter) {
    /// orders.inc();
    /// # }
    /// ```
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    ///
    /// ```no_run
    /// # fn f(bytes: multinode::metrics::Counter) {
    /// bytes.add(512);
    /// # }
    /// ```
    pub fn add(&self, n: u64) {
        let value = self.shm.board().user_value(self.slot, self.index);
        value.fetch_add(n, Relaxed);
    }
}

/// One of the program's gauges, in this node's line of the shared board.
/// Made by [`Nodes::gauge`](crate::Nodes::gauge).
///
/// ```no_run
/// # fn f(nodes: &multinode::Nodes) {
/// let sessions = nodes.gauge("sessions").expect("a valid name");
/// sessions.set(12);
/// # }
/// ```
#[derive(Clone)]
pub struct Gauge {
    shm: Arc<Segment>,
    slot: usize,
    index: usize,
}

impl Gauge {
    /// Sets the value.
    ///
    /// ```no_run
    /// # fn f(sessions: multinode::metrics::Gauge) {
    /// sessions.set(3);
    /// # }
    /// ```
    pub fn set(&self, value: i64) {
        let cell = self.shm.board().user_value(self.slot, self.index);
        cell.store(value as u64, Relaxed);
    }

    /// Adds `delta` (negative to take away).
    ///
    /// ```no_run
    /// # fn f(sessions: multinode::metrics::Gauge) {
    /// sessions.add(1);
    /// sessions.add(-1);
    /// # }
    /// ```
    pub fn add(&self, delta: i64) {
        let cell = self.shm.board().user_value(self.slot, self.index);
        cell.fetch_add(delta as u64, Relaxed);
    }
}

/// Why a metric cannot be made.
///
/// ```
/// let error = multinode::metrics::MetricError::Name("9lives".into());
/// assert!(error.to_string().contains("9lives"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricError {
    /// Not a Prometheus metric name, or longer than 48 bytes.
    Name(String),
    /// This node has its 16 metrics already.
    Full(String),
    /// The name is a metric of the other kind already.
    Kind(String),
}

impl std::fmt::Display for MetricError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricError::Name(name) => write!(
                f,
                "metric name {name:?}: expected [a-zA-Z_:][a-zA-Z0-9_:]*, at most 48 bytes"
            ),
            MetricError::Full(name) => write!(
                f,
                "metric {name:?}: this node has {} metrics already",
                crate::shm::board::USER_METRICS
            ),
            MetricError::Kind(name) => write!(f, "metric {name:?} is one of the other kind"),
        }
    }
}

impl std::error::Error for MetricError {}

pub(crate) fn counter(shm: &Arc<Segment>, slot: usize, name: &str) -> Result<Counter, MetricError> {
    let index = register(shm, slot, name, Kind::Counter)?;
    Ok(Counter {
        shm: shm.clone(),
        slot,
        index,
    })
}

pub(crate) fn gauge(shm: &Arc<Segment>, slot: usize, name: &str) -> Result<Gauge, MetricError> {
    let index = register(shm, slot, name, Kind::Gauge)?;
    Ok(Gauge {
        shm: shm.clone(),
        slot,
        index,
    })
}

fn register(shm: &Segment, slot: usize, name: &str, kind: Kind) -> Result<usize, MetricError> {
    if !crate::shm::board::valid_name(name) || name.starts_with("multinode_") {
        return Err(MetricError::Name(name.to_owned()));
    }
    let board = shm.board();
    match board.user(slot, name, kind) {
        Some(index) => Ok(index),
        None if board.users(slot).iter().any(|(n, _, _)| n == name) => {
            Err(MetricError::Kind(name.to_owned()))
        }
        None => Err(MetricError::Full(name.to_owned())),
    }
}

/// The whole server's metrics as Prometheus text: what `/metrics`,
/// `Nodes::metrics` and `Load::metrics` give.
pub(crate) fn text(shm: &Segment) -> String {
    render(shm, 0..crate::shm::load_table::TABLE_SLOTS)
}

/// The metrics of the nodes in `slots`.
fn render(shm: &Segment, slots: std::ops::Range<usize>) -> String {
    let board = shm.board();
    let now = crate::shm::load_table::now_ms();
    let shown: Vec<usize> = slots
        .filter(|s| board.process(*s).state() != SlotState::Empty)
        .collect();
    let mut out = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, value: &dyn Fn(usize) -> Option<f64>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for slot in &shown {
            if let Some(v) = value(*slot) {
                let _ = writeln!(out, "{name}{{node=\"{slot}\"}} {v}");
            }
        }
    };
    let process = |slot: usize| board.process(slot);
    family(
        "multinode_node_ready",
        "gauge",
        "1 while the node serves",
        &|s| {
            Some(f64::from(u8::from(
                process(s).state() == SlotState::Serving,
            )))
        },
    );
    family(
        "multinode_node_open_connections",
        "gauge",
        "Connections open now",
        &|s| Some(f64::from(shm.table().open_now(s))),
    );
    family(
        "multinode_node_connections_total",
        "counter",
        "Connections accepted, over every incarnation",
        &|s| Some(shm.table().totals(s).0 as f64),
    );
    family(
        "multinode_node_requests_total",
        "counter",
        "Requests served, over every incarnation",
        &|s| Some(shm.table().totals(s).1 as f64),
    );
    family(
        "multinode_node_restarts_total",
        "counter",
        "Incarnations started after the first (after an exit or a reload)",
        &|s| Some(f64::from(process(s).restarts.load(Relaxed))),
    );
    family(
        "multinode_node_generation",
        "gauge",
        "The serving incarnation's generation",
        &|s| Some(f64::from(process(s).generation.load(Relaxed))),
    );
    family(
        "multinode_node_last_exit_code",
        "gauge",
        "Exit code of the slot's last process that exited with one",
        &|s| match process(s).last_exit() {
            LastExit::Code(code) => Some(f64::from(code)),
            _ => None,
        },
    );
    family(
        "multinode_node_last_exit_signal",
        "gauge",
        "Signal that ended the slot's last process, if one did",
        &|s| match process(s).last_exit() {
            LastExit::Signal(signal) => Some(f64::from(signal)),
            _ => None,
        },
    );
    family(
        "multinode_node_uptime_seconds",
        "gauge",
        "Since the serving incarnation started",
        &|s| {
            let started = process(s).started_ms.load(Relaxed);
            (started != 0).then(|| now.saturating_sub(started) as f64 / 1000.0)
        },
    );
    // The process metrics, read once for each node.
    let stats: std::collections::BTreeMap<usize, process::Stats> = shown
        .iter()
        .filter_map(|s| Some((*s, process::read(process(*s).pid.load(Relaxed))?)))
        .collect();
    let stat = |s: usize| stats.get(&s);
    family(
        "multinode_node_resident_memory_bytes",
        "gauge",
        "The node's process's resident memory",
        &|s| stat(s).map(|p| p.resident_bytes as f64),
    );
    type Figure = fn(&process::Stats) -> Option<f64>;
    let figures: [(&str, &str, &str, Figure); 5] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds",
            |p| Some(p.cpu_seconds),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors",
            |p| Some(p.open_fds as f64),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors",
            |p| p.max_fds.map(|m| m as f64),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds",
            |p| Some(p.start_time_seconds),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes",
            |p| Some(p.resident_bytes as f64),
        ),
    ];
    for (name, kind, help, figure) in figures {
        family(name, kind, help, &|s| stat(s).and_then(figure));
    }
    type Field = fn(&crate::shm::board::MeshLine) -> &std::sync::atomic::AtomicU64;
    let mesh: [(&str, &str, &str, Field); 10] = [
        (
            "multinode_mesh_messages_sent_total",
            "counter",
            "Messages sent to other nodes",
            |m| &m.sent,
        ),
        (
            "multinode_mesh_bytes_sent_total",
            "counter",
            "Bytes of messages sent to other nodes",
            |m| &m.sent_bytes,
        ),
        (
            "multinode_mesh_messages_received_total",
            "counter",
            "Messages received from other nodes",
            |m| &m.received,
        ),
        (
            "multinode_mesh_bytes_received_total",
            "counter",
            "Bytes of messages received from other nodes",
            |m| &m.received_bytes,
        ),
        (
            "multinode_mesh_queued",
            "gauge",
            "Messages waiting in the node's outgoing queues",
            |m| &m.queued,
        ),
        (
            "multinode_mesh_sends_refused_full_total",
            "counter",
            "try_send refused: the queue was full",
            |m| &m.refused_full,
        ),
        (
            "multinode_mesh_sends_refused_gone_total",
            "counter",
            "Sends refused: the node is gone",
            |m| &m.refused_gone,
        ),
        (
            "multinode_cluster_dropped_unknown_sender_total",
            "counter",
            "Messages from Redis dropped: the sender is not a live machine of the namespace",
            |m| &m.dropped_stranger,
        ),
        (
            "multinode_cluster_dropped_other_type_total",
            "counter",
            "Messages from Redis dropped: another message type than the node's",
            |m| &m.dropped_other_type,
        ),
        (
            "multinode_cluster_dropped_oversized_total",
            "counter",
            "Messages from Redis dropped: over max_frame_len",
            |m| &m.dropped_oversized,
        ),
    ];
    for (name, kind, help, field) in mesh {
        family(name, kind, help, &|s| {
            Some(field(board.mesh(s)).load(Relaxed) as f64)
        });
    }
    let supervisor = board.supervisor();
    for (name, help, value) in [
        (
            "multinode_reloads_total",
            "Rolling restarts started (SIGHUP)",
            &supervisor.reloads,
        ),
        (
            "multinode_boot_failures_total",
            "Processes that exited before they were ready",
            &supervisor.boot_failures,
        ),
        (
            "multinode_watchdog_kills_total",
            "Processes killed for sending no heartbeat",
            &supervisor.watchdog_kills,
        ),
        (
            "multinode_memory_kills_total",
            "Workers killed over max_memory_hard",
            &supervisor.memory_kills,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            value.load(Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP multinode_recycles_total Workers replaced the rolling way for what they became\n\
         # TYPE multinode_recycles_total counter\n\
         multinode_recycles_total{{reason=\"max_requests\"}} {}\n\
         multinode_recycles_total{{reason=\"max_memory\"}} {}",
        supervisor.recycled_requests.load(Relaxed),
        supervisor.recycled_memory.load(Relaxed)
    );
    render_users(&mut out, board, &shown);
    out
}

/// The program's own metrics: per node, and summed (no `node` label).
fn render_users(out: &mut String, board: &crate::shm::board::Board, shown: &[usize]) {
    let mut families: std::collections::BTreeMap<String, (Kind, Vec<(usize, u64)>)> =
        Default::default();
    for slot in shown {
        for (name, kind, value) in board.users(*slot) {
            families
                .entry(name)
                .or_insert((kind, Vec::new()))
                .1
                .push((*slot, value));
        }
    }
    for (name, (kind, values)) in families {
        let (type_name, sum) = match kind {
            Kind::Counter => (
                "counter",
                values.iter().map(|(_, v)| *v as f64).sum::<f64>(),
            ),
            Kind::Gauge => (
                "gauge",
                values.iter().map(|(_, v)| *v as i64 as f64).sum::<f64>(),
            ),
        };
        let _ = writeln!(out, "# HELP {name} The program's own, per node; without `node`: their sum\n# TYPE {name} {type_name}");
        for (slot, value) in values {
            let value = match kind {
                Kind::Counter => value as f64,
                Kind::Gauge => value as i64 as f64,
            };
            let _ = writeln!(out, "{name}{{node=\"{slot}\"}} {value}");
        }
        let _ = writeln!(out, "{name} {sum}");
    }
}

/// A process's resident memory, from `/proc/PID/statm`.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    process::read(pid).map(|stats| stats.resident_bytes)
}

#[cfg(test)]
mod tests;
