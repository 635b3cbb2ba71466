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
    /// always is), in order.
    #[serde(with = "runs")]
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

/// A list of slots in order, sent as its runs of consecutive slots: each of N
/// workers is told every member, in one run rather than N entries when none
/// is missing, so that a start does not grow with the square of N.
mod runs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// (first, how many) for each run.
    pub fn serialize<S: Serializer>(slots: &[usize], serializer: S) -> Result<S::Ok, S::Error> {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &slot in slots {
            match runs.last_mut() {
                Some((first, count)) if *first + *count == slot => *count += 1,
                _ => runs.push((slot, 1)),
            }
        }
        runs.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<usize>, D::Error> {
        let runs = Vec::<(usize, usize)>::deserialize(deserializer)?;
        let total = runs
            .iter()
            .try_fold(0usize, |total, (_, count)| total.checked_add(*count));
        // No more members than there can be nodes: a bad frame cannot make a
        // worker allocate without bound.
        if total.is_none_or(|total| total > crate::config::ranges::MAX_NODES) {
            return Err(serde::de::Error::custom("more members than nodes"));
        }
        Ok(runs
            .into_iter()
            .flat_map(|(first, count)| (0..count).map(move |k| first.saturating_add(k)))
            .collect())
    }

    #[cfg(test)]
    mod tests {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Members(#[serde(with = "super")] Vec<usize>);

        #[test]
        fn slots_go_as_runs_and_come_back_as_they_were() {
            for slots in [
                vec![],
                vec![1],
                (1..256).collect(),
                vec![1, 2, 3, 5, 7, 8, 250],
            ] {
                let bytes = postcard::to_allocvec(&Members(slots.clone())).unwrap();
                assert_eq!(postcard::from_bytes::<Members>(&bytes).unwrap().0, slots);
            }
            let all = postcard::to_allocvec(&Members((1..256).collect())).unwrap();
            assert!(all.len() <= 4, "one run: {all:?}");
        }

        #[test]
        fn more_members_than_nodes_is_refused() {
            let runs: Vec<(usize, usize)> = vec![(1, usize::MAX)];
            let bytes = postcard::to_allocvec(&runs).unwrap();
            assert!(postcard::from_bytes::<Members>(&bytes).is_err());
        }
    }
}
