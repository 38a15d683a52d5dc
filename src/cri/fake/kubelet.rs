//! A kubelet-shaped world for tests: pods started the way the kubelet starts them, with
//! the labels and annotations the kubelet writes (spec/kruise-daemon.md §2.3-§2.4), and
//! container restarts as the kubelet does them.

use std::collections::{BTreeMap, HashMap};

use tonic::Status;

use super::reference::{fnv1a32, hex64};
use super::scripts::StopBehaviour;
use super::state::State;
use crate::proto::runtime::v1;

/// Label: the pod's name, on sandboxes and containers.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// Label: the pod's namespace, on sandboxes and containers.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Label: the pod's uid, on sandboxes and containers.
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// Label: the container's name in the pod spec.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
/// Annotation: the kubelet's hash of the container spec, in hex.
pub const CONTAINER_HASH_ANNOTATION: &str = "io.kubernetes.container.hash";
/// Annotation: how many times the kubelet restarted this container, in decimal.
pub const CONTAINER_RESTART_COUNT_ANNOTATION: &str = "io.kubernetes.container.restartCount";
/// Annotation: the container's termination message path.
pub const TERMINATION_MESSAGE_PATH_ANNOTATION: &str =
    "io.kubernetes.container.terminationMessagePath";
/// Annotation: the container's termination message policy.
pub const TERMINATION_MESSAGE_POLICY_ANNOTATION: &str =
    "io.kubernetes.container.terminationMessagePolicy";
/// Annotation: the pod's `spec.terminationGracePeriodSeconds`.
pub const POD_TERMINATION_GRACE_PERIOD_ANNOTATION: &str =
    "io.kubernetes.pod.terminationGracePeriod";
/// Annotation: the pod's `metadata.deletionGracePeriodSeconds`.
pub const POD_DELETION_GRACE_PERIOD_ANNOTATION: &str = "io.kubernetes.pod.deletionGracePeriod";
/// Annotation: the container's preStop `LifecycleHandler`, as JSON.
pub const CONTAINER_PRE_STOP_HANDLER_ANNOTATION: &str = "io.kubernetes.container.preStopHandler";
/// Annotation: the container's `ports`, as JSON.
pub const CONTAINER_PORTS_ANNOTATION: &str = "io.kubernetes.container.ports";

/// A pod for [`super::FakeCri::add_pod_with_containers`], as the kubelet would run it.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeletPod {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.labels`, copied onto the sandbox.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`, copied onto the sandbox.
    pub annotations: BTreeMap<String, String>,
    /// `spec.terminationGracePeriodSeconds`; the API server defaults it to 30.
    pub termination_grace_period_seconds: Option<i64>,
    /// `metadata.deletionGracePeriodSeconds`, set while the pod is being deleted.
    pub deletion_grace_period_seconds: Option<i64>,
    /// `spec.hostNetwork`. containerd reports no IP for a host-network sandbox.
    pub host_network: bool,
    /// The IP the sandbox reports; when `None`, the fake's pod IP, or none for host
    /// network.
    pub pod_ip: Option<String>,
    /// `spec.containers`, started in order.
    pub containers: Vec<KubeletContainer>,
}

