//! Prometheus metrics, in OpenMetrics text, under the `kruised_` namespace.
//!
//! Labels never carry unbounded values such as image names or pod names.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Every metric kruised exports, with the registry that renders them.
pub struct Metrics {
    registry: Registry,
    /// CRI call metrics.
    pub cri: CriMetrics,
    /// Image pre-pull metrics.
    pub image_pull: ImagePullMetrics,
    /// NodePodProbe metrics.
    pub probe: ProbeMetrics,
    /// Container recreate (ContainerRecreateRequest) metrics.
    pub recreate: RecreateMetrics,
}

/// A `result` label with a bounded value set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// For pulls: `succeeded`, `failed`, `skipped`; for writes: `ok`, `conflict`, `error`.
    pub result: &'static str,
}

/// Image pre-pull metrics.
#[derive(Clone)]
pub struct ImagePullMetrics {
    tags: Family<ResultLabels, Counter>,
    pulls: Family<ResultLabels, Histogram>,
    bytes: Counter,
    in_flight: Gauge,
    status_writes: Family<ResultLabels, Counter>,
}

/// Decrements the in-flight gauge when dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl ImagePullMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            tags: Family::default(),
            pulls: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 2.0, 18))
            }),
            bytes: Counter::default(),
            in_flight: Gauge::default(),
            status_writes: Family::default(),
        };
        registry.register(
            "image_pull_tags",
            "NodeImage tags finished, by result",
            metrics.tags.clone(),
        );
        registry.register(
            "image_pull_duration_seconds",
            "Duration of CRI image pulls, by result",
            metrics.pulls.clone(),
        );
        registry.register(
            "image_pull_bytes",
            "Bytes of images pulled",
            metrics.bytes.clone(),
        );
        registry.register(
            "image_pulls_in_flight",
            "CRI image pulls in flight",
            metrics.in_flight.clone(),
        );
        registry.register(
            "nodeimage_status_writes",
            "NodeImage status writes, by result",
            metrics.status_writes.clone(),
        );
        metrics
    }

    /// Counts a finished tag.
    pub fn tag_finished(&self, result: &'static str) {
        self.tags.get_or_create(&ResultLabels { result }).inc();
    }

    /// Records a finished CRI pull.
    pub fn observe_pull(&self, duration: std::time::Duration, ok: bool) {
        let result = if ok { "succeeded" } else { "failed" };
        self.pulls
            .get_or_create(&ResultLabels { result })
            .observe(duration.as_secs_f64());
    }

    /// Adds pulled bytes.
    pub fn add_bytes(&self, bytes: u64) {
        self.bytes.inc_by(bytes);
    }

    /// Marks a pull in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Counts a status write.
    pub fn status_write(&self, result: &'static str) {
        self.status_writes
            .get_or_create(&ResultLabels { result })
            .inc();
    }
}

/// Labels of one probe run: the handler and what came of it. Both sets are bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    /// `exec`, `http`, `tcp`, `grpc` or `none`.
    pub handler: &'static str,
    /// `succeeded`, `failed` or `error` (the probe could not run).
    pub result: &'static str,
}

/// NodePodProbe metrics.
#[derive(Clone)]
pub struct ProbeMetrics {
    runs: Family<ProbeLabels, Histogram>,
    schedule_delay: Histogram,
    workers: Gauge,
    status_writes: Family<ResultLabels, Counter>,
}

/// Decrements the probe worker gauge when dropped.
pub struct ProbeWorkerGuard(Gauge);

impl Drop for ProbeWorkerGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl ProbeMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            // 1 ms to ~65 s: a TCP connect to a probe timeout.
            runs: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 17))
            }),
            // 100 µs to ~6.5 s late.
            schedule_delay: Histogram::new(exponential_buckets(0.0001, 2.0, 17)),
            workers: Gauge::default(),
            status_writes: Family::default(),
        };
        registry.register(
            "probe_duration_seconds",
            "Duration of NodePodProbe probe runs, by handler and result",
            metrics.runs.clone(),
        );
        registry.register(
            "probe_schedule_delay_seconds",
            "How late probe runs started after their scheduled tick",
            metrics.schedule_delay.clone(),
        );
        registry.register(
            "probe_workers",
            "NodePodProbe probe workers running",
            metrics.workers.clone(),
        );
        registry.register(
            "nodepodprobe_status_writes",
            "NodePodProbe status writes, by result",
            metrics.status_writes.clone(),
        );
        metrics
    }

    /// Records one probe run.
    pub fn observe_run(&self, handler: &'static str, result: &'static str, seconds: f64) {
        self.runs
            .get_or_create(&ProbeLabels { handler, result })
            .observe(seconds);
    }

    /// Records how late a run started after its tick.
    pub fn observe_schedule_delay(&self, seconds: f64) {
        self.schedule_delay.observe(seconds);
    }

    /// Counts a worker as running until the guard is dropped.
    pub fn worker_running(&self) -> ProbeWorkerGuard {
        self.workers.inc();
        ProbeWorkerGuard(self.workers.clone())
    }

    /// Counts a status write: `ok`, `conflict` or `error`.
    pub fn status_write(&self, result: &'static str) {
        self.status_writes
            .get_or_create(&ResultLabels { result })
            .inc();
    }
}

