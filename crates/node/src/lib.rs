//! knotwork-node: the node runtime (channels, protocol registry, built-in protocols, the knot CLI).
//!
//! **Not implemented yet.** This crate is a placeholder in the workspace
//! layout; it exports nothing. The work is tracked in issue 4.
