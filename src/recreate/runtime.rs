//! The pod as the container runtime sees it, and which runtime owns it.
//!
//! * [`select_runtime`]: §4.4 step 5.1, the runtime named by the `<type>://` prefix of every
//!   container's `statusContext.containerID`, with kruise's error texts.
//! * [`read_pod`]: §4.4 step 5.3, kruise's `GetPodStatus`: `ListContainers` by pod UID,
//!   then `ContainerStatus` of each, translated as in §2.4 into [`RuntimeContainer`]s,
//!   newest first.

use k8s_openapi::jiff::Timestamp;
use tonic::Code;

use super::go_text;
use super::version::CrrView;
use crate::cri::{ContainerId, CriClient, CriError, RuntimeSet};
use crate::proto::runtime::v1 as cri;

// The kubelet's labels and annotations on containers that the daemon reads (§2.4).
const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
const CONTAINER_RESTART_COUNT_ANNOTATION: &str = "io.kubernetes.container.restartCount";
const CONTAINER_PRE_STOP_HANDLER_ANNOTATION: &str = "io.kubernetes.container.preStopHandler";
const POD_DELETION_GRACE_PERIOD_ANNOTATION: &str = "io.kubernetes.pod.deletionGracePeriod";
const POD_TERMINATION_GRACE_PERIOD_ANNOTATION: &str = "io.kubernetes.pod.terminationGracePeriod";

/// A container's state, as the kubelet translates the CRI state (§2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeContainerState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
    /// The runtime does not know.
    Unknown,
}

impl RuntimeContainerState {
    /// Maps CRI `ContainerState`; values this client does not know are `Unknown`.
    pub fn from_cri(state: i32) -> Self {
        match cri::ContainerState::try_from(state) {
            Ok(cri::ContainerState::ContainerCreated) => Self::Created,
            Ok(cri::ContainerState::ContainerRunning) => Self::Running,
            Ok(cri::ContainerState::ContainerExited) => Self::Exited,
            _ => Self::Unknown,
        }
    }
}

/// One container of the pod, from CRI `ContainerStatus` (§2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeContainer {
    /// `<runtime name>://<runtime id>`, as pod status spells it.
    pub id: ContainerId,
    /// The container's name in the pod spec (label `io.kubernetes.container.name`).
    pub name: String,
    /// The container's state.
    pub state: RuntimeContainerState,
    /// The kubelet's `io.kubernetes.container.restartCount` annotation; 0 when missing or
    /// not a number, as in the kubelet.
    pub restart_count: i32,
    /// Creation time, nanoseconds since the epoch; orders a name's attempts.
    pub created_at: i64,
    /// When it started; `None` while it is only created.
    pub started_at: Option<Timestamp>,
    /// The sandbox it runs in, for the pod IP of host-less HTTP hooks.
    pub sandbox_id: String,
    /// The kubelet's `io.kubernetes.container.preStopHandler` annotation (JSON
    /// `LifecycleHandler`), for hooks the CRR cannot carry (`sleep`).
    pub pre_stop_handler: Option<String>,
    /// The kubelet's `io.kubernetes.pod.deletionGracePeriod` annotation.
    pub pod_deletion_grace_period_seconds: Option<i64>,
    /// The kubelet's `io.kubernetes.pod.terminationGracePeriod` annotation.
    pub pod_termination_grace_period_seconds: Option<i64>,
}

impl RuntimeContainer {
    /// The kubelet's translation of a CRI status, for a runtime called `runtime_name`.
    pub fn from_cri_status(
        runtime_name: &str,
        status: &cri::ContainerStatus,
        sandbox_id: &str,
    ) -> Self {
        let annotation = |key: &str| status.annotations.get(key);
        let int64 = |key: &str| annotation(key).and_then(|value| value.parse::<i64>().ok());
        let state = RuntimeContainerState::from_cri(status.state);
        Self {
            id: ContainerId {
                runtime: runtime_name.to_owned(),
                id: status.id.clone(),
            },
            name: status
                .labels
                .get(CONTAINER_NAME_LABEL)
                .cloned()
                .unwrap_or_default(),
            state,
            restart_count: annotation(CONTAINER_RESTART_COUNT_ANNOTATION)
                .and_then(|value| value.parse().ok())
                .unwrap_or(0),
            created_at: status.created_at,
            // The kubelet sets StartedAt for every state but CREATED.
            started_at: (state != RuntimeContainerState::Created)
                .then(|| Timestamp::from_nanosecond(i128::from(status.started_at)).ok())
                .flatten(),
            sandbox_id: sandbox_id.to_owned(),
            pre_stop_handler: annotation(CONTAINER_PRE_STOP_HANDLER_ANNOTATION).cloned(),
            pod_deletion_grace_period_seconds: int64(POD_DELETION_GRACE_PERIOD_ANNOTATION),
            pod_termination_grace_period_seconds: int64(POD_TERMINATION_GRACE_PERIOD_ANNOTATION),
        }
    }

