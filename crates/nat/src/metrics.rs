//! The metrics of NAT traversal, registered with the node's
//! [`Metrics`](knotwork_node::Metrics) at setup.

use knotwork_node::Metrics;
use knotwork_node::metrics::Labels;
use knotwork_node::metrics::prometheus_client::metrics::counter::Counter;
use knotwork_node::metrics::prometheus_client::metrics::family::Family;
use knotwork_node::metrics::prometheus_client::metrics::gauge::Gauge;

/// The families; cheap to clone (clones count into the same series).
#[derive(Clone, Debug, Default)]
pub(crate) struct NatMetrics {
    relay_circuits: Gauge,
    holepunch_attempts: Counter,
    holepunch_successes: Counter,
    holepunch_dials: Counter,
    upnp: Family<Labels, Counter>,
    upnp_mapped: Gauge,
    reachability: Family<Labels, Gauge>,
}

impl NatMetrics {
    /// Registers the families with the node's registry.
    pub(crate) fn register(&self, metrics: &Metrics) {
        metrics.register(
            "relay_circuits",
            "Circuits this node relays now",
            self.relay_circuits.clone(),
        );
        metrics.register(
            "holepunch_attempts",
            "Hole punches tried over relayed channels",
            self.holepunch_attempts.clone(),
        );
        metrics.register(
            "holepunch_successes",
            "Hole punches that gave a direct channel",
            self.holepunch_successes.clone(),
        );
        metrics.register(
            "holepunch_dials",
            "TCP dials of hole punches (each SYN a punch sends on its own)",
            self.holepunch_dials.clone(),
        );
        metrics.register(
            "upnp_requests",
            "UPnP gateway exchanges by result: mapped, renewed, failed, deleted",
            self.upnp.clone(),
        );
        metrics.register(
            "upnp_mapped",
            "1 while the UPnP gateway maps the listen port",
            self.upnp_mapped.clone(),
        );
        metrics.register(
            "reachability",
            "1 for the node's reachability as peers' dial-backs found it (public, private, unknown)",
            self.reachability.clone(),
        );
        self.reachability("unknown");
    }

    /// Sets the number of circuits this node relays.
    pub(crate) fn relay_circuits(&self, open: usize) {
        self.relay_circuits
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    pub(crate) fn holepunch_attempt(&self) {
        self.holepunch_attempts.inc();
    }

    pub(crate) fn holepunch_success(&self) {
        self.holepunch_successes.inc();
    }

    pub(crate) fn holepunch_dial(&self) {
        self.holepunch_dials.inc();
    }

    /// One UPnP gateway exchange ended with `result` (`mapped`, `renewed`,
    /// `failed`, `deleted`); `mapped` sets the mapped gauge, `deleted` and
    /// `lost` clear it.
    #[cfg_attr(not(feature = "upnp"), allow(dead_code))]
    pub(crate) fn upnp(&self, result: &'static str) {
        match result {
            "lost" => {
                self.upnp_mapped.set(0);
                return;
            }
            "mapped" => {
                self.upnp_mapped.set(1);
            }
            "deleted" => {
                self.upnp_mapped.set(0);
            }
            _ => {}
        }
        self.upnp.get_or_create(&vec![("result", result)]).inc();
    }

    /// Sets the `state` series of `knot_reachability` to 1 and the others to 0.
    pub(crate) fn reachability(&self, state: &'static str) {
        for s in ["public", "private", "unknown"] {
            self.reachability
                .get_or_create(&vec![("state", s)])
                .set(i64::from(s == state));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_under_the_node_prefix() {
        let node = Metrics::new();
        let m = NatMetrics::default();
        m.register(&node);
        m.upnp("mapped");
        m.holepunch_attempt();
        m.holepunch_dial();
        m.reachability("private");
        let text = node.encode();
        for line in [
            "knot_upnp_requests_total{result=\"mapped\"} 1",
            "knot_upnp_mapped 1",
            "knot_holepunch_attempts_total 1",
            "knot_holepunch_dials_total 1",
            "knot_reachability{state=\"private\"} 1",
            "knot_reachability{state=\"unknown\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