/// A `phase` label: `Pending`, `Recreating`, or `Unset` (no phase written yet).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// The CRR phase.
    pub phase: &'static str,
}

/// A `reason` label with a bounded value set (an error's `metric_label()`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why.
    pub reason: &'static str,
}

/// The phases [`RecreateMetrics::set_in_flight`] reports, in order.
pub const IN_FLIGHT_PHASES: [&str; 3] = ["Pending", "Recreating", "Unset"];

/// Container recreate (ContainerRecreateRequest) metrics. Cloning shares the metrics.
#[derive(Clone)]
pub struct RecreateMetrics {
    containers: Family<ResultLabels, Counter>,
    completions: Family<ResultLabels, Counter>,
    creation_to_kill: Histogram,
    kill_to_running: Histogram,
    in_flight: Family<PhaseLabels, Gauge>,
    sync_errors: Family<ReasonLabels, Counter>,
}

impl Default for RecreateMetrics {
    /// Metrics that count but are in no registry (a controller built without
    /// [`Metrics`], as in tests).
    fn default() -> Self {
        Self {
            containers: Family::default(),
            completions: Family::default(),
            // 5 ms to ~5.5 min: a prompt kill, or one after a long preStop hook.
            creation_to_kill: Histogram::new(exponential_buckets(0.005, 2.0, 17)),
            // 10 ms to ~11 min: a quick restart, or one held by the kubelet's back-off.
            kill_to_running: Histogram::new(exponential_buckets(0.01, 2.0, 17)),
            in_flight: Family::default(),
            sync_errors: Family::default(),
        }
    }
}

