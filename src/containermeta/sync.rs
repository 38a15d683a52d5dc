//! One sync of a pod's container meta (kruise's `sync` and `manageContainerMetaSet`, §6.1):
//! which runtime owns the pod, what its containers are, the new annotation, and which
//! containers to restart because their env from metadata is stale.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tonic::Code;

use super::envhash::{current_hash, parse_env_output};
use super::filter::{expected_hash_in, in_place_update_pending};
use super::meta::{RuntimeContainerHashes, RuntimeContainerMeta, RuntimeContainerMetaSet};
use crate::cri::{ContainerId, CriClient, CriError, RuntimeSet};
use crate::proto::runtime::v1 as cri;

/// The kubelet's container hash annotation (hex).
pub const CONTAINER_HASH_ANNOTATION: &str = "io.kubernetes.container.hash";
/// The kubelet's restart count annotation (decimal).
pub const CONTAINER_RESTART_COUNT_ANNOTATION: &str = "io.kubernetes.container.restartCount";
/// The kubelet's container name label.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
/// How long `env` may take in the container (kruise: 3 s).
pub const ENV_EXEC_TIMEOUT: Duration = Duration::from_secs(3);

/// Why no runtime was chosen for a pod. Logged; the pod is not retried (kruise returns nil).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeChoiceError {
    /// The first container status's ID is not `<type>://<id>`.
    #[error("failed to parse containerID {0}")]
    InvalidContainerId(String),
    /// No runtime on this node has that name.
    #[error("not found runtime service for {0} in daemon")]
    NotFound(String),
}

/// The runtime named by the pod's container IDs: `None` while no container has an ID;
/// kruise's quirk of parsing `containerStatuses[0]` even when another one has the ID is kept.
pub fn runtime_for_pod<'a>(
    pod: &Pod,
    runtimes: &'a RuntimeSet,
) -> Result<Option<&'a CriClient>, RuntimeChoiceError> {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|status| status.container_statuses.as_deref())
        .unwrap_or_default();
    if !statuses.iter().any(|status| {
        !status
            .container_id
            .as_deref()
            .unwrap_or_default()
            .is_empty()
    }) {
        return Ok(None);
    }
    let first = statuses
        .first()
        .and_then(|status| status.container_id.clone())
        .unwrap_or_default();
    let id = ContainerId::parse(first.trim_matches('"'))
        .map_err(|_| RuntimeChoiceError::InvalidContainerId(first.clone()))?;
    runtimes
        .by_name(&id.runtime)
        .map(Some)
        .map_err(|_| RuntimeChoiceError::NotFound(id.runtime))
}

/// A container as the runtime reports it, with what the meta needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeContainer {
    /// `<runtime>://<id>`.
    pub id: ContainerId,
    /// The container's name in the pod spec.
    pub name: String,
    /// Whether it is running.
    pub running: bool,
    /// The kubelet's restart count annotation, 0 when missing.
    pub restart_count: i32,
    /// The kubelet's hash annotation, 0 when missing or not hex.
    pub plain_hash: u64,
    /// Creation time, nanoseconds; orders a name's attempts.
    pub created_at: i64,
}

impl RuntimeContainer {
    /// The kubelet's translation of a CRI status.
    pub fn from_cri_status(runtime_name: &str, status: &cri::ContainerStatus) -> Self {
        let annotation = |key: &str| status.annotations.get(key).map(String::as_str);
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
            running: status.state == cri::ContainerState::ContainerRunning as i32,
            restart_count: annotation(CONTAINER_RESTART_COUNT_ANNOTATION)
                .and_then(|value| value.parse().ok())
                .unwrap_or(0),
            plain_hash: annotation(CONTAINER_HASH_ANNOTATION)
                .and_then(|value| u64::from_str_radix(value, 16).ok())
                .unwrap_or(0),
            created_at: status.created_at,
        }
    }
}

