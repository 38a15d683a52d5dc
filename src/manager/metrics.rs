//! The manager's Prometheus metrics, under `kruised_manager_`. Labels are bounded: a
//! controller name, a verb, a result, an event reason (all from fixed sets).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// `controller` and `result` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `node`, `nodeimage`, `imagepulljob`, `imagelistpulljob`, `crr`.
    pub controller: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// One API write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// The controller that wrote.
    pub controller: &'static str,
    /// What was done, e.g. `create_nodeimage`, `sync_tag`, `complete_crr`.
    pub action: &'static str,
    /// `ok`, `conflict` or `error`.
    pub result: &'static str,
}

/// An Event recorded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// The Event's reason.
    pub reason: &'static str,
}

/// Every manager metric, with its registry.
pub struct ManagerMetrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_seconds: Family<ReconcileLabels, Histogram>,
    writes: Family<WriteLabels, Counter>,
    events: Family<EventLabels, Counter>,
    leader: Gauge,
    leader_transitions: Counter,
}

impl ManagerMetrics {
    /// The registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("kruised_manager");
        registry.register(
            "build",
            "kruised build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by controller and result",
            reconciles.clone(),
        );
        let reconcile_seconds = Family::<ReconcileLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 18))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles by controller and result",
            reconcile_seconds.clone(),
        );
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "api_writes",
            "API writes by controller, action and result",
            writes.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register("events", "Events recorded, by reason", events.clone());
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        let leader_transitions = Counter::default();
        registry.register(
            "leader_acquisitions",
            "Times this replica became the leader",
            leader_transitions.clone(),
        );
        Arc::new(Self {
            registry,
            reconciles,
            reconcile_seconds,
            writes,
            events,
            leader,
            leader_transitions,
        })
    }

    /// Counts a finished reconcile.
    pub fn reconciled(&self, controller: &'static str, ok: bool, took: Duration) {
        let labels = ReconcileLabels {
            controller,
            result: if ok { "ok" } else { "error" },
        };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Counts an API write.
    pub fn write<T>(
        &self,
        controller: &'static str,
        action: &'static str,
        result: &Result<T, kube::Error>,
    ) {
        let result = match result {
            Ok(_) => "ok",
            Err(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Err(_) => "error",
        };
        self.writes
            .get_or_create(&WriteLabels {
                controller,
                action,
                result,
            })
            .inc();
    }

    /// Counts a write whose outcome is not a bare API result.
    pub fn write_outcome(&self, controller: &'static str, action: &'static str, ok: bool) {
        self.writes
            .get_or_create(&WriteLabels {
                controller,
                action,
                result: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// Counts an Event.
    pub fn event(&self, reason: &'static str) {
        self.events.get_or_create(&EventLabels { reason }).inc();
    }

    /// Whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        if leading && self.leader.get() == 0 {
            self.leader_transitions.inc();
        }
        self.leader.set(i64::from(leading));
    }

    /// Renders every metric in OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_counted_by_result() {
        let metrics = ManagerMetrics::new();
        metrics.write::<()>("nodeimage", "create_nodeimage", &Ok(()));
        metrics.set_leader(true);
        metrics.set_leader(true);
        let text = metrics.encode();
        assert!(
            text.contains("kruised_manager_api_writes_total{controller=\"nodeimage\",action=\"create_nodeimage\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("kruised_manager_leader 1"), "{text}");
        assert!(
            text.contains("kruised_manager_leader_acquisitions_total 1"),
            "{text}"
        );
    }
}
