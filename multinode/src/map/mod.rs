//! A map that every node holds in memory, kept the same everywhere through the
//! mesh: sessions, feature flags, a cache every node fills for the others.
//!
//! A read is a lookup in this process's copy (no message, no wait). A write is
//! applied here and broadcast to every other node, which applies it as it
//! comes: the copies agree once the writes have arrived, within the mesh's
//! broadcast time. Two writes to one key on different nodes at once are
//! settled the same way everywhere: the later by a hybrid clock (wall time in
//! microseconds, moved past every write a node has seen), then the higher node
//! id. A removal is a write too. Entries may expire ([`Options::ttl`],
//! [`Map::insert_for`]); the number of keys is bounded ([`Options::max_entries`]).
//!
//! A node that starts, or restarts after a crash, asks the others for a
//! snapshot and reports ready only once one whole snapshot has come (or every
//! other node is starting too): a worker crash loses no entry, and a rolling
//! reload keeps them all.
//!
//! Across machines (`cluster`), writes reach the other machines' copies
//! through Redis as any broadcast does, at most once: a write sent while Redis
//! was out of reach is not repaired, and a node takes its snapshot from its
//! own machine only (the first node of a machine starts empty). A SIGUSR2
//! upgrade starts a new tree, which is not on the old tree's mesh: its map
//! starts empty unless the program keeps what matters elsewhere.
//!
//! ```no_run
//! #[multinode::main(nodes = 4)]
//! async fn main(mut nodes: multinode::Nodes) {
//!     let sessions = nodes
//!         .take_map::<String, u64>(multinode::map::Options::new())
//!         .await
//!         .expect("taken once");
//!     sessions.insert("alice".into(), 1).await.unwrap();
//!     assert_eq!(sessions.get("alice"), Some(1));
//! }
//! ```

mod copy;
mod entry;
mod shared;
mod sync;
mod table;
mod version;
mod wire;

use std::borrow::Borrow;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, RwLock};

use std::time::Duration;

use tokio::sync::watch;

use crate::mesh::{self, SendError};
use entry::Entry;
use shared::Shared;
pub use shared::{Key, Value};
use table::Table;
use version::{coarse_now_micros, now_micros, Clock};
pub(crate) use wire::Wire;

/// How long a removal is remembered, so that an older write still on its way
/// cannot bring the key back.
const REMOVAL_KEPT: Duration = Duration::from_secs(60);

/// The settings of a [`Map`].
///
/// ```
/// use std::time::Duration;
///
/// let options = multinode::map::Options::new()
///     .max_entries(100_000)
///     .ttl(Duration::from_secs(30 * 60))
///     .snapshot_timeout(Duration::from_secs(2));
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    max_entries: usize,
    ttl: Option<Duration>,
    snapshot_timeout: Duration,
    mesh: mesh::Options,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_entries: 1_000_000,
            ttl: None,
            snapshot_timeout: Duration::from_secs(5),
            mesh: mesh::Options::default(),
        }
    }
}

impl Options {
    /// The defaults: up to a million keys, no expiry, a snapshot waited for 5 s,
    /// the mesh's default [`Options`](crate::mesh::Options).
    ///
    /// ```
    /// let options = multinode::map::Options::new();
    /// # let _ = options;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The most keys the map holds: writing one more key is a
    /// [`MapError::Full`] for the writer (a key that holds a value may always
    /// be written again). Checked against the writer's copy: writes of new keys
    /// on several nodes at once may pass it by as many.
    ///
    /// ```
    /// let options = multinode::map::Options::new().max_entries(10_000);
    /// # let _ = options;
    /// ```
    pub fn max_entries(mut self, keys: usize) -> Self {
        self.max_entries = keys;
        self
    }

    /// How long an entry written with [`Map::insert`] lives: each write starts
    /// its time again (a session seen again stays). Default: for ever.
    ///
    /// ```
    /// let options = multinode::map::Options::new().ttl(std::time::Duration::from_secs(1800));
    /// # let _ = options;
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long a starting node waits for a snapshot from the others before
    /// it goes on with what it has (logged): a peer that is stopped (SIGSTOP)
    /// never answers. Default 5 s.
    ///
    /// ```
    /// let options = multinode::map::Options::new()
    ///     .snapshot_timeout(std::time::Duration::from_secs(1));
    /// # let _ = options;
    /// ```
    pub fn snapshot_timeout(mut self, timeout: Duration) -> Self {
        self.snapshot_timeout = timeout;
        self
    }

