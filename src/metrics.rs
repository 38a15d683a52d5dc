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
        Arc::new(Self {
            registry,
            cri: CriMetrics { calls },
            image_pull,
            probe,
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
}
