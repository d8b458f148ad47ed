//! The built-in protocols every node runs, one file each.

pub mod address;
pub mod gossip;
pub mod health;
pub mod ping;
pub mod resource;
pub mod task;