    /// The message layer's options: its `max_frame_len` bounds one entry.
    ///
    /// ```
    /// let mesh = multinode::mesh::Options::new().max_frame_len(64 * 1024);
    /// let options = multinode::map::Options::new().mesh(mesh);
    /// # let _ = options;
    /// ```
    pub fn mesh(mut self, options: mesh::Options) -> Self {
        self.mesh = options;
        self
    }

    pub(crate) fn mesh_options(&self) -> mesh::Options {
        self.mesh
    }
}

/// Why a write was refused: nothing was written, on any node.
///
/// ```
/// let error = multinode::map::MapError::Full { max: 10 };
/// assert_eq!(error.to_string(), "the map holds its max_entries of 10 keys: a new key is refused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The map holds [`Options::max_entries`] keys.
    #[error("the map holds its max_entries of {max} keys: a new key is refused")]
    Full {
        /// The bound.
        max: usize,
    },
    /// The entry, encoded, is over the mesh's `max_frame_len`.
    #[error("an entry of {len} bytes encoded is over the mesh's max_frame_len of {max}")]
    TooLarge {
        /// Its encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The entry could not be encoded.
    #[error("cannot encode the entry: {0}")]
    Encode(String),
}

/// A map held by every node, read here, written everywhere; cheap to clone
/// (into an axum state, say). Made by [`Nodes::take_map`](crate::Nodes::take_map).
///
/// ```no_run
/// # async fn f(map: multinode::map::Map<String, String>) -> Result<(), multinode::map::MapError> {
/// map.insert("user:42".into(), "Ada".into()).await?;
/// assert_eq!(map.get("user:42").as_deref(), Some("Ada"));
/// map.remove("user:42").await?;
/// # Ok(()) }
/// ```
pub struct Map<K, V> {
    shared: Arc<Shared<K, V>>,
    tx: mesh::Sender<Wire<K, V>>,
    options: Arc<Options>,
    synced: watch::Receiver<bool>,
    changes: watch::Receiver<u64>,
}

impl<K, V> Clone for Map<K, V> {
    fn clone(&self) -> Self {
        Map {
            shared: self.shared.clone(),
            tx: self.tx.clone(),
            options: self.options.clone(),
            synced: self.synced.clone(),
            changes: self.changes.clone(),
        }
    }
}

impl<K, V> fmt::Debug for Map<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.shared.table.read().map_or(0, |t| t.len());
        f.debug_struct("Map")
            .field("keys", &keys)
            .finish_non_exhaustive()
    }
}

