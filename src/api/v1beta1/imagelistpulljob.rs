//! `apps.kruise.io/v1beta1` ImageListPullJob (storage version since kruise 1.9). The schema is
//! the same in both versions, so the spec wraps
//! [`shared::imagelistpulljob::ImageListPullJobSpec`](crate::api::shared::imagelistpulljob::ImageListPullJobSpec).
//!
//! The daemon never reads or writes ImageListPullJobs (spec §3.1); the type exists for CRD
//! generation and tooling.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::shared::imagelistpulljob::ImageListPullJobStatus;
use crate::api::shared::{imagelistpulljob, versioned_spec};

/// ImageListPullJobSpec defines the desired state of ImageListPullJob.
// Clippy reads the repeated keys of the separate `printcolumn(...)` entries as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1beta1",
    kind = "ImageListPullJob",
    plural = "imagelistpulljobs",
    namespaced,
    status = "ImageListPullJobStatus",
    derive = "PartialEq",
    doc = "ImageListPullJob is the Schema for the imagelistpulljobs API",
    printcolumn(
        name = "TOTAL",
        type_ = "integer",
        json_path = ".status.desired",
        description = "Number of image pull job"
    ),
    printcolumn(
        name = "SUCCEEDED",
        type_ = "integer",
        json_path = ".status.succeeded",
        description = "Number of image pull job succeeded"
    ),
    printcolumn(
        name = "COMPLETED",
        type_ = "integer",
        json_path = ".status.completed",
        description = "Number of ImagePullJobs which are finished"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "CreationTimestamp is a timestamp representing the server time when this object was created."
    )
)]
#[serde(transparent)]
pub struct ImageListPullJobSpec(pub imagelistpulljob::ImageListPullJobSpec);

versioned_spec!(ImageListPullJobSpec => imagelistpulljob::ImageListPullJobSpec);
