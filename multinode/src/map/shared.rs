//! What a map's handles and its copy's task share, and what its keys and
//! values must be.

use std::hash::Hash;
use std::sync::{Mutex, RwLock};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::table::Table;
use super::version::Clock;

/// A key of a [`Map`](super::Map): what a `HashMap` key is, and serde.
/// Implemented for every such type.
///
/// ```
/// fn key<K: multinode::map::Key>() {}
/// key::<String>();
/// key::<(u64, String)>();
/// ```
pub trait Key: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static> Key for T {}

/// A value of a [`Map`](super::Map): serde, and `Clone` for [`Map::get`](super::Map::get).
/// Implemented for every such type.
///
/// ```
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct Session { user: String, visits: u64 }
///
/// fn value<V: multinode::map::Value>() {}
/// value::<Session>();
/// ```
pub trait Value: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Value for T {}

/// What the handles and the copy's task share.
pub(super) struct Shared<K, V> {
    pub table: RwLock<Table<K, V>>,
    pub clock: Mutex<Clock>,
}
