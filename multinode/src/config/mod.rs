//! Configuration: what the attribute and the [`Builder`] say, what the
//! environment overrides at run time, and the validated [`Config`] a master runs
//! with.

mod builder;
mod cluster;
mod error;
pub mod ranges;
mod resolve;

pub(crate) use builder::ENV_NODES;
pub use builder::{Balance, Builder, Flavor, Logging};
pub(crate) use cluster::{Cluster, ENV_MACHINE};
pub(crate) use resolve::Config;
