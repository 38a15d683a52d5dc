//! `apps.kruise.io/v1alpha1` ImagePullJob (served, storage up to kruise 1.8). The schema is the
//! same in both versions, so the spec wraps
//! [`shared::imagepulljob::ImagePullJobSpec`](crate::api::shared::imagepulljob::ImagePullJobSpec).
//!
//! The daemon never reads or writes ImagePullJobs (spec §3.1); the type exists for CRD generation
//! and tooling.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::shared::imagepulljob::ImagePullJobStatus;
use crate::api::shared::{imagepulljob, versioned_spec};

/// ImagePullJobSpec defines the desired state of ImagePullJob.
// Clippy reads the repeated keys of the separate `printcolumn(...)` entries as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1alpha1",
    kind = "ImagePullJob",
    plural = "imagepulljobs",
    namespaced,
    status = "ImagePullJobStatus",
    derive = "PartialEq",
    doc = "ImagePullJob is the Schema for the imagepulljobs API",
    printcolumn(
        name = "TOTAL",
        type_ = "integer",
        json_path = ".status.desired",
        description = "Number of all nodes matched by this job"
    ),
    printcolumn(
        name = "ACTIVE",
        type_ = "integer",
        json_path = ".status.active",
        description = "Number of image pull task active"
    ),
    printcolumn(
        name = "SUCCEED",
        type_ = "integer",
        json_path = ".status.succeeded",
        description = "Number of image pull task succeeded"
    ),
    printcolumn(
        name = "FAILED",
        type_ = "integer",
        json_path = ".status.failed",
        description = "Number of image pull tasks failed"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC."
    ),
    printcolumn(
        name = "MESSAGE",
        type_ = "string",
        json_path = ".status.message",
        description = "Summary of status when job is failed"
    )
)]
#[serde(transparent)]
pub struct ImagePullJobSpec(pub imagepulljob::ImagePullJobSpec);

versioned_spec!(ImagePullJobSpec => imagepulljob::ImagePullJobSpec);
