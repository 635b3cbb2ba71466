//! [`Load`]: what a program may read of the shared segment.

use std::sync::Arc;

use crate::shm::segment::Segment;

/// A read-only view of the load table: the connections open now on each serving
/// node, as every node counts them (with [`http::serve`](crate::http::serve)).
/// Made by [`Nodes::load`](crate::Nodes::load).
///
/// ```no_run
/// # async fn f(nodes: multinode::Nodes) {
/// let load = nodes.load();
/// let total: u32 = load.open_connections().iter().map(|(_, open)| open).sum();
/// println!("{total} connections open on all nodes");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Load {
    shm: Arc<Segment>,
    first: usize,
}

impl Load {
    pub(crate) fn new(shm: Arc<Segment>, first: usize) -> Self {
        Load { shm, first }
    }

    /// The whole server's metrics in the Prometheus text format, as
    /// [`Nodes::metrics`](crate::Nodes::metrics) gives them: for a handler.
    ///
    /// ```no_run
    /// # fn f(nodes: &multinode::Nodes) {
    /// let load = nodes.load(); // moves into a handler
    /// let text = load.metrics();
    /// # let _ = text;
    /// # }
    /// ```
    pub fn metrics(&self) -> String {
        crate::metrics::text(&self.shm)
    }

    /// How many nodes serve now, as [`Nodes::count`](crate::Nodes::count) tells
    /// it: for a handler.
    ///
    /// ```no_run
    /// # fn f(load: multinode::Load) {
    /// println!("one of {} nodes", load.nodes());
    /// # }
    /// ```
    pub fn nodes(&self) -> usize {
        self.shm.table().nodes()
    }

    /// `(id, open)` for every serving node, scaled-up ones included.
    ///
    /// ```no_run
    /// # fn f(load: multinode::Load) {
    /// for (id, open) in load.open_connections() {
    ///     println!("node {id}: {open}");
    /// }
    /// # }
    /// ```
    pub fn open_connections(&self) -> Vec<(usize, u32)> {
        self.shm.table().open_counts(self.first)
    }
}