/// The pod's containers from the runtime (kruise's `GetPodStatus`), newest first. A container
/// removed between the list and its status is left out.
pub async fn read_containers(
    cri: &CriClient,
    pod_uid: &str,
) -> Result<Vec<RuntimeContainer>, CriError> {
    let mut containers = Vec::new();
    for listed in cri.list_pod_containers(pod_uid).await? {
        match cri.container_status(&listed.id).await {
            Ok(status) => {
                containers.push(RuntimeContainer::from_cri_status(&cri.info().name, &status))
            }
            Err(error) if error.code() == Some(Code::NotFound) => {}
            Err(error) => return Err(error),
        }
    }
    containers.sort_by_key(|container| std::cmp::Reverse(container.created_at));
    Ok(containers)
}

/// What a sync decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaSync {
    /// The annotation the pod should carry.
    pub meta: RuntimeContainerMetaSet,
    /// Containers to restart: their env from metadata is stale during an in-place update.
    pub restarts: Vec<ContainerId>,
    /// Reading a container's environment failed: look at the pod again in 3 s.
    pub retry: bool,
}

/// kruise's `manageContainerMetaSet`: one entry per container status that has a runtime
/// container and a spec, reusing the old entry of the same container ID; with `env_gate`,
/// the current env hash of running containers that lack one (`env` in the container), and a
/// restart of containers whose hash is stale while `InPlaceUpdateReady` is `False`.
pub async fn manage(
    pod: &Pod,
    containers: &[RuntimeContainer],
    old: Option<&RuntimeContainerMetaSet>,
    cri: &CriClient,
    env_gate: bool,
) -> MetaSync {
    let mut sync = MetaSync::default();
    let statuses = pod
        .status
        .as_ref()
        .and_then(|status| status.container_statuses.as_deref())
        .unwrap_or_default();
    let specs = pod
        .spec
        .as_ref()
        .map(|spec| spec.containers.as_slice())
        .unwrap_or_default();
    let updating = in_place_update_pending(pod);
    for status in statuses {
        let Some(runtime) = containers
            .iter()
            .find(|container| container.name == status.name)
        else {
            continue;
        };
        let Some(spec) = specs.iter().find(|spec| spec.name == status.name) else {
            continue;
        };
        let container_id = runtime.id.to_string();
        let mut meta = old
            .into_iter()
            .flat_map(|old| old.containers.iter())
            .rfind(|meta| meta.container_id == container_id)
            .cloned()
            .unwrap_or_else(|| RuntimeContainerMeta {
                name: runtime.name.clone(),
                container_id: container_id.clone(),
                restart_count: runtime.restart_count,
                hashes: RuntimeContainerHashes {
                    plain_hash: runtime.plain_hash,
                    extracted_env_from_metadata_hash: 0,
                },
            });
        if env_gate {
            if meta.hashes.extracted_env_from_metadata_hash == 0 && runtime.running {
                match cri
                    .exec_sync(&runtime.id.id, vec!["env".to_owned()], ENV_EXEC_TIMEOUT)
                    .await
                {
                    Ok(output) if output.exit_code == 0 => {
                        let environment =
                            parse_env_output(&String::from_utf8_lossy(&output.stdout));
                        meta.hashes.extracted_env_from_metadata_hash =
                            current_hash(spec, &environment);
                    }
                    Ok(output) => {
                        tracing::warn!(container = %container_id, exit_code = output.exit_code, "env in the container failed; retrying");
                        sync.retry = true;
                    }
                    Err(error) => {
                        tracing::warn!(container = %container_id, %error, "cannot read the container's environment; retrying");
                        sync.retry = true;
                    }
                }
            }
            let current = meta.hashes.extracted_env_from_metadata_hash;
            if updating && current > 0 && current != expected_hash_in(spec, pod) {
                tracing::info!(container = %container_id, pod = ?pod.metadata.name, "env from metadata changed; restarting the container");
                sync.restarts.push(runtime.id.clone());
            }
        }
        sync.meta.containers.push(meta);
    }
    sync
}

#[cfg(test)]
mod tests;