    /// `<runtime>://<id>`, the form of `statusContext.containerID` and the snapshot.
    pub fn container_id(&self) -> String {
        self.id.to_string()
    }
}

/// The pod's containers, newest first (§2.4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimePod {
    containers: Vec<RuntimeContainer>,
}

impl RuntimePod {
    /// The containers, reordered newest `created_at` first (stable for equal times).
    pub fn new(mut containers: Vec<RuntimeContainer>) -> Self {
        containers.sort_by_key(|container| std::cmp::Reverse(container.created_at));
        Self { containers }
    }

    /// Every container, newest first.
    pub fn containers(&self) -> &[RuntimeContainer] {
        &self.containers
    }

    /// The newest container called `name` (the kubelet's `FindContainerStatusByName`).
    pub fn newest(&self, name: &str) -> Option<&RuntimeContainer> {
        self.containers
            .iter()
            .find(|container| container.name == name)
    }
}

/// Why kruise could not pick a runtime for a CRR (§4.4 step 5.1). The texts are kruise's
/// `newRuntimeManager` errors; [`RuntimeLookupError::completion_message`] is what the CRR is
/// completed with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeLookupError {
    /// A container has no `statusContext` or an empty `containerID`.
    #[error("no statusContext or empty containerID in {container} container")]
    NoStatusContext {
        /// The container's name.
        container: String,
    },
    /// A `containerID` is not `<type>://<id>`.
    #[error(
        "failed to parse containerID {container_id} in {container} container: invalid container ID: {}",
        go_text::quote(container_id)
    )]
    InvalidContainerId {
        /// The container's name.
        container: String,
        /// The `statusContext.containerID`.
        container_id: String,
    },
    /// Two containers name different runtimes.
    #[error("has different runtime types {first}, {other} in Pod")]
    MixedRuntimes {
        /// The runtime named first.
        first: String,
        /// The different one.
        other: String,
    },
    /// No container names a runtime (also: no containers at all).
    #[error("no runtime type found in Pod")]
    NoRuntimeType,
    /// No runtime on this node has that name.
    #[error("not found runtime service for {name} in daemon")]
    RuntimeNotFound {
        /// The runtime name asked for.
        name: String,
    },
}

impl RuntimeLookupError {
    /// The CRR completion message: `failed to find runtime service: <err>`.
    pub fn completion_message(&self) -> String {
        format!("failed to find runtime service: {self}")
    }
}

/// The runtime name every container's `statusContext.containerID` names, with kruise's rules:
/// the kubelet's `ContainerID.ParseString` (quotes trimmed, exactly one `://`), empty types
/// skipped, all others equal.
pub fn runtime_name(crr: &CrrView) -> Result<String, RuntimeLookupError> {
    let mut runtime_name = String::new();
    for container in &crr.containers {
        let container_id = container
            .status_context
            .as_ref()
            .map(|context| context.container_id.as_str())
            .filter(|id| !id.is_empty())
            .ok_or_else(|| RuntimeLookupError::NoStatusContext {
                container: container.name.clone(),
            })?;
        let parts: Vec<&str> = container_id.trim_matches('"').split("://").collect();
        let [runtime_type, _id] = parts[..] else {
            return Err(RuntimeLookupError::InvalidContainerId {
                container: container.name.clone(),
                container_id: container_id.to_owned(),
            });
        };
        // Kruise only records a non-empty type, and only compares against one it recorded.
        if runtime_name.is_empty() {
            runtime_name = runtime_type.to_owned();
        } else if runtime_name != runtime_type {
            return Err(RuntimeLookupError::MixedRuntimes {
                first: runtime_name,
                other: runtime_type.to_owned(),
            });
        }
    }
    if runtime_name.is_empty() {
        return Err(RuntimeLookupError::NoRuntimeType);
    }
    Ok(runtime_name)
}

/// The runtime that owns the CRR's containers (§4.4 step 5.1).
pub fn select_runtime<'a>(
    runtimes: &'a RuntimeSet,
    crr: &CrrView,
) -> Result<&'a CriClient, RuntimeLookupError> {
    let name = runtime_name(crr)?;
    runtimes
        .by_name(&name)
        .map_err(|_| RuntimeLookupError::RuntimeNotFound { name })
}

