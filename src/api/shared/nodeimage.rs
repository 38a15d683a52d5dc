//! NodeImage types whose schema is identical in `v1alpha1` and `v1beta1` (spec §3.2).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::enums::string_enum;
use crate::api::schema;

string_enum! {
    /// Phase of one image tag pulling task (`ImageTagStatus.phase`).
    ///
    /// The schema declares no `enum`, so the field is a `String`; use [`ImagePullPhase::as_str`]
    /// to write it and `str::parse` to read it.
    pub enum ImagePullPhase {
        /// The task has not started yet.
        Waiting,
        /// The task has started but not completed.
        Pulling,
        /// The image has been pulled.
        Succeeded,
        /// The task failed (by the daemon, or by the manager when the daemon did not respond).
        Failed,
    }
}

string_enum! {
    /// Summary state of all pulling tasks on a node (`SyncStatus.status`; declared upstream but
    /// written by nobody, spec §3.2).
    pub enum SyncStatusPhase {
        /// All tasks succeeded on this node.
        Succeeded,
        /// Some task failed on this node.
        Failed,
    }
}

/// ImageTagSpec defines the pulling spec of an image tag.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageTagSpec {
    /// Specifies the image tag.
    pub tag: String,

    /// Specifies the create time of this tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,

    /// PullPolicy is an optional field to set parameters of the pulling task. If not specified,
    /// the system will use the default values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<ImageTagPullPolicy>,

    /// List of objects depended by this object. If this image is managed by a controller,
    /// then an entry in this list will point to this controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = schema::object_reference_list)]
    pub owner_references: Option<Vec<ObjectReference>>,

    /// An opaque value that represents the internal version of this tag. The daemon echoes it in
    /// the tag status and restarts the task when it changes. Populated by the system. Read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,

    /// Image pull policy. One of Always, IfNotPresent. The documented default IfNotPresent is not
    /// applied on NodeImage: the daemon pulls unless this is exactly IfNotPresent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
}

/// ImageTagPullPolicy defines the policy of the pulling task.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageTagPullPolicy {
    /// Specifies the timeout of the pulling task. Defaults to 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,

    /// Specifies the number of retries before marking the pulling task failed. Defaults to 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,

    /// TTLSecondsAfterFinished limits the lifetime of a pulling task that has finished execution
    /// (either Complete or Failed). If this field is set, ttlSecondsAfterFinished after the task
    /// finishes, it is eligible to be automatically deleted. If this field is unset, the task won't
    /// be automatically deleted. If this field is set to zero, the task becomes eligible to be
    /// deleted immediately after it finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,

    /// ActiveDeadlineSeconds specifies the duration in seconds relative to the startTime that the
    /// task may be active before the system tries to terminate it; value must be positive
    /// integer. If not specified, the system will never terminate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
}

/// NodeImageStatus defines the observed state of NodeImage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeImageStatus {
    /// The desired number of pulling tasks, this is typically equal to the number of images in
    /// spec.
    pub desired: i32,

    /// The number of pulling tasks which reached phase Succeeded.
    #[serde(default)]
    #[schemars(transform = schema::without_default)]
    pub succeeded: i32,

    /// The number of pulling tasks which reached phase Failed.
    #[serde(default)]
    #[schemars(transform = schema::without_default)]
    pub failed: i32,

    /// The number of pulling tasks which are not finished.
    #[serde(default)]
    #[schemars(transform = schema::without_default)]
    pub pulling: i32,

    /// The number of pulling tasks which are waiting (absent in kruise 1.8's schema).
    #[serde(default)]
    #[schemars(transform = schema::without_default)]
    pub waiting: i32,

    /// All statuses of active image pulling tasks, keyed like `spec.images`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_statuses: Option<BTreeMap<String, ImageStatus>>,

    /// The first of all job has finished on this node. When a node is added to the cluster, we
    /// want to know the time when the node's image pulling is completed, and use it to trigger
    /// the operation of the upper system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_sync_status: Option<SyncStatus>,
}

/// ImageStatus defines the pulling status of an image.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    /// Represents statuses of pulling tasks on this node.
    pub tags: Vec<ImageTagStatus>,
}

/// ImageTagStatus defines the pulling status of an image tag.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageTagStatus {
    /// Represents the image tag.
    pub tag: String,

    /// Represents the image pulling task phase: Waiting, Pulling, Succeeded or Failed.
    pub phase: String,

    /// Represents the pulling progress of this tag, which is between 0-100. There is no guarantee
    /// of monotonic consistency, and it may be a rollback due to retry during pulling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<i32>,

    /// Represents time when the pulling task was acknowledged by the image puller.
    /// It is represented in RFC3339 form and is in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// Represents time when the pulling task was completed.
    /// It is represented in RFC3339 form and is in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// Represents the internal version of this tag that the daemon handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,

    /// Represents the ID of this image (`<image name>@<CRI image id>`).
    #[serde(default, rename = "imageID", skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,

    /// Represents the summary information of this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// SyncStatus is summary of the status of all images pulling tasks on the node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// When the first sync finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_at: Option<Time>,

    /// SyncStatusPhase defines the node status: Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,

    /// Human readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
