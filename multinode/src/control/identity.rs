//! Who a node is: what the master tells each incarnation before its body
//! starts, in one shape from the master's supervisor to `Nodes`.

use std::time::Duration;

use super::incarnation::Incarnation;
use super::tickets::TicketKeys;
use crate::config::{Balance, Cluster, Config, TlsFiles};

/// Who a node is: what the master tells each incarnation before its body starts,
/// in one shape from the master's supervisor to [`Nodes`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Identity {
    pub id: usize,
    pub generation: u64,
    pub count: usize,
    pub shutdown_timeout: Duration,
    pub balance: Balance,
    pub serving_slots: std::ops::Range<usize>,
    /// How often a worker tells the master its runtime is not stuck; zero: never.
    pub heartbeat: Duration,
    /// The worker slots that are members of the mesh now (the master's node, 0,
    /// always is).
    pub members: Vec<usize>,
    /// The most connections this node holds at once; `None`: from its
    /// descriptor limit.
    pub max_connections: Option<usize>,
    /// The cluster this node's machine is in, if any.
    pub cluster: Option<Cluster>,
    /// HTTPS's files, if any.
    pub tls: Option<TlsFiles>,
    /// The session-ticket keys every node shares (with `tls`, unless each
    /// node keeps its own): set by the master, which holds them.
    pub ticket_keys: Option<TicketKeys>,
}

impl Identity {
    /// Which incarnation of which node this is.
    pub fn incarnation(&self) -> Incarnation {
        Incarnation::new(self.id, self.generation)
    }

    /// The identity of incarnation `generation` of node `id`, under `config`:
    /// the one constructor, for the master's own node and for every worker.
    pub fn new(
        config: &Config,
        Incarnation {
            slot: id,
            generation,
        }: Incarnation,
        members: Vec<usize>,
        heartbeat: Duration,
    ) -> Self {
        Identity {
            id,
            generation,
            count: config.nodes,
            shutdown_timeout: config.shutdown_timeout,
            balance: config.balance,
            serving_slots: config.serving_slots(),
            heartbeat,
            members,
            max_connections: config.max_connections,
            cluster: config.cluster.clone(),
            tls: config.tls.clone(),
            ticket_keys: None,
        }
    }
}
