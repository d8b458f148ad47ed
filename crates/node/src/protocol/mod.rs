//! The built-in protocols every node runs, one file each.

pub mod address;
pub mod ping;
