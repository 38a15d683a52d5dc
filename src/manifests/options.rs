//! What `kruised manifests` renders: the install's knobs, with defaults that match the
//! committed deploy/ tree.

use k8s_openapi::api::core::v1::Toleration;

/// Which cluster the manifests are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// No OpenKruise: the agent, `kruised manager`, and (with `--include-crds`) the CRDs.
    Standalone,
    /// Next to an OpenKruise whose kruise-manager stays: the agent only (it replaces
    /// kruise-daemon; kruise-manager keeps serving the CRDs and webhooks).
    WithOpenkruise,
}

/// Everything the rendered objects depend on.
#[derive(Debug, Clone)]
pub struct Options {
    /// Standalone or next to OpenKruise.
    pub mode: Mode,
    /// Namespace of the agent, the manager and their service accounts.
    pub namespace: String,
    /// Namespace the agents read pull secrets from (kruise: `kruise-daemon-config`).
    pub config_namespace: String,
    /// Container image of both the agent and the manager.
    pub image: String,
    /// `imagePullPolicy` of both containers.
    pub image_pull_policy: String,
    /// The agent's tolerations (default: tolerate everything, as kruise-daemon does).
    pub tolerations: Vec<Toleration>,
    /// Agent requests/limits.
    pub agent_resources: ResourceSizes,
    /// Manager requests/limits.
    pub manager_resources: ResourceSizes,
    /// Host directory holding the runtime socket, mounted read-only at `/hostvarrun`.
    pub socket_location: String,
    /// Socket file name under `/hostvarrun` (empty: detect, as kruise-daemon does).
    pub socket_file: String,
    /// Group owning the runtime socket. Set: the agent runs as non-root with this
    /// supplementary group. Unset: it runs as uid 0 with every capability dropped, which
    /// reaches a `root:root 0660` socket as its owner and nothing else.
    pub socket_group: Option<i64>,
    /// Run the agent in the host network namespace.
    pub host_network: bool,
    /// PriorityClass of the agent; the default one is rendered too.
    pub priority_class: String,
    /// Manager replicas (leader-elected).
    pub manager_replicas: i32,
    /// Render the apps.kruise.io CRDs (standalone only).
    pub include_crds: bool,
    /// Render a monitoring.coreos.com/v1 ServiceMonitor.
    pub service_monitor: bool,
    /// Namespace where OpenKruise's kruise-manager would run (manager detection).
    pub kruise_namespace: String,
}

/// CPU and memory requests and limits, as Kubernetes quantities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceSizes {
    /// CPU request.
    pub cpu_request: String,
    /// Memory request.
    pub memory_request: String,
    /// CPU limit (empty: none).
    pub cpu_limit: String,
    /// Memory limit.
    pub memory_limit: String,
}

/// The PriorityClass rendered when `--priority-class` is not changed.
pub const DEFAULT_PRIORITY_CLASS: &str = "kruised-node-agent";

impl ResourceSizes {
    /// The agent's defaults. Measured with `testbed bench-pull` (README, Benchmarks): RSS
    /// 16-24 MiB idle with 50 tags and during 4 concurrent pulls of a 50 MB image. The
    /// request covers the idle working set with margin; the limit leaves 4x headroom for
    /// bursts of large status documents and TLS buffers while still capping a leak well
    /// below kruise-daemon's 100-128Mi. CPU is idle between watch events; pulls are done
    /// by the runtime, so 100m (kruise's chart: 50m-100m) is a ceiling, not a need.
    pub fn agent_default() -> Self {
        Self {
            cpu_request: "10m".into(),
            memory_request: "32Mi".into(),
            cpu_limit: "100m".into(),
            memory_limit: "96Mi".into(),
        }
    }

    /// The manager's defaults: it caches Nodes, Pods (metadata and status it reads) and
    /// the apps.kruise.io objects, so it grows with the cluster; 256Mi fits a few thousand
    /// pods. No CPU limit: a leader catching up after failover should not be throttled.
    pub fn manager_default() -> Self {
        Self {
            cpu_request: "20m".into(),
            memory_request: "64Mi".into(),
            cpu_limit: String::new(),
            memory_limit: "256Mi".into(),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mode: Mode::Standalone,
            namespace: "kruise-system".into(),
            config_namespace: crate::api::DAEMON_CONFIG_NAMESPACE.into(),
            image: default_image(),
            image_pull_policy: "IfNotPresent".into(),
            tolerations: vec![tolerate_everything()],
            agent_resources: ResourceSizes::agent_default(),
            manager_resources: ResourceSizes::manager_default(),
            socket_location: "/var/run".into(),
            socket_file: String::new(),
            socket_group: None,
            host_network: false,
            priority_class: DEFAULT_PRIORITY_CLASS.into(),
            manager_replicas: 2,
            include_crds: false,
            service_monitor: false,
            kruise_namespace: "kruise-system".into(),
        }
    }
}

/// `kruised:v<crate version>`.
pub fn default_image() -> String {
    format!("kruised:v{}", env!("CARGO_PKG_VERSION"))
}

/// `operator: Exists` with no key: a node agent must run on every node, tainted or not.
pub fn tolerate_everything() -> Toleration {
    Toleration {
        operator: Some("Exists".into()),
        ..Default::default()
    }
}

/// Parses `KEY[=VALUE][:EFFECT]` or `Exists` into a toleration.
pub fn parse_toleration(text: &str) -> Result<Toleration, String> {
    if text == "Exists" {
        return Ok(tolerate_everything());
    }
    let (pair, effect) = match text.rsplit_once(':') {
        Some((pair, effect)) => {
            if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
                return Err(format!(
                    "toleration {text:?}: effect must be NoSchedule, PreferNoSchedule or NoExecute"
                ));
            }
            (pair, Some(effect.to_string()))
        }
        None => (text, None),
    };
    let (key, value) = match pair.split_once('=') {
        Some((key, value)) => (key, Some(value.to_string())),
        None => (pair, None),
    };
    if key.is_empty() {
        return Err(format!("toleration {text:?}: key is empty"));
    }
    Ok(Toleration {
        key: Some(key.to_string()),
        operator: Some(if value.is_some() { "Equal" } else { "Exists" }.into()),
        value,
        effect,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations_parse_key_value_and_effect() {
        let t = parse_toleration("dedicated=infra:NoSchedule").unwrap();
        assert_eq!(t.key.as_deref(), Some("dedicated"));
        assert_eq!(t.operator.as_deref(), Some("Equal"));
        assert_eq!(t.value.as_deref(), Some("infra"));
        assert_eq!(t.effect.as_deref(), Some("NoSchedule"));
        let t = parse_toleration("gpu").unwrap();
        assert_eq!(t.operator.as_deref(), Some("Exists"));
        assert_eq!(t.value, None);
        assert_eq!(parse_toleration("Exists").unwrap(), tolerate_everything());
        assert!(parse_toleration("a:Sometimes").is_err());
        assert!(parse_toleration("=x").is_err());
    }
}
