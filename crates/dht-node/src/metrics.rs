//! The DHT driver's metrics, registered with the node's
//! [`Metrics`](knotwork_node::Metrics) at setup under `knot_dht_*`.

use std::time::Duration;

use knotwork_node::Metrics;
use knotwork_node::metrics::Labels;
use knotwork_node::metrics::prometheus_client::metrics::counter::Counter;
use knotwork_node::metrics::prometheus_client::metrics::family::Family;
use knotwork_node::metrics::prometheus_client::metrics::gauge::Gauge;
use knotwork_node::metrics::prometheus_client::metrics::histogram::{
    Histogram, exponential_buckets,
};

/// The families; cheap to clone (clones count into the same series).
#[derive(Clone, Debug)]
pub(crate) struct DhtMetrics {
    started: Family<Labels, Counter>,
    finished: Family<Labels, Counter>,
    duration: Histogram,
    records: Gauge,
    table: Gauge,
    refused: Family<Labels, Counter>,
    dropped: Family<Labels, Counter>,
    queued: Gauge,
}

impl Default for DhtMetrics {
    fn default() -> Self {
        Self {
            started: Family::default(),
            finished: Family::default(),
            // 1 ms to ~65 s.
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            records: Gauge::default(),
            table: Gauge::default(),
            refused: Family::default(),
            dropped: Family::default(),
            queued: Gauge::default(),
        }
    }
}

impl DhtMetrics {
    /// Registers the families with the node's registry.
    pub(crate) fn register(&self, metrics: &Metrics) {
        metrics.register(
            "dht_queries_started",
            "DHT queries started by this node, by kind",
            self.started.clone(),
        );
        metrics.register(
            "dht_queries_finished",
            "DHT queries finished, by kind and outcome (ok, empty, timeout, error)",
            self.finished.clone(),
        );
        metrics.register(
            "dht_query_duration_seconds",
            "Time from start to end of a DHT query",
            self.duration.clone(),
        );
        metrics.register(
            "dht_records",
            "Records held for the network",
            self.records.clone(),
        );
        metrics.register(
            "dht_routing_table_peers",
            "Entries in the routing table",
            self.table.clone(),
        );
        metrics.register(
            "dht_refused_messages",
            "DHT messages refused, by reason",
            self.refused.clone(),
        );
        metrics.register(
            "dht_dropped_messages",
            "DHT messages not sent, by reason (queue_full: the peer does not read; \
             no_channel: a response whose request's channel is gone; dial_queue_full, \
             dial_limit: too many messages or dials waiting for dials)",
            self.dropped.clone(),
        );
        metrics.register(
            "dht_queued_messages",
            "DHT messages waiting in the per-peer queues",
            self.queued.clone(),
        );
    }

    /// Counts a query of `kind` (`find_node`, `get`, `put`, `provide`,
    /// `providers`) started.
    pub(crate) fn query_started(&self, kind: &'static str) {
        self.started.get_or_create(&vec![("kind", kind)]).inc();
    }

    /// Counts a query of `kind` finished with `outcome` after `duration`.
    pub(crate) fn query_finished(
        &self,
        kind: &'static str,
        outcome: &'static str,
        duration: Duration,
    ) {
        self.finished
            .get_or_create(&vec![("kind", kind), ("outcome", outcome)])
            .inc();
        self.duration.observe(duration.as_secs_f64());
    }

    /// Sets the records held and the routing table's size.
    pub(crate) fn state(&self, records: usize, table: usize) {
        self.records.set(i64::try_from(records).unwrap_or(i64::MAX));
        self.table.set(i64::try_from(table).unwrap_or(i64::MAX));
    }

    /// Counts a message not sent, for `reason`.
    pub(crate) fn dropped(&self, reason: &'static str) {
        self.dropped.get_or_create(&vec![("reason", reason)]).inc();
    }

    /// Adds `delta` to the messages waiting in per-peer queues.
    pub(crate) fn queued(&self, delta: i64) {
        self.queued.inc_by(delta);
    }

    /// Counts a message refused for `reason` (a fixed name per error kind).
    pub(crate) fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&vec![("reason", reason)]).inc();
    }
}
