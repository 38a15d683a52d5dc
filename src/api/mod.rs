//! The `apps.kruise.io` custom resources kruise-daemon works with, in every served version, and
//! the CRDs generated from them.
//!
//! * [`v1alpha1`]: NodeImage, ImagePullJob, ImageListPullJob, ContainerRecreateRequest,
//!   NodePodProbe.
//! * [`v1beta1`]: NodeImage, ImagePullJob, ImageListPullJob, ContainerRecreateRequest.
//! * [`shared`]: the types whose schema is identical in both versions (re-exported by each).
//!
//! Which version to speak is decided at startup from discovery (spec §11.1 item 2). The schemas
//! match kruise-manager's CRDs (master, spec §9) property by property; `tests/crd_compat.rs`
//! holds them to that.

mod enums;
mod keys;
mod schema;
pub mod shared;
pub mod v1alpha1;
pub mod v1beta1;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::core::crd::merge_crds;

pub use enums::UnknownValue;
pub use keys::*;
pub use shared::containerrecreaterequest::{
    ContainerRecreateRequestFailurePolicy, ContainerRecreateRequestPhase,
};
pub use shared::imagepulljob::{CompletionPolicyType, ImagePullPolicy};
pub use shared::nodeimage::{ImagePullPhase, SyncStatusPhase};
pub use v1alpha1::nodepodprobe::ProbeState;

/// The API group of every kind in this module.
pub const GROUP: &str = "apps.kruise.io";

/// The storage version of NodeImage, ImagePullJob, ImageListPullJob and ContainerRecreateRequest
/// on kruise master (NodePodProbe has only `v1alpha1`).
pub const STORAGE_VERSION: &str = "v1beta1";

/// The five CRDs, each with all its versions, as kruise master installs them: NodeImage,
/// ImagePullJob, ImageListPullJob and ContainerRecreateRequest with `v1alpha1` and `v1beta1`
/// (storage), NodePodProbe with `v1alpha1`. Ordered by CRD name.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        merged(
            v1alpha1::ContainerRecreateRequest::crd(),
            v1beta1::ContainerRecreateRequest::crd(),
        ),
        merged(
            v1alpha1::ImageListPullJob::crd(),
            v1beta1::ImageListPullJob::crd(),
        ),
        merged(v1alpha1::ImagePullJob::crd(), v1beta1::ImagePullJob::crd()),
        merged(v1alpha1::NodeImage::crd(), v1beta1::NodeImage::crd()),
        v1alpha1::NodePodProbe::crd(),
    ];
    crds.iter_mut().for_each(schema::controller_gen_parity);
    crds
}

/// Merges the `v1alpha1` and `v1beta1` CRDs of one kind, `v1beta1` being the storage version.
fn merged(
    v1alpha1: CustomResourceDefinition,
    v1beta1: CustomResourceDefinition,
) -> CustomResourceDefinition {
    merge_crds(vec![v1alpha1, v1beta1], STORAGE_VERSION)
        .expect("both versions are derived with the same group, kind and scope")
}

/// [`crds`] as a multi-document YAML stream (`---` before each document), for `kubectl apply -f -`.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| {
            let yaml = serde_yaml::to_string(crd)
                .expect("a CustomResourceDefinition always serializes to YAML");
            format!("---\n{yaml}")
        })
        .collect()
}
