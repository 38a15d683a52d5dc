//! ContainerRecreateRequest types whose schema is identical in `v1alpha1` and `v1beta1`
//! (spec §4.1).

use k8s_openapi::api::core::v1::{ContainerPort, ExecAction, HTTPGetAction, TCPSocketAction};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::enums::string_enum;
use crate::api::schema;

string_enum! {
    /// Phase of a ContainerRecreateRequest and of each of its containers.
    ///
    /// `v1beta1` declares this `enum` in its schema and uses this type; `v1alpha1` does not, so
    /// its fields are `String`s. At CRR level only Pending, Recreating and Completed are used; per
    /// container Pending, Recreating, Succeeded and Failed (spec §4.1).
    pub enum ContainerRecreateRequestPhase {
        /// Waiting for the daemon to pick it (another CRR of the pod is in progress).
        Pending,
        /// The daemon is recreating the containers.
        Recreating,
        /// The container was recreated and is running and ready.
        Succeeded,
        /// Recreating the container failed.
        Failed,
        /// The request finished (the daemon or the manager completed it).
        Completed,
    }
}

string_enum! {
    /// Whether to continue when one container fails to recreate (`strategy.failurePolicy`).
    ///
    /// `v1beta1` declares this `enum`; `v1alpha1` uses a `String` (the webhook defaults and
    /// validates it).
    pub enum ContainerRecreateRequestFailurePolicy {
        /// Stop and complete the request.
        Fail,
        /// Continue with the next container.
        Ignore,
    }
}

/// ContainerRecreateRequestContainer defines the container that need to recreate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestContainer {
    /// Name of the container that need to recreate.
    /// It must be existing in the real pod.Spec.Containers.
    pub name: String,

    /// PreStop is synced from the real container in Pod spec during this ContainerRecreateRequest
    /// creating. Populated by the system. Read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<ProbeHandler>,

    /// Ports is synced from the real container in Pod spec during this ContainerRecreateRequest
    /// creating (only when preStop is an HTTP GET). Populated by the system. Read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(transform = schema::container_port_list)]
    pub ports: Option<Vec<ContainerPort>>,

    /// StatusContext is synced from the real Pod status during this ContainerRecreateRequest
    /// creating. Populated by the system. Read-only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_context: Option<ContainerRecreateRequestContainerContext>,
}

/// ProbeHandler defines a specific action that should be taken: the `exec`, `httpGet` and
/// `tcpSocket` handlers of a container's `lifecycle.preStop` (no `sleep`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::probe_handler)]
pub struct ProbeHandler {
    /// Exec specifies the action to take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,

    /// HTTPGet specifies the http request to perform.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HTTPGetAction>,

    /// TCPSocket specifies an action involving a TCP port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TCPSocketAction>,
}

/// ContainerRecreateRequestContainerContext contains context status of the container that need to
/// recreate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestContainerContext {
    /// Container's ID in the format `<runtime>://<container_id>`.
    #[serde(rename = "containerID")]
    pub container_id: String,

    /// The number of times the container has been restarted.
    pub restart_count: i32,
}

/// A container's status as synchronized by the manager while the request is Recreating, used
/// to verify recreation success: the item of v1beta1 `status.containerStatusSnapshot` and of the
/// JSON list in the v1alpha1 annotation `crr.apps.kruise.io/sync-container-statuses`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestSyncContainerStatus {
    /// Name of the container.
    pub name: String,

    /// Specifies whether the container has passed its readiness probe.
    pub ready: bool,

    /// The number of times the container has been restarted.
    pub restart_count: i32,

    /// Container's ID in the format `<runtime>://<container_id>`.
    #[serde(rename = "containerID", skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}
