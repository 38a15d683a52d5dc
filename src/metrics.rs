//! Prometheus metrics, in OpenMetrics text, under the `kruised_` namespace.
//!
//! Labels never carry unbounded values such as image names or pod names.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Every metric kruised exports, with the registry that renders them.
pub struct Metrics {
    registry: Registry,
    /// CRI call metrics.
    pub cri: CriMetrics,
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
        Arc::new(Self {
            registry,
            cri: CriMetrics { calls },
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
}
