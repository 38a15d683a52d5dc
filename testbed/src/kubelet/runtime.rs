//! What the runtime says about one pod: its sandboxes and every attempt of every container,
//! read over CRI (containerd 1.6 has no event stream, so the kubelet relists; spec
//! test-environment.md §2, step 5h).

use std::collections::HashMap;

use kruised::cri::error::code_label;
use kruised::cri::fake::{CONTAINER_NAME_LABEL, POD_UID_LABEL};
use kruised::cri::{CriClient, CriError};
use kruised::proto::runtime::v1 as cri;

use super::spec::POD_NETWORK_ANNOTATION;

/// A container's state, from CRI `ContainerState`: the same mapping kruised uses.
pub use kruised::recreate::runtime::RuntimeContainerState as RunState;

/// One container (one attempt) as the runtime reports it in `ContainerStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    /// The runtime's container ID.
    pub id: String,
    /// The sandbox the container runs in.
    pub sandbox_id: String,
    /// The spec container name (label `io.kubernetes.container.name`).
    pub name: String,
    /// The attempt (`metadata.attempt`), which is the restart count.
    pub attempt: u32,
    /// Its state.
    pub state: RunState,
    /// Creation time, in nanoseconds since the epoch.
    pub created_at: i64,
    /// Start time in nanoseconds, 0 when never started.
    pub started_at: i64,
    /// Exit time in nanoseconds, 0 while not exited.
    pub finished_at: i64,
    /// Exit code, meaningful once exited.
    pub exit_code: i32,
    /// The runtime's reason for the exit (`Completed`, `Error`, `OOMKilled`), if any.
    pub reason: String,
    /// The runtime's message, if any.
    pub message: String,
    /// The image as the container was created with it.
    pub image: String,
    /// The runtime's image reference (the image ID).
    pub image_ref: String,
}

impl ObservedContainer {
    /// Builds the observation from `ContainerStatus`; `sandbox_id` comes from the listing.
    pub fn from_status(status: &cri::ContainerStatus, sandbox_id: &str) -> Self {
        let metadata = status.metadata.clone().unwrap_or_default();
        let name = status
            .labels
            .get(CONTAINER_NAME_LABEL)
            .cloned()
            .unwrap_or(metadata.name);
        Self {
            id: status.id.clone(),
            sandbox_id: sandbox_id.to_string(),
            name,
            attempt: metadata.attempt,
            state: RunState::from_cri(status.state),
            created_at: status.created_at,
            started_at: status.started_at,
            finished_at: status.finished_at,
            exit_code: status.exit_code,
            reason: status.reason.clone(),
            message: status.message.clone(),
            image: status
                .image
                .as_ref()
                .map(|image| image.image.clone())
                .unwrap_or_default(),
            image_ref: status.image_ref.clone(),
        }
    }

    /// How long the container ran, when it has exited after starting.
    pub fn ran_for(&self) -> Option<std::time::Duration> {
        (self.state == RunState::Exited
            && self.started_at > 0
            && self.finished_at >= self.started_at)
            .then(|| std::time::Duration::from_nanos((self.finished_at - self.started_at) as u64))
    }
}

/// One sandbox of the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedSandbox {
    /// The sandbox ID.
    pub id: String,
    /// Its attempt (`metadata.attempt`).
    pub attempt: u32,
    /// `SANDBOX_READY`.
    pub ready: bool,
    /// Creation time in nanoseconds.
    pub created_at: i64,
    /// The pod IP of a ready sandbox with its own network namespace, from CRI
    /// `PodSandboxStatus`; `None` for host-network sandboxes (containerd reports none).
    pub ip: Option<String>,
}

/// Everything the runtime holds for one pod uid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRuntime {
    /// Every sandbox, in any state.
    pub sandboxes: Vec<ObservedSandbox>,
    /// Every container of every attempt.
    pub containers: Vec<ObservedContainer>,
}

impl PodRuntime {
    /// The sandbox new containers go into: the newest ready one.
    pub fn ready_sandbox(&self) -> Option<&ObservedSandbox> {
        self.sandboxes
            .iter()
            .filter(|sandbox| sandbox.ready)
            .max_by_key(|sandbox| (sandbox.attempt, sandbox.created_at))
    }

    /// The attempt number for a new sandbox: one more than any before.
    pub fn next_sandbox_attempt(&self) -> u32 {
        self.sandboxes
            .iter()
            .map(|sandbox| sandbox.attempt + 1)
            .max()
            .unwrap_or(0)
    }

    /// The attempts of container `name`, newest first.
    pub fn attempts(&self, name: &str) -> Vec<&ObservedContainer> {
        let mut attempts: Vec<&ObservedContainer> = self
            .containers
            .iter()
            .filter(|container| container.name == name)
            .collect();
        attempts
            .sort_by_key(|container| std::cmp::Reverse((container.attempt, container.created_at)));
        attempts
    }

    /// The newest attempt of container `name`.
    pub fn latest(&self, name: &str) -> Option<&ObservedContainer> {
        self.attempts(name).into_iter().next()
    }

    /// Whether nothing of the pod is left in the runtime.
    pub fn is_empty(&self) -> bool {
        self.sandboxes.is_empty() && self.containers.is_empty()
    }
}