impl<K: Key, V: Value> Map<K, V> {
    /// `key`'s value in this node's copy, if it holds one (and it has not
    /// expired). No message, no wait.
    ///
    /// ```no_run
    /// # fn f(map: multinode::map::Map<String, u64>) {
    /// if let Some(visits) = map.get("alice") {
    ///     println!("alice came {visits} times");
    /// }
    /// # }
    /// ```
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let table = self.shared.table.read().unwrap_or_else(|e| e.into_inner());
        table.get(key, coarse_now_micros).cloned()
    }

    /// How many keys hold a value here (those expired in the last second
    /// may still be counted).
    ///
    /// ```no_run
    /// # fn f(map: multinode::map::Map<String, u64>) {
    /// println!("{} sessions", map.len());
    /// # }
    /// ```
    pub fn len(&self) -> usize {
        self.shared.table.read().map_or(0, |t| t.len())
    }

    /// Whether no key holds a value here.
    ///
    /// ```no_run
    /// # fn f(map: multinode::map::Map<String, u64>) {
    /// assert!(map.is_empty() == (map.len() == 0));
    /// # }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every live entry here, in no order.
    ///
    /// ```no_run
    /// # fn f(map: multinode::map::Map<String, u64>) {
    /// for (user, visits) in map.entries() {
    ///     println!("{user}: {visits}");
    /// }
    /// # }
    /// ```
    pub fn entries(&self) -> Vec<(K, V)> {
        let table = self.shared.table.read().unwrap_or_else(|e| e.into_inner());
        table
            .live(now_micros())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// How many batches of writes from other nodes this copy has merged:
    /// `changed().await` on it wakes when the next comes (to drop what a
    /// program derived from the map, say). A node's own writes do not count.
    ///
    /// ```no_run
    /// # async fn f(map: multinode::map::Map<String, u64>) {
    /// let mut changes = map.changes();
    /// while changes.changed().await.is_ok() {
    ///     println!("another node wrote: {} keys now", map.len());
    /// }
    /// # }
    /// ```
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Writes `key` = `value` here and on every other node, to live for
    /// [`Options::ttl`]. Returns once it is applied here and queued for the
    /// others (waiting while a queue is full, as a broadcast does).
    ///
    /// ```no_run
    /// # async fn f(map: multinode::map::Map<String, u64>) -> Result<(), multinode::map::MapError> {
    /// map.insert("alice".into(), 1).await?;
    /// # Ok(()) }
    /// ```
    pub async fn insert(&self, key: K, value: V) -> Result<(), MapError> {
        self.write(key, Some(value), self.options.ttl).await
    }

    /// [`insert`](Self::insert), to live for `ttl` whatever [`Options::ttl`] says.
    ///
    /// ```no_run
    /// # async fn f(map: multinode::map::Map<String, u64>) -> Result<(), multinode::map::MapError> {
    /// map.insert_for("otp:alice".into(), 123456, std::time::Duration::from_secs(300)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn insert_for(&self, key: K, value: V, ttl: Duration) -> Result<(), MapError> {
        self.write(key, Some(value), Some(ttl)).await
    }

    /// Removes `key` here and on every other node.
    ///
    /// ```no_run
    /// # async fn f(map: multinode::map::Map<String, u64>) -> Result<(), multinode::map::MapError> {
    /// map.remove("alice").await?;
    /// # Ok(()) }
    /// ```
    pub async fn remove<Q>(&self, key: &Q) -> Result<(), MapError>
    where
        K: Borrow<Q>,
        Q: ToOwned<Owned = K> + ?Sized,
    {
        self.write(key.to_owned(), None, Some(REMOVAL_KEPT)).await
    }

    async fn write(&self, key: K, value: Option<V>, ttl: Option<Duration>) -> Result<(), MapError> {
        let now = now_micros();
        if value.is_some() {
            let table = self.shared.table.read().unwrap_or_else(|e| e.into_inner());
            let max = self.options.max_entries;
            if !table.has_room(&key, max) {
                return Err(MapError::Full { max });
            }
        }
        let version = self
            .shared
            .clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next(now);
        let expires = ttl.map_or(0, |ttl| now.saturating_add(ttl.as_micros() as u64));
        let entry = Entry {
            value,
            version,
            expires,
        };
        let write = Wire::Entries {
            kind: wire::Kind::Write,
            entries: vec![(key, entry)],
        };
        // Sent first: a write too large for the mesh is refused before any
        // copy has it.
        self.tx
            .broadcast(&write)
            .await
            .map_err(|error| match error {
                SendError::TooLarge { len, max } => MapError::TooLarge { len, max },
                other => MapError::Encode(other.to_string()),
            })?;
        let Wire::Entries { entries, .. } = write else {
            unreachable!("made above")
        };
        let mut table = self.shared.table.write().unwrap_or_else(|e| e.into_inner());
        for (key, entry) in entries {
            table.merge(key, entry);
        }
        Ok(())
    }

    /// Resolves once this copy holds a snapshot (or has given up waiting).
    pub(crate) async fn synced(&self) {
        let mut synced = self.synced.clone();
        let _ = synced.wait_for(|synced| *synced).await;
    }
}

/// The message layer a map's copies talk on.
type Layer<K, V> = (mesh::Sender<Wire<K, V>>, mesh::Receiver<Wire<K, V>>);

/// Starts node `me`'s copy of a map on the message layer `(tx, rx)`: its task
/// asks the other nodes for a snapshot at once, and applies what comes.
pub(crate) fn start<K: Key, V: Value>(
    me: usize,
    (tx, rx): Layer<K, V>,
    options: Options,
) -> Map<K, V> {
    let shared = Arc::new(Shared {
        table: RwLock::new(Table::default()),
        clock: Mutex::new(Clock::new(me)),
    });
    let (synced_tx, synced) = watch::channel(false);
    let (changes_tx, changes) = watch::channel(0);
    let replica = copy::Replica {
        changes: changes_tx,
        shared: shared.clone(),
        tx: tx.clone(),
        frame_limit: options.mesh.frame_limit(),
        synced: synced_tx,
    };
    let timeout = options.snapshot_timeout;
    tokio::spawn(tracing::Instrument::in_current_span(
        replica.run(rx, timeout),
    ));
    Map {
        shared,
        tx,
        options: Arc::new(options),
        synced,
        changes,
    }
}