impl RecreateMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "container_recreates",
            "Containers of ContainerRecreateRequests that reached a final state, by result (succeeded, failed)",
            metrics.containers.clone(),
        );
        registry.register(
            "crr_completions",
            "ContainerRecreateRequests completed by kruised, by result (succeeded, failed, invalid)",
            metrics.completions.clone(),
        );
        registry.register(
            "crr_creation_to_kill_seconds",
            "Time from a ContainerRecreateRequest's creation to the StopContainer call of each of its containers",
            metrics.creation_to_kill.clone(),
        );
        registry.register(
            "crr_kill_to_running_seconds",
            "Time from the StopContainer call until the container's replacement started, as the runtime reports it",
            metrics.kill_to_running.clone(),
        );
        registry.register(
            "crrs_in_flight",
            "Active ContainerRecreateRequests of this node, by phase (Pending, Recreating, Unset)",
            metrics.in_flight.clone(),
        );
        registry.register(
            "crr_sync_errors",
            "Failed syncs of a pod's ContainerRecreateRequests, by reason",
            metrics.sync_errors.clone(),
        );
        metrics
    }

    /// Counts a container that reached `Succeeded` or `Failed` (`result` is the phase in
    /// lower case).
    pub fn container_finished(&self, result: &'static str) {
        self.containers
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts a CRR kruised completed: `succeeded`, `failed` (a container failed), or
    /// `invalid` (completed with an explanation, the request could not be acted on).
    pub fn crr_completed(&self, result: &'static str) {
        self.completions
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Records the time from a CRR's creation to a container's StopContainer call.
    pub fn observe_creation_to_kill(&self, elapsed: std::time::Duration) {
        self.creation_to_kill.observe(elapsed.as_secs_f64());
    }

    /// Records the time from a StopContainer call until the replacement container started.
    pub fn observe_kill_to_running(&self, elapsed: std::time::Duration) {
        self.kill_to_running.observe(elapsed.as_secs_f64());
    }

    /// Sets the number of active CRRs in each of [`IN_FLIGHT_PHASES`].
    pub fn set_in_flight(&self, counts: [i64; IN_FLIGHT_PHASES.len()]) {
        for (phase, count) in IN_FLIGHT_PHASES.into_iter().zip(counts) {
            self.in_flight
                .get_or_create(&PhaseLabels { phase })
                .set(count);
        }
    }

    /// Counts a failed sync.
    pub fn sync_error(&self, reason: &'static str) {
        self.sync_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

/// Labels of a CRI call: the method and the gRPC code name. Both sets are bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CriCallLabels {
    /// The CRI method, for example `PullImage`.
    pub method: &'static str,
    /// The gRPC code name, for example `OK` or `NotFound`.
    pub code: &'static str,
}

/// Latency of CRI calls by method and result code.
#[derive(Clone)]
pub struct CriMetrics {
    calls: Family<CriCallLabels, Histogram>,
}

impl CriMetrics {
    /// Records one finished call.
    pub fn observe(&self, method: &'static str, code: &'static str, seconds: f64) {
        self.calls
            .get_or_create(&CriCallLabels { method, code })
            .observe(seconds);
    }
}

impl Metrics {
    /// Creates the registry with every metric registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("kruised");
        registry.register(
            "build",
            "kruised build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        // 1 ms to ~33 min: covers a cached ListImages and a multi-GB pull.
        let calls = Family::<CriCallLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 22))
        });
        registry.register(
            "cri_call_duration_seconds",
            "Duration of CRI calls by method and gRPC code",
            calls.clone(),
        );
        let image_pull = ImagePullMetrics::register(&mut registry);
        let probe = ProbeMetrics::register(&mut registry);
        let recreate = RecreateMetrics::register(&mut registry);
        Arc::new(Self {
            registry,
            cri: CriMetrics { calls },
            image_pull,
            probe,
            recreate,
        })
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
    fn cri_calls_are_rendered_with_method_and_code() {
        let metrics = Metrics::new();
        metrics.cri.observe("PullImage", "OK", 0.25);
        let text = metrics.encode();
        assert!(
            text.contains(
                "kruised_cri_call_duration_seconds_count{method=\"PullImage\",code=\"OK\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("kruised_build_info{version="), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn probe_runs_and_workers_are_rendered() {
        let metrics = Metrics::new();
        metrics.probe.observe_run("tcp", "succeeded", 0.002);
        let guard = metrics.probe.worker_running();
        metrics.probe.status_write("ok");
        let text = metrics.encode();
        assert!(
            text.contains(
                "kruised_probe_duration_seconds_count{handler=\"tcp\",result=\"succeeded\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("kruised_probe_workers 1"), "{text}");
        assert!(
            text.contains("kruised_nodepodprobe_status_writes_total{result=\"ok\"} 1"),
            "{text}"
        );
        drop(guard);
        assert!(metrics.encode().contains("kruised_probe_workers 0"));
    }

    #[test]
    fn recreate_metrics_are_rendered_with_bounded_labels_and_base_units() {
        let metrics = Metrics::new();
        let recreate = &metrics.recreate;
        recreate.container_finished("succeeded");
        recreate.container_finished("succeeded");
        recreate.container_finished("failed");
        recreate.crr_completed("succeeded");
        recreate.observe_creation_to_kill(std::time::Duration::from_millis(30));
        recreate.observe_kill_to_running(std::time::Duration::from_millis(700));
        recreate.set_in_flight([2, 1, 0]);
        recreate.sync_error("pod_status");
        let text = metrics.encode();
        for line in [
            "kruised_container_recreates_total{result=\"succeeded\"} 2",
            "kruised_container_recreates_total{result=\"failed\"} 1",
            "kruised_crr_completions_total{result=\"succeeded\"} 1",
            "kruised_crr_creation_to_kill_seconds_count 1",
            "kruised_crr_creation_to_kill_seconds_bucket{le=\"0.04\"} 1",
            "kruised_crr_creation_to_kill_seconds_bucket{le=\"0.02\"} 0",
            "kruised_crr_kill_to_running_seconds_sum 0.7",
            "kruised_crrs_in_flight{phase=\"Pending\"} 2",
            "kruised_crrs_in_flight{phase=\"Recreating\"} 1",
            "kruised_crrs_in_flight{phase=\"Unset\"} 0",
            "kruised_crr_sync_errors_total{reason=\"pod_status\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn recreate_metrics_built_alone_count_without_a_registry() {
        let recreate = RecreateMetrics::default();
        let shared = recreate.clone();
        shared.crr_completed("invalid");
        let mut registry = Registry::default();
        registry.register("completions", "", recreate.completions.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("completions_total{result=\"invalid\"} 1"),
            "{text}"
        );
    }
}