impl KubeletPod {
    /// A pod in `namespace` called `name`, with a uid derived from both, a 30 s grace
    /// period, its own network namespace and no containers yet.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        let (namespace, name) = (namespace.into(), name.into());
        let uid = uid_for(&format!("{namespace}/{name}"));
        Self {
            namespace,
            name,
            uid,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            termination_grace_period_seconds: Some(30),
            deletion_grace_period_seconds: None,
            host_network: false,
            pod_ip: None,
            containers: Vec::new(),
        }
    }

    /// Sets `metadata.uid`.
    #[must_use]
    pub fn uid(mut self, uid: impl Into<String>) -> Self {
        self.uid = uid.into();
        self
    }

    /// Adds a pod label.
    #[must_use]
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds a pod annotation.
    #[must_use]
    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Sets `spec.terminationGracePeriodSeconds`.
    #[must_use]
    pub fn termination_grace_period_seconds(mut self, seconds: Option<i64>) -> Self {
        self.termination_grace_period_seconds = seconds;
        self
    }

    /// Sets `metadata.deletionGracePeriodSeconds`.
    #[must_use]
    pub fn deletion_grace_period_seconds(mut self, seconds: Option<i64>) -> Self {
        self.deletion_grace_period_seconds = seconds;
        self
    }

    /// Sets `spec.hostNetwork`.
    #[must_use]
    pub fn host_network(mut self, host_network: bool) -> Self {
        self.host_network = host_network;
        self
    }

    /// Sets the pod IP the sandbox reports.
    #[must_use]
    pub fn pod_ip(mut self, ip: impl Into<String>) -> Self {
        self.pod_ip = Some(ip.into());
        self
    }

    /// Appends a container to `spec.containers`.
    #[must_use]
    pub fn container(mut self, container: KubeletContainer) -> Self {
        self.containers.push(container);
        self
    }

    /// The `RunPodSandbox` request the kubelet sends for this pod.
    fn sandbox_config(&self) -> v1::PodSandboxConfig {
        let mut labels: HashMap<String, String> = self.labels.clone().into_iter().collect();
        labels.insert(POD_NAME_LABEL.to_owned(), self.name.clone());
        labels.insert(POD_NAMESPACE_LABEL.to_owned(), self.namespace.clone());
        labels.insert(POD_UID_LABEL.to_owned(), self.uid.clone());
        let network = if self.host_network {
            v1::NamespaceMode::Node
        } else {
            v1::NamespaceMode::Pod
        };
        v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            // The kubelet leaves the hostname empty for host-network pods.
            hostname: if self.host_network {
                String::new()
            } else {
                self.name.clone()
            },
            log_directory: format!(
                "/var/log/pods/{}_{}_{}",
                self.namespace, self.name, self.uid
            ),
            labels,
            annotations: self.annotations.clone().into_iter().collect(),
            linux: Some(v1::LinuxPodSandboxConfig {
                cgroup_parent: format!("/kubepods/pod{}", self.uid),
                security_context: Some(v1::LinuxSandboxSecurityContext {
                    namespace_options: Some(v1::NamespaceOption {
                        network: network as i32,
                        pid: v1::NamespaceMode::Container as i32,
                        ipc: v1::NamespaceMode::Pod as i32,
                        ..v1::NamespaceOption::default()
                    }),
                    ..v1::LinuxSandboxSecurityContext::default()
                }),
                ..v1::LinuxPodSandboxConfig::default()
            }),
            ..v1::PodSandboxConfig::default()
        }
    }

    /// The `CreateContainer` config the kubelet sends for `container`, first attempt.
    fn container_config(
        &self,
        container: &KubeletContainer,
        image_id: String,
    ) -> v1::ContainerConfig {
        let labels = HashMap::from([
            (POD_NAME_LABEL.to_owned(), self.name.clone()),
            (POD_NAMESPACE_LABEL.to_owned(), self.namespace.clone()),
            (POD_UID_LABEL.to_owned(), self.uid.clone()),
            (CONTAINER_NAME_LABEL.to_owned(), container.name.clone()),
        ]);
        let mut annotations = HashMap::from([
            (
                CONTAINER_HASH_ANNOTATION.to_owned(),
                format!("{:x}", container.spec_hash()),
            ),
            (
                CONTAINER_RESTART_COUNT_ANNOTATION.to_owned(),
                "0".to_owned(),
            ),
            (
                TERMINATION_MESSAGE_PATH_ANNOTATION.to_owned(),
                container.termination_message_path.clone(),
            ),
            (
                TERMINATION_MESSAGE_POLICY_ANNOTATION.to_owned(),
                container.termination_message_policy.clone(),
            ),
        ]);
        let optional = [
            (
                POD_TERMINATION_GRACE_PERIOD_ANNOTATION,
                self.termination_grace_period_seconds.map(|s| s.to_string()),
            ),
            (
                POD_DELETION_GRACE_PERIOD_ANNOTATION,
                self.deletion_grace_period_seconds.map(|s| s.to_string()),
            ),
            (
                CONTAINER_PRE_STOP_HANDLER_ANNOTATION,
                container.pre_stop.as_ref().map(ToString::to_string),
            ),
            (
                CONTAINER_PORTS_ANNOTATION,
                container.ports.as_ref().map(ToString::to_string),
            ),
        ];
        annotations.extend(
            optional
                .into_iter()
                .filter_map(|(key, value)| value.map(|value| (key.to_owned(), value))),
        );
        v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata {
                name: container.name.clone(),
                attempt: 0,
            }),
            // The kubelet creates containers from the image id it pulled, and keeps what
            // the user wrote alongside.
            image: Some(v1::ImageSpec {
                image: image_id,
                user_specified_image: container.image.clone(),
                ..v1::ImageSpec::default()
            }),
            labels,
            annotations,
            log_path: format!("{}/0.log", container.name),
            ..v1::ContainerConfig::default()
        }
    }
}

