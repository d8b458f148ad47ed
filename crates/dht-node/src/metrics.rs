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

    /// Counts a message refused for `reason` (a fixed name per error kind).
    pub(crate) fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&vec![("reason", reason)]).inc();
    }
}
