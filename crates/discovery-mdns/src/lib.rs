//! knotwork-discovery-mdns: mDNS / DNS-SD discovery.
//!
//! **Not implemented yet.** This crate is a placeholder in the workspace
//! layout; it exports nothing. The work is tracked in issue 6.
