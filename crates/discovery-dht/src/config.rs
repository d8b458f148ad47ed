//! [`Config`]: the DHT's tunables, with Kademlia's usual defaults.

use std::time::Duration;

use knotwork_core::PeerAddr;

use crate::record::{RecordLimits, StoreLimits};

/// Whether this node serves the DHT or only uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answers requests and may be put in others' routing tables.
    Server,
    /// Only sends queries; every request says so, so servers never add it
    /// to their tables, and it answers no requests.
    Client,
}

/// Settings of a [`Dht`](crate::Dht).
#[derive(Clone, Debug)]
pub struct Config {
    /// Bucket size and replication factor (20).
    pub k: usize,
    /// Requests in flight per lookup path (3).
    pub alpha: usize,
    /// Disjoint lookup paths (1 = plain Kademlia).
    pub disjoint_paths: usize,
    /// How long one request may take (5 s).
    pub request_timeout: Duration,
    /// How long a whole query may take (60 s).
    pub query_timeout: Duration,
    /// Server or client mode.
    pub mode: Mode,
    /// A full bucket's oldest entry is only pinged if it was last heard
    /// from at least this long ago (30 s); see
    /// [`RoutingTable::with_ping_after`](crate::RoutingTable::with_ping_after).
    pub liveness_interval: Duration,
    /// Replacement candidates cached per bucket (5).
    pub replacement_cache: usize,
    /// Failed requests in a row after which an entry leaves the routing
    /// table even without a candidate to replace it (2: one lost response
    /// does not cost a live peer its place); see
    /// [`RoutingTable::with_max_failures`](crate::RoutingTable::with_max_failures).
    pub max_failures: u32,
    /// Most entries with an address in one /24 or /64: `(per bucket, per
    /// table)`, `(2, 10)` like discv5. `None` turns the limits off (for
    /// tests where every node is on loopback).
    pub subnet_limits: Option<(usize, usize)>,
    /// How often each bucket must see a lookup before one is made up (10 min).
    pub refresh_interval: Duration,
    /// How often expiry, republishing and refresh are checked (60 s).
    pub maintenance_interval: Duration,
    /// Record size and lifetime limits.
    pub record_limits: RecordLimits,
    /// How often a publisher re-puts its records (1 h).
    pub republish_interval: Duration,
    /// How often a holder re-replicates a record it was not sent again
    /// (1 h); `None` to never.
    pub replicate_interval: Option<Duration>,
    /// How long a provider announcement lasts (24 h).
    pub provider_ttl: Duration,
    /// How often a provider re-announces (12 h).
    pub provider_republish_interval: Duration,
    /// What the record store holds at most, in all and per sender.
    pub store: StoreLimits,
    /// Re-replications of records held for others that run at once (8);
    /// the others wait their turn.
    pub max_replications: usize,
    /// Addresses this node announces when it provides a key.
    pub local_addrs: Vec<PeerAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            k: 20,
            alpha: 3,
            disjoint_paths: 1,
            request_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(60),
            mode: Mode::Server,
            liveness_interval: Duration::from_secs(30),
            replacement_cache: 5,
            max_failures: 2,
            subnet_limits: Some((2, 10)),
            refresh_interval: Duration::from_secs(600),
            maintenance_interval: Duration::from_secs(60),
            record_limits: RecordLimits::default(),
            republish_interval: Duration::from_secs(3600),
            replicate_interval: Some(Duration::from_secs(3600)),
            provider_ttl: Duration::from_secs(24 * 3600),
            provider_republish_interval: Duration::from_secs(12 * 3600),
            store: StoreLimits::default(),
            max_replications: 8,
            local_addrs: Vec::new(),
        }
    }
}
