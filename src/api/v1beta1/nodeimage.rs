//! `apps.kruise.io/v1beta1` NodeImage: the storage version since kruise 1.9 (spec §3.2).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::api::shared::nodeimage::{ImageTagSpec, NodeImageStatus};
use crate::api::shared::{imagepulljob::SandboxConfig, spec_or_default};

/// NodeImageSpec defines the desired state of NodeImage.
///
/// The NodeImage is cluster-scoped and named like its node.
// Clippy reads the repeated keys of the separate `printcolumn(...)` entries as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "apps.kruise.io",
    version = "v1beta1",
    kind = "NodeImage",
    plural = "nodeimages",
    status = "NodeImageStatus",
    derive = "PartialEq",
    doc = "NodeImage is the Schema for the nodeimages API",
    printcolumn(
        name = "DESIRED",
        type_ = "integer",
        json_path = ".status.desired",
        description = "Number of all images on this node"
    ),
    printcolumn(
        name = "PULLING",
        type_ = "integer",
        json_path = ".status.pulling",
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
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NodeImageSpec {
    /// Specifies images to be pulled on this node, keyed by the image's familiar name without
    /// tag (e.g. `nginx`, `quay.io/org/app`). It can not be more than 256 for each NodeImage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<BTreeMap<String, ImageSpec>>,
}

/// The fields of [`NodeImageSpec`], read through [`spec_or_default`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeImageSpecFields {
    images: Option<BTreeMap<String, ImageSpec>>,
}

impl From<NodeImageSpecFields> for NodeImageSpec {
    fn from(NodeImageSpecFields { images }: NodeImageSpecFields) -> Self {
        Self { images }
    }
}

impl<'de> Deserialize<'de> for NodeImageSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        spec_or_default::<D, NodeImageSpecFields, Self>(deserializer)
    }
}

/// ImageSpec defines the pulling spec of an image.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// PullSecrets is an optional list of references to secrets to use for pulling the image
    /// (normally synced by the manager into namespace `kruise-daemon-config`). Only DockerConfig
    /// type secrets are honored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_secrets: Option<Vec<ReferenceObject>>,

    /// Tags is a list of versions of this image.
    pub tags: Vec<ImageTagSpec>,

    /// SandboxConfig support attach metadata in PullImage CRI interface during ImagePulljobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_config: Option<SandboxConfig>,
}

/// ReferenceObject comprises a resource name, with a mandatory namespace, rendered as
/// `<namespace>/<name>`.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceObject {
    /// Namespace of the secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,

    /// Name of the secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,

    /// How the secret was synced: `batch` marks the shared synced secrets of kruise 1.9+, which
    /// are cleaned up together with the image spec; references without it are old-style per-job
    /// secrets that the manager drops once the Secret is gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}
