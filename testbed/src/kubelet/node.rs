//! The Node object: registration and the status heart-beat.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::spec::NODE_IP;

/// The version the stand-in reports as `status.nodeInfo.kubeletVersion`.
pub const KUBELET_VERSION: &str = "v1.33.0-testbed";

/// What the node reports about itself, gathered once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// The node's name.
    pub name: String,
    /// `containerd://1.6.20~ds1`: the CRI runtime name and version.
    pub container_runtime_version: String,
    /// `uname -r`.
    pub kernel_version: String,
    /// `PRETTY_NAME` of /etc/os-release.
    pub os_image: String,
    /// Go's `GOARCH` spelling of the machine architecture.
    pub architecture: String,
    /// /etc/machine-id, if any.
    pub machine_id: String,
    /// The kernel's boot ID.
    pub boot_id: String,
    /// CPUs, for capacity.
    pub cpus: usize,
    /// Memory in KiB, for capacity.
    pub memory_kib: u64,
    /// When the node turned Ready: the stand-in's start.
    pub ready_since: Timestamp,
}

impl NodeFacts {
    /// Reads the facts of this machine.
    pub fn gather(name: &str, runtime_name: &str, runtime_version: &str) -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|text| text.trim().to_string())
                .unwrap_or_default()
        };
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|line| line.strip_prefix("PRETTY_NAME="))
            .map(|value| value.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".to_string());
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Self {
            name: name.to_string(),
            container_runtime_version: format!("{runtime_name}://{runtime_version}"),
            kernel_version: read("/proc/sys/kernel/osrelease"),
            os_image,
            architecture: architecture.to_string(),
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            memory_kib,
            ready_since: Timestamp::now(),
        }
    }
}

fn rfc3339(time: Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The labels the kubelet puts on its Node.
pub fn node_labels(name: &str, architecture: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), name.to_string()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), architecture.to_string()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        (
            "beta.kubernetes.io/arch".to_string(),
            architecture.to_string(),
        ),
    ])
}

/// The JSON merge patch of `nodes/status` sent at registration and every heart-beat.
pub fn node_status_patch(facts: &NodeFacts, now: Timestamp) -> Value {
    let heartbeat = rfc3339(now);
    let since = rfc3339(facts.ready_since);
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": since,
        })
    };
    let resources = json!({
        "cpu": facts.cpus.to_string(),
        "memory": format!("{}Ki", facts.memory_kib),
        "pods": "110",
    });
    json!({
        "status": {
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": NODE_IP},
                {"type": "Hostname", "address": facts.name},
            ],
            "capacity": resources,
            "allocatable": resources,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": facts.architecture,
                "bootID": facts.boot_id,
                "containerRuntimeVersion": facts.container_runtime_version,
                "kernelVersion": facts.kernel_version,
                "kubeProxyVersion": "",
                "kubeletVersion": KUBELET_VERSION,
                "machineID": facts.machine_id,
                "operatingSystem": "linux",
                "osImage": facts.os_image,
                "systemUUID": facts.machine_id,
            },
        }
    })
}

/// Creates the Node if missing, makes sure it carries the kubelet's labels, and writes
/// its status.
pub async fn register(nodes: &Api<Node>, facts: &NodeFacts) -> Result<(), kube::Error> {
    let labels = node_labels(&facts.name, &facts.architecture);
    match nodes.get_opt(&facts.name).await? {
        None => {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(facts.name.clone()),
                    labels: Some(labels),
                    ..Default::default()
                },
                ..Default::default()
            };
            match nodes.create(&PostParams::default(), &node).await {
                Ok(_) => tracing::info!(node = %facts.name, "registered the node"),
                // Someone else (a previous run) created it meanwhile.
                Err(kube::Error::Api(status)) if status.is_already_exists() => {}
                Err(error) => return Err(error),
            }
        }
        Some(existing) => {
            let current = existing.metadata.labels.unwrap_or_default();
            if labels
                .iter()
                .any(|(key, value)| current.get(key) != Some(value))
            {
                let patch = json!({"metadata": {"labels": labels}});
                nodes
                    .patch(&facts.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
        }
    }
    heartbeat(nodes, facts).await
}

/// Refreshes `lastHeartbeatTime` (and the rest of the node status).
pub async fn heartbeat(nodes: &Api<Node>, facts: &NodeFacts) -> Result<(), kube::Error> {
    let patch = node_status_patch(facts, Timestamp::now());
    nodes
        .patch_status(&facts.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        NodeFacts {
            name: "node-a".into(),
            container_runtime_version: "containerd://1.6.20~ds1".into(),
            kernel_version: "6.1.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            architecture: "amd64".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
            cpus: 2,
            memory_kib: 4096,
            ready_since: Timestamp::from_second(1_700_000_000).unwrap(),
        }
    }

    #[test]
    fn status_patch_deserializes_as_a_node_status_with_ready_true() {
        let patch = node_status_patch(&facts(), Timestamp::from_second(1_700_000_100).unwrap());
        let node: Node = serde_json::from_value(patch).unwrap();
        let status = node.status.unwrap();
        let ready = status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(
            ready.last_heartbeat_time.as_ref().unwrap().0,
            Timestamp::from_second(1_700_000_100).unwrap()
        );
        assert_eq!(
            ready.last_transition_time.as_ref().unwrap().0,
            Timestamp::from_second(1_700_000_000).unwrap()
        );
        let info = status.node_info.unwrap();
        assert_eq!(info.container_runtime_version, "containerd://1.6.20~ds1");
        assert_eq!(info.kubelet_version, KUBELET_VERSION);
        let addresses: Vec<(String, String)> = status
            .addresses
            .unwrap()
            .into_iter()
            .map(|a| (a.type_, a.address))
            .collect();
        assert_eq!(
            addresses,
            vec![
                ("InternalIP".to_string(), "127.0.0.1".to_string()),
                ("Hostname".to_string(), "node-a".to_string()),
            ]
        );
    }

    #[test]
    fn labels_name_the_host_and_os() {
        let labels = node_labels("node-a", "amd64");
        assert_eq!(labels["kubernetes.io/hostname"], "node-a");
        assert_eq!(labels["kubernetes.io/os"], "linux");
    }

    #[test]
    fn gathered_facts_name_the_runtime() {
        let facts = NodeFacts::gather("n", "containerd", "1.6.20");
        assert_eq!(facts.container_runtime_version, "containerd://1.6.20");
        assert!(facts.cpus >= 1);
    }
}
