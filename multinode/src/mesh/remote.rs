//! The route to other machines: the Redis bridge with the `cluster` feature;
//! without it, a route that cannot exist (the setting is refused at start).

#[cfg(feature = "cluster")]
pub(super) use super::bridge::{start, Arrival, Remote};

#[cfg(not(feature = "cluster"))]
mod absent {
    use bytes::Bytes;
    use tokio::sync::mpsc;

    use super::super::messages::SendError;
    use super::super::NodeId;
    use crate::config::Cluster;

    pub(in crate::mesh) struct Arrival {
        pub from: NodeId,
        pub body: Bytes,
    }

    /// No value: there is no route without the feature.
    pub(in crate::mesh) enum Remote {}

    impl Remote {
        pub async fn send(&self, _: &NodeId, _: &[u8]) -> Result<(), SendError> {
            match *self {}
        }
        pub fn try_send(&self, _: &NodeId, _: &[u8]) -> Result<(), SendError> {
            match *self {}
        }
        pub async fn broadcast(&self, _: &[u8]) {
            match *self {}
        }
        pub fn machines(&self) -> tokio::sync::watch::Receiver<Vec<String>> {
            match *self {}
        }
        pub fn is_own(&self, _: &str) -> bool {
            match *self {}
        }
    }

    pub(in crate::mesh) fn start(
        _: &Cluster,
        _: usize,
        _: usize,
    ) -> Result<(Remote, mpsc::Receiver<Arrival>), String> {
        Err("the cluster needs multinode's `cluster` feature".into())
    }
}

#[cfg(not(feature = "cluster"))]
pub(super) use absent::{start, Arrival, Remote};
