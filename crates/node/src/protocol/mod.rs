//! The built-in protocols every node runs, one file each.

pub mod address;
#[cfg(feature = "dht")]
pub mod dht;
pub mod gossip;
pub mod health;
pub mod holepunch;
pub mod ping;
pub mod reachability;
pub mod relay;
pub mod resource;
pub mod task;
