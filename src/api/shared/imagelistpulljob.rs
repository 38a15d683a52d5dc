//! ImageListPullJob types; the `v1alpha1` and `v1beta1` schemas are identical (spec §3.2).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::schema;
use crate::api::shared::imagepulljob::ImagePullJobTemplate;

/// ImageListPullJobSpec defines the desired state of ImageListPullJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageListPullJobSpec {
    /// Images is the image list to be pulled by the job.
    pub images: Vec<String>,

    /// Where, how and until when to pull (inlined; one ImagePullJob per image is created from it).
    #[serde(flatten)]
    pub template: ImagePullJobTemplate,
}

/// ImageListPullJobStatus defines the observed state of ImageListPullJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageListPullJobStatus {
    /// Represents time when the job was acknowledged by the job controller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// Represents time when the all the image pull job was completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// The desired number of ImagePullJobs, this is typically equal to the number of
    /// len(spec.Images).
    pub desired: i32,

    /// The number of running ImagePullJobs which are acknowledged by the imagepulljob controller.
    #[serde(default)]
    #[schemars(transform = schema::without_default)]
    pub active: i32,

    /// The number of ImagePullJobs which are finished.
    #[serde(default)]
    #[schemars(transform = schema::without_default)]
    pub completed: i32,

    /// The number of image pull job which are finished and status.Succeeded==status.Desired.
    #[serde(default)]
    #[schemars(transform = schema::without_default)]
    pub succeeded: i32,

    /// The status of ImagePullJob which has the failed nodes(status.Failed>0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_image_statuses: Option<Vec<FailedImageStatus>>,
}

/// FailedImageStatus the state of ImagePullJob which has the failed nodes(status.Failed>0).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedImageStatus {
    /// The name of ImagePullJob which has the failed nodes(status.Failed>0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_job: Option<String>,

    /// Name of the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,

    /// The text prompt for job running status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
