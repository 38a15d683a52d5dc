//! Builders shared by the unit tests of this module.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use super::runtime::{RuntimeContainer, RuntimeContainerState, read_pod};
use super::version::{ApiVersion, CrrView, Strategy, UnreadyAcquisition};
use crate::api::CRR_POD_UID_LABEL;
use crate::api::shared::containerrecreaterequest::{
    ContainerRecreateRequestContainer, ContainerRecreateRequestContainerContext,
};
use crate::cri::fake::{FakeCri, FakeCriHandle, FakePod, KubeletPod};
use crate::cri::{ContainerId, CriClient, RuntimeEndpoint};

/// The CRR's creation time in every builder unless said otherwise.
pub(crate) const CREATED: &str = "2024-01-01T00:00:00Z";

pub(crate) fn timestamp(value: &str) -> Timestamp {
    value.parse().expect("test timestamps are RFC 3339")
}

/// A CRR on pod `ns/pod` (UID `pod-uid`) for containers `(name, statusContext.containerID,
/// statusContext.restartCount)`, phase Recreating, default strategy.
pub(crate) fn crr_with_containers(containers: &[(&str, &str, i32)]) -> CrrView {
    CrrView {
        version: ApiVersion::V1beta1,
        name: "crr".into(),
        namespace: "ns".into(),
        uid: "crr-uid".into(),
        resource_version: Some("1".into()),
        creation_timestamp: Some(timestamp(CREATED)),
        deleting: false,
        labels: BTreeMap::from([(CRR_POD_UID_LABEL.to_owned(), "pod-uid".to_owned())]),
        pod_name: "pod".into(),
        containers: containers
            .iter()
            .map(
                |(name, container_id, restart_count)| ContainerRecreateRequestContainer {
                    name: (*name).to_owned(),
                    pre_stop: None,
                    ports: None,
                    status_context: Some(ContainerRecreateRequestContainerContext {
                        container_id: (*container_id).to_owned(),
                        restart_count: *restart_count,
                    }),
                },
            )
            .collect(),
        strategy: Strategy::default(),
        active_deadline_seconds: None,
        phase: "Recreating".into(),
        completion_time: None,
        container_recreate_states: Vec::new(),
        states_need_rewrite: false,
        unready_acquisition: UnreadyAcquisition::NotAcquired,
        container_status_snapshot: Vec::new(),
        snapshot_error: None,
    }
}

/// A CRR with no containers called `name`, in `phase`, created at `created`.
pub(crate) fn crr_named(name: &str, phase: &str, created: &str) -> CrrView {
    let mut crr = crr_with_containers(&[]);
    crr.name = name.into();
    crr.uid = format!("{name}-uid");
    crr.phase = phase.into();
    crr.creation_timestamp = Some(timestamp(created));
    crr
}

/// A containerd container `name` with runtime ID `id`.
pub(crate) fn runtime_container(
    name: &str,
    id: &str,
    state: RuntimeContainerState,
    restart_count: i32,
    created_at: i64,
) -> RuntimeContainer {
    RuntimeContainer {
        id: ContainerId {
            runtime: "containerd".into(),
            id: id.into(),
        },
        name: name.into(),
        state,
        restart_count,
        created_at,
        started_at: (state != RuntimeContainerState::Created).then(|| timestamp(CREATED)),
        sandbox_id: "sandbox".into(),
        pre_stop_handler: None,
        pod_deletion_grace_period_seconds: None,
        pod_termination_grace_period_seconds: None,
    }
}

/// A fake containerd serving one kubelet-started pod, and a CRI client connected to it.
pub(crate) struct CriWorld {
    /// The running fake; derefs to the [`FakeCri`] to script and inspect it.
    pub(crate) handle: FakeCriHandle,
    /// A client validated the way discovery validates one.
    pub(crate) cri: CriClient,
    /// The pod as started.
    pub(crate) pod: FakePod,
    pub(crate) namespace: String,
    pub(crate) pod_name: String,
    // Last, so that the socket's directory outlives the server.
    _directory: tempfile::TempDir,
}

impl CriWorld {
    pub(crate) async fn start(pod: KubeletPod) -> Self {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let fake = FakeCri::new();
        let (namespace, pod_name) = (pod.namespace.clone(), pod.name.clone());
        let started = fake
            .add_pod_with_containers(pod)
            .expect("the fake starts the pod");
        let handle = fake
            .serve_unix(directory.path().join("containerd.sock"))
            .await
            .expect("the fake serves");
        let endpoint = RuntimeEndpoint::parse(handle.endpoint()).expect("a unix endpoint");
        let cri = CriClient::connect(&endpoint, None)
            .await
            .expect("the fake validates like containerd");
        Self {
            handle,
            cri,
            pod: started,
            namespace,
            pod_name,
            _directory: directory,
        }
    }

    /// A Recreating CRR on this pod for `names`, each `statusContext` the container as
    /// started (restart count 0).
    pub(crate) fn crr(&self, names: &[&str]) -> CrrView {
        let ids: Vec<(String, String)> = names
            .iter()
            .map(|name| {
                let id = self.pod.container_id(name).unwrap_or("missing");
                ((*name).to_owned(), format!("containerd://{id}"))
            })
            .collect();
        let borrowed: Vec<(&str, &str, i32)> = ids
            .iter()
            .map(|(name, id)| (name.as_str(), id.as_str(), 0))
            .collect();
        let mut crr = crr_with_containers(&borrowed);
        crr.namespace.clone_from(&self.namespace);
        crr.pod_name.clone_from(&self.pod_name);
        crr.labels
            .insert(CRR_POD_UID_LABEL.to_owned(), self.pod.uid.clone());
        crr
    }

    /// The pod's newest container called `name`, as the daemon reads it.
    pub(crate) async fn runtime_container(&self, name: &str) -> RuntimeContainer {
        read_pod(&self.cri, &self.pod.uid)
            .await
            .expect("the fake lists the pod")
            .newest(name)
            .cloned()
            .expect("the container exists")
    }
}