/// One entry of a [`KubeletPod`]'s `spec.containers`.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeletContainer {
    /// `name`.
    pub name: String,
    /// `image`, pulled into the fake's store if it is not there.
    pub image: String,
    /// The kubelet's spec hash; derived from name and image when `None`.
    pub hash: Option<u64>,
    /// `lifecycle.preStop`, e.g. `{"exec":{"command":["sh","-c","sleep 1"]}}`.
    pub pre_stop: Option<serde_json::Value>,
    /// `ports`, e.g. `[{"name":"http","containerPort":80,"protocol":"TCP"}]`.
    pub ports: Option<serde_json::Value>,
    /// `terminationMessagePath`; the API server defaults it to `/dev/termination-log`.
    pub termination_message_path: String,
    /// `terminationMessagePolicy`; the API server defaults it to `File`.
    pub termination_message_policy: String,
    /// How the container's process reacts to `StopContainer`.
    pub stop_behaviour: StopBehaviour,
}

impl KubeletContainer {
    /// A container called `name` running `image`, with API-server defaults.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            image: image.into(),
            hash: None,
            pre_stop: None,
            ports: None,
            termination_message_path: "/dev/termination-log".to_owned(),
            termination_message_policy: "File".to_owned(),
            stop_behaviour: StopBehaviour::default(),
        }
    }

    /// Sets the spec hash the kubelet writes.
    #[must_use]
    pub fn hash(mut self, hash: u64) -> Self {
        self.hash = Some(hash);
        self
    }

    /// Sets `lifecycle.preStop` to any `LifecycleHandler` JSON.
    #[must_use]
    pub fn pre_stop(mut self, handler: serde_json::Value) -> Self {
        self.pre_stop = Some(handler);
        self
    }

    /// Sets `lifecycle.preStop` to an exec handler running `command`.
    #[must_use]
    pub fn pre_stop_exec<I, S>(self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let command: Vec<String> = command.into_iter().map(Into::into).collect();
        self.pre_stop(serde_json::json!({ "exec": { "command": command } }))
    }

    /// Sets `ports` to any `[]ContainerPort` JSON.
    #[must_use]
    pub fn ports(mut self, ports: serde_json::Value) -> Self {
        self.ports = Some(ports);
        self
    }

    /// Sets how the process reacts to `StopContainer`.
    #[must_use]
    pub fn stop_behaviour(mut self, stop_behaviour: StopBehaviour) -> Self {
        self.stop_behaviour = stop_behaviour;
        self
    }

    /// The hash the kubelet would write: the one given, else FNV-32a of name and image
    /// (the kubelet hashes the whole spec with FNV-32a).
    fn spec_hash(&self) -> u64 {
        self.hash.unwrap_or_else(|| {
            u64::from(fnv1a32(format!("{}\n{}", self.name, self.image).as_bytes()))
        })
    }
}

/// A pod [`super::FakeCri::add_pod_with_containers`] started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakePod {
    /// The pod's uid, the value of its `io.kubernetes.pod.uid` label.
    pub uid: String,
    /// The sandbox's id.
    pub sandbox_id: String,
    /// `(container name, container id)` in spec order.
    pub containers: Vec<(String, String)>,
}

impl FakePod {
    /// The id of the container called `name` as first started.
    pub fn container_id(&self, name: &str) -> Option<&str> {
        self.containers
            .iter()
            .find(|(container_name, _)| container_name == name)
            .map(|(_, id)| id.as_str())
    }
}

