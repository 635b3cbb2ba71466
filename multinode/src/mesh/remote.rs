//! The route to other machines: the Redis bridge with the `cluster` feature;
//! without it, a route that cannot exist (the setting is refused at start).

#[cfg(feature = "cluster")]
pub(super) use super::bridge::{start, Remote};
#[cfg(feature = "cluster")]
pub(super) use super::subscription::Subscription;

pub(crate) use super::trust::Trust;

#[cfg(not(feature = "cluster"))]
mod absent {
    use std::task::{Context, Poll};

    use bytes::Bytes;

    use super::super::node_id::NodeId;
    use super::super::send_error::SendError;
    use crate::config::Cluster;

    pub(in crate::mesh) struct Arrival {
        pub from: NodeId,
        body: Bytes,
    }

    impl Arrival {
        pub fn body(&self) -> &[u8] {
            &self.body
        }
    }

    /// No value: nothing comes from other machines without the feature.
    pub(in crate::mesh) enum Subscription {}

    impl Subscription {
        pub fn poll_recv(&mut self, _: &mut Context<'_>) -> Poll<Option<Arrival>> {
            match *self {}
        }
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
        pub fn nodes(&self) -> Vec<NodeId> {
            match *self {}
        }
    }

    pub(in crate::mesh) fn start(
        _: &Cluster,
        _: (usize, usize),
        _: tokio_util::sync::CancellationToken,
        _: super::super::trust::Trust,
    ) -> Result<(Remote, Subscription), String> {
        Err("the cluster needs multinode's `cluster` feature".into())
    }
}

#[cfg(not(feature = "cluster"))]
pub(super) use absent::{start, Remote, Subscription};
