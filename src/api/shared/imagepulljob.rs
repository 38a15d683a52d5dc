//! ImagePullJob types; the `v1alpha1` and `v1beta1` schemas are identical (spec §3.2).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::enums::string_enum;
use crate::api::schema;

string_enum! {
    /// When the image is pulled (`imagePullPolicy` of jobs and NodeImage tags).
    ///
    /// The schema declares no `enum`, so the fields are `String`s.
    pub enum ImagePullPolicy {
        /// Always attempt to pull the latest image.
        Always,
        /// Pull only if the image is not present on the node.
        IfNotPresent,
    }
}

string_enum! {
    /// Type of a job's [`CompletionPolicy`]. The schema declares no `enum`, so the field is a
    /// `String`.
    pub enum CompletionPolicyType {
        /// The job completes once every node finished, or at `activeDeadlineSeconds`.
        Always,
        /// The job never completes; new nodes keep being served.
        Never,
    }
}

/// SandboxConfig support attach metadata in PullImage CRI interface during ImagePulljobs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxConfig {
    /// Labels passed in the CRI `PodSandboxConfig` of the pull request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,

    /// Annotations passed in the CRI `PodSandboxConfig` of the pull request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// PullPolicy defines the policy of the pulling task.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullPolicy {
    /// Specifies the timeout of the pulling task. Defaults to 600.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,

    /// Specifies the number of retries before marking the pulling task failed. Defaults to 3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
}

/// CompletionPolicy indicates the completion policy of the job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompletionPolicy {
    /// Type indicates the type of the CompletionPolicy: Always or Never. Default is Always.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,

    /// ActiveDeadlineSeconds specifies the duration in seconds relative to the startTime that the
    /// job may be active before the system tries to terminate it; value must be positive integer.
    /// Only works for Always type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,

    /// ttlSecondsAfterFinished limits the lifetime of a Job that has finished execution (either
    /// Complete or Failed). If this field is set, ttlSecondsAfterFinished after the Job finishes,
    /// it is eligible to be automatically deleted. If this field is unset, the Job won't be
    /// automatically deleted. If this field is set to zero, the Job becomes eligible to be deleted
    /// immediately after it finishes. Only works for Always type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// ImagePullJobNodeSelector is a selector over nodes (NodeImage labels are the node labels).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::inlined_label_selector)]
pub struct ImagePullJobNodeSelector {
    /// Names specify a set of nodes to execute the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,

    /// LabelSelector is a label query over nodes that should match the job (inlined).
    #[serde(flatten)]
    pub label_selector: LabelSelector,
}

/// ImagePullJobPodSelector is a selector over pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::inlined_label_selector)]
pub struct ImagePullJobPodSelector {
    /// LabelSelector is a label query over pods that should match the job (inlined).
    #[serde(flatten)]
    pub label_selector: LabelSelector,
}

/// The part of the job spec shared by ImagePullJob and ImageListPullJob (inlined in both).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullJobTemplate {
    /// ImagePullSecrets is an optional list of references to secrets in the same namespace to use
    /// for pulling the image. If specified, these secrets will be passed to individual puller
    /// implementations for them to use. For example, in the case of docker, only DockerConfig type
    /// secrets are honored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_secrets: Option<Vec<String>>,

    /// Selector is a query over nodes that should match the job. nil to match all nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<ImagePullJobNodeSelector>,

    /// PodSelector is a query over pods that should pull image on nodes of these pods.
    /// Mutually exclusive with Selector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<ImagePullJobPodSelector>,

    /// Parallelism is the requested parallelism, it can be set to any non-negative value. If it is
    /// unspecified, it defaults to 1. If it is specified as 0, then the Job is effectively paused
    /// until it is increased.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<IntOrString>,

    /// PullPolicy is an optional field to set parameters of the pulling task. If not specified,
    /// the system will use the default values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,

    /// CompletionPolicy indicates the completion policy of the job.
    /// Default is Always CompletionPolicyType.
    pub completion_policy: CompletionPolicy,

    /// SandboxConfig support attach metadata in PullImage CRI interface during ImagePulljobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_config: Option<SandboxConfig>,

    /// Image pull policy. One of Always, IfNotPresent. Defaults to IfNotPresent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
}

/// ImagePullJobSpec defines the desired state of ImagePullJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullJobSpec {
    /// Image is the image to be pulled by the job.
    pub image: String,

    /// Where, how and until when to pull (inlined).
    #[serde(flatten)]
    pub template: ImagePullJobTemplate,
}

/// ImagePullJobStatus defines the observed state of ImagePullJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullJobStatus {
    /// Represents time when the job was acknowledged by the job controller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// Represents time when the job was completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// The desired number of pulling tasks, this is typically equal to the number of nodes
    /// satisfied.
    pub desired: i32,

    /// The number of actively running pulling tasks.
    #[serde(default)]
    #[schemars(transform = schema::without_default)]
    pub active: i32,

    /// The number of pulling tasks which reached phase Succeeded.
    #[serde(default)]
    #[schemars(transform = schema::without_default)]
    pub succeeded: i32,

    /// The number of pulling tasks which reached phase Failed.
    #[serde(default)]
    #[schemars(transform = schema::without_default)]
    pub failed: i32,

    /// The text prompt for job running status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The nodes that failed to pull the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_nodes: Option<Vec<String>>,
}
