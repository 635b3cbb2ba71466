//! The memory every process of a server shares: one sealed segment holding the
//! load table and the status board.

pub(crate) mod board;
pub(crate) mod load_table;
pub(crate) mod segment;
#[cfg(test)]
pub(crate) mod zeroed;
