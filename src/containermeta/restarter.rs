//! The restarter (kruise's `restartController`, §6.1): stops a running container whose env
//! from metadata is stale, through the Container recreate kill path ([`kill_container`]), so
//! that the kubelet starts it again with the pod's current labels and annotations.
//!
//! Kruise kills with no pod object: the kubelet's `restoreSpecsFromContainerLabels` rebuilds
//! the pod and container from the container's labels and annotations. kruised does the same
//! by building the request the kill path takes from them: the pod's name, namespace and UID
//! from the kubelet's labels, the preStop hook from `io.kubernetes.container.preStopHandler`,
//! the ports from `io.kubernetes.container.ports`, and the grace period from the pod's
//! deletion or termination grace annotations.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerPort, LifecycleHandler};

use crate::api::CRR_POD_UID_LABEL;
use crate::api::shared::containerrecreaterequest::{
    ContainerRecreateRequestContainer, ProbeHandler,
};
use crate::cri::{ContainerId, CriClient, CriError};
use crate::proto::runtime::v1 as cri;
use crate::recreate::kill::{KILLING_REASON, KillReport};
use crate::recreate::runtime::RuntimeContainer;
use crate::recreate::version::{ApiVersion, CrrView, Strategy, UnreadyAcquisition};
use crate::recreate::{ContainerEvent, kill_container};

const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
const PRE_STOP_HANDLER_ANNOTATION: &str = "io.kubernetes.container.preStopHandler";
const PORTS_ANNOTATION: &str = "io.kubernetes.container.ports";

/// Kruise's `Killing` event message for the restarter.
pub fn killing_message(container_id: &ContainerId) -> String {
    format!("Stopping containerID {container_id} by container meta restarter")
}

/// Why a restart failed; retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    /// The runtime could not be asked about the container.
    #[error("cannot look up container {id}: {source}")]
    Lookup {
        /// The container.
        id: String,
        /// The CRI error.
        #[source]
        source: CriError,
    },
    /// Stopping failed.
    #[error("cannot stop container {id}: {message}")]
    Kill {
        /// The container.
        id: String,
        /// The kill path's error.
        message: String,
    },
}

/// The pod a restart acted on, for its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartedPod {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's UID.
    pub uid: String,
}

/// What a restart did.
#[derive(Debug)]
pub enum Restart {
    /// The container is gone or not running: nothing to do (kruise skips it).
    Skipped,
    /// The kill path ran; its events are to be recorded on the pod.
    Killed {
        /// The pod, from the container's labels.
        pod: RestartedPod,
        /// `Killing` (kruise's message) and `FailedPreStopHook` events.
        events: Vec<ContainerEvent>,
        /// The kill's report.
        report: Box<KillReport>,
    },
}

/// Restarts `id` if it runs (kruise: `ListContainers{id}`, running only, then `KillContainer`).
pub async fn restart(cri: &CriClient, id: &ContainerId) -> Result<Restart, RestartError> {
    let lookup = |source| RestartError::Lookup {
        id: id.to_string(),
        source,
    };
    let listed = cri
        .list_containers(Some(cri::ContainerFilter {
            id: id.id.clone(),
            ..Default::default()
        }))
        .await
        .map_err(lookup)?;
    let Some(listed) = listed.into_iter().next() else {
        return Ok(Restart::Skipped);
    };
    if listed.state != cri::ContainerState::ContainerRunning as i32 {
        return Ok(Restart::Skipped);
    }
    let status = cri.container_status(&id.id).await.map_err(lookup)?;
    let container = RuntimeContainer::from_cri_status(&id.runtime, &status, &listed.pod_sandbox_id);
    let request = request_from_labels(&status, &container);
    let report = kill_container(cri, &request, &container.name, &container).await;
    let pod = RestartedPod {
        namespace: request.namespace.clone(),
        name: request.pod_name.clone(),
        uid: request.pod_uid().to_owned(),
    };
    let mut events = report.events.clone();
    for event in &mut events {
        if event.reason == KILLING_REASON {
            // The kubelet swaps the runtime ID for the container name in event messages.
            event.message = killing_message(id).replace(&id.id, &container.name);
        }
    }
    if let Err(error) = &report.result {
        return Err(RestartError::Kill {
            id: id.to_string(),
            message: error.to_string(),
        });
    }
    Ok(Restart::Killed {
        pod,
        events,
        report: Box::new(report),
    })
}

