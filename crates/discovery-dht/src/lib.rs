//! knotwork-discovery-dht: Kademlia discovery (sans-IO core, driver, simulator).
//!
//! **Not implemented yet.** This crate is a placeholder in the workspace
//! layout; it exports nothing. The work is tracked in issue 5.
