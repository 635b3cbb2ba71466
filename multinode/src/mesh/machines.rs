//! The machines and nodes of the cluster as this node last read them from
//! Redis: where its sends may go, and whom messages may come from.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::node_id::NodeId;
use super::send_error::SendError;

#[derive(Default)]
pub(crate) struct Machines {
    /// The live machines, this one included once it holds its name.
    live: BTreeSet<String>,
    /// The channels of the other live machines, for broadcasts.
    pub channels: Arc<[String]>,
    /// The nodes of the other live machines.
    pub nodes: Vec<NodeId>,
    /// Every machine seen in the cluster since this node started.
    seen: BTreeSet<String>,
}

/// What a reading changed.
#[derive(Debug, PartialEq)]
pub(crate) struct Change {
    pub joined: Vec<String>,
    pub left: Vec<String>,
    /// The other live machines now.
    pub others: Vec<String>,
}

impl Machines {
    /// Takes a reading: the `live` machines and the live `nodes`
    /// (`MACHINE:ID`); `me` is this node's machine, `channel` names a machine's
    /// broadcast channel.
    pub fn update(
        &mut self,
        me: &str,
        live: impl IntoIterator<Item = String>,
        nodes: &[String],
        channel: impl Fn(&str) -> String,
    ) -> Change {
        let live: BTreeSet<String> = live.into_iter().collect();
        let others: Vec<String> = live.iter().filter(|m| *m != me).cloned().collect();
        let change = Change {
            joined: live
                .difference(&self.live)
                .filter(|m| *m != me)
                .cloned()
                .collect(),
            left: self
                .live
                .difference(&live)
                .filter(|m| *m != me)
                .cloned()
                .collect(),
            others,
        };
        let mut ids: Vec<NodeId> = nodes
            .iter()
            .filter_map(|member| {
                let (machine, id) = member.rsplit_once(':')?;
                let id = id.parse().ok()?;
                (machine != me && live.contains(machine)).then(|| NodeId::remote(machine, id))
            })
            .collect();
        ids.sort();
        self.nodes = ids;
        self.channels = change.others.iter().map(|m| channel(m)).collect();
        self.seen.extend(live.iter().cloned());
        self.live = live;
        change
    }

    /// Whether messages from `machine` are taken: it holds its name now.
    pub fn is_live(&self, machine: &str) -> bool {
        self.live.contains(machine)
    }

    /// Whether a message to `to` (of machine `machine`, not `me`) may go.
    pub fn route(&self, me: &str, to: &NodeId) -> Result<(), SendError> {
        let machine = to.machine().unwrap_or_default();
        if self.live.contains(machine) && machine != me {
            Ok(())
        } else if self.seen.contains(machine) {
            Err(SendError::Gone(to.clone()))
        } else {
            Err(SendError::UnknownNode(to.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_reading_says_who_joined_and_left_and_routes_follow_it() {
        let mut machines = Machines::default();
        let channel = |m: &str| format!("to:{m}");
        let nodes = strings(&["a:1", "b:1", "b:2", "c:1", "bad"]);
        let change = machines.update("a", strings(&["a", "b"]), &nodes, channel);
        assert_eq!(change.joined, ["b"]);
        assert_eq!(change.others, ["b"]);
        assert_eq!(
            machines.nodes,
            [NodeId::remote("b", 1), NodeId::remote("b", 2)]
        );
        assert_eq!(&*machines.channels, ["to:b"]);
        assert!(machines.is_live("b") && !machines.is_live("c"));
        assert!(machines.route("a", &NodeId::remote("b", 2)).is_ok());
        let change = machines.update("a", strings(&["a", "c"]), &nodes, channel);
        assert_eq!(
            (change.joined, change.left),
            (strings(&["c"]), strings(&["b"]))
        );
        assert!(matches!(
            machines.route("a", &NodeId::remote("b", 1)),
            Err(SendError::Gone(_))
        ));
        assert!(matches!(
            machines.route("a", &NodeId::remote("z", 1)),
            Err(SendError::UnknownNode(_))
        ));
        assert!(machines.route("a", &NodeId::remote("a", 1)).is_err());
    }
}
