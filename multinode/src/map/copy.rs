//! One node's copy of a map, kept by a task: it asks for a snapshot at start,
//! merges the writes of the others as they come, answers their requests for
//! snapshots, and forgets what expired.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::shared::{Key, Shared, Value};
use super::sync::{Answer, Syncing};
use super::version::now_micros;
use super::wire::{Kind, Wire};
use crate::mesh::{NodeId, Receiver, Sender};

/// How often what expired is forgotten.
const SWEEP: Duration = Duration::from_secs(1);

pub(super) struct Replica<K, V> {
    pub shared: Arc<Shared<K, V>>,
    pub tx: Sender<Wire<K, V>>,
    /// The mesh's `max_frame_len`: a snapshot is cut in parts below it.
    pub frame_limit: usize,
    pub synced: watch::Sender<bool>,
    /// Counts the batches merged, for `Map::changes`.
    pub changes: watch::Sender<u64>,
}

impl<K: Key, V: Value> Replica<K, V> {
    /// Runs for as long as the mesh does.
    pub async fn run(self, mut rx: Receiver<Wire<K, V>>, timeout: Duration) {
        // A node gone for good meanwhile is not waited for.
        let mut asked = Vec::new();
        for peer in self.tx.nodes().iter().map(NodeId::id) {
            if self.tx.send(peer, &Wire::Ask).await.is_ok() {
                asked.push(peer);
            }
        }
        let mut sync = Syncing::asking(asked);
        if sync.is_synced() {
            let _ = self.synced.send(true);
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut sweep = tokio::time::interval(SWEEP);
        loop {
            tokio::select! {
                message = rx.recv() => match message {
                    Some((from, message)) => self.take(from, message, &mut sync),
                    None => return, // the master is gone
                },
                _ = &mut deadline, if !sync.is_synced() => {
                    tracing::warn!("map: no whole snapshot from the other nodes in {timeout:?}: going on with the {} keys that came", self.len());
                    sync = Syncing::Synced;
                    let _ = self.synced.send(true);
                }
                _ = sweep.tick() => {
                    self.shared.table.write().unwrap_or_else(|e| e.into_inner()).sweep(now_micros());
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.shared.table.read().map_or(0, |t| t.len())
    }

    fn take(&self, from: NodeId, message: Wire<K, V>, sync: &mut Syncing) {
        match message {
            Wire::Entries { kind, entries } => {
                let mut table = self.shared.table.write().unwrap_or_else(|e| e.into_inner());
                let mut clock = self.shared.clock.lock().unwrap_or_else(|e| e.into_inner());
                for (key, entry) in entries {
                    clock.saw(entry.version);
                    table.merge(key, entry);
                }
                drop((table, clock));
                self.changes.send_modify(|n| *n += 1);
                if kind == Kind::Last
                    && from.is_local()
                    && sync.answered(from.id(), Answer::Complete)
                {
                    tracing::info!("map: snapshot from node {from}: {} keys", self.len());
                    let _ = self.synced.send(true);
                }
            }
            Wire::NotSynced if from.is_local() => {
                if sync.answered(from.id(), Answer::NotSynced) {
                    tracing::info!("map: every other node is starting too: starting empty");
                    let _ = self.synced.send(true);
                }
            }
            Wire::Ask if from.is_local() => {
                let answer = match sync.is_synced() {
                    true => self.snapshot(),
                    false => vec![Wire::NotSynced],
                };
                // Its own task: a slow peer never holds up this copy.
                let tx = self.tx.clone();
                tokio::spawn(tracing::Instrument::in_current_span(async move {
                    for part in answer {
                        if tx.send(from.clone(), &part).await.is_err() {
                            return; // gone meanwhile: its next incarnation asks again
                        }
                    }
                }));
            }
            Wire::Ask | Wire::NotSynced => {} // snapshots stay on one machine
        }
    }

    /// This copy as parts that each fit a frame, the last marked: an entry
    /// that fit as a write fits as a part of its own.
    fn snapshot(&self) -> Vec<Wire<K, V>> {
        // The enum's tag, the kind and the entry count: room left for them.
        let budget = self.frame_limit.saturating_sub(16).max(1);
        let table = self.shared.table.read().unwrap_or_else(|e| e.into_inner());
        let mut parts = Vec::new();
        let mut entries = Vec::new();
        let mut size = 0;
        for (key, entry) in table.iter() {
            let pair = (key.clone(), entry.clone());
            let len = postcard::experimental::serialized_size(&pair).unwrap_or(0);
            if !entries.is_empty() && size + len > budget {
                let full = std::mem::take(&mut entries);
                parts.push(Wire::Entries {
                    kind: Kind::Part,
                    entries: full,
                });
                size = 0;
            }
            size += len;
            entries.push(pair);
        }
        parts.push(Wire::Entries {
            kind: Kind::Last,
            entries,
        });
        parts
    }
}
