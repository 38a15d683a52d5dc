//! Optional Prometheus Operator ServiceMonitors. `monitoring.coreos.com/v1` is not a
//! Kubernetes type (no k8s-openapi struct), so they are built as JSON.

use serde_json::{Value, json};

use super::{AGENT_NAME, MANAGER_NAME, Mode, Options, labels, selector};

/// One ServiceMonitor per component.
pub fn service_monitors(options: &Options) -> Vec<Value> {
    let mut components = vec![(AGENT_NAME, "agent")];
    if options.mode == Mode::Standalone {
        components.push((MANAGER_NAME, "manager"));
    }
    components
        .into_iter()
        .map(|(name, component)| {
            json!({
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "ServiceMonitor",
                "metadata": {
                    "name": name,
                    "namespace": options.namespace,
                    "labels": labels(Some(component)),
                },
                "spec": {
                    "selector": {"matchLabels": selector(component)},
                    // The Grafana dashboard (deploy/grafana) filters by `node`.
                    "endpoints": [{
                        "port": "http-metrics",
                        "path": "/metrics",
                        "interval": "30s",
                        "relabelings": [{
                            "sourceLabels": ["__meta_kubernetes_pod_node_name"],
                            "targetLabel": "node",
                        }],
                    }],
                },
            })
        })
        .collect()
}