/// The request the kill path takes, rebuilt from the container as the kubelet's
/// `restoreSpecsFromContainerLabels` rebuilds the pod.
fn request_from_labels(status: &cri::ContainerStatus, container: &RuntimeContainer) -> CrrView {
    let label = |key: &str| status.labels.get(key).cloned().unwrap_or_default();
    let pre_stop = status
        .annotations
        .get(PRE_STOP_HANDLER_ANNOTATION)
        .and_then(|json| serde_json::from_str::<LifecycleHandler>(json).ok())
        .map(|handler| ProbeHandler {
            exec: handler.exec,
            http_get: handler.http_get,
            tcp_socket: handler.tcp_socket,
        });
    let ports: Option<Vec<ContainerPort>> = status
        .annotations
        .get(PORTS_ANNOTATION)
        .and_then(|json| serde_json::from_str(json).ok());
    CrrView {
        version: ApiVersion::V1beta1,
        name: "container-meta-restarter".into(),
        namespace: label(POD_NAMESPACE_LABEL),
        uid: String::new(),
        resource_version: None,
        creation_timestamp: None,
        deleting: false,
        labels: BTreeMap::from([(CRR_POD_UID_LABEL.to_owned(), label(POD_UID_LABEL))]),
        pod_name: label(POD_NAME_LABEL),
        containers: vec![ContainerRecreateRequestContainer {
            name: if container.name.is_empty() {
                label(CONTAINER_NAME_LABEL)
            } else {
                container.name.clone()
            },
            // An annotation with only `sleep` leaves an empty handler, which the kill path
            // reads the sleep from.
            pre_stop,
            ports,
            status_context: None,
        }],
        // No strategy: the grace period comes from the pod's annotations on the container.
        strategy: Strategy::default(),
        active_deadline_seconds: None,
        phase: String::new(),
        completion_time: None,
        container_recreate_states: Vec::new(),
        states_need_rewrite: false,
        unready_acquisition: UnreadyAcquisition::NotAcquired,
        container_status_snapshot: Vec::new(),
        snapshot_error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::fake::{Call, ExecScript, KubeletContainer, KubeletPod};
    use crate::podprobe::testing::World;

    #[tokio::test]
    async fn a_running_container_is_stopped_with_its_pre_stop_hook_and_grace() {
        let world = World::start(
            KubeletPod::new("ns", "pod")
                .termination_grace_period_seconds(Some(7))
                .container(
                    KubeletContainer::new("app", "busybox:1").pre_stop_exec(["sh", "-c", "drain"]),
                ),
        )
        .await;
        let raw = world.id("app");
        world
            .handle
            .script_exec(&raw, ["sh", "-c", "drain"], ExecScript::exit(0));
        let id = ContainerId {
            runtime: "containerd".into(),
            id: raw.clone(),
        };
        let Restart::Killed {
            pod,
            events,
            report,
        } = restart(&world.cri, &id).await.unwrap()
        else {
            panic!("the running container is killed");
        };
        assert_eq!((pod.namespace.as_str(), pod.name.as_str()), ("ns", "pod"));
        assert_eq!(pod.uid, world.pod.uid);
        assert_eq!(report.grace.seconds, 7);
        assert_eq!(events[0].reason, KILLING_REASON);
        assert_eq!(
            events[0].message,
            "Stopping containerID containerd://app by container meta restarter"
        );
        assert_eq!(events[0].field_path(), "spec.containers{app}");
        let calls = world.handle.calls();
        let exec = calls.iter().position(
            |call| matches!(call, Call::ExecSync(request) if request.cmd == ["sh", "-c", "drain"]),
        );
        let stop = calls.iter().position(
            |call| matches!(call, Call::StopContainer(request) if request.container_id == raw),
        );
        assert!(exec.unwrap() < stop.unwrap(), "hook first, then the stop");

        // Now exited: a second restart of the same ID is skipped.
        assert!(matches!(
            restart(&world.cri, &id).await.unwrap(),
            Restart::Skipped
        ));
        let missing = ContainerId {
            runtime: "containerd".into(),
            id: "nope".into(),
        };
        assert!(matches!(
            restart(&world.cri, &missing).await.unwrap(),
            Restart::Skipped
        ));
    }
}