/// Whether a CRI error only says that the object is gone already.
pub fn is_not_found(error: &CriError) -> bool {
    // tonic is not a dependency of the test bed; the code's canonical name says the same.
    error.code().map(code_label) == Some("NotFound")
}

/// Reads the pod's sandboxes and containers from CRI. `exited` caches the statuses of
/// exited containers, which never change, so each sync costs one `ContainerStatus` per
/// live container only.
pub async fn observe(
    cri: &CriClient,
    uid: &str,
    exited: &mut HashMap<String, ObservedContainer>,
) -> Result<PodRuntime, CriError> {
    let by_uid = HashMap::from([(POD_UID_LABEL.to_string(), uid.to_string())]);
    let listed_sandboxes = cri
        .list_pod_sandbox(Some(cri::PodSandboxFilter {
            label_selector: by_uid,
            ..Default::default()
        }))
        .await?;
    let mut sandboxes = Vec::with_capacity(listed_sandboxes.len());
    for sandbox in listed_sandboxes {
        let ready = sandbox.state == cri::PodSandboxState::SandboxReady as i32;
        // The pod's annotations are the sandbox's: only a pod-network sandbox has an IP to
        // ask for, so host-network pods cost no extra call.
        let pod_network = sandbox
            .annotations
            .get(POD_NETWORK_ANNOTATION)
            .is_some_and(|value| value == "true");
        let ip = if ready && pod_network {
            match cri.pod_sandbox_status(&sandbox.id).await {
                Ok(status) => status
                    .status
                    .and_then(|status| status.network)
                    .map(|network| network.ip)
                    .filter(|ip| !ip.is_empty()),
                // Removed between the listing and now.
                Err(error) if is_not_found(&error) => continue,
                Err(error) => return Err(error),
            }
        } else {
            None
        };
        sandboxes.push(ObservedSandbox {
            attempt: sandbox.metadata.as_ref().map_or(0, |m| m.attempt),
            ready,
            created_at: sandbox.created_at,
            ip,
            id: sandbox.id,
        });
    }
    let listed = cri.list_pod_containers(uid).await?;
    exited.retain(|id, _| listed.iter().any(|container| &container.id == id));
    let mut containers = Vec::with_capacity(listed.len());
    for container in listed {
        if let Some(known) = exited.get(&container.id) {
            containers.push(known.clone());
            continue;
        }
        let status = match cri.container_status(&container.id).await {
            Ok(status) => status,
            // Removed between the listing and now.
            Err(error) if is_not_found(&error) => continue,
            Err(error) => return Err(error),
        };
        let observed = ObservedContainer::from_status(&status, &container.pod_sandbox_id);
        if observed.state == RunState::Exited {
            exited.insert(observed.id.clone(), observed.clone());
        }
        containers.push(observed);
    }
    Ok(PodRuntime {
        sandboxes,
        containers,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn container(name: &str, attempt: u32, state: RunState) -> ObservedContainer {
        ObservedContainer {
            id: format!("{name}-{attempt}"),
            sandbox_id: "sandbox".into(),
            name: name.into(),
            attempt,
            state,
            created_at: i64::from(attempt) * 1_000_000_000,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            image: "busybox:1".into(),
            image_ref: "sha256:ab".into(),
        }
    }

    #[test]
    fn attempts_are_newest_first_and_sandboxes_pick_the_newest_ready() {
        let runtime = PodRuntime {
            sandboxes: vec![
                ObservedSandbox {
                    id: "old".into(),
                    attempt: 0,
                    ready: false,
                    created_at: 1,
                    ip: None,
                },
                ObservedSandbox {
                    id: "new".into(),
                    attempt: 1,
                    ready: true,
                    created_at: 2,
                    ip: None,
                },
            ],
            containers: vec![
                container("app", 0, RunState::Exited),
                container("app", 2, RunState::Running),
                container("side", 0, RunState::Running),
                container("app", 1, RunState::Exited),
            ],
        };
        let attempts: Vec<u32> = runtime.attempts("app").iter().map(|c| c.attempt).collect();
        assert_eq!(attempts, vec![2, 1, 0]);
        assert_eq!(runtime.latest("side").unwrap().id, "side-0");
        assert!(runtime.latest("none").is_none());
        assert_eq!(runtime.ready_sandbox().unwrap().id, "new");
        assert_eq!(runtime.next_sandbox_attempt(), 2);
        assert_eq!(PodRuntime::default().next_sandbox_attempt(), 0);
    }

    #[test]
    fn container_name_comes_from_the_kubelet_label() {
        let status = cri::ContainerStatus {
            id: "c1".into(),
            metadata: Some(cri::ContainerMetadata {
                name: "meta-name".into(),
                attempt: 3,
            }),
            state: cri::ContainerState::ContainerExited as i32,
            started_at: 1_000_000_000,
            finished_at: 3_500_000_000,
            exit_code: 2,
            labels: HashMap::from([(CONTAINER_NAME_LABEL.to_string(), "app".to_string())]),
            ..Default::default()
        };
        let observed = ObservedContainer::from_status(&status, "s1");
        assert_eq!(observed.name, "app");
        assert_eq!(observed.attempt, 3);
        assert_eq!(observed.state, RunState::Exited);
        assert_eq!(observed.sandbox_id, "s1");
        assert_eq!(
            observed.ran_for(),
            Some(std::time::Duration::from_millis(2500))
        );
    }
}
