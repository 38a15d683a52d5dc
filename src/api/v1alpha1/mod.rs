//! `apps.kruise.io/v1alpha1`: every kind the daemon touches. Storage version up to kruise 1.8;
//! on 1.9+ still served next to `v1beta1`, and the only version of NodePodProbe.

pub mod containerrecreaterequest;
pub mod imagelistpulljob;
pub mod imagepulljob;
pub mod nodeimage;
pub mod nodepodprobe;

pub use containerrecreaterequest::{
    ContainerRecreateRequest, ContainerRecreateRequestContainerRecreateState,
    ContainerRecreateRequestSpec, ContainerRecreateRequestStatus, ContainerRecreateRequestStrategy,
};
pub use imagelistpulljob::{ImageListPullJob, ImageListPullJobSpec};
pub use imagepulljob::{ImagePullJob, ImagePullJobSpec};
pub use nodeimage::{ImageSpec, NodeImage, NodeImageSpec, ReferenceObject};
pub use nodepodprobe::{
    ContainerProbe, ContainerProbeState, NodePodProbe, NodePodProbeSpec, NodePodProbeStatus,
    PodProbe, PodProbeStatus, ProbeState,
};

pub use crate::api::shared::containerrecreaterequest::{
    ContainerRecreateRequestContainer, ContainerRecreateRequestContainerContext,
    ContainerRecreateRequestSyncContainerStatus, ProbeHandler,
};
pub use crate::api::shared::imagelistpulljob::{FailedImageStatus, ImageListPullJobStatus};
pub use crate::api::shared::imagepulljob::{
    CompletionPolicy, ImagePullJobNodeSelector, ImagePullJobPodSelector, ImagePullJobStatus,
    ImagePullJobTemplate, PullPolicy, SandboxConfig,
};
pub use crate::api::shared::nodeimage::{
    ImageStatus, ImageTagPullPolicy, ImageTagSpec, ImageTagStatus, NodeImageStatus, SyncStatus,
};