/// Why the pod's containers could not be read. Retried by the caller (§4.4 step 5.3).
#[derive(Debug, Clone, thiserror::Error)]
pub enum PodStatusError {
    /// `ListContainers` failed.
    #[error("run ListContainers error: {}", go_text::cri_error_text(.0))]
    ListContainers(#[source] CriError),
    /// `ContainerStatus` of a listed container failed.
    #[error("run ContainerStatus for {container_id} error: {}", go_text::cri_error_text(.source))]
    ContainerStatus {
        /// The runtime's container ID.
        container_id: String,
        /// The runtime's error.
        #[source]
        source: CriError,
    },
}

/// Kruise's `GetPodStatus` without sandboxes: the pod's containers from `ListContainers`
/// filtered by `io.kubernetes.pod.uid`, each with its `ContainerStatus`, newest first.
///
/// A container removed between the list and its status (NOT_FOUND) is left out, where kruise
/// would fail the whole sync and retry: the kubelet's garbage collector makes that race
/// ordinary, and a removed container is not one the CRR can act on.
pub async fn read_pod(cri: &CriClient, pod_uid: &str) -> Result<RuntimePod, PodStatusError> {
    let listed = cri
        .list_pod_containers(pod_uid)
        .await
        .map_err(PodStatusError::ListContainers)?;
    let mut containers = Vec::with_capacity(listed.len());
    for container in listed {
        match cri.container_status(&container.id).await {
            Ok(status) => containers.push(RuntimeContainer::from_cri_status(
                &cri.info().name,
                &status,
                &container.pod_sandbox_id,
            )),
            Err(error) if error.code() == Some(Code::NotFound) => {
                tracing::debug!(container_id = %container.id, "container removed while reading the pod");
            }
            Err(source) => {
                return Err(PodStatusError::ContainerStatus {
                    container_id: container.id,
                    source,
                });
            }
        }
    }
    Ok(RuntimePod::new(containers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::shared::containerrecreaterequest::{
        ContainerRecreateRequestContainer, ContainerRecreateRequestContainerContext,
    };
    use crate::recreate::testing::crr_with_containers;

    fn with_ids(ids: &[&str]) -> CrrView {
        let mut crr = crr_with_containers(&[]);
        crr.containers = ids
            .iter()
            .enumerate()
            .map(|(index, id)| ContainerRecreateRequestContainer {
                name: format!("c{index}"),
                pre_stop: None,
                ports: None,
                status_context: Some(ContainerRecreateRequestContainerContext {
                    container_id: (*id).to_owned(),
                    restart_count: 0,
                }),
            })
            .collect();
        crr
    }

    #[test]
    fn one_runtime_type_for_all_containers() {
        assert_eq!(
            runtime_name(&with_ids(&["containerd://a", "containerd://b"])),
            Ok("containerd".to_owned())
        );
        // The kubelet's parser trims quotes.
        assert_eq!(
            runtime_name(&with_ids(&["\"cri-o://a\""])),
            Ok("cri-o".to_owned())
        );
    }

    #[test]
    fn bad_container_ids_complete_with_kruises_messages() {
        let message = |ids: &[&str]| {
            runtime_name(&with_ids(ids))
                .unwrap_err()
                .completion_message()
        };
        assert_eq!(
            message(&["containerd://a", "docker://b"]),
            "failed to find runtime service: has different runtime types containerd, docker in Pod"
        );
        assert_eq!(
            message(&["abc"]),
            r#"failed to find runtime service: failed to parse containerID abc in c0 container: invalid container ID: "abc""#
        );
        assert_eq!(
            message(&["containerd://a://b"]),
            r#"failed to find runtime service: failed to parse containerID containerd://a://b in c0 container: invalid container ID: "containerd://a://b""#
        );
        assert_eq!(
            message(&["://abc"]),
            "failed to find runtime service: no runtime type found in Pod"
        );
        assert_eq!(
            message(&[]),
            "failed to find runtime service: no runtime type found in Pod"
        );
        assert_eq!(
            message(&[""]),
            "failed to find runtime service: no statusContext or empty containerID in c0 container"
        );
        let mut no_context = with_ids(&["containerd://a"]);
        no_context.containers[0].status_context = None;
        assert_eq!(
            runtime_name(&no_context).unwrap_err().to_string(),
            "no statusContext or empty containerID in c0 container"
        );
    }

    #[test]
    fn an_unknown_runtime_name_is_not_found_in_daemon() {
        assert_eq!(
            RuntimeLookupError::RuntimeNotFound {
                name: "pouch".into()
            }
            .completion_message(),
            "failed to find runtime service: not found runtime service for pouch in daemon"
        );
    }

    #[test]
    fn newest_container_of_a_name_wins() {
        let container = |id: &str, name: &str, created_at: i64| RuntimeContainer {
            id: ContainerId {
                runtime: "containerd".into(),
                id: id.into(),
            },
            name: name.into(),
            state: RuntimeContainerState::Running,
            restart_count: 0,
            created_at,
            started_at: None,
            sandbox_id: "sandbox".into(),
            pre_stop_handler: None,
            pod_deletion_grace_period_seconds: None,
            pod_termination_grace_period_seconds: None,
        };
        let pod = RuntimePod::new(vec![
            container("old", "app", 1),
            container("new", "app", 3),
            container("side", "sidecar", 2),
        ]);
        assert_eq!(pod.newest("app").unwrap().id.id, "new");
        assert_eq!(pod.newest("sidecar").unwrap().id.id, "side");
        assert!(pod.newest("nope").is_none());
        assert_eq!(pod.containers()[0].id.id, "new");
    }
}
