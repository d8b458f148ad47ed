//! The metrics of the task, resource and health protocols, registered with
//! the node's [`Metrics`](knotwork_node::Metrics) at setup.

use knotwork_node::Metrics;
use knotwork_node::metrics::Labels;
use knotwork_node::metrics::prometheus_client::metrics::counter::Counter;
use knotwork_node::metrics::prometheus_client::metrics::family::Family;
use knotwork_node::metrics::prometheus_client::metrics::gauge::Gauge;

/// What happened to a task, as counted in `knot_tasks_total{event}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskEvent {
    /// Submitted by this node.
    Submitted,
    /// Sent to a worker (first try or retry).
    Dispatched,
    /// Re-placed after its worker failed, refused or timed out.
    Retried,
    /// Its result reached this node's results stream.
    Completed,
    /// Failed for good (no workers, attempts exhausted, cancelled).
    Failed,
    /// Run by this node as a worker.
    Executed,
}

impl TaskEvent {
    fn label(self) -> &'static str {
        match self {
            Self::Submitted => "submitted",
            Self::Dispatched => "dispatched",
            Self::Retried => "retried",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Executed => "executed",
        }
    }
}

/// The families; cheap to clone (clones count into the same series).
#[derive(Clone, Debug, Default)]
pub(crate) struct TaskMetrics {
    tasks: Family<Labels, Counter>,
    in_flight: Gauge,
    resource_reports: Counter,
    health: Gauge,
}

impl TaskMetrics {
    /// Registers the families with the node's registry.
    pub(crate) fn register(&self, metrics: &Metrics) {
        metrics.register("tasks", "Task protocol events", self.tasks.clone());
        metrics.register(
            "tasks_in_flight",
            "Tasks sent to workers and not answered yet",
            self.in_flight.clone(),
        );
        metrics.register(
            "resource_reports",
            "Resource reports received from peers",
            self.resource_reports.clone(),
        );
        metrics.register(
            "health_status",
            "Last health check: 0 ok, 1 degraded, 2 failing",
            self.health.clone(),
        );
    }

    pub(crate) fn task(&self, event: TaskEvent) {
        self.tasks
            .get_or_create(&vec![("event", event.label())])
            .inc();
    }

    pub(crate) fn tasks_in_flight(&self, delta: i64) {
        self.in_flight.inc_by(delta);
    }

    pub(crate) fn resource_report(&self) {
        self.resource_reports.inc();
    }

    pub(crate) fn health(&self, level: i64) {
        self.health.set(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_under_the_node_prefix() {
        let node = Metrics::new();
        let m = TaskMetrics::default();
        m.register(&node);
        m.task(TaskEvent::Submitted);
        m.task(TaskEvent::Submitted);
        m.resource_report();
        m.health(1);
        let text = node.encode();
        for line in [
            "knot_tasks_total{event=\"submitted\"} 2",
            "knot_resource_reports_total 1",
            "knot_health_status 1",
            "knot_tasks_in_flight 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
