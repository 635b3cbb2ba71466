//! Configuration: what the attribute and the [`Builder`] say, what the
//! environment overrides at run time, and the validated [`Config`] a master runs
//! with.

mod balance;
mod builder;
mod cluster;
mod error;
pub mod ranges;
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
mod recycling;
mod redis_url;
mod resolve;
#[cfg(test)]
mod test_env;
mod tls;

pub use balance::Balance;
pub(crate) use builder::ENV_NODES;
pub use builder::{Builder, Flavor, Logging};
pub(crate) use cluster::{Cluster, ENV_CLUSTER, ENV_MACHINE};
pub(crate) use recycling::Recycling;
#[cfg(feature = "cluster")]
pub(crate) use redis_url::{Sentinels, Target};
pub(crate) use resolve::Config;
#[cfg(feature = "tls")]
pub(crate) use tls::Tickets;
pub(crate) use tls::TlsFiles;
