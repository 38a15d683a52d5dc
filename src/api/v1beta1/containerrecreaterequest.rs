//! `apps.kruise.io/v1beta1` ContainerRecreateRequest: the storage version on master (kruise
//! 1.10), converted to and from `v1alpha1` by the manager's webhook (spec §4.1).
//!
//! Differences from `v1alpha1`: `failurePolicy` and the phases are `enum`s, the integer spec
//! fields have `minimum: 0`, and the status carries `containerStatusSnapshot` and
//! `conditions` (with [`PRE_RECREATE_GRACE_CONDITION`](crate::api::PRE_RECREATE_GRACE_CONDITION))
//! instead of the `v1alpha1` annotations.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::schema;
use crate::api::shared::containerrecreaterequest::{
    ContainerRecreateRequestContainer, ContainerRecreateRequestFailurePolicy,
    ContainerRecreateRequestPhase, ContainerRecreateRequestSyncContainerStatus,
};

/// ContainerRecreateRequestSpec defines the desired state of ContainerRecreateRequest.
// Clippy reads the repeated keys of the separate `printcolumn(...)` entries as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1beta1",
    kind = "ContainerRecreateRequest",
    plural = "containerrecreaterequests",
    shortname = "crr",
    namespaced,
    status = "ContainerRecreateRequestStatus",
    derive = "PartialEq",
    doc = "ContainerRecreateRequest is the Schema for the containerrecreaterequests API",
    printcolumn(
        name = "PHASE",
        type_ = "string",
        json_path = ".status.phase",
        description = "Phase of this ContainerRecreateRequest."
    ),
    printcolumn(
        name = "POD",
        type_ = "string",
        json_path = ".spec.podName",
        description = "Pod name of this ContainerRecreateRequest."
    ),
    printcolumn(
        name = "NODE",
        type_ = "string",
        json_path = r".metadata.labels.crr\.apps\.kruise\.io/node-name",
        description = "Pod name of this ContainerRecreateRequest."
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC."
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestSpec {
    /// PodName is name of the Pod that owns the recreated containers.
    pub pod_name: String,

    /// Containers contains the containers that need to recreate in the Pod.
    pub containers: Vec<ContainerRecreateRequestContainer>,

    /// Strategy defines strategies for containers recreation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<ContainerRecreateRequestStrategy>,

    /// ActiveDeadlineSeconds is the deadline duration of this ContainerRecreateRequest.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub active_deadline_seconds: Option<i64>,

    /// TTLSecondsAfterFinished is the TTL duration after this ContainerRecreateRequest has
    /// completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// ContainerRecreateRequestStrategy contains the strategies for containers recreation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestStrategy {
    /// FailurePolicy decides whether to continue if one container fails to recreate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<ContainerRecreateRequestFailurePolicy>,

    /// OrderedRecreate indicates whether to recreate the next container only if the previous one
    /// has recreated completely.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordered_recreate: Option<bool>,

    /// ForceRecreate indicates whether to force kill the container even if the previous
    /// container is starting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_recreate: Option<bool>,

    /// TerminationGracePeriodSeconds is the optional duration in seconds to wait the container
    /// terminating gracefully. Value must be non-negative integer. The value zero indicates delete
    /// immediately. If this value is nil, we will use pod.Spec.TerminationGracePeriodSeconds as
    /// default value.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub termination_grace_period_seconds: Option<i64>,

    /// UnreadyGracePeriodSeconds is the optional duration in seconds to mark Pod as not ready over
    /// this duration before executing preStop hook and stopping the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub unready_grace_period_seconds: Option<i64>,

    /// Minimum number of seconds for which a newly created container should be started and ready
    /// without any of its container crashing, for it to be considered Succeeded. Defaults to 0
    /// (container will be considered Succeeded as soon as it is started and ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_started_seconds: Option<i32>,
}

/// ContainerRecreateRequestStatus defines the observed state of ContainerRecreateRequest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestStatus {
    /// Phase of this ContainerRecreateRequest, e.g. Pending, Recreating, Completed.
    pub phase: ContainerRecreateRequestPhase,

    /// Represents time when the ContainerRecreateRequest was completed.
    /// It is represented in RFC3339 form and is in UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// A human readable message indicating details about this ContainerRecreateRequest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// ContainerRecreateStates contains the recreation states of the containers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_recreate_states: Option<Vec<ContainerRecreateRequestContainerRecreateState>>,

    /// ContainerStatusSnapshot contains the current container statuses of the Pod, synchronized by
    /// the controller during the Recreating phase. Replaces the
    /// `crr.apps.kruise.io/sync-container-statuses` annotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_status_snapshot: Option<Vec<ContainerRecreateRequestSyncContainerStatus>>,

    /// Conditions contains condition entries for this ContainerRecreateRequest (a list map keyed
    /// by `type`). The manager sets `PreRecreateGrace` when it marks the Pod not-ready for the
    /// unreadyGracePeriodSeconds drain.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(transform = schema::condition_list)]
    pub conditions: Option<Vec<Condition>>,
}

/// ContainerRecreateRequestContainerRecreateState contains the recreation state of the container.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecreateRequestContainerRecreateState {
    /// Name of the container.
    pub name: String,

    /// Phase indicates the recreation phase of the container.
    pub phase: ContainerRecreateRequestPhase,

    /// A human readable message indicating details about this state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Containers are killed by kruise daemon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_killed: Option<bool>,
}