/// A UUID-shaped uid derived from `seed`.
fn uid_for(seed: &str) -> String {
    let hex = hex64(seed.as_bytes());
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// Runs `pod`'s sandbox and creates and starts its containers, through the same rules
/// the RPCs follow.
pub(crate) fn start_pod(state: &mut State, pod: &KubeletPod) -> Result<FakePod, Status> {
    let sandbox_config = pod.sandbox_config();
    let sandbox_id = state.run_sandbox(v1::RunPodSandboxRequest {
        config: Some(sandbox_config.clone()),
        runtime_handler: String::new(),
    })?;
    if let Some(ip) = &pod.pod_ip {
        state.set_sandbox_ip(&sandbox_id, ip.clone())?;
    }
    let mut containers = Vec::with_capacity(pod.containers.len());
    for container in &pod.containers {
        let image_id = state.ensure_image(&container.image)?;
        let id = state.create_container(
            v1::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.clone(),
                config: Some(pod.container_config(container, image_id)),
                sandbox_config: Some(sandbox_config.clone()),
            },
            container.stop_behaviour,
        )?;
        state.start_container(&id)?;
        containers.push((container.name.clone(), id));
    }
    Ok(FakePod {
        uid: pod.uid.clone(),
        sandbox_id,
        containers,
    })
}

/// What the kubelet needs to restart a container: found under the lock, used after the
/// test's edit runs outside it.
pub(crate) struct RestartPlan {
    sandbox_id: String,
    sandbox_config: v1::PodSandboxConfig,
    previous_id: String,
    config: v1::ContainerConfig,
    stop_behaviour: StopBehaviour,
}

/// Finds the newest `container_name` in the pod's ready sandbox and prepares attempt + 1.
pub(crate) fn plan_restart(
    state: &State,
    pod_uid: &str,
    container_name: &str,
) -> Result<RestartPlan, Status> {
    let sandbox_id = state
        .ready_sandbox_of_pod(pod_uid)
        .ok_or_else(|| Status::not_found(format!("no ready sandbox for pod uid {pod_uid:?}")))?;
    let sandbox_config = state
        .sandbox_config(&sandbox_id)
        .ok_or_else(|| Status::not_found(format!("no sandbox {sandbox_id:?}")))?;
    let (previous_id, mut config) = state
        .newest_container_named(&sandbox_id, container_name)
        .ok_or_else(|| {
            Status::not_found(format!(
                "no container {container_name:?} in pod uid {pod_uid:?}"
            ))
        })?;
    let stop_behaviour = state.stop_behaviour(&previous_id).unwrap_or_default();
    let attempt = config
        .metadata
        .as_ref()
        .map_or(0, |metadata| metadata.attempt)
        + 1;
    config.metadata = Some(v1::ContainerMetadata {
        name: container_name.to_owned(),
        attempt,
    });
    config.annotations.insert(
        CONTAINER_RESTART_COUNT_ANNOTATION.to_owned(),
        attempt.to_string(),
    );
    config.log_path = format!("{container_name}/{attempt}.log");
    Ok(RestartPlan {
        sandbox_id,
        sandbox_config,
        previous_id,
        config,
        stop_behaviour,
    })
}

impl RestartPlan {
    /// The container config the new attempt will be created with, for the test to edit.
    pub(crate) fn config_mut(&mut self) -> &mut v1::ContainerConfig {
        &mut self.config
    }

    /// Ends the previous attempt if it still runs (SIGKILL, 137), then creates and starts
    /// the new one; returns its id.
    pub(crate) fn execute(mut self, state: &mut State) -> Result<String, Status> {
        if let Ok(Some(_)) = state.plan_stop(&self.previous_id, 0) {
            state.finish_stop(&self.previous_id, super::scripts::SIGKILL_EXIT_CODE);
        }
        // The kubelet pulls what the (possibly edited) spec names and creates from the id.
        if let Some(image) = self.config.image.as_mut() {
            let image_id = state.ensure_image(&image.image)?;
            if image.image != image_id {
                image.user_specified_image = std::mem::replace(&mut image.image, image_id);
            }
        }
        let id = state.create_container(
            v1::CreateContainerRequest {
                pod_sandbox_id: self.sandbox_id,
                config: Some(self.config),
                sandbox_config: Some(self.sandbox_config),
            },
            self.stop_behaviour,
        )?;
        state.start_container(&id)?;
        Ok(id)
    }
}
